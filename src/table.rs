//! The sharded reservation table: live reservations by caller number, every
//! ping's record by uuid, and the timing wheel that expires reservations.
//!
//! The table is an array of 64 locks, each guarding one [`Shard`]. A caller
//! number always hashes to the same shard, and the low 6 bits of every uuid
//! the engine hands out name the shard of its caller, so a ping (by caller)
//! and a confirm, claim or call end (by uuid) each take exactly one lock. A
//! shard holds 1/64 of the table, so a snapshot that copies it shard by shard
//! never stops pings for longer than one shard's copy.
//!
//! Inside a shard:
//! - `records`: the record of every ping, in a ring by sequence number (see
//!   `records`). A reservation's terms live in its record and nowhere else.
//! - `live`: an index of the live reservations and pings in flight (see
//!   `index`), 8 bytes each: part of the caller's hash, the record's
//!   sequence number, and when the wheel hands it out. A ping for a new
//!   caller probes one cache line of it and finds nothing without reading
//!   any record; the Ping Shield's echo and a call's claim read the one
//!   record it points at.
//! - `wheel`: the sequence numbers of reservations by expiry time.
//!
//! An expiring reservation leaves its index entry behind. Taking it out at
//! once would cost a cache miss a TTL after the entry was written, for
//! every reservation. Lookups skip an entry whose record is no longer live
//! anyway, and the entry says when the wheel hands it out, so when the
//! index is full, one pass in memory order drops every entry the wheel has
//! handed out since the last pass, without reading any record. (A
//! reservation held for more than 50 s is taken out as it expires, as
//! its entry may carry no due time.)
//!
//! Why an index into the records rather than a map of copied terms: at a
//! million live reservations the index is 1/7 of the size, so the ping path
//! misses cache less and memory per reservation is mostly its record.
//!
//! Why `parking_lot::Mutex` and not a `tokio::sync::Mutex`: no lock is ever
//! held across an `.await`, and the critical sections are a few hash-table
//! operations, so a blocking lock is both correct and faster.

use std::ops::{Deref, DerefMut};

use ahash::AHashMap;
use crossbeam::utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;

use crate::ids;
use crate::index::{self, Geometry, Index, NEVER};
use crate::phone::Phone;
use crate::records::{Record, Records};
use crate::status::Status;
use crate::sym::Sym;
use crate::wheel::Wheel;

/// Number of shards: as many as the shard bits of a uuid can name.
pub const SHARDS: usize = 1 << ids::SHARD_BITS;

/// Which earlier reservations a new ping collides with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Reservations made on the same RTB key.
    Key(Sym),
    /// Reservations made on any key of the same campaign; those of `own`
    /// (the key asking) come first.
    Campaign { campaign: Sym, own: Sym },
}

/// A live reservation (or a ping still in flight) and its terms: a copy of
/// what its record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    pub uuid: u128,
    pub key: Sym,
    pub campaign: Sym,
    /// `Processing`, `Reserved` or `Confirmed`.
    pub status: Status,
    pub expires_ms: u64,
    /// The chosen target (`None` while in flight).
    pub target: Option<Sym>,
    pub inbound: Option<Phone>,
    /// Thousandths of a dollar.
    pub payout_milli: u64,
    pub seconds: u32,
    /// When the reservation was counted into its target's caps.
    pub counted_ms: Option<u64>,
    /// The publisher's index (see `state::Publishers`).
    pub publisher: u32,
}

impl Live {
    pub fn of(uuid: u128, record: &Record) -> Live {
        Live {
            uuid,
            key: record.key,
            campaign: record.campaign,
            status: record.status,
            expires_ms: record.expires_ms,
            target: record.target,
            inbound: record.inbound,
            payout_milli: record.payout_milli,
            seconds: record.seconds,
            counted_ms: record.counted_ms(),
            publisher: record.publisher,
        }
    }

    /// True while it holds its target: in flight, or not yet expired.
    pub fn is_live(&self, now_ms: u64) -> bool {
        holds(self.status, self.expires_ms, now_ms)
    }
}

/// Whether `record` was made within `scope`.
pub fn in_scope(record: &Record, scope: Scope) -> bool {
    match scope {
        Scope::Key(k) => record.key == k,
        Scope::Campaign { campaign, .. } => record.campaign == campaign,
    }
}

fn is_live(record: &Record, now_ms: u64) -> bool {
    holds(record.status, record.expires_ms, now_ms)
}

/// The one rule of liveness: a ping in flight, or a reservation not yet
/// past its time.
fn holds(status: Status, expires_ms: u64, now_ms: u64) -> bool {
    status == Status::Processing || expires_ms > now_ms
}

