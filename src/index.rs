//! The live index of a table shard: which records hold a caller's live
//! reservations and pings in flight.
//!
//! Written by hand because a ping for a new caller probes it and then adds
//! to it, at a random place in a table of millions of entries: with a
//! general hash table that is two cache misses (the control bytes, then the
//! entry written), and the second one holds up the shard's lock while the
//! store drains. Here an entry is one `u64` and a bucket is one cache line
//! of seven entries: the probe and the insert that follows touch the same
//! line, and the table is half the size.
//!
//! An entry packs:
//! - a key: 23 bits of the caller's hash, with the top bit set so that no
//!   entry is zero (an empty slot). Its low bits pick the home bucket, the
//!   rest tell callers of one bucket apart; a match is confirmed against
//!   the record it points at.
//! - a due time (8 bits): when the expiry wheel will have handed the
//!   reservation out, in units of 1,024 ms, wrapping every 262 s, or
//!   [`NEVER`] (see `table` for why expired entries stay until a sweep).
//! - the low 32 bits of the record's sequence number: a live record is
//!   never 2^32 records older than the newest of its shard (a TTL is at most
//!   a day), so the full number is the newest one with these low bits.
//!
//! Buckets are probed in order from the home bucket. Each counts the
//! entries that passed it full on their way to a later bucket, so a probe
//! stops at the first bucket no entry passed; removing an entry counts
//! those down again. Nothing ever moves but on growth.

use std::sync::atomic::{AtomicUsize, Ordering};

/// An entry, as packed above; 0 is an empty slot.
pub type Entry = u64;

const SLOTS: usize = 7;
const SEQ_BITS: u32 = 32;
const DUE_SHIFT: u32 = SEQ_BITS;
const KEY_SHIFT: u32 = 40;
const KEY_FLAG: u64 = 1 << 23;
const KEY_MASK: u64 = KEY_FLAG - 1;
/// Units of a due time: 1,024 ms.
const UNIT_SHIFT: u32 = 10;
/// The due time of an entry the wheel does not hold, or holds further
/// ahead than due times reach.
pub const NEVER: u64 = 0xFF;
/// How far ahead of the wheel a due time may be: well within the half of
/// the 256 units (131 s) in which a wrapped due time reads right.
pub const DUE_AHEAD_MS: u64 = 100_000;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    /// Entries that passed this bucket full on their way to a later one.
    passed: u32,
    slots: [Entry; SLOTS],
}

impl Bucket {
    /// Bit `i` set when slot `i` holds an entry of `key` (an empty slot
    /// never does: every key has its top bit set).
    #[inline]
    fn matches(&self, key: u64) -> u8 {
        let mut matches = 0;
        for (i, &entry) in self.slots.iter().enumerate() {
            matches |= u8::from(key_of(entry) == key) << i;
        }
        matches
    }
}

/// The entries of one key, bucket by bucket from its home bucket until one
/// no entry passed.
pub struct Probe<'a> {
    buckets: &'a [Bucket],
    key: u64,
    at: usize,
    /// The slots of bucket `at` still to hand out.
    matches: u8,
    /// Bucket `at` is the last to look at.
    last: bool,
}

impl Probe<'_> {
    /// Where the next entry of the key is: (bucket, slot).
    #[inline]
    fn next_position(&mut self) -> Option<(usize, usize)> {
        loop {
            if self.matches != 0 {
                let slot = self.matches.trailing_zeros() as usize;
                self.matches &= self.matches - 1;
                return Some((self.at, slot));
            }
            if self.last {
                return None;
            }
            self.at = (self.at + 1) & (self.buckets.len() - 1);
            let bucket = &self.buckets[self.at];
            self.matches = bucket.matches(self.key);
            self.last = bucket.passed == 0;
        }
    }
}

impl Iterator for Probe<'_> {
    type Item = Entry;

    #[inline]
    fn next(&mut self) -> Option<Entry> {
        let (at, slot) = self.next_position()?;
        Some(self.buckets[at].slots[slot])
    }
}

pub struct Index {
    buckets: Vec<Bucket>,
    len: usize,
}

impl Default for Index {
    fn default() -> Index {
        Index { buckets: vec![Bucket::default(); 4], len: 0 }
    }
}

/// The key of a caller's hash (see the module's notes).
#[inline]
pub fn key(hash: u64) -> u64 {
    (hash & KEY_MASK) | KEY_FLAG
}

/// An entry for the record numbered `seq`, due at `due` (from [`due`]).
#[inline]
pub fn entry(key: u64, seq: u64, due: u64) -> Entry {
    (key << KEY_SHIFT) | (due << DUE_SHIFT) | (seq & ((1 << SEQ_BITS) - 1))
}

#[inline]
pub fn key_of(entry: Entry) -> u64 {
    entry >> KEY_SHIFT
}

#[inline]
pub fn due_of(entry: Entry) -> u64 {
    (entry >> DUE_SHIFT) & 0xFF
}

