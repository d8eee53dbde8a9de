//! The record of a ping: what it asked, how every target was judged, and
//! what became of the reservation. One `Records` store lives in each shard of
//! the table, next to the reservations it describes, so a ping writes both
//! under one lock.
//!
//! A store keeps records `record_retention_secs` and at most its share of
//! `max_records`, oldest first. A record whose reservation or call is still
//! live is never dropped: the reservation's terms live in it.

use std::collections::VecDeque;
use std::num::NonZeroU64;

use ahash::AHashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use smallvec::SmallVec;

use crate::clock::rfc3339;
use crate::ids;
use crate::phone::{Dial, Phone};
use crate::status::{Detailed, Info, Status};
use crate::sym::Sym;
use crate::webhook::Pixel;

/// One step of a ping's story.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub target: Option<Sym>,
    pub status: Detailed,
    pub info: Info,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEnd {
    pub at_ms: u64,
    pub duration_secs: u32,
    pub converted: bool,
}

/// A ping's steps. Most pings have one or two (a target passed over, the
/// one chosen), kept inline in the record: no allocation, and nothing to
/// free from elsewhere in memory when the record is dropped. An event is
/// 24 bytes (its info is one pointer), so two inline cost the record 8
/// bytes more than one event of 40 bytes did.
pub type Flow = SmallVec<[Event; 2]>;

/// The parts of a record few records have, boxed so the rest stay small.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Extra {
    /// How the call ended.
    pub end: Option<CallEnd>,
    /// Every webhook call made for this ping.
    pub pixels: Vec<Pixel>,
    /// The publisher's id, when it is past the publishers tracked one by
    /// one (index 0, see `state::Publishers`).
    pub publisher: Option<Box<str>>,
    /// A SIP transfer address (phone numbers stay in the record).
    pub sip: Option<Box<str>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub created_ms: u64,
    /// When the reservation expires (0 when nothing was reserved).
    pub expires_ms: u64,
    pub caller: Phone,
    pub key: Sym,
    pub campaign: Sym,
    /// The publisher's index (see `state::Publishers`).
    pub publisher: u32,
    /// The status as last written. A reservation past its time is expired
    /// before it is written so: see [`Record::status_at`].
    pub status: Status,
    pub target: Option<Sym>,
    /// The transfer number; a SIP address is in `extra` (see
    /// [`Record::transfer`]).
    pub transfer: Option<Phone>,
    pub inbound: Option<Phone>,
    /// Thousandths of a dollar.
    pub payout_milli: u64,
    pub seconds: u32,
    pub tags: Tags,
    /// Every step so far; for a ping that reserved nothing, the last step
    /// says why.
    pub flow: Flow,
    pub extra: Option<Box<Extra>>,
    /// When the reservation was counted into its target's caps, plus one
    /// (see [`Record::counted_ms`]).
    pub counted: Option<NonZeroU64>,
    /// True while the table's live index points at this record: a live
    /// reservation, or one past its time the tick has not expired yet, or a
    /// ping in flight. Such a record is never dropped.
    pub live: bool,
}

impl Record {
    /// A new ping's record: nothing reserved yet.
    pub fn new(created_ms: u64, caller: Phone, key: Sym, campaign: Sym, publisher: u32) -> Record {
        Record {
            created_ms,
            expires_ms: 0,
            caller,
            key,
            campaign,
            publisher,
            status: Status::NoTarget,
            target: None,
            transfer: None,
            inbound: None,
            payout_milli: 0,
            seconds: 0,
            tags: Tags::default(),
            flow: Flow::new(),
            extra: None,
            counted: None,
            live: false,
        }
    }

    /// When the reservation was counted into its target's caps.
    pub fn counted_ms(&self) -> Option<u64> {
        self.counted.map(|c| c.get() - 1)
    }

    pub fn set_counted_ms(&mut self, at_ms: Option<u64>) {
        self.counted = at_ms.and_then(|ms| NonZeroU64::new(ms.saturating_add(1)));
    }

    /// Where the call goes.
    pub fn transfer(&self) -> Option<Dial> {
        match (self.transfer, self.extra.as_ref().and_then(|e| e.sip.as_ref())) {
            (Some(phone), _) => Some(Dial::Phone(phone)),
            (None, Some(sip)) => Some(Dial::Sip(sip.clone())),
            (None, None) => None,
        }
    }

    pub fn set_transfer(&mut self, dial: Dial) {
        match dial {
            Dial::Phone(phone) => self.transfer = Some(phone),
            Dial::Sip(sip) => {
                self.transfer = None;
                self.extra_mut().sip = Some(sip);
            }
        }
    }

    /// How the call ended, if it did.
    pub fn end(&self) -> Option<CallEnd> {
        self.extra.as_ref().and_then(|e| e.end)
    }

    /// The rare parts, made on first use.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The status at `now_ms`. A reservation past its time is expired even
    /// before the tick writes so (see `Shard::take_expired`).
    pub fn status_at(&self, now_ms: u64) -> Status {
        if self.status.is_reservation() && self.expires_ms <= now_ms { Status::Expired } else { self.status }
    }

