//! Snapshots: the engine's state on disk, so a restart loses nothing the
//! last snapshot held.
//!
//! A snapshot file is a 32-byte header and a postcard payload:
//!
//! | bytes | what |
//! | --- | --- |
//! | 0..8 | magic `RTBDSNAP` |
//! | 8..12 | format version (u32, little-endian) |
//! | 12..20 | when it was taken (ms since the epoch, u64) |
//! | 20..28 | payload length (u64) |
//! | 28..32 | CRC-32 of the payload |
//!
//! The payload holds a preamble, then each shard of the table (live
//! reservations, records of reservations, call history) encoded while that
//! shard alone is locked, then the counters, tallies and Ping Shield state.
//! Records of pings that reserved nothing are left out, and so are pings
//! still waiting on buyers.
//!
//! Writing is crash-safe: a temporary file is written and fsynced, renamed
//! into place, and the folder fsynced; the two newest snapshots are kept.
//! Reading checks the magic, the version, the length and the checksum before
//! decoding; a bad file is reported and the previous one tried.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::caps;
use crate::engine::Engine;
use crate::shield::PairImage;
use crate::status::Status;
use crate::sym::Sym;
use crate::table::{SHARDS, ShardIn};
use crate::zone::Zone;

pub const MAGIC: &[u8; 8] = b"RTBDSNAP";
/// The format this build writes and reads.
pub const VERSION: u32 = 3;
/// The oldest format this build reads: format 2 is format 3 without the
/// targets' time zones.
const OLDEST: u32 = 2;
const HEADER: usize = 32;
/// Snapshots kept in the folder.
const KEEP: usize = 2;
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".rtbd";

#[derive(Serialize, Deserialize)]
struct Preamble {
    created_ms: u64,
    shards: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetImage {
    pub id: Sym,
    pub hourly: u64,
    pub daily: u64,
    pub monthly: u64,
    pub hard: u64,
    pub concurrency: u32,
    pub calls: u32,
    pub tally: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KeyImage {
    pub id: Sym,
    pub tally: Vec<u64>,
    pub limiter: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PublisherImage {
    pub name: Box<str>,
    pub tally: Vec<u64>,
}

/// Everything outside the table.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Globals {
    pub targets: Vec<TargetImage>,
    pub keys: Vec<KeyImage>,
    pub publishers: Vec<PublisherImage>,
    pub shield: Vec<PairImage>,
}

/// Each target's time zone when the snapshot was taken: the windows its
/// counts are in (empty from a format 2 snapshot).
pub type Zones = Vec<(Sym, Box<str>)>;

/// A snapshot read back.
pub struct Image {
    pub created_ms: u64,
    pub shards: Vec<ShardIn>,
    pub globals: Globals,
    pub zones: Zones,
}

impl Image {
    /// Live reservations held.
    pub fn live(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| &s.records)
            .filter(|(_, r)| r.live && r.status.is_reservation())
            .count()
    }

    /// Records held.
    pub fn records(&self) -> usize {
        self.shards.iter().map(|s| s.records.len()).sum()
    }

    /// Calls claimed and not yet ended.
    pub fn live_calls(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| &s.records)
            .filter(|(_, r)| r.status == Status::Claimed && r.end().is_none())
            .count()
    }
}

/// Why a snapshot file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Io(String),
    Empty,
    NotASnapshot,
    /// Written by a newer rtbd.
    FutureVersion(u32),
    /// Shorter (or longer) than its header says.
    Truncated {
        expected: u64,
        found: u64,
    },
    Checksum,
    Decode(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "cannot read it: {e}"),
            Error::Empty => write!(f, "the file is empty"),
            Error::NotASnapshot => write!(f, "not an rtbd snapshot (bad magic)"),
            Error::FutureVersion(v) => {
                write!(f, "written by a newer rtbd (format {v}; this build reads format {VERSION})")
            }
            Error::Truncated { expected, found } => {
                write!(f, "truncated: the header says {expected} payload bytes, the file has {found}")
            }
            Error::Checksum => write!(f, "checksum mismatch: the file is corrupt"),
            Error::Decode(e) => write!(f, "cannot decode it: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// What a written snapshot came to.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    pub duration: Duration,
}