/// The full sequence number of an entry, given the next number its shard
/// will give (`next`, more than any live record's).
#[inline]
pub fn seq_of(entry: Entry, next: u64) -> u64 {
    let low = entry & ((1 << SEQ_BITS) - 1);
    let back = next.wrapping_sub(1).wrapping_sub(low) & ((1 << SEQ_BITS) - 1);
    next.wrapping_sub(1).wrapping_sub(back)
}

/// The due time of a reservation the wheel, now at `wheel_ms`, holds until
/// `at_ms` (not before `wheel_ms`).
#[inline]
pub fn due(at_ms: u64, wheel_ms: u64) -> u64 {
    if at_ms.saturating_sub(wheel_ms) > DUE_AHEAD_MS {
        return NEVER;
    }
    let units = at_ms.div_ceil(1 << UNIT_SHIFT) & 0xFF;
    // One unit later rather than never.
    if units == NEVER { 0 } else { units }
}

/// Whether the wheel, at `wheel_ms`, has handed out the reservation of an
/// entry with a due time (not [`NEVER`]): wrapped, the due time reads as
/// past for 128 units after it, which a sweep comes well within, and as
/// ahead for the 127 before it, which covers [`DUE_AHEAD_MS`].
#[inline]
pub fn handed_out(entry: Entry, wheel_ms: u64) -> bool {
    let done = (wheel_ms >> UNIT_SHIFT) & 0xFF;
    done.wrapping_sub(due_of(entry)) & 0xFF < 0x80
}

/// Where an index's buckets are, and where its shard's next record goes,
/// readable without the shard's lock: a ping asks for the cache lines it
/// will probe and write while it does the rest of its checks, before it
/// takes the lock. Read while the index grows or the ring moves, it names
/// the old place: a prefetch of an address no longer in use is harmless,
/// just useless. The table keeps it in the cache line of the shard's lock
/// (see `table`).
#[derive(Default)]
pub struct Geometry {
    base: AtomicUsize,
    mask: AtomicUsize,
    /// Where the shard's next record goes (see `records`).
    slot: AtomicUsize,
}

impl Geometry {
    /// Records where `index`'s buckets are and where the next record goes.
    #[inline]
    pub fn set(&self, index: &Index, slot: usize) {
        self.base.store(index.buckets.as_ptr() as usize, Ordering::Relaxed);
        self.mask.store(index.mask(), Ordering::Relaxed);
        self.slot.store(slot, Ordering::Relaxed);
    }

    /// Asks the CPU to fetch the bucket where a probe for `key` starts,
    /// and the lines the shard's next record will be written to.
    #[inline]
    pub fn prefetch(&self, key: u64, record: usize) {
        let (base, mask) = (self.base.load(Ordering::Relaxed), self.mask.load(Ordering::Relaxed));
        prefetch(base.wrapping_add((key as usize & mask) * size_of::<Bucket>()));
        // The lines the record spans (its start need not be a line's).
        let slot = self.slot.load(Ordering::Relaxed);
        let last = slot.wrapping_add(record - 1) & !63;
        let mut line = slot & !63;
        while line <= last {
            prefetch(line);
            line = line.wrapping_add(64);
        }
    }
}

/// Asks for the line of `at` into every level of cache. (A prefetch with
/// intent to write, `prefetchw`, measured the same in the load harness, and
/// stable Rust cannot enable it without hand-written assembly.)
#[inline(always)]
fn prefetch(at: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault,
    // whatever the address; SSE is part of every x86_64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

impl Index {
    /// Entries held, left-over ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries it holds before it must grow: three quarters of its slots.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * SLOTS * 3 / 4
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// The entries whose key is `key`: the caller's and, rarely, another
    /// caller's with the same key bits.
    #[inline]
    pub fn find(&self, key: u64) -> Probe<'_> {
        let at = key as usize & self.mask();
        let bucket = &self.buckets[at];
        Probe { buckets: &self.buckets, key, at, matches: bucket.matches(key), last: bucket.passed == 0 }
    }

    /// Adds an entry, growing if it is at its capacity (the caller may
    /// make room first, see [`Index::capacity`]).
    pub fn insert(&mut self, entry: Entry) {
        if self.len >= self.capacity() {
            self.grow();
        }
        self.place(entry);
        self.len += 1;
    }

    fn place(&mut self, entry: Entry) {
        let mask = self.mask();
        let mut at = key_of(entry) as usize & mask;
        loop {
            let bucket = &mut self.buckets[at];
            if let Some(slot) = bucket.slots.iter_mut().find(|s| **s == 0) {
                *slot = entry;
                return;
            }
            bucket.passed += 1;
            at = (at + 1) & mask;
        }
    }

    /// Takes out the first entry of `key` that `matches`; true if there was
    /// one.
    pub fn remove(&mut self, key: u64, matches: impl Fn(Entry) -> bool) -> bool {
        match self.position(key, &matches) {
            Some((at, slot)) => {
                self.clear(at, slot);
                true
            }
            None => false,
        }
    }

    /// Replaces the first entry of `key` that `matches` (with the same key).
    pub fn replace(&mut self, key: u64, matches: impl Fn(Entry) -> bool, entry: Entry) {
        debug_assert_eq!(key_of(entry), key);
        if let Some((at, slot)) = self.position(key, &matches) {
            self.buckets[at].slots[slot] = entry;
        }
    }

    fn position(&self, key: u64, matches: &impl Fn(Entry) -> bool) -> Option<(usize, usize)> {
        let mut probe = self.find(key);
        while let Some((at, slot)) = probe.next_position() {
            if matches(self.buckets[at].slots[slot]) {
                return Some((at, slot));
            }
        }
        None
    }

    /// Empties a slot, and counts its entry out of the buckets it passed.
    fn clear(&mut self, at: usize, slot: usize) {
        let mask = self.mask();
        let entry = std::mem::take(&mut self.buckets[at].slots[slot]);
        let mut passed = key_of(entry) as usize & mask;
        while passed != at {
            self.buckets[passed].passed -= 1;
            passed = (passed + 1) & mask;
        }
        self.len -= 1;
    }

    /// Keeps only the entries `keep` admits: one pass in memory order.
    pub fn retain(&mut self, mut keep: impl FnMut(Entry) -> bool) {
        for at in 0..self.buckets.len() {
            for slot in 0..SLOTS {
                let entry = self.buckets[at].slots[slot];
                if entry != 0 && !keep(entry) {
                    self.clear(at, slot);
                }
            }
        }
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        entries(&self.buckets)
    }

    /// Doubles the buckets and places every entry again.
    fn grow(&mut self) {
        let size = self.buckets.len() * 2;
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::default(); size]);
        for entry in entries(&old) {
            self.place(entry);
        }
    }
}