    /// A reservation or call that is still live, or a ping still in flight:
    /// never dropped from the store.
    pub fn is_pinned(&self, now_ms: u64) -> bool {
        self.live
            || match self.status_at(now_ms) {
                Status::Processing | Status::Reserved | Status::Confirmed => true,
                Status::Claimed => self.end().is_none(),
                _ => false,
            }
    }

    /// Why nothing is reserved: the detailed status and info of the last
    /// step, for a record that is `no-target` or `rejected`.
    pub fn verdict(&self) -> Option<(Detailed, &Info)> {
        match self.status {
            Status::NoTarget | Status::Rejected => self.flow.last().map(|e| (e.status, &e.info)),
            _ => None,
        }
    }

    pub fn push(&mut self, at_ms: u64, target: Option<Sym>, status: Detailed, info: Info) {
        self.flow.push(Event { at_ms, target, status, info });
    }

    /// The whole record at `now_ms`, as `/call_reservations/{uuid}` shows it;
    /// `publisher` is the publisher's id.
    pub fn to_json(&self, uuid: u128, now_ms: u64, publisher: &str) -> Value {
        let money = |milli: u64| json!(milli as f64 / 1000.0);
        let tags: Map<String, Value> =
            self.tags.iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect();
        let status = self.status_at(now_ms);
        let event = |e: &Event| {
            json!({
                "at": rfc3339(e.at_ms),
                "target_id": e.target.map(Sym::as_str),
                "status": e.status.as_str(),
                "info": e.info.as_str(),
            })
        };
        let mut flow: Vec<Value> = self.flow.iter().map(event).collect();
        let end = self.end();
        let pixels = self.extra.as_ref().map_or(&[][..], |e| e.pixels.as_slice());
        // Expiry writes no step of its own (the tick would have to grow
        // the flow): it is shown here, at the reservation's expiry time.
        if status == Status::Expired && self.flow.last().is_none_or(|e| e.status != Detailed::Expired) {
            flow.push(event(&Event {
                at_ms: self.expires_ms,
                target: self.target,
                status: Detailed::Expired,
                info: Info::None,
            }));
        }
        let reserved = self.target.is_some();
        let mut out = json!({
            "uuid": uuid::Uuid::from_u128(uuid).to_string(),
            "status": status.as_str(),
            "key": self.key.as_str(),
            "campaign_id": self.campaign.as_str(),
            "publisher_id": publisher,
            "caller_number": self.caller.to_string(),
            "tags": tags,
            "created_at": rfc3339(self.created_ms),
            "expires_at": (self.expires_ms > 0).then(|| rfc3339(self.expires_ms)),
            "target_id": self.target.map(Sym::as_str),
            "transfer_number": self.transfer().map(|d| d.to_string()),
            "retreaver_payout": if reserved { money(self.payout_milli) } else { Value::Null },
            "retreaver_seconds": if reserved { json!(self.seconds) } else { Value::Null },
            "inbound_number": self.inbound.map(|p| p.to_string()),
            "converted": end.map(|e| e.converted),
            "duration_secs": end.map(|e| e.duration_secs),
            "call_flow": flow,
            "fired_pixels": pixels.iter().map(|p| json!({
                "target_id": p.target.as_str(),
                "method": p.method.as_str(),
                "url": p.url.as_ref(),
                "http_status": p.http_status,
                "latency_ms": p.latency_ms,
                "response": p.response.as_ref(),
                "outcome": p.outcome.as_ref(),
            })).collect::<Vec<_>>(),
        });
        if let Some((reason, info)) = self.verdict() {
            out["reason"] = json!(reason.as_str());
            out["info"] = json!(info.as_str());
        }
        out
    }
}

/// A ping's tags, packed as `name\0value\0…`: up to 40 bytes inline (most
/// pings' tags), so a record usually allocates nothing for them. Request
/// parsing rejects control characters, so NUL never occurs inside a tag.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags(SmallVec<[u8; TAGS_INLINE]>);

/// Bytes of packed tags a record holds without allocating.
const TAGS_INLINE: usize = 40;

/// Most bytes of packed tags (each tag's name and value, plus 2) a record
/// keeps. A ping may send 64 tags of 256 bytes, 20 KiB, and records are
/// bounded by number (`max_records`): a million such would take 20 GB.
/// The tags past it still count for routing and the buyers; the record
/// leaves them out and says how many with the tag [`TAGS_LEFT_OUT`].
pub const MAX_KEPT_TAGS: usize = 2048;

/// The tag a record ends with when it left tags out (see
/// [`MAX_KEPT_TAGS`]): how many.
pub const TAGS_LEFT_OUT: &str = "rtbd_tags_left_out";