/// Encodes the engine's state into `sink`, piece by piece (each shard is
/// encoded while it alone is locked, so pings wait at most for one shard's
/// copy). Returns when the snapshot was taken.
pub fn encode_into(engine: &Engine, mut sink: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<u64> {
    let created_ms = engine.clock().now_ms();
    // One buffer, reused for every piece: its size is one shard's, not the
    // whole table's.
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut emit = |buffer: &mut Vec<u8>| -> io::Result<()> {
        sink(buffer)?;
        buffer.clear();
        Ok(())
    };
    append(&mut buffer, &Preamble { created_ms, shards: SHARDS as u32 })?;
    emit(&mut buffer)?;
    // The counters are copied after the shards (see `export_globals`). A
    // counted reservation that ends in between would be live and counted in
    // the shard's copy but already given back in the counters', and given
    // back a second time after a restore: the count would be low and let a
    // cap pass. So they are copied before the shards too, and each window
    // keeps the larger count of the two (erring high: fewer calls).
    let before: ahash::AHashMap<Sym, [u64; 4]> = engine
        .states()
        .targets
        .all()
        .into_iter()
        .map(|(id, t)| {
            let c = &t.counters;
            (id, [c.hourly.raw(), c.daily.raw(), c.monthly.raw(), c.hard.raw()])
        })
        .collect();
    let keep = |r: &crate::records::Record| {
        matches!(
            r.status_at(created_ms),
            Status::Reserved | Status::Confirmed | Status::Claimed | Status::Expired
        )
    };
    for shard in engine.table().shards() {
        {
            let shard = shard.lock();
            append(&mut buffer, &shard.image(keep))?;
        }
        emit(&mut buffer)?;
    }
    let mut globals = export_globals(engine);
    for t in &mut globals.targets {
        if let Some(&[hourly, daily, monthly, hard]) = before.get(&t.id) {
            t.hourly = caps::larger_raw(hourly, t.hourly);
            t.daily = caps::larger_raw(daily, t.daily);
            t.monthly = caps::larger_raw(monthly, t.monthly);
            t.hard = caps::larger_raw(hard, t.hard);
        }
    }
    append(&mut buffer, &globals)?;
    emit(&mut buffer)?;
    // Every target's zone, the config's or (for one a reload removed) the
    // last it had.
    let zones: Zones = engine
        .states()
        .targets
        .all()
        .into_iter()
        .filter_map(|(id, t)| Some((id, t.zone.lock().as_ref()?.name().into())))
        .collect();
    append(&mut buffer, &zones)?;
    emit(&mut buffer)?;
    Ok(created_ms)
}

/// The payload of a snapshot of `engine`, in memory.
pub fn encode(engine: &Engine) -> (u64, Vec<u8>) {
    let mut payload = Vec::new();
    let created_ms = encode_into(engine, |piece| {
        payload.extend_from_slice(piece);
        Ok(())
    })
    .unwrap_or_default();
    (created_ms, payload)
}

/// Encodes `value` at the end of `buffer`. An encoding error (none is
/// expected for these types) fails the snapshot rather than leaving a piece
/// out of a file that would then read as good.
fn append<T: Serialize + ?Sized>(buffer: &mut Vec<u8>, value: &T) -> io::Result<()> {
    *buffer = postcard::to_extend(value, std::mem::take(buffer))
        .map_err(|e| io::Error::other(format!("cannot encode the snapshot: {e}")))?;
    Ok(())
}

/// Counters, tallies and Ping Shield state, for a snapshot.
pub fn export_globals(engine: &Engine) -> Globals {
    let states = engine.states();
    let targets = states
        .targets
        .all()
        .into_iter()
        .map(|(id, t)| {
            let c = &t.counters;
            TargetImage {
                id,
                hourly: c.hourly.raw(),
                daily: c.daily.raw(),
                monthly: c.monthly.raw(),
                hard: c.hard.raw(),
                concurrency: c.concurrency.get(),
                calls: c.calls.get(),
                tally: t.tally.export(),
            }
        })
        .collect();
    let keys = states
        .keys
        .all()
        .into_iter()
        .map(|(id, k)| KeyImage { id, tally: k.tally.export(), limiter: k.limiter.raw() })
        .collect();
    let names = states.publishers.all();
    let publishers = names
        .iter()
        .map(|(i, name)| PublisherImage { name: name.clone(), tally: states.publishers.tally(*i).export() })
        .collect();
    let name_of = |i: u32| names.get(i as usize).map_or_else(|| "".into(), |(_, n)| n.clone());
    Globals { targets, keys, publishers, shield: engine.shield().export(name_of) }
}

/// Restores a snapshot into a fresh engine: counters and tallies, then
/// every shard. Reservations whose time passed while rtbd was down expire
/// now and give their counts back.
pub fn restore(engine: &Engine, image: Image) {
    let now = engine.clock().now_ms();
    let states = engine.states();
    let g = image.globals;
    // Publisher indices are this process's own: map the snapshot's to them.
    let mut remap = Vec::with_capacity(g.publishers.len());
    for (i, p) in g.publishers.iter().enumerate() {
        let index = if i == 0 { 0 } else { states.publishers.index(&p.name) };
        states.publishers.tally(index).import(&p.tally);
        remap.push(index);
    }
    let publisher = |old: u32| remap.get(old as usize).copied().unwrap_or(0);
    for t in &g.targets {
        let state = states.targets.get_or_create(t.id);
        let c = &state.counters;
        c.hourly.set_raw(t.hourly);
        c.daily.set_raw(t.daily);
        c.monthly.set_raw(t.monthly);
        c.hard.set_raw(t.hard);
        c.concurrency.set(t.concurrency);
        c.calls.set(t.calls);
        state.tally.import(&t.tally);
    }
    for k in &g.keys {
        let state = states.keys.get_or_create(k.id);
        state.tally.import(&k.tally);
        state.limiter.set_raw(k.limiter);
    }
    engine.shield().import(g.shield, |name| states.publishers.index(name));
    let routing = engine.routing();
    // A target whose time zone changed while rtbd was down: its restored
    // counts are in the old zone's windows (see `Engine::give_back`). One
    // no config names any more keeps counting in the zone it last had.
    for (id, zone) in &image.zones {
        match routing.target(*id) {
            Some((_, target)) => {
                if target.zone.name() != zone.as_ref() {
                    engine.zone_changed(&target.state);
                }
            }
            None => {
                if let Ok(zone) = Zone::get(zone, now) {
                    *states.targets.get_or_create(*id).zone.lock() = Some(Arc::new(zone));
                }
            }
        }
    }
    // A reservation that had expired when the snapshot was taken stays
    // expired, even on a clock behind the snapshot's.
    let at = now.max(image.created_ms);
    for (i, shard_image) in image.shards.into_iter().enumerate() {
        let mut shard = engine.table().lock(i);
        for live in shard.restore(shard_image, at, publisher) {
            engine.expired(&routing, &live);
        }
    }
    recount_live(engine);
}

/// Sets every target's concurrency and live-call gauges from the restored
/// reservations and calls. The counters were copied after the shards, so
/// what happened in between is in one and not the other: for what is live
/// now, the restored table is the truth. (The hourly to hard counts keep
/// the copied values, taken to err high: see `encode_into`.)
fn recount_live(engine: &Engine) {
    let mut live: ahash::AHashMap<Sym, (u32, u32)> = ahash::AHashMap::new();
    for shard in engine.table().shards() {
        let shard = shard.lock();
        for (_, l) in shard.lives() {
            if let (Some(target), Some(_)) = (l.target, l.counted_ms) {
                live.entry(target).or_default().0 += 1;
            }
        }
        for (_, r) in shard.records.iter() {
            if let (Status::Claimed, None, Some(target)) = (r.status, r.end(), r.target) {
                let (slots, calls) = live.entry(target).or_default();
                *slots += 1;
                *calls += 1;
            }
        }
    }
    for (id, state) in engine.states().targets.all() {
        let (slots, calls) = live.get(&id).copied().unwrap_or_default();
        state.counters.concurrency.set(slots);
        state.counters.calls.set(calls);
    }
}

/// The file for a snapshot taken at `created_ms`.
pub fn file_name(created_ms: u64) -> String {
    format!("{PREFIX}{created_ms:013}{SUFFIX}")
}

/// Writes a snapshot of `engine` into `dir`, crash-safe: streamed into a
/// temporary file (so no copy of the whole table is ever in memory), its
/// header filled in last, fsynced, renamed into place, the folder fsynced.
pub fn write(engine: &Engine, dir: &Path) -> io::Result<Written> {
    use std::io::{Seek, SeekFrom};
    let started = Instant::now();
    fs::create_dir_all(dir)?;
    let tmp = dir.join(".snapshot.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&[0u8; HEADER])?;
    let mut crc = crc32fast::Hasher::new();
    let mut length = 0u64;
    let created_ms = encode_into(engine, |piece| {
        crc.update(piece);
        length += piece.len() as u64;
        file.write_all(piece)
    })?;
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&created_ms.to_le_bytes());
    header.extend_from_slice(&length.to_le_bytes());
    header.extend_from_slice(&crc.finalize().to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    file.sync_all()?;
    drop(file);
    // Named after the time it was taken, but always after the newest one
    // there: with the clock set back, a new snapshot must still be the
    // newest (the one restored, and not the one pruned).
    let newest = list(dir)?.first().and_then(|p| name_ms(p));
    let name = newest.map_or(created_ms, |n| created_ms.max(n + 1));
    let path = dir.join(file_name(name));
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    for old in list(dir)?.into_iter().skip(KEEP) {
        let _ = fs::remove_file(old);
    }
    Ok(Written { path, bytes: HEADER as u64 + length, duration: started.elapsed() })
}

/// The time in a snapshot file's name.
fn name_ms(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok()
}

/// Snapshot files in `dir`, newest first.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    files.reverse();
    Ok(files)
}

/// The header of a snapshot: (format version, created ms, payload length,
/// checksum).
struct Header {
    version: u32,
    created_ms: u64,
    length: u64,
    crc: u32,
}

fn header(bytes: &[u8]) -> Result<Header, Error> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(if bytes.len() >= 8 && &bytes[..8] == MAGIC {
            Error::Truncated { expected: HEADER as u64, found: bytes.len() as u64 }
        } else {
            Error::NotASnapshot
        });
    }
    let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let long = |at: usize| u64::from(word(at)) | (u64::from(word(at + 4)) << 32);
    Ok(Header { version: word(8), created_ms: long(12), length: long(20), crc: word(28) })
}

