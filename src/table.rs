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
//! Inside a shard, the data a ping touches is kept apart from the data it
//! rarely needs:
//! - `live`: caller → that caller's live reservations (and pings in flight),
//!   each with its terms. Small (a TTL's worth of reservations), so it stays
//!   in cache; the Ping Shield's echo and a call's claim read only this.
//! - `records`: uuid → the full record of every ping, kept for retention.
//!   A call that finds no live reservation looks there (newest first) for
//!   one that expired: that is rare, so no index is kept for it.
//!
//! Why `parking_lot::Mutex` and not a `tokio::sync::Mutex`: no lock is ever
//! held across an `.await`, and the critical sections are a few hash-map
//! operations, so a blocking lock is both correct and faster.

use ahash::AHashMap;
use crossbeam::utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;

use crate::ids;
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
    /// Reservations made on any key of the same campaign.
    Campaign(Sym),
}

/// A live reservation (or a ping still in flight) and its terms.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The mark of a ping waiting on its buyers: later pings for the caller
    /// in its scope are `already_processing`.
    pub fn processing(uuid: u128, key: Sym, campaign: Sym, publisher: u32) -> Live {
        Live {
            uuid,
            key,
            campaign,
            status: Status::Processing,
            expires_ms: 0,
            target: None,
            inbound: None,
            payout_milli: 0,
            seconds: 0,
            counted_ms: None,
            publisher,
        }
    }

    fn in_scope(&self, scope: Scope) -> bool {
        match scope {
            Scope::Key(k) => self.key == k,
            Scope::Campaign(c) => self.campaign == c,
        }
    }

    /// True while it holds its target: in flight, or not yet expired.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.status == Status::Processing || self.expires_ms > now_ms
    }
}

pub struct Table {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
}

impl Table {
    /// An empty table whose wheels start at `now_ms`.
    pub fn new(now_ms: u64) -> Table {
        let shards = (0..SHARDS).map(|_| CachePadded::new(Mutex::new(Shard::new(now_ms)))).collect();
        Table { shards }
    }

    /// The shard of a caller number. A fixed multiplicative hash, not a
    /// seeded one: uuids carry their shard, so the mapping must not change
    /// across restarts. The maps inside a shard use random seeds.
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
    pub fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard % SHARDS].lock()
    }

    /// Every shard in turn (for the expiry tick, stats and snapshots).
    pub fn shards(&self) -> impl Iterator<Item = &Mutex<Shard>> {
        self.shards.iter().map(|s| &**s)
    }
}

pub struct Shard {
    live: AHashMap<u64, SmallVec<[Live; 1]>>,
    pub records: Records,
    /// Caller → (target, when) of the calls it made, for `dedupe_secs`.
    history: AHashMap<u64, SmallVec<[(Sym, u64); 2]>>,
    /// Size of `history` after its last sweep.
    history_swept: usize,
    /// (caller digits, uuid halves) by expiry time.
    wheel: Wheel<[u64; 3]>,
}