impl Tags {
    pub fn new<'a>(tags: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Tags {
        // Sized first, then copied into place: most pings' tags fit the
        // inline buffer, zeroed so the NULs are already there.
        let (mut len, mut kept, mut all) = (0, 0, 0);
        for (name, value) in tags.clone() {
            let size = name.len() + value.len() + 2;
            if kept == all && len + size <= MAX_KEPT_TAGS {
                len += size;
                kept += 1;
            }
            all += 1;
        }
        let mut left_out = itoa::Buffer::new();
        let left_out = (kept < all).then(|| left_out.format(all - kept));
        let extra = left_out.map_or(0, |n| TAGS_LEFT_OUT.len() + n.len() + 2);
        let mut packed = SmallVec::from_elem(0, len + extra);
        let mut at = 0;
        let mut put = |name: &str, value: &str| {
            packed[at..at + name.len()].copy_from_slice(name.as_bytes());
            at += name.len() + 1;
            packed[at..at + value.len()].copy_from_slice(value.as_bytes());
            at += value.len() + 1;
        };
        for (name, value) in tags.take(kept) {
            put(name, value);
        }
        if let Some(n) = left_out {
            put(TAGS_LEFT_OUT, n);
        }
        Tags(packed)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        // Built from whole `str`s split at NULs, so every part is UTF-8.
        let text = std::str::from_utf8(&self.0).unwrap_or("");
        let mut parts = text.split_terminator('\0');
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// A uuid as two words: 8-byte aligned, so a ring slot is not padded to a
/// multiple of 16 bytes as it would be around a `u128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Id([u64; 2]);

impl Id {
    fn new(uuid: u128) -> Id {
        Id([(uuid >> 64) as u64, uuid as u64])
    }

    fn get(self) -> u128 {
        (u128::from(self.0[0]) << 64) | u128::from(self.0[1])
    }
}

/// The tag of a caller in [`Records`]' list of callers: the low and high
/// halves of its digits folded, so numbers that differ anywhere differ in
/// their tag nearly always (a tag only picks records to look at).
#[inline]
fn caller_tag(caller: Phone) -> u32 {
    let digits = caller.digits();
    (digits ^ (digits >> 32)) as u32
}

/// Takes survivor `seq` of `caller` out of the survivors' caller tags.
fn forget_survivor(callers: &mut AHashMap<u32, SmallVec<[u64; 1]>>, caller: Phone, seq: u64) {
    let tag = caller_tag(caller);
    if let Some(seqs) = callers.get_mut(&tag) {
        seqs.retain(|s| *s != seq);
        if seqs.is_empty() {
            callers.remove(&tag);
        }
    }
}

/// Bytes of a record in the ring.
pub const SLOT_SIZE: usize = size_of::<(Id, Record)>();

/// How long a live reservation at the front of the ring is waited for
/// rather than moved to the survivors.
pub const WAIT_FOR_LIVE_MS: u64 = 60_000;

/// The records of one shard: a ring in creation order, indexed by the
/// sequence number every uuid carries (see `ids`).
///
/// Written by hand because it is on every ping: adding a record appends to
/// the ring and dropping the oldest pops its front, both sequential, where a
/// hash map would cost a random memory access for each. A record still live
/// when its turn to go comes is waited for if it ends soon, else it moves to
/// `survivors` until it ends (see [`Records::evict`]).
#[derive(Default)]
pub struct Records {
    ring: VecDeque<(Id, Record)>,
    /// The caller of each record of the ring, as a 32-bit tag (see
    /// [`caller_tag`]), in the ring's order: a search by caller (a call
    /// arriving on a line with no live reservation) reads 4 bytes a record
    /// rather than a cache line of each.
    callers: VecDeque<u32>,
    /// Sequence number of `ring[0]`.
    base: u64,
    /// Records that were live when their turn to go came, and records
    /// restored from a snapshot, by sequence number. Boxed: a map has a
    /// power of two of slots, up to twice its entries, and after a restore
    /// nearly every record is here, so a slot is 16 bytes (key and
    /// pointer) rather than 216.
    survivors: AHashMap<u64, Box<(Id, Record)>>,
    /// The survivors' sequence numbers by caller tag: a search by caller
    /// reads only the survivors of its tag, not every one (after a
    /// restore, that is nearly every record of the shard).
    survivor_callers: AHashMap<u32, SmallVec<[u64; 1]>>,
    /// When the survivors were last swept.
    swept_ms: u64,
    /// The bound last passed to [`Records::evict`]: the ring's size when
    /// full.
    bound: usize,
    /// What [`Records::evict`] learned about the front record when it last
    /// stopped there, so the next ping need not read it again.
    front: Option<Front>,
    /// Survivors no longer pinned, oldest first, as last listed: they go
    /// before any record of the ring (see [`Records::drop_oldest_survivor`]).
    unpinned: VecDeque<u64>,
    /// When `unpinned` was last listed.
    listed_ms: Option<u64>,
}

/// Why the front record of the ring stays, as far as time alone goes.
#[derive(Clone, Copy, Debug)]
struct Front {
    /// Its sequence number (the hint holds while it is still the front).
    seq: u64,
    created_ms: u64,
    /// A live reservation is waited for until its expiry time.
    live_until_ms: Option<u64>,
}

impl Records {
    /// Records kept, in the ring and among the survivors.
    pub fn len(&self) -> usize {
        self.ring.len() + self.survivors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sequence number the next record must carry in its uuid.
    pub fn next_seq(&self) -> u64 {
        self.base + self.ring.len() as u64
    }

    /// Where the record of sequence number `seq` is in the ring, if it is
    /// there.
    fn offset(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq.checked_sub(self.base)?).ok().filter(|&o| o < self.ring.len())
    }