pub struct Table {
    shards: Box<[CachePadded<Cell>]>,
    /// The hasher of every shard's live index.
    hasher: ahash::RandomState,
}

/// A shard and its lock, and where its live index and next record are,
/// for a ping to ask for before it takes the lock (see
/// [`Table::prefetch`]). `repr(C)` keeps the two in one cache line: the
/// lock's line moves to the core of each ping of the shard anyway, and
/// where the index is is written with every record (as the lock is let
/// go, see [`Locked`]), so in a line of its own it would move too.
#[repr(C)]
pub struct Cell {
    geometry: Geometry,
    shard: Mutex<Shard>,
}

impl Cell {
    #[inline]
    pub fn lock(&self) -> Locked<'_> {
        Locked { shard: self.shard.lock(), geometry: &self.geometry }
    }
}

/// A locked shard. When it is let go, it first writes where the shard's
/// live index and next record now are.
pub struct Locked<'a> {
    shard: MutexGuard<'a, Shard>,
    geometry: &'a Geometry,
}

impl Deref for Locked<'_> {
    type Target = Shard;

    #[inline]
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl DerefMut for Locked<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }
}

impl Drop for Locked<'_> {
    #[inline]
    fn drop(&mut self) {
        self.geometry.set(&self.shard.live, self.shard.records.next_slot());
    }
}

impl Table {
    /// An empty table whose wheels start at `now_ms`.
    pub fn new(now_ms: u64) -> Table {
        let hasher = ahash::RandomState::new();
        let shards: Box<[CachePadded<Cell>]> = (0..SHARDS)
            .map(|_| {
                CachePadded::new(Cell {
                    geometry: Geometry::default(),
                    shard: Mutex::new(Shard::new(now_ms, hasher.clone())),
                })
            })
            .collect();
        for cell in shards.iter() {
            drop(cell.lock());
        }
        Table { shards, hasher }
    }

    /// Asks the CPU to fetch the line of the live index a ping for
    /// `caller` will probe first: it comes while the ping does its other
    /// checks, rather than after it has the shard's lock.
    #[inline]
    pub fn prefetch(&self, caller: Phone) {
        let key = index::key(self.hasher.hash_one(caller.digits()));
        self.shards[Self::shard_of_caller(caller)].geometry.prefetch(key, crate::records::SLOT_SIZE);
    }

    /// The shard of a caller number. A fixed multiplicative hash, not a
    /// seeded one: uuids carry their shard, so the mapping must not change
    /// across restarts. The tables inside a shard use random seeds.
    #[inline]
    pub fn shard_of_caller(caller: Phone) -> usize {
        (caller.digits().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize
    }

    /// The shard a uuid was issued from.
    #[inline]
    pub fn shard_of_uuid(uuid: u128) -> usize {
        ids::shard_of(uuid)
    }

    #[inline]
    pub fn lock(&self, shard: usize) -> Locked<'_> {
        self.shards[shard % SHARDS].lock()
    }

    /// Every shard in turn (for the expiry tick, stats and snapshots).
    pub fn shards(&self) -> impl Iterator<Item = &Cell> {
        self.shards.iter().map(|s| &**s)
    }
}

pub struct Shard {
    /// An entry (see `index`) for every live reservation and ping in
    /// flight, and the entries of reservations expired since the last sweep.
    /// A caller may have several (one per key).
    live: Index,
    /// Live reservations and pings in flight: the entries not left over.
    lives: usize,
    hasher: ahash::RandomState,
    pub records: Records,
    /// Caller → (target, when) of the calls it made, for `dedupe_secs`.
    history: AHashMap<u64, SmallVec<[(Sym, u64); 2]>>,
    /// Size of `history` after its last sweep.
    history_swept: usize,
    /// Record sequence numbers by expiry time, in the wheel's time: the
    /// clock's plus `skew_ms`.
    wheel: Wheel<u64>,
    /// How far the wheel's time is ahead of the clock: the sum of the
    /// clock's steps back. A wheel's time never goes back (the index's due
    /// times count on it), so a clock set back moves the wheel's time away
    /// from it instead, and an expiry time is placed in the wheel at its
    /// distance from the clock.
    skew_ms: u64,
    /// What the wheel hands out at a tick, kept to reuse its buffer.
    due: Vec<u64>,
}

impl Shard {
    fn new(now_ms: u64, hasher: ahash::RandomState) -> Shard {
        Shard {
            live: Index::default(),
            lives: 0,
            hasher,
            records: Records::default(),
            history: AHashMap::new(),
            history_swept: 0,
            wheel: Wheel::new(now_ms),
            skew_ms: 0,
            due: Vec::new(),
        }
    }

