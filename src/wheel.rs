//! A hierarchical timing wheel: 6 levels of 64 slots, one millisecond per
//! slot at the bottom, covering 2^36 ms (about two years).
//!
//! The table keeps one wheel per shard, under the shard's lock, and expires
//! reservations from it: inserting is O(1), and advancing the wheel touches
//! only the slots that hold something (each level has a bitmap of occupied
//! slots), never every entry. Entries are not removed when their reservation
//! ends early; the table ignores a due entry whose reservation is gone.
//!
//! An entry lives in the level where its deadline first differs from the
//! wheel's current time in 6-bit groups; when time reaches a slot of a higher
//! level, the entries there cascade down to finer slots.

/// Bits of time per level.
const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
const LEVELS: usize = 6;
/// The time span the wheel covers.
const SPAN: u64 = 1 << (BITS as u64 * LEVELS as u64);
/// One slot of the top level.
const TOP_SLOT: u64 = SPAN >> BITS;
/// How far ahead a deadline is placed where it falls. Past that, its top
/// slot could be the current one again, one lap later (differences beyond
/// the span all land in the top level), and the wheel would hand it back
/// to itself without end: such a deadline waits at the next top slot
/// instead, and is placed again from there.
const REACH: u64 = SPAN - TOP_SLOT;
/// Largest buffer (in entries) a slot keeps once emptied.
const KEEP_SLOT: usize = 32;

struct Entry<T> {
    deadline: u64,
    item: T,
}

struct Level<T> {
    /// Bit `i` is set when `slots[i]` is not empty.
    occupied: u64,
    slots: [Vec<Entry<T>>; SLOTS],
}

impl<T> Level<T> {
    fn new() -> Level<T> {
        Level { occupied: 0, slots: std::array::from_fn(|_| Vec::new()) }
    }
}

pub struct Wheel<T> {
    /// Every deadline at or before `now` has been handed out.
    now: u64,
    levels: Box<[Level<T>; LEVELS]>,
    /// Entries inserted with a deadline already passed.
    overdue: Vec<T>,
    len: usize,
}

impl<T> Wheel<T> {
    /// An empty wheel whose time is `now` (milliseconds).
    pub fn new(now: u64) -> Wheel<T> {
        Wheel { now, levels: Box::new(std::array::from_fn(|_| Level::new())), overdue: Vec::new(), len: 0 }
    }

    /// How many entries wait in the wheel.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The wheel's time: every deadline up to it has been handed out.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedules `item` for `deadline`. A deadline already passed is handed
    /// out by the next [`Wheel::advance`].
    pub fn insert(&mut self, deadline: u64, item: T) {
        self.len += 1;
        if deadline <= self.now {
            self.overdue.push(item);
        } else {
            self.place(Entry { deadline, item });
        }
    }

    fn place(&mut self, entry: Entry<T>) {
        let at = if entry.deadline - self.now <= REACH {
            entry.deadline
        } else {
            (self.now / TOP_SLOT + 1) * TOP_SLOT
        };
        let level = level_for(self.now, at);
        let slot = ((at >> (BITS as usize * level)) & (SLOTS as u64 - 1)) as usize;
        let lvl = &mut self.levels[level];
        lvl.slots[slot].push(entry);
        lvl.occupied |= 1 << slot;
    }

    /// Moves the wheel's time to `now` and appends every item whose deadline
    /// is at or before it to `due`. Time never goes back: an earlier `now`
    /// only hands out overdue entries.
    pub fn advance(&mut self, now: u64, due: &mut Vec<T>) {
        self.len -= self.overdue.len();
        due.append(&mut self.overdue);
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now {
                break;
            }
            self.now = self.now.max(start);
            let lvl = &mut self.levels[level];
            lvl.occupied &= !(1 << slot);
            let mut entries = std::mem::take(&mut lvl.slots[slot]);
            for entry in entries.drain(..) {
                if entry.deadline <= self.now {
                    self.len -= 1;
                    due.push(entry.item);
                } else {
                    self.place(entry);
                }
            }
            // A small slot keeps its buffer: the finest slots fill and
            // empty every millisecond, and would otherwise allocate each
            // time. Large ones give their memory back.
            let emptied = &mut self.levels[level].slots[slot];
            if entries.capacity() <= KEEP_SLOT && emptied.is_empty() {
                *emptied = entries;
            }
        }
        self.now = self.now.max(now);
    }

    /// The earliest occupied slot: (level, slot, the time it starts).
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        let mut best: Option<(usize, usize, u64)> = None;
        for (level, lvl) in self.levels.iter().enumerate() {
            if lvl.occupied == 0 {
                continue;
            }
            let shift = BITS as usize * level;
            let now_slot = ((self.now >> shift) & (SLOTS as u64 - 1)) as u32;
            let distance = lvl.occupied.rotate_right(now_slot).trailing_zeros();
            let slot = (now_slot + distance) as usize % SLOTS;
            let slot_span = 1u64 << shift;
            let block_span = slot_span << BITS;
            let block_start = self.now & !(block_span - 1);
            let mut start = block_start + slot as u64 * slot_span;
            if (slot as u32) < now_slot {
                start += block_span;
            }
            if best.is_none_or(|(_, _, s)| start < s) {
                best = Some((level, slot, start));
            }
        }
        best
    }
}