    /// The record with sequence number `seq`, and its uuid.
    pub fn by_seq(&self, seq: u64) -> Option<(u128, &Record)> {
        let (uuid, record) = match self.offset(seq) {
            Some(offset) => self.ring.get(offset)?,
            None => &**self.survivors.get(&seq)?,
        };
        Some((uuid.get(), record))
    }

    fn by_seq_mut(&mut self, seq: u64) -> Option<(u128, &mut Record)> {
        let (uuid, record) = match self.offset(seq) {
            Some(offset) => self.ring.get_mut(offset)?,
            None => &mut **self.survivors.get_mut(&seq)?,
        };
        Some((uuid.get(), record))
    }

    fn add_survivor(&mut self, seq: u64, entry: (Id, Record)) {
        self.survivor_callers.entry(caller_tag(entry.1.caller)).or_default().push(seq);
        self.survivors.insert(seq, Box::new(entry));
    }

    fn remove_survivor(&mut self, seq: u64) {
        if let Some(entry) = self.survivors.remove(&seq) {
            forget_survivor(&mut self.survivor_callers, entry.1.caller, seq);
        }
    }

    /// Where the next record added will be written, if the ring has room
    /// for it in place (an address, only to prefetch: see `index`).
    pub fn next_slot(&self) -> usize {
        let (a, b) = self.ring.as_slices();
        let last = if b.is_empty() { a } else { b };
        last.as_ptr().wrapping_add(last.len()) as usize
    }

    pub fn get(&self, uuid: u128) -> Option<&Record> {
        self.by_seq(ids::seq_of(uuid)).filter(|(u, _)| *u == uuid).map(|(_, r)| r)
    }

    pub fn get_mut(&mut self, uuid: u128) -> Option<&mut Record> {
        self.by_seq_mut(ids::seq_of(uuid)).filter(|(u, _)| *u == uuid).map(|(_, r)| r)
    }

    /// Adds a record. Its uuid carries [`Records::next_seq`]; one that does
    /// not (a record restored from a snapshot) is kept as a survivor.
    pub fn insert(&mut self, uuid: u128, record: Record) {
        let seq = ids::seq_of(uuid);
        if seq == self.next_seq() {
            // A ring moves through its whole buffer, so every slot of it
            // ends up in memory, used or not. So it grows by doubling up to
            // its bound but never past it (a full ring of 15,625 records is
            // not rounded up to 16,384), and past the bound (live
            // reservations held over it) by an eighth at a time: doubling
            // there would leave up to half of it resident and unused for
            // good.
            let (len, capacity) = (self.ring.len(), self.ring.capacity());
            if len == capacity {
                let grown = if len < self.bound {
                    (2 * len).max(16).min(self.bound)
                } else {
                    len + (len / 8).max(16)
                };
                self.ring.reserve_exact(grown - len);
                self.callers.reserve_exact(grown - len);
            }
            self.callers.push_back(caller_tag(record.caller));
            self.ring.push_back((Id::new(uuid), record));
        } else {
            self.add_survivor(seq, (Id::new(uuid), record));
        }
    }

    /// Drops the oldest records while there are more than `max` or they are
    /// older than `retention_ms`. Each record passes the front once, so this
    /// is O(1) per record however many are live.
    ///
    /// A live record at the front is not dropped: a reservation that ends
    /// within [`WAIT_FOR_LIVE_MS`] is waited for (the bound is exceeded only
    /// by live reservations, for at most that long), and a longer one (a
    /// call, a long TTL) moves to the survivors.
    ///
    /// Called on every ping, it reads the front record (a cache miss: it
    /// was written a while ago) only when the last look at it allows that
    /// it may go now.
    pub fn evict(&mut self, now_ms: u64, retention_ms: u64, max: usize) {
        self.bound = max;
        // Survivors are older than the whole ring (restored ones, or once
        // at its front), so over the bound they go first.
        while self.len() > max && !self.survivors.is_empty() && self.drop_oldest_survivor(now_ms) {}
        if let Some(front) = self.front.filter(|f| f.seq == self.base) {
            let due = self.len() > max || front.created_ms.saturating_add(retention_ms) <= now_ms;
            if !due || front.live_until_ms.is_some_and(|until| now_ms < until) {
                return;
            }
        }
        self.front = None;
        while let Some((_, front)) = self.ring.front() {
            let due = self.len() > max || front.created_ms.saturating_add(retention_ms) <= now_ms;
            // A live record past its time waits for the tick to expire it.
            let ends_soon = front.status == Status::Processing
                || (front.live && front.expires_ms <= now_ms + WAIT_FOR_LIVE_MS);
            if !due || ends_soon {
                // Until its expiry time the reservation stays live (a
                // claim or a release may end it sooner: it is then dropped
                // at that time, within the wait above). A ping in flight is
                // looked at again next time.
                let live_until_ms =
                    (front.live && front.status != Status::Processing).then_some(front.expires_ms);
                self.front = Some(Front {
                    seq: self.base,
                    created_ms: front.created_ms,
                    live_until_ms: if due { live_until_ms } else { None },
                });
                break;
            }
            let Some((uuid, record)) = self.ring.pop_front() else { break };
            self.callers.pop_front();
            let seq = self.base;
            self.base += 1;
            if record.is_pinned(now_ms) {
                self.add_survivor(seq, (uuid, record));
            }
        }
        self.shrink();
    }