/// The entries held in `buckets`, in memory order.
fn entries(buckets: &[Bucket]) -> impl Iterator<Item = Entry> + '_ {
    buckets.iter().flat_map(|b| b.slots).filter(|&e| e != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_bucket_is_a_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn sequence_numbers_come_back_whole() {
        for next in [1u64, 2, 1 << 32, (1 << 32) + 5, (1 << 40) - 1] {
            for back in [1u64, 2, 1000, (1 << 32) - 1] {
                let Some(seq) = next.checked_sub(back) else { continue };
                assert_eq!(seq_of(entry(key(7), seq, 3), next), seq, "next {next} back {back}");
            }
        }
    }

    #[test]
    fn due_times_wrap_and_read_right() {
        for wheel in [0u64, 5_000, 1 << 20, 262_144 * 3 + 17, u64::MAX / 2] {
            for ahead in [1u64, 500, 1_024, 50_000, DUE_AHEAD_MS] {
                let at = wheel + ahead;
                let e = entry(key(1), 9, due(at, wheel));
                assert_ne!(due_of(e), NEVER);
                // Not handed out before its time, handed out after it (once
                // rounded up to a unit), for the 128 units a sweep has.
                assert!(!handed_out(e, wheel), "wheel {wheel} ahead {ahead}");
                assert!(!handed_out(e, at - 1), "wheel {wheel} ahead {ahead}");
                for later in [1_024, 60_000, 120_000] {
                    assert!(handed_out(e, at + later), "wheel {wheel} ahead {ahead} later {later}");
                }
            }
            assert_eq!(due(wheel + DUE_AHEAD_MS + 1, wheel), NEVER);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(usize),
        Retain(u64),
    }

    proptest! {
        /// The index against a list: what it finds, through growth,
        /// removals and sweeps, with keys crowded into few buckets.
        #[test]
        fn agrees_with_a_list(ops in proptest::collection::vec(prop_oneof![
            6 => (0u64..64).prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Remove),
            1 => (0u64..4).prop_map(Op::Retain),
        ], 1..400)) {
            let mut index = Index::default();
            let mut model: Vec<Entry> = Vec::new();
            let mut seq = 0u64;
            for op in ops {
                match op {
                    Op::Insert(h) => {
                        seq += 1;
                        let e = entry(key(h * 0x9E37_79B9), seq, seq % 7);
                        index.insert(e);
                        model.push(e);
                    }
                    Op::Remove(n) if !model.is_empty() => {
                        let e = model.swap_remove(n % model.len());
                        prop_assert!(index.remove(key_of(e), |x| x == e));
                        prop_assert!(!index.remove(key_of(e), |x| x == e));
                    }
                    Op::Remove(_) => {}
                    Op::Retain(r) => {
                        index.retain(|e| due_of(e) != r);
                        model.retain(|&e| due_of(e) != r);
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                for &e in &model {
                    prop_assert!(index.find(key_of(e)).any(|x| x == e), "lost {:x}", e);
                }
                let mut all: Vec<Entry> = index.iter().collect();
                let mut want = model.clone();
                all.sort_unstable();
                want.sort_unstable();
                prop_assert_eq!(all, want);
                prop_assert!(index.buckets.iter().all(|b| b.passed < 1 << 20), "a count went below zero");
            }
            // Emptied, no bucket counts an entry passing it.
            index.retain(|_| false);
            prop_assert!(index.buckets.iter().all(|b| b.passed == 0));
        }
    }
}