    /// A time of the clock in the wheel's time (see `skew_ms`).
    #[inline]
    fn on_wheel(&self, clock_ms: u64) -> u64 {
        clock_ms.saturating_add(self.skew_ms)
    }

    #[inline]
    fn hash(&self, caller: u64) -> u64 {
        self.hasher.hash_one(caller)
    }

    /// The records of the caller's live entries, with their uuids.
    fn live_of(&self, caller: Phone) -> impl Iterator<Item = (u128, &Record)> {
        let digits = caller.digits();
        let next = self.records.next_seq();
        self.live
            .find(index::key(self.hash(digits)))
            .filter_map(move |e| self.records.by_seq(index::seq_of(e, next)))
            .filter(move |(_, r)| r.live && r.caller.digits() == digits)
    }

    /// The targets `caller` reached by a call, and when.
    #[inline]
    pub fn history(&self, caller: Phone) -> &[(Sym, u64)] {
        self.history.get(&caller.digits()).map_or(&[], |h| h.as_slice())
    }

    /// Notes that `caller` reached `target` at `at_ms`. Entries older than
    /// `horizon_ms` (the longest `dedupe_secs`) are dropped on the way, and
    /// now and then from every caller in one sweep.
    pub fn reached(&mut self, caller: Phone, target: Sym, at_ms: u64, horizon_ms: u64) {
        let fresh = |&(_, at): &(Sym, u64)| at + horizon_ms > at_ms;
        let entries = self.history.entry(caller.digits()).or_default();
        entries.retain(|e| e.0 != target && fresh(e));
        entries.push((target, at_ms));
        if self.history.len() > 2 * self.history_swept + 1024 {
            self.history.retain(|_, entries| {
                entries.retain(|e| fresh(e));
                !entries.is_empty()
            });
            self.history_swept = self.history.len();
        }
    }

    /// The caller's live reservation or ping in flight in `scope`. Across
    /// a campaign, the asking key's own comes first, then a reservation
    /// before a ping still in flight, then the newest ping.
    #[inline]
    pub fn find_live(&self, caller: Phone, scope: Scope, now_ms: u64) -> Option<Live> {
        let mut found = self.live_of(caller).filter(|(_, r)| in_scope(r, scope) && is_live(r, now_ms));
        let best = match scope {
            Scope::Key(_) => found.next(),
            Scope::Campaign { own, .. } => found
                .max_by_key(|&(uuid, r)| (r.key == own, r.status != Status::Processing, ids::seq_of(uuid))),
        };
        best.map(|(uuid, r)| Live::of(uuid, r))
    }

    /// The caller's reservation on `inbound`: a live one if there is one
    /// (the newest, when keys of one campaign share a number), else one past
    /// its time that the tick has not expired yet.
    pub fn find_for_call(&self, caller: Phone, inbound: Phone, now_ms: u64) -> Option<Live> {
        let on_number = || {
            self.live_of(caller).filter(move |(_, r)| r.status.is_reservation() && r.inbound == Some(inbound))
        };
        // Newest by sequence number: a caller's records are all in one
        // shard, numbered in the order they were made.
        on_number()
            .filter(|(_, r)| is_live(r, now_ms))
            .max_by_key(|(uuid, _)| ids::seq_of(*uuid))
            .or_else(|| on_number().next())
            .map(|(uuid, r)| Live::of(uuid, r))
    }

    /// A live entry by uuid.
    pub fn live(&self, uuid: u128) -> Option<Live> {
        self.records.get(uuid).filter(|r| r.live).map(|r| Live::of(uuid, r))
    }

    /// Makes the record of `uuid` (added with [`Shard::add_record`]) live: a
    /// reservation, scheduled for expiry, or a ping in flight. False if
    /// there is no such record.
    pub fn add_live(&mut self, uuid: u128) -> bool {
        let Some(record) = self.records.get_mut(uuid) else { return false };
        if record.live {
            return true;
        }
        record.live = true;
        let (caller, expires_ms, reservation) =
            (record.caller.digits(), record.expires_ms, record.status.is_reservation());
        self.index(ids::seq_of(uuid), caller, expires_ms, reservation);
        true
    }