    /// Gives memory back once the ring, grown past its bound by live
    /// reservations, is back within its bound (or under half its buffer):
    /// a surge of live reservations does not keep its memory after it has
    /// passed. A ring past its bound by less than a quarter keeps its
    /// buffer, so one that hovers around the bound is not copied back and
    /// forth.
    fn shrink(&mut self) {
        let (len, capacity, bound) = (self.ring.len(), self.ring.capacity(), self.bound);
        let to = if capacity > bound + bound / 4 && len <= bound {
            bound
        } else if capacity > bound && len < capacity / 2 {
            bound.max(len + len / 8)
        } else {
            return;
        };
        self.ring.shrink_to(to);
        self.callers.shrink_to(to);
    }

    /// The newest record of `caller` that `matches`: a scan of the ring's
    /// caller tags (reading only the records whose tag matches) and of the
    /// survivors, for the rare questions no index is kept for.
    pub fn newest(&self, caller: Phone, matches: impl Fn(&Record) -> bool) -> Option<u128> {
        debug_assert_eq!(self.callers.len(), self.ring.len());
        let matches = |r: &Record| r.caller == caller && matches(r);
        let tag = caller_tag(caller);
        let mut end = self.callers.len();
        let in_ring = loop {
            let Some(at) = self.callers.range(..end).rposition(|&t| t == tag) else { break None };
            let (uuid, record) = &self.ring[at];
            if matches(record) {
                break Some((uuid.get(), record.created_ms));
            }
            end = at;
        };
        let seqs = self.survivor_callers.get(&tag).map_or(&[][..], |seqs| &seqs[..]);
        let survivor = seqs
            .iter()
            .filter_map(|seq| self.survivors.get(seq))
            .map(|entry| &**entry)
            .filter(|(_, r)| matches(r))
            .max_by_key(|(_, r)| r.created_ms)
            .map(|(u, r)| (u.get(), r.created_ms));
        in_ring.into_iter().chain(survivor).max_by_key(|(_, created)| *created).map(|(uuid, _)| uuid)
    }

    /// Drops the oldest survivor no longer pinned, if there is one. The
    /// survivors are listed oldest first at most once a second, so a ping
    /// pays O(1) on average.
    fn drop_oldest_survivor(&mut self, now_ms: u64) -> bool {
        loop {
            let Some(seq) = self.unpinned.pop_front() else {
                if self.listed_ms.is_some_and(|at| (at..at + 1_000).contains(&now_ms)) {
                    return false;
                }
                self.listed_ms = Some(now_ms);
                let mut seqs: Vec<u64> = self
                    .survivors
                    .iter()
                    .filter(|(_, entry)| !entry.1.is_pinned(now_ms))
                    .map(|(&s, _)| s)
                    .collect();
                if seqs.is_empty() {
                    return false;
                }
                seqs.sort_unstable();
                self.unpinned = seqs.into();
                continue;
            };
            if self.survivors.get(&seq).is_some_and(|entry| !entry.1.is_pinned(now_ms)) {
                self.remove_survivor(seq);
                return true;
            }
        }
    }

    /// Drops survivors that have ended, when past retention or over `max`
    /// (then the oldest first). Survivors are few, except after a restore:
    /// they are swept at most once a second.
    pub fn evict_survivors(&mut self, now_ms: u64, retention_ms: u64, max: usize) {
        // A clock set back counts as due: the sweep does not wait for the
        // clock to get back to where it was.
        if self.survivors.capacity() == 0 || (self.swept_ms..self.swept_ms + 1_000).contains(&now_ms) {
            return;
        }
        self.swept_ms = now_ms;
        while self.len() > max && self.drop_oldest_survivor(now_ms) {}
        let callers = &mut self.survivor_callers;
        self.survivors.retain(|&seq, entry| {
            let r = &entry.1;
            let keep = r.is_pinned(now_ms) || r.created_ms.saturating_add(retention_ms) > now_ms;
            if !keep {
                forget_survivor(callers, r.caller, seq);
            }
            keep
        });
        // A map keeps its buffer as it empties: give back what a restore
        // (its records all start here) or a surge of long reservations
        // left.
        if self.survivors.capacity() > 4 * self.survivors.len() + 64 {
            self.survivors.shrink_to_fit();
            self.survivor_callers.shrink_to_fit();
        }
    }