/// The level at which `deadline` first differs from `now`.
fn level_for(now: u64, deadline: u64) -> usize {
    let masked = ((now ^ deadline) | (SLOTS as u64 - 1)).min(SPAN - 1);
    let significant = 63 - masked.leading_zeros() as usize;
    significant / BITS as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fires_on_time_across_levels() {
        let mut wheel = Wheel::new(1_000);
        for d in [1_001, 1_064, 1_065, 5_000, 1_000 + 15_000, 1_000 + 86_400_000] {
            wheel.insert(d, d);
        }
        let mut due = Vec::new();
        wheel.advance(1_000, &mut due);
        assert!(due.is_empty());
        wheel.advance(1_064, &mut due);
        assert_eq!(due, vec![1_001, 1_064]);
        due.clear();
        wheel.advance(16_000, &mut due);
        assert_eq!(due, vec![1_065, 5_000, 16_000]);
        due.clear();
        wheel.advance(86_400_999, &mut due);
        assert!(due.is_empty());
        wheel.advance(86_401_000, &mut due);
        assert_eq!(due, vec![86_401_000]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadlines_fire_at_the_next_advance() {
        let mut wheel = Wheel::new(500);
        wheel.insert(10, "late");
        wheel.insert(500, "now");
        let mut due = Vec::new();
        wheel.advance(500, &mut due);
        assert_eq!(due, vec!["late", "now"]);
    }

    #[test]
    fn deadlines_beyond_the_span_still_fire_exactly() {
        let mut wheel = Wheel::new(0);
        let far = SPAN * 3 + 12_345;
        wheel.insert(far, ());
        let mut due = Vec::new();
        let mut t = 0;
        while t < far - 1 {
            t = (t + SPAN / 2).min(far - 1);
            wheel.advance(t, &mut due);
            assert!(due.is_empty(), "fired early at {t}");
        }
        wheel.advance(far, &mut due);
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn far_deadlines_from_any_start_fire_exactly_and_never_spin() {
        // Starts not aligned to the span, deadlines just under, at and
        // past it: a deadline a lap ahead must not land in the current top
        // slot and be handed back forever.
        for start in [12_345, SPAN - 7, SPAN / 2 + 3, (SPAN - TOP_SLOT) + 99] {
            for ahead in [REACH - 1, REACH, REACH + 1, SPAN - 50, SPAN, 3 * SPAN + 12_345] {
                let mut wheel = Wheel::new(start);
                let far = start + ahead;
                wheel.insert(far, ());
                let mut due = Vec::new();
                let mut t = start;
                while t < far - 1 {
                    t = (t + TOP_SLOT / 3).min(far - 1);
                    wheel.advance(t, &mut due);
                    assert!(due.is_empty(), "start {start} ahead {ahead}: fired early at {t}");
                }
                wheel.advance(far, &mut due);
                assert_eq!(due.len(), 1, "start {start} ahead {ahead}");
                assert!(wheel.is_empty());
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop_oneof![0u64..100, 0u64..5_000, 0u64..300_000, 0u64..100_000_000].prop_map(Op::Insert),
            1 => prop_oneof![0u64..70, 0u64..5_000, 0u64..1_000_000].prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Every entry fires exactly once, never before its deadline, and at
        /// the first advance whose time reaches it.
        #[test]
        fn every_entry_fires_once_on_time(start in 0u64..1u64 << 40, ops in proptest::collection::vec(op(), 1..300)) {
            let mut wheel = Wheel::new(start);
            let mut now = start;
            let mut pending: Vec<(usize, u64)> = Vec::new();
            let mut next_id = 0usize;
            let mut fired = std::collections::HashSet::new();
            for op in ops.into_iter().chain([Op::Advance(200_000_000)]) {
                match op {
                    Op::Insert(offset) => {
                        // Some deadlines lie in the past on purpose.
                        let deadline = (now + offset).saturating_sub(20);
                        wheel.insert(deadline, next_id);
                        pending.push((next_id, deadline));
                        next_id += 1;
                    }
                    Op::Advance(by) => {
                        now += by;
                        let mut due = Vec::new();
                        wheel.advance(now, &mut due);
                        for id in &due {
                            prop_assert!(fired.insert(*id), "entry {} fired twice", id);
                        }
                        // `pending` holds only entries not fired yet: each must
                        // fire now exactly when its deadline has come.
                        for &(id, deadline) in &pending {
                            prop_assert_eq!(due.contains(&id), deadline <= now,
                                "entry {} deadline {} now {}", id, deadline, now);
                        }
                        pending.retain(|(id, _)| !due.contains(id));
                        prop_assert_eq!(wheel.len(), pending.len());
                    }
                }
            }
            prop_assert!(pending.is_empty());
        }
    }
}