/// Checks and decodes a whole snapshot file's bytes.
pub fn decode(bytes: &[u8]) -> Result<Image, Error> {
    let h = header(bytes)?;
    if h.version > VERSION {
        return Err(Error::FutureVersion(h.version));
    }
    if h.version < OLDEST {
        return Err(Error::Decode(format!("format {} is not readable by this build", h.version)));
    }
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != h.length {
        return Err(Error::Truncated { expected: h.length, found: payload.len() as u64 });
    }
    if crc32fast::hash(payload) != h.crc {
        return Err(Error::Checksum);
    }
    let bad = |e: postcard::Error| Error::Decode(e.to_string());
    let (preamble, mut rest): (Preamble, _) = postcard::take_from_bytes(payload).map_err(bad)?;
    if preamble.shards as usize != SHARDS || preamble.created_ms != h.created_ms {
        return Err(Error::Decode("the preamble does not match the header".to_owned()));
    }
    let mut shards = Vec::with_capacity(SHARDS);
    for _ in 0..SHARDS {
        let (shard, tail): (ShardIn, _) = postcard::take_from_bytes(rest).map_err(bad)?;
        shards.push(shard);
        rest = tail;
    }
    let (globals, mut tail): (Globals, _) = postcard::take_from_bytes(rest).map_err(bad)?;
    let mut zones = Zones::new();
    if h.version >= 3 {
        (zones, tail) = postcard::take_from_bytes(tail).map_err(bad)?;
    }
    if !tail.is_empty() {
        return Err(Error::Decode(format!("{} bytes after the end", tail.len())));
    }
    Ok(Image { created_ms: h.created_ms, shards, globals, zones })
}