    /// Puts a record's sequence number in the live index, and in the wheel
    /// if it is a reservation.
    fn index(&mut self, seq: u64, caller: u64, expires_ms: u64, reservation: bool) {
        let wheel_ms = self.wheel.now();
        let due = if reservation {
            let at = self.on_wheel(expires_ms);
            self.wheel.insert(at, seq);
            // A time the wheel has passed (the clock was set back since the
            // last tick) is handed out at its next turn.
            index::due(at.max(wheel_ms + 1), wheel_ms)
        } else {
            NEVER
        };
        // Full: drop the left-over entries first, if that frees enough to
        // matter, rather than grow with them.
        let left_over = self.live.len() - self.lives;
        if self.live.len() >= self.live.capacity() && left_over > self.live.len() / 16 {
            self.sweep();
        }
        let key = index::key(self.hash(caller));
        self.live.insert(index::entry(key, seq, due));
        self.lives += 1;
    }

    /// Drops the entries of reservations the wheel has handed out, in one
    /// pass over the index in memory order. An entry with no due time
    /// (a ping in flight, or a reservation further ahead than due times
    /// reach) goes if its record is no longer live.
    fn sweep(&mut self) {
        let wheel_ms = self.wheel.now();
        let next = self.records.next_seq();
        let records = &self.records;
        self.live.retain(|e| match index::due_of(e) {
            NEVER => records.by_seq(index::seq_of(e, next)).is_some_and(|(_, r)| r.live),
            _ => !index::handed_out(e, wheel_ms),
        });
    }

    /// Gives the entry of `seq` a new due time: the wheel holds its
    /// reservation until `at_ms` after all.
    fn redate(&mut self, caller: u64, seq: u64, at_ms: u64) {
        let key = index::key(self.hash(caller));
        let next = self.records.next_seq();
        let due = index::due(at_ms, self.wheel.now());
        self.live.replace(key, |e| index::seq_of(e, next) == seq, index::entry(key, seq, due));
    }

    /// Takes a live entry out of the index: the reservation was claimed,
    /// expired or released, or the ping in flight has finished. Its record
    /// stays, with the status it has.
    pub fn take_live(&mut self, uuid: u128) -> Option<Live> {
        let (live, caller) = self.unmark(uuid)?;
        self.unindex(caller, ids::seq_of(uuid));
        Some(live)
    }

    /// Marks a live record no longer live, its index entry left where it is
    /// (see [`Shard::unindex`]). Returns what it held, and its caller.
    fn unmark(&mut self, uuid: u128) -> Option<(Live, u64)> {
        let record = self.records.get_mut(uuid).filter(|r| r.live)?;
        record.live = false;
        self.lives -= 1;
        Some((Live::of(uuid, record), record.caller.digits()))
    }

    /// Takes the entry of record `seq` out of the live index.
    fn unindex(&mut self, caller: u64, seq: u64) {
        let key = index::key(self.hash(caller));
        let next = self.records.next_seq();
        self.live.remove(key, |e| index::seq_of(e, next) == seq);
    }

    /// Takes a live reservation past its time out of the index, and writes
    /// `expired` into its record. The status is derived from the time
    /// anyway; written, it holds even if the clock is set back.
    pub fn take_expired(&mut self, uuid: u128) -> Option<Live> {
        let live = self.take_live(uuid)?;
        self.write_expired(uuid);
        Some(live)
    }

    fn write_expired(&mut self, uuid: u128) {
        if let Some(record) = self.records.get_mut(uuid).filter(|r| r.status.is_reservation()) {
            record.status = Status::Expired;
        }
    }

    /// The newest reservation of `caller` on `inbound`, live or not, while
    /// its record is kept.
    pub fn last_reservation(&self, caller: Phone, inbound: Phone) -> Option<u128> {
        self.records.newest(caller, |r| r.inbound == Some(inbound) && r.target.is_some())
    }

    /// Takes out every live reservation whose expiry time has come. Their
    /// index entries stay until a sweep (see the module's notes).
    pub fn expire(&mut self, now_ms: u64, expired: &mut Vec<Live>) {
        let mut due = std::mem::take(&mut self.due);
        let wheel_ms = self.on_wheel(now_ms);
        if wheel_ms < self.wheel.now() {
            // The clock was set back: the wheel stays where it is, and the
            // clock's time is that far behind it from now on.
            self.skew_ms += self.wheel.now() - wheel_ms;
        }
        self.wheel.advance(wheel_ms.max(self.wheel.now()), &mut due);
        for seq in due.drain(..) {
            let Some((uuid, record)) = self.records.by_seq(seq) else { continue };
            if !record.live {
                continue;
            }
            if !is_live(record, now_ms) {
                // A reservation held longer than due times reach may have
                // an entry with none (see `index::due`), which a sweep
                // could only drop by reading its record: it goes now.
                let long = record.expires_ms.saturating_sub(record.created_ms) > index::DUE_AHEAD_MS / 2;
                let Some((live, caller)) = self.unmark(uuid) else { continue };
                self.write_expired(uuid);
                if long {
                    self.unindex(caller, seq);
                }
                expired.push(live);
            } else if record.status.is_reservation() {
                // Due by the wheel but not by the clock: placed before the
                // clock was set back (or since, before this tick saw the
                // step). It goes back in at its time by the clock.
                let at = self.on_wheel(record.expires_ms).max(self.wheel.now() + 1);
                let caller = record.caller.digits();
                self.wheel.insert(at, seq);
                self.redate(caller, seq, at);
            }
        }
        self.due = due;
    }