impl Shard {
    fn new(now_ms: u64) -> Shard {
        Shard {
            live: AHashMap::new(),
            records: Records::default(),
            history: AHashMap::new(),
            history_swept: 0,
            wheel: Wheel::new(now_ms),
        }
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

    /// The caller's live reservation or ping in flight in `scope`.
    #[inline]
    pub fn find_live(&self, caller: Phone, scope: Scope, now_ms: u64) -> Option<&Live> {
        self.live.get(&caller.digits())?.iter().find(|l| l.in_scope(scope) && l.is_live(now_ms))
    }

    /// The caller's reservation on `inbound`: a live one if there is one
    /// (the newest, when keys of one campaign share a number), else one past
    /// its time that the tick has not expired yet.
    pub fn find_for_call(&self, caller: Phone, inbound: Phone, now_ms: u64) -> Option<&Live> {
        let on_number = || {
            self.live
                .get(&caller.digits())
                .into_iter()
                .flatten()
                .filter(move |l| l.status.is_reservation() && l.inbound == Some(inbound))
        };
        on_number().filter(|l| l.is_live(now_ms)).max_by_key(|l| l.expires_ms).or_else(|| on_number().next())
    }

    /// A live entry by caller and uuid.
    pub fn live_mut(&mut self, caller: Phone, uuid: u128) -> Option<&mut Live> {
        self.live.get_mut(&caller.digits())?.iter_mut().find(|l| l.uuid == uuid)
    }

    /// Sets the status of a live reservation and of its record together.
    pub fn mark(&mut self, caller: Phone, uuid: u128, status: Status) {
        if let Some(live) = self.live_mut(caller, uuid) {
            live.status = status;
        }
        if let Some(record) = self.records.get_mut(uuid) {
            record.status = status;
        }
    }

    /// Adds a live reservation or ping in flight; a reservation is scheduled
    /// for expiry and remembered for the dead line.
    pub fn add_live(&mut self, caller: Phone, live: Live) {
        if live.status.is_reservation() {
            self.schedule(caller, live.uuid, live.expires_ms);
        }
        self.live.entry(caller.digits()).or_default().push(live);
    }

    /// Schedules an expiry check of `uuid` at `at_ms`.
    pub fn schedule(&mut self, caller: Phone, uuid: u128, at_ms: u64) {
        self.wheel.insert(at_ms, [caller.digits(), (uuid >> 64) as u64, uuid as u64]);
    }

    /// Removes a live entry: the reservation was claimed, expired or
    /// released, or the ping in flight has finished.
    pub fn take_live(&mut self, caller: Phone, uuid: u128) -> Option<Live> {
        let entries = self.live.get_mut(&caller.digits())?;
        let i = entries.iter().position(|l| l.uuid == uuid)?;
        let live = entries.swap_remove(i);
        if entries.is_empty() {
            self.live.remove(&caller.digits());
        }
        Some(live)
    }

    /// Removes the live entry of `uuid` if its time has passed at `now_ms`.
    pub fn take_expired(&mut self, caller: Phone, uuid: u128, now_ms: u64) -> Option<Live> {
        let entries = self.live.get_mut(&caller.digits())?;
        let i = entries.iter().position(|l| l.uuid == uuid && !l.is_live(now_ms))?;
        let live = entries.swap_remove(i);
        if entries.is_empty() {
            self.live.remove(&caller.digits());
        }
        Some(live)
    }

    /// The newest reservation of `caller` on `inbound`, live or not, while
    /// its record is kept.
    pub fn last_reservation(&self, caller: Phone, inbound: Phone) -> Option<u128> {
        self.records.newest(|r| r.caller == caller && r.inbound == Some(inbound) && r.target.is_some())
    }

    /// The (caller, uuid) pairs whose expiry time has come.
    pub fn due(&mut self, now_ms: u64, due: &mut Vec<(Phone, u128)>) {
        let mut items = Vec::new();
        self.wheel.advance(now_ms, &mut items);
        due.extend(items.into_iter().filter_map(|[caller, hi, lo]| {
            Some((Phone::from_digits(caller)?, (u128::from(hi) << 64) | u128::from(lo)))
        }));
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

    /// Adds the record made with the last [`Shard::new_uuid`].
    pub fn add_record(&mut self, uuid: u128, record: Record) {
        self.records.insert(uuid, record);
    }

    /// Live reservations and pings in flight.
    pub fn live_count(&self) -> usize {
        self.live.values().map(|v| v.len()).sum()
    }

    /// Every live entry, with its caller.
    pub fn live(&self) -> impl Iterator<Item = (u64, &Live)> {
        self.live.iter().flat_map(|(&caller, entries)| entries.iter().map(move |l| (caller, l)))
    }

    /// Entries waiting in the expiry wheel.
    pub fn scheduled(&self) -> usize {
        self.wheel.len()
    }

    /// This shard as a snapshot keeps it: live reservations (not pings in
    /// flight: their buyers' answers die with the process), the records
    /// `keep` admits, and the call history.
    pub fn image(&self, keep: impl Fn(&Record) -> bool) -> ShardOut<'_> {
        ShardOut {
            live: self.live().filter(|(_, l)| l.status != Status::Processing).collect(),
            records: self.records.iter().filter(|(_, r)| keep(r)).collect(),
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
        let mut max_seq = None;
        for (uuid, mut record) in records {
            record.publisher = publisher(record.publisher);
            max_seq = max_seq.max(Some(ids::seq_of(uuid)));
            self.records.insert(uuid, record);
        }
        if let Some(seq) = max_seq {
            self.records.resume_after(seq);
        }
        let mut expired = Vec::new();
        for (digits, mut live) in image.live {
            live.publisher = publisher(live.publisher);
            let Some(caller) = Phone::from_digits(digits) else { continue };
            if live.is_live(now_ms) {
                self.add_live(caller, live);
            } else {
                expired.push(live);
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
    pub live: Vec<(u64, &'a Live)>,
    pub records: Vec<(u128, &'a Record)>,
    pub history: Vec<(u64, &'a [(Sym, u64)])>,
}

/// A shard read back from a snapshot (the same encoding as [`ShardOut`]).
#[derive(serde::Deserialize)]
pub struct ShardIn {
    pub live: Vec<(u64, Live)>,
    pub records: Vec<(u128, Record)>,
    pub history: Vec<(u64, Vec<(Sym, u64)>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn live(uuid: u128) -> Live {
        Live {
            uuid,
            key: Sym::intern("table-test-key"),
            campaign: Sym::intern("table-test-campaign"),
            status: Status::Reserved,
            expires_ms: u64::MAX,
            target: None,
            inbound: None,
            payout_milli: 0,
            seconds: 0,
            counted_ms: None,
            publisher: 0,
        }
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
            let threads: Vec<_> = plans.iter().cloned().enumerate().map(|(thread, plan)| {
                let table = table.clone();
                std::thread::spawn(move || {
                    let mut expected = BTreeSet::new();
                    for (step, (caller, take)) in plan.into_iter().enumerate() {
                        let caller = Phone::from_digits(18_005_550_000 + caller).unwrap();
                        let mut shard = table.lock(Table::shard_of_caller(caller));
                        let mine = expected.iter().copied().find(|(c, _)| *c == caller.digits());
                        match (take, mine) {
                            (true, Some((c, uuid))) => {
                                assert!(shard.take_live(caller, uuid).is_some(), "lost {uuid}");
                                expected.remove(&(c, uuid));
                            }
                            _ => {
                                let uuid = ((thread as u128) << 64) | step as u128;
                                shard.add_live(caller, live(uuid));
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
                for (caller, l) in shard.lock().live() {
                    prop_assert!(found.insert((caller, l.uuid)), "{} twice", l.uuid);
                }
            }
            prop_assert_eq!(found, expected);
        }
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