/// Reads and decodes a snapshot file.
pub fn read(path: &Path) -> Result<Image, Error> {
    let bytes = fs::read(path).map_err(|e| Error::Io(e.to_string()))?;
    decode(&bytes)
}

/// The newest good snapshot in `dir`. A bad one is reported (and the next
/// older tried); if snapshots exist and none is good, that is an error: a
/// start must never be silently empty.
///
/// When an older one is good, the bad ones are renamed with [`BAD_SUFFIX`]:
/// kept for a look (`rtbd snapshot inspect`), but no longer among the
/// snapshots, so the next snapshots written do not prune the good one
/// while keeping a bad one.
///
/// A file that cannot be read at all (permissions, a disk error) is not
/// known to be bad: that is an error too, rather than a fall back to older
/// state that would set the newer aside.
pub fn load_newest(dir: &Path) -> Result<Option<(PathBuf, Image)>, String> {
    let files = list(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let (mut failures, mut bad) = (Vec::new(), Vec::new());
    for path in &files {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            // Gone since it was listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(format!(
                    "cannot read the snapshot {}: {e}. Fix that, or move the file aside to start \
                     from an older snapshot.",
                    path.display()
                ));
            }
        };
        match decode(&bytes) {
            Ok(image) => {
                if !failures.is_empty() {
                    tracing::error!(
                        "snapshot {} is bad; fell back to the older {}",
                        failures.join("; "),
                        path.display()
                    );
                }
                for path in bad {
                    set_aside(path);
                }
                return Ok(Some((path.clone(), image)));
            }
            Err(e) => {
                tracing::error!("snapshot {} cannot be used: {e}", path.display());
                failures.push(format!("{}: {e}", path.display()));
                bad.push(path);
            }
        }
    }
    if failures.is_empty() {
        Ok(None)
    } else {
        Err(format!(
            "no usable snapshot in {}: {}. Move the files aside to start empty.",
            dir.display(),
            failures.join("; ")
        ))
    }
}