    /// Drops records past retention or over `max` (survivors too when
    /// `survivors` is set: the tick does that, a ping does not).
    pub fn evict(&mut self, now_ms: u64, retention_ms: u64, max: usize, survivors: bool) {
        self.records.evict(now_ms, retention_ms, max);
        if survivors {
            self.records.evict_survivors(now_ms, retention_ms, max);
        }
    }

    /// A fresh uuid for a new record of this shard.
    pub fn new_uuid(&self, shard: usize) -> u128 {
        ids::new_uuid(shard, self.records.next_seq())
    }

    /// Adds the record made with the last [`Shard::new_uuid`], live (see
    /// [`Shard::add_live`]) or not. Making it live here rather than after
    /// spares reading back a record just copied into the ring.
    pub fn add_record(&mut self, uuid: u128, mut record: Record, live: bool) {
        record.live = live;
        let (caller, expires_ms, reservation) =
            (record.caller.digits(), record.expires_ms, record.status.is_reservation());
        self.records.insert(uuid, record);
        if live {
            self.index(ids::seq_of(uuid), caller, expires_ms, reservation);
        }
    }

    /// Live reservations and pings in flight.
    pub fn live_count(&self) -> usize {
        self.lives
    }

    /// Every live entry, with its caller.
    pub fn lives(&self) -> impl Iterator<Item = (u64, Live)> {
        let next = self.records.next_seq();
        self.live.iter().filter_map(move |e| {
            let (uuid, record) = self.records.by_seq(index::seq_of(e, next)).filter(|(_, r)| r.live)?;
            Some((record.caller.digits(), Live::of(uuid, record)))
        })
    }

    /// Entries waiting in the expiry wheel.
    pub fn scheduled(&self) -> usize {
        self.wheel.len()
    }

    /// This shard as a snapshot keeps it: the records `keep` admits (live
    /// reservations among them, marked as such) and the call history. Pings
    /// in flight are left out: their buyers' answers die with the process.
    pub fn image(&self, keep: impl Fn(&Record) -> bool) -> ShardOut<'_> {
        let kept = |r: &Record| r.status != Status::Processing && (r.live || keep(r));
        ShardOut {
            records: self.records.iter().filter(|(_, r)| kept(r)).collect(),
            history: self.history.iter().map(|(&caller, h)| (caller, h.as_slice())).collect(),
        }
    }

    /// Restores a shard from a snapshot taken before a restart. Returns the
    /// live reservations whose time passed meanwhile: the caller expires
    /// them (and gives their counts back).
    /// `publisher` maps the snapshot's publisher indices to this process's.
    pub fn restore(&mut self, image: ShardIn, now_ms: u64, publisher: impl Fn(u32) -> u32) -> Vec<Live> {
        let mut records = image.records;
        records.sort_by_key(|(_, r)| r.created_ms);
        // New records are numbered after every restored one, first: the
        // restored ones (with gaps where records were left out) are all
        // kept aside from the ring, so no number is ever given twice.
        if let Some(seq) = records.iter().map(|(uuid, _)| ids::seq_of(*uuid)).max() {
            self.records.resume_after(seq);
        }
        let mut live = Vec::new();
        for (uuid, mut record) in records {
            record.publisher = publisher(record.publisher);
            if record.live && record.status.is_reservation() {
                live.push(uuid);
            }
            self.add_record(uuid, record, false);
        }
        let mut expired = Vec::new();
        for uuid in live {
            let Some(record) = self.records.get_mut(uuid) else { continue };
            if is_live(record, now_ms) {
                self.add_live(uuid);
            } else {
                expired.push(Live::of(uuid, record));
                record.status = Status::Expired;
            }
        }
        for (caller, entries) in image.history {
            self.history.insert(caller, entries.into_iter().collect());
        }
        expired
    }
}