    /// Starts new sequence numbers after `seq` (after a restore, so new
    /// uuids never repeat a restored one's place). Only on an empty ring.
    pub fn resume_after(&mut self, seq: u64) {
        if self.ring.is_empty() {
            self.base = self.base.max(seq + 1);
        }
    }

    /// Every record, for snapshots and stats.
    pub fn iter(&self) -> impl Iterator<Item = (u128, &Record)> {
        let ring = self.ring.iter().map(|(u, r)| (u.get(), r));
        ring.chain(self.survivors.values().map(|entry| (entry.0.get(), &entry.1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(created_ms: u64, status: Status) -> Record {
        let caller = Phone::parse("+18005550100").unwrap();
        let mut record = Record::new(created_ms, caller, Sym::intern("k"), Sym::intern("c"), 1);
        record.status = status;
        // A reservation here stands for a live one (the table's index
        // would point at it).
        record.live = status.is_reservation();
        record.expires_ms = if status.is_reservation() { u64::MAX } else { 0 };
        record
    }

    fn add(store: &mut Records, created_ms: u64, status: Status) -> u128 {
        let uuid = ids::new_uuid(0, store.next_seq());
        store.insert(uuid, record(created_ms, status));
        uuid
    }

    #[test]
    fn oldest_go_first_but_live_ones_stay() {
        let mut store = Records::default();
        let live = add(&mut store, 10, Status::Reserved);
        let a = add(&mut store, 20, Status::NoTarget);
        let b = add(&mut store, 30, Status::NoTarget);
        assert!(store.get(a).is_some());
        // Over the bound of 2: the oldest is live, so it survives and the
        // next oldest goes.
        store.evict(40, 1_000, 2);
        assert_eq!(store.len(), 2);
        assert!(store.get(a).is_none());
        assert!(store.get(live).is_some() && store.get(b).is_some());
        // Past retention: b goes, the live one stays.
        store.evict(2_000, 1_000, 10);
        store.evict_survivors(2_000, 1_000, 10);
        assert!(store.get(b).is_none());
        assert_eq!(store.get(live).map(|r| r.created_ms), Some(10));
        // Once it has expired it goes too (survivors are swept once a
        // second).
        let record = store.get_mut(live).unwrap();
        record.expires_ms = 1_500;
        // The tick expires it: out of the live index.
        record.live = false;
        store.evict_survivors(2_500, 1_000, 10);
        assert!(!store.is_empty());
        store.evict_survivors(3_000, 1_000, 10);
        assert!(store.is_empty());
    }

    /// Callers whose tags are the same: the search must look past a
    /// record of the other.
    fn colliding_callers() -> [Phone; 3] {
        let a = 18_005_550_100u64;
        let b = a ^ (1 << 32 | 1);
        assert_eq!(caller_tag(Phone::from_digits(a).unwrap()), caller_tag(Phone::from_digits(b).unwrap()));
        [a, b, 12_125_550_199].map(|d| Phone::from_digits(d).unwrap())
    }

    #[test]
    fn the_newest_record_of_a_caller_is_found_past_a_colliding_tag() {
        let [a, b, _] = colliding_callers();
        let mut store = Records::default();
        let mut add_for = |caller, created_ms| {
            let uuid = ids::new_uuid(0, store.next_seq());
            let mut r = record(created_ms, Status::NoTarget);
            r.caller = caller;
            store.insert(uuid, r);
            uuid
        };
        let old_a = add_for(a, 10);
        let new_a = add_for(a, 20);
        let newer_b = add_for(b, 30);
        assert_eq!(store.newest(a, |_| true), Some(new_a));
        assert_eq!(store.newest(a, |r| r.created_ms < 20), Some(old_a));
        assert_eq!(store.newest(b, |_| true), Some(newer_b));
        assert_eq!(store.newest(b, |r| r.created_ms < 30), None);
    }

    proptest::proptest! {
        /// Whatever was added and dropped, `newest` answers what a scan of
        /// every record kept answers.
        #[test]
        fn newest_agrees_with_a_scan_of_every_record(
            restored in proptest::collection::vec((0..3usize, 0..4u8), 0..24),
            ops in proptest::collection::vec((0..3usize, 0..4u8, proptest::option::of(0..12usize)), 1..120),
        ) {
            let callers = colliding_callers();
            let statuses = [Status::NoTarget, Status::Reserved, Status::Expired, Status::Claimed];
            let mut store = Records::default();
            // Restored records: sequence numbers with gaps, all survivors.
            // Made at times no new record is (every 10 ms): of two records
            // made at once, either is the newest.
            for (i, &(caller, kind)) in restored.iter().enumerate() {
                let mut r = record(10 * i as u64 + 5, statuses[usize::from(kind)]);
                r.caller = callers[caller];
                store.insert(ids::new_uuid(0, 1_000 + 2 * i as u64), r);
            }
            store.resume_after(1_000 + 2 * restored.len() as u64);
            let mut now = 0;
            for (caller, kind, evict_to) in ops {
                now += 10;
                let status = statuses[usize::from(kind)];
                let mut r = record(now, status);
                r.caller = callers[caller];
                // Live reservations: some the store waits for at the
                // front, some it moves to the survivors.
                r.live = status == Status::Reserved;
                r.expires_ms = match (r.live, caller) {
                    (false, _) => 0,
                    (true, 0) => now + 25,
                    (true, _) => now + 2 * WAIT_FOR_LIVE_MS,
                };
                store.insert(ids::new_uuid(0, store.next_seq()), r);
                if let Some(max) = evict_to {
                    store.evict(now, 1_000_000, max);
                    // Survivors past a short retention, or over the bound.
                    store.evict_survivors(now, 300, max);
                }
                proptest::prop_assert!(store.survivor_tags_agree());
                for caller in callers {
                    for pick in [Status::Reserved, Status::Expired, Status::NoTarget] {
                        let matches = |r: &Record| r.status == pick;
                        let scanned = store
                            .iter()
                            .filter(|(_, r)| r.caller == caller && matches(r))
                            .max_by_key(|(_, r)| r.created_ms)
                            .map(|(uuid, _)| uuid);
                        proptest::prop_assert_eq!(store.newest(caller, matches), scanned);
                    }
                }
            }
        }
    }

    impl Records {
        /// Every survivor is listed once under its caller's tag, and
        /// nothing else is.
        fn survivor_tags_agree(&self) -> bool {
            let listed: usize = self.survivor_callers.values().map(|seqs| seqs.len()).sum();
            listed == self.survivors.len()
                && self.survivors.iter().all(|(seq, entry)| {
                    self.survivor_callers
                        .get(&caller_tag(entry.1.caller))
                        .is_some_and(|seqs| seqs.iter().filter(|s| *s == seq).count() == 1)
                })
        }
    }

    #[test]
    fn over_the_bound_restored_records_go_before_new_ones() {
        let mut store = Records::default();
        // Restored records: older sequence numbers, with gaps (as a
        // snapshot leaves them); all ended but one, still live.
        for seq in [100, 102, 104] {
            store.insert(ids::new_uuid(0, seq), record(5, Status::NoTarget));
        }
        let restored_live = ids::new_uuid(0, 103);
        store.insert(restored_live, record(5, Status::Reserved));
        store.resume_after(104);
        let new = add(&mut store, 50, Status::NoTarget);
        let newer = add(&mut store, 60, Status::NoTarget);
        let newest = add(&mut store, 70, Status::NoTarget);
        store.evict(80, 1_000_000, 4);
        assert_eq!(store.len(), 4);
        for uuid in [new, newer, newest] {
            assert!(store.get(uuid).is_some(), "new records stay");
        }
        for seq in [100, 102, 104] {
            assert!(store.get(ids::new_uuid(0, seq)).is_none(), "restored {seq} went first");
        }
        assert!(store.get(restored_live).is_some(), "a live one is never dropped");
    }

    #[test]
    fn a_reservation_ending_soon_is_waited_for_not_moved() {
        let mut store = Records::default();
        let mut soon = record(10, Status::Reserved);
        soon.expires_ms = 20_000;
        let live = ids::new_uuid(0, store.next_seq());
        store.insert(live, soon);
        let other = add(&mut store, 20, Status::NoTarget);
        // Over the bound, but the front ends within a minute: nothing goes.
        store.evict(100, 1_000_000, 1);
        assert_eq!(store.len(), 2);
        assert!(store.survivors.is_empty());
        // Once it has expired (and the tick took it out of the live
        // index), both go.
        store.evict(20_000, 1_000_000, 0);
        assert_eq!(store.len(), 2, "expired but still live: waits for the tick");
        store.get_mut(live).unwrap().live = false;
        store.evict(20_000, 1_000_000, 0);
        assert!(store.get(live).is_none() && store.get(other).is_none());
        assert!(store.is_empty());
    }

    #[test]
    fn past_its_bound_the_ring_grows_by_an_eighth_and_gives_the_memory_back() {
        let mut store = Records::default();
        store.evict(0, 1_000_000, 1_000);
        // 1,600 live reservations ending soon, over a bound of 1,000: all
        // are kept, in a buffer not much larger than they need.
        let mut soon = Vec::new();
        for _ in 0..1_600 {
            let uuid = ids::new_uuid(0, store.next_seq());
            let mut r = record(10, Status::Reserved);
            r.expires_ms = 20_000;
            store.insert(uuid, r);
            soon.push(uuid);
            store.evict(100, 1_000_000, 1_000);
        }
        assert_eq!(store.len(), 1_600);
        let capacity = store.ring.capacity();
        assert!((1_600..=1_600 + 1_600 / 8 + 16).contains(&capacity), "capacity {capacity}");
        // They expire; the next ping finds them gone and the ring back at
        // its bound.
        for uuid in soon {
            store.get_mut(uuid).unwrap().live = false;
        }
        add(&mut store, 20_000, Status::NoTarget);
        store.evict(20_000, 1_000_000, 1_000);
        assert_eq!(store.len(), 1_000);
        assert_eq!(store.ring.capacity(), 1_000);
    }

    #[test]
    fn survivors_give_their_memory_back_when_they_go() {
        let mut store = Records::default();
        // Restored records (sequence numbers of another run) all start
        // among the survivors.
        for seq in 0..10_000 {
            store.insert(ids::new_uuid(0, 1_000_000 + 2 * seq), record(5, Status::NoTarget));
        }
        assert_eq!(store.survivors.len(), 10_000);
        store.evict_survivors(2_000, 1_000, 100_000);
        assert!(store.is_empty());
        assert!(store.survivors.capacity() < 100, "capacity {}", store.survivors.capacity());
    }

    #[test]
    fn a_clock_set_back_does_not_stall_the_survivors_sweep() {
        let mut store = Records::default();
        store.insert(ids::new_uuid(0, 1_000), record(5, Status::NoTarget));
        store.evict_survivors(10_000, 1_000_000, 100);
        assert_eq!(store.len(), 1, "within retention");
        // The clock goes back a minute; the record is past retention there
        // too, and goes at the next sweep, not a minute later.
        store.evict_survivors(9_000, 1_000, 100);
        assert!(store.is_empty());
    }

    #[test]
    fn a_uuid_finds_only_its_own_record() {
        let mut store = Records::default();
        let a = add(&mut store, 1, Status::NoTarget);
        // Same place, other random bits: not the same record.
        let forged = a ^ (1 << 100);
        assert!(store.get(forged).is_none());
        assert!(store.get(ids::new_uuid(0, 7)).is_none());
        assert!(store.get(a).is_some());
    }

    #[test]
    fn a_ping_with_a_target_passed_over_is_not_allocated() {
        // The sizes the memory figures of the README rest on.
        assert_eq!(std::mem::size_of::<Event>(), 24);
        assert_eq!(std::mem::size_of::<Record>(), 192);
        let mut r = record(1_000, Status::Reserved);
        r.push(1_000, None, Detailed::TargetsPaused, Info::None);
        r.push(1_000, None, Detailed::Reserved, Info::Text(arcstr::literal!("fixed")));
        assert!(!r.flow.spilled(), "two steps stay inline");
    }

    #[test]
    fn a_record_keeps_tags_up_to_its_budget_and_says_how_many_it_left_out() {
        let value = "v".repeat(256);
        let names: Vec<String> = (0..64).map(|i| format!("tag_{i:02}")).collect();
        let tags = Tags::new(names.iter().map(|n| (n.as_str(), value.as_str())));
        let kept: Vec<(&str, &str)> = tags.iter().collect();
        // Each tag packs to 6 + 256 + 2 bytes: seven fit in 2,048.
        assert_eq!(kept.len(), 8);
        assert!(kept[..7].iter().zip(&names).all(|((n, v), name)| n == name && *v == value));
        assert_eq!(kept[7], (TAGS_LEFT_OUT, "57"));
        assert!(tags.0.len() <= MAX_KEPT_TAGS + 32);
        // Within the budget, nothing is left out and nothing added.
        let few = Tags::new(names.iter().take(7).map(|n| (n.as_str(), value.as_str())));
        assert_eq!(few.iter().count(), 7);
        assert_eq!(few.get(TAGS_LEFT_OUT), None);
        // Once one is left out, the later ones are too, small as they are.
        let big = "x".repeat(300);
        let mixed = [("a", value.as_str()); 7].into_iter().chain([("big", big.as_str()), ("b", "1")]);
        let tags = Tags::new(mixed);
        assert_eq!(tags.get("b"), None);
        assert_eq!(tags.get(TAGS_LEFT_OUT), Some("2"));
    }

    #[test]
    fn tags_pack_and_unpack() {
        let tags = Tags::new([("caller_zip", "10001"), ("empty", ""), ("state", "NY")].into_iter());
        assert_eq!(
            tags.iter().collect::<Vec<_>>(),
            vec![("caller_zip", "10001"), ("empty", ""), ("state", "NY")]
        );
        assert_eq!(tags.get("state"), Some("NY"));
        assert_eq!(tags.get("nope"), None);
        assert_eq!(Tags::default().iter().count(), 0);
        assert_eq!(Tags::new(std::iter::empty()), Tags::default());
        // Just inline, just past it, and far past it.
        for value_len in [TAGS_INLINE - 4, TAGS_INLINE - 3, 300] {
            let value = "v".repeat(value_len);
            let pairs = [("a", value.as_str())];
            let tags = Tags::new(pairs.into_iter());
            assert_eq!(tags.0.len(), value_len + 3);
            assert_eq!(tags.0.spilled(), value_len + 3 > TAGS_INLINE);
            assert_eq!(tags.iter().collect::<Vec<_>>(), pairs);
        }
    }
}