/// Added to the name of a snapshot found bad at start.
pub const BAD_SUFFIX: &str = ".bad";

/// Renames a bad snapshot out of the list of snapshots.
fn set_aside(path: &Path) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(BAD_SUFFIX);
    match fs::rename(path, &aside) {
        Ok(()) => {
            tracing::warn!("bad snapshot {} renamed to {}", path.display(), Path::new(&aside).display())
        }
        Err(e) => tracing::error!("cannot rename the bad snapshot {}: {e}", path.display()),
    }
}

/// `rtbd snapshot inspect FILE`: what a snapshot holds, and whether its
/// checksum is good.
pub fn inspect(path: &Path) -> Result<String, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let mut out = format!("{}\n", path.display());
    let h = header(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    out.push_str(&format!("  format version: {}\n", h.version));
    out.push_str(&format!("  taken at:       {}\n", crate::clock::rfc3339(h.created_ms)));
    out.push_str(&format!("  payload:        {} bytes\n", h.length));
    let payload = &bytes[HEADER..];
    let checksum_ok = payload.len() as u64 == h.length && crc32fast::hash(payload) == h.crc;
    out.push_str(&format!("  checksum:       {}\n", if checksum_ok { "good" } else { "BAD" }));
    match decode(&bytes) {
        Ok(image) => {
            out.push_str(&format!("  live reservations: {}\n", image.live()));
            out.push_str(&format!("  records:           {}\n", image.records()));
            out.push_str(&format!("  live calls:        {}\n", image.live_calls()));
            out.push_str(&format!("  targets:           {}\n", image.globals.targets.len()));
            out.push_str(&format!("  keys:              {}\n", image.globals.keys.len()));
            out.push_str(&format!("  publishers:        {}\n", image.globals.publishers.len()));
            out.push_str(&format!("  shield pairs:      {}\n", image.globals.shield.len()));
            Ok(out)
        }
        Err(e) => Err(format!("{out}  unusable: {e}")),
    }
}