/// A shard, borrowed for a snapshot.
#[derive(serde::Serialize)]
pub struct ShardOut<'a> {
    pub records: Vec<(u128, &'a Record)>,
    pub history: Vec<(u64, &'a [(Sym, u64)])>,
}

/// A shard read back from a snapshot (the same encoding as [`ShardOut`]).
#[derive(serde::Deserialize)]
pub struct ShardIn {
    pub records: Vec<(u128, Record)>,
    pub history: Vec<(u64, Vec<(Sym, u64)>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Adds a live reservation for `caller` (its record first, as the
    /// engine does) and returns its uuid.
    fn reserve(shard: &mut Shard, caller: Phone, expires_ms: u64) -> u128 {
        let uuid = shard.new_uuid(Table::shard_of_caller(caller));
        let mut record =
            Record::new(0, caller, Sym::intern("table-test-key"), Sym::intern("table-test-campaign"), 0);
        record.status = Status::Reserved;
        record.expires_ms = expires_ms;
        shard.add_record(uuid, record, true);
        uuid
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Threads adding and taking live entries for shared callers at once
        /// leave exactly what each thread's own sequence says: nothing is
        /// lost, nothing appears twice.
        #[test]
        fn concurrent_inserts_and_removals_lose_nothing(
            plans in proptest::collection::vec(proptest::collection::vec((0u64..20, any::<bool>()), 1..200), 2..5)
        ) {
            let table = std::sync::Arc::new(Table::new(0));
            let threads: Vec<_> = plans.iter().cloned().map(|plan| {
                let table = table.clone();
                std::thread::spawn(move || {
                    let mut expected = BTreeSet::new();
                    for (caller, take) in plan {
                        let caller = Phone::from_digits(18_005_550_000 + caller).unwrap();
                        let mut shard = table.lock(Table::shard_of_caller(caller));
                        let mine = expected.iter().copied().find(|(c, _)| *c == caller.digits());
                        match (take, mine) {
                            (true, Some((c, uuid))) => {
                                assert!(shard.take_live(uuid).is_some(), "lost {uuid}");
                                expected.remove(&(c, uuid));
                            }
                            _ => {
                                let uuid = reserve(&mut shard, caller, u64::MAX);
                                expected.insert((caller.digits(), uuid));
                            }
                        }
                    }
                    expected
                })
            }).collect();
            let mut expected = BTreeSet::new();
            for t in threads {
                expected.extend(t.join().unwrap());
            }
            let mut found = BTreeSet::new();
            for shard in table.shards() {
                let shard = shard.lock();
                prop_assert_eq!(shard.live_count(), shard.lives().count());
                for (caller, l) in shard.lives() {
                    prop_assert!(found.insert((caller, l.uuid)), "{} twice", l.uuid);
                }
            }
            prop_assert_eq!(found, expected);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A ping for caller `c` on key `k` reserves for `ttl` ms.
        Reserve { c: u64, k: usize, ttl: u64 },
        /// The n-th live reservation (in the model's order) is claimed.
        Take(usize),
        /// Time passes; the tick expires what is due and drops old records.
        Advance(u64),
        /// The clock is set back, then the tick runs.
        Back(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..6, 0usize..2, 1u64..80).prop_map(|(c, k, ttl)| Op::Reserve { c, k, ttl }),
            1 => (0usize..16).prop_map(Op::Take),
            2 => (0u64..40).prop_map(Op::Advance),
            1 => (1u64..100).prop_map(Op::Back),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// One shard against a model: the live index, the expiry wheel and
        /// record eviction (with a bound far below what is live) agree on
        /// what is live, what expires and when (by the clock, set back at
        /// times), and a live reservation's record is never dropped.
        #[test]
        fn a_shard_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..120)) {
            let keys = [Sym::intern("table-model-a"), Sym::intern("table-model-b")];
            let mut shard = Shard::new(0, ahash::RandomState::new());
            // (caller, key, uuid, expires) of every entry in the live index.
            let mut model: Vec<(Phone, Sym, u128, u64)> = Vec::new();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Reserve { c, k, ttl } => {
                        let caller = Phone::from_digits(18_005_550_000 + c).unwrap();
                        // The engine echoes a live one rather than reserve twice.
                        if shard.find_live(caller, Scope::Key(keys[k]), now).is_some() {
                            continue;
                        }
                        let uuid = shard.new_uuid(0);
                        let mut record = Record::new(now, caller, keys[k], keys[k], 0);
                        record.status = Status::Reserved;
                        record.expires_ms = now + ttl;
                        // Half made live with the record, half after.
                        shard.add_record(uuid, record, c % 2 == 0);
                        prop_assert!(shard.add_live(uuid));
                        model.push((caller, keys[k], uuid, now + ttl));
                    }
                    Op::Take(n) => {
                        if model.is_empty() {
                            continue;
                        }
                        let (_, _, uuid, _) = model.remove(n % model.len());
                        prop_assert!(shard.take_live(uuid).is_some());
                        prop_assert!(shard.take_live(uuid).is_none());
                    }
                    Op::Advance(dt) | Op::Back(dt) => {
                        now = if matches!(op, Op::Back(_)) { now.saturating_sub(dt) } else { now + dt };
                        let mut expired = Vec::new();
                        shard.expire(now, &mut expired);
                        let mut due: Vec<u128> =
                            model.iter().filter(|e| e.3 <= now).map(|e| e.2).collect();
                        let mut got: Vec<u128> = expired.iter().map(|l| l.uuid).collect();
                        due.sort_unstable();
                        got.sort_unstable();
                        prop_assert_eq!(got, due);
                        model.retain(|e| e.3 > now);
                        shard.evict(now, 30, 2, true);
                        if dt % 3 == 0 {
                            shard.sweep();
                        }
                    }
                }
                prop_assert_eq!(shard.live_count(), model.len());
                prop_assert_eq!(shard.lives().count(), model.len());
                // Every entry of a live record is one of the model's; the
                // rest are left over from expiries.
                let next = shard.records.next_seq();
                for e in shard.live.iter() {
                    let live = shard.records.by_seq(index::seq_of(e, next)).filter(|(_, r)| r.live);
                    if let Some((uuid, _)) = live {
                        prop_assert!(model.iter().any(|m| m.2 == uuid));
                    }
                }
                for &(caller, key, uuid, expires) in &model {
                    prop_assert!(shard.records.get(uuid).is_some_and(|r| r.live));
                    if expires > now {
                        let found = shard.find_live(caller, Scope::Key(key), now).map(|l| l.uuid);
                        prop_assert_eq!(found, Some(uuid));
                    }
                }
            }
        }
    }

    /// Records left out of a snapshot leave gaps in the sequence numbers
    /// it holds: after a restore, new records are numbered after all of
    /// them, and every restored reservation is still found by its uuid, by
    /// its caller, and by the wheel.
    #[test]
    fn a_restored_shard_never_gives_a_number_twice() {
        let phone = |n: u64| Phone::from_digits(18_005_550_000 + n).unwrap();
        let mut old = Shard::new(0, ahash::RandomState::new());
        let a = reserve(&mut old, phone(1), 1_000);
        let gap = old.new_uuid(0);
        old.add_record(
            gap,
            Record::new(0, phone(9), Sym::intern("table-test-key"), Sym::intern("c"), 0),
            false,
        );
        let b = reserve(&mut old, phone(2), 1_000);
        let out = old.image(|r| r.status.is_reservation());
        assert_eq!(out.records.len(), 2, "the no-target record is left out");
        let image = ShardIn {
            records: out.records.into_iter().map(|(u, r)| (u, r.clone())).collect(),
            history: vec![],
        };

        let mut new = Shard::new(0, ahash::RandomState::new());
        assert!(new.restore(image, 1, |p| p).is_empty());
        let c = reserve(&mut new, phone(3), 1_000);
        assert!(ids::seq_of(c) > ids::seq_of(b), "a restored number given again");
        for (uuid, caller) in [(a, phone(1)), (b, phone(2)), (c, phone(3))] {
            assert!(new.records.get(uuid).is_some_and(|r| r.live && r.caller == caller));
            let found = new.find_live(caller, Scope::Key(Sym::intern("table-test-key")), 1);
            assert_eq!(found.map(|l| l.uuid), Some(uuid));
        }
        let mut expired = Vec::new();
        new.expire(1_000, &mut expired);
        let mut got: Vec<u128> = expired.iter().map(|l| l.uuid).collect();
        let mut want = vec![a, b, c];
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(new.live_count(), 0);
    }

    #[test]
    fn a_reservation_made_after_the_clock_was_set_back_expires_on_time() {
        let mut shard = Shard::new(0, ahash::RandomState::new());
        let mut expired = Vec::new();
        let caller = Phone::from_digits(18_005_550_123).unwrap();
        let other = Phone::from_digits(18_005_550_124).unwrap();
        let before = reserve(&mut shard, other, 105_000);
        shard.expire(100_000, &mut expired);
        // The clock goes back 50 s: a new reservation's expiry is behind
        // the wheel's time (made before the tick sees the step, and after).
        let uuid = reserve(&mut shard, caller, 60_000);
        shard.expire(50_100, &mut expired);
        let after = reserve(&mut shard, caller, 62_000);
        assert!(expired.is_empty(), "expired early");
        assert_eq!(shard.live_count(), 3);
        for now in [50_200, 59_999] {
            shard.expire(now, &mut expired);
            // Live by the clock: a sweep leaves their entries.
            shard.sweep();
            assert_eq!(shard.live_count(), 3, "at {now}");
            let next = shard.records.next_seq();
            assert!(shard.live.iter().any(|e| index::seq_of(e, next) == ids::seq_of(uuid)), "swept at {now}");
        }
        // Each expires at its time by the clock, not once the clock is
        // back where the wheel was.
        shard.expire(60_000, &mut expired);
        assert_eq!(expired.iter().map(|l| l.uuid).collect::<Vec<_>>(), [uuid]);
        shard.expire(61_999, &mut expired);
        assert_eq!(expired.len(), 1);
        shard.expire(62_000, &mut expired);
        assert_eq!(expired.iter().map(|l| l.uuid).collect::<Vec<_>>(), [uuid, after]);
        // One made before the step holds its time by the clock too.
        shard.expire(104_999, &mut expired);
        assert_eq!(shard.live_count(), 1);
        shard.expire(105_000, &mut expired);
        assert_eq!(expired.iter().map(|l| l.uuid).collect::<Vec<_>>(), [uuid, after, before], "never lost");
        assert_eq!(shard.live_count(), 0);
    }

    /// Expired reservations leave their entries; once the wheel is past
    /// their due time a sweep takes them all out, and one at capacity comes
    /// before the index would grow.
    #[test]
    fn expired_entries_are_swept_before_the_index_grows() {
        let mut shard = Shard::new(0, ahash::RandomState::new());
        let phone = |n: u64| Phone::from_digits(18_005_550_000 + n).unwrap();
        let mut expired = Vec::new();
        for n in 0..1_000 {
            reserve(&mut shard, phone(n), 1_000);
        }
        let capacity = shard.live.capacity();
        shard.expire(1_000, &mut expired);
        assert_eq!((expired.len(), shard.live_count(), shard.live.len()), (1_000, 0, 1_000));
        assert_eq!(shard.lives().count(), 0);
        // Not yet past their due time, rounded up: a sweep keeps them.
        shard.sweep();
        assert_eq!(shard.live.len(), 1_000);
        shard.expire(2_048, &mut expired);
        shard.sweep();
        assert_eq!(shard.live.len(), 0);

        // A TTL's worth of reservations at a time, round after round: the
        // index is swept when full and never grows.
        let mut now = 2_048;
        for round in 0..40u64 {
            for n in 0..500 {
                reserve(&mut shard, phone(10_000 + round * 1_000 + n), now + 1_000);
            }
            now += 2_048;
            shard.expire(now, &mut expired);
            assert_eq!(shard.live_count(), 0);
        }
        assert_eq!(shard.live.capacity(), capacity, "the index grew");
        // A new reservation for a caller whose entry was left over is found,
        // the left-over one not.
        let uuid = reserve(&mut shard, phone(10_000 + 39 * 1_000), now + 1_000);
        let scope = Scope::Key(Sym::intern("table-test-key"));
        assert_eq!(shard.find_live(phone(10_000 + 39 * 1_000), scope, now).map(|l| l.uuid), Some(uuid));
    }

    /// A reservation held longer than due times reach leaves no entry
    /// behind when it expires; a short one does, until a sweep.
    #[test]
    fn a_long_reservation_is_taken_out_as_it_expires() {
        let mut shard = Shard::new(0, ahash::RandomState::new());
        let phone = |n: u64| Phone::from_digits(18_005_550_000 + n).unwrap();
        reserve(&mut shard, phone(1), 15_000);
        reserve(&mut shard, phone(2), 600_000);
        let mut expired = Vec::new();
        shard.expire(15_000, &mut expired);
        assert_eq!((expired.len(), shard.live_count(), shard.live.len()), (1, 1, 2));
        shard.expire(600_000, &mut expired);
        assert_eq!((expired.len(), shard.live_count(), shard.live.len()), (2, 0, 1));
    }

    #[test]
    fn callers_spread_over_shards() {
        let mut counts = [0usize; SHARDS];
        for n in 0..64_000u64 {
            let phone = Phone::from_digits(18_005_550_000 + n).unwrap();
            counts[Table::shard_of_caller(phone)] += 1;
        }
        // Sequential numbers must not pile into a few shards.
        assert!(counts.iter().all(|&c| (500..1_500).contains(&c)), "{counts:?}");
    }
}
