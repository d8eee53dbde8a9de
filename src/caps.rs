//! Cap counters: how many calls a target took this hour, day and month of
//! its own calendar, in its lifetime, and how many it holds right now.
//!
//! Each windowed counter is one `AtomicU64` holding the window it counts in
//! (high 32 bits) and the count (low 32 bits), so reading it, rolling it over
//! to a new window and counting are a single compare-and-swap: no lock, and
//! no moment where a count from the old window leaks into the new one.
//! Counting several caps at once takes them one by one and gives back the
//! ones already taken if a later one is full: a counter never passes its
//! cap, at the price that a racing check may see a cap full for an instant.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::status::Detailed;
use crate::zone::{Local, Zone};

/// The caps a target has; `None` is no cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub monthly: Option<u32>,
    pub hard: Option<u32>,
    /// Live calls plus counted reservations not yet claimed or expired.
    pub concurrency: Option<u32>,
}

/// The calendar windows of an instant in a zone: local hour, day and month
/// numbers since 1970.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub hour: u32,
    pub day: u32,
    pub month: u32,
}

impl Windows {
    pub fn at(zone: &Zone, ms: u64) -> Windows {
        Windows::of(zone.local(ms))
    }

    /// The windows of a local time.
    pub fn of(local: Local) -> Windows {
        let clamp = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        Windows { hour: clamp(local.hour()), day: clamp(local.day()), month: clamp(local.month()) }
    }
}

/// Which cap is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    Hourly,
    Daily,
    Monthly,
    Hard,
    Concurrency,
}

impl Full {
    /// The detailed status of a target turned away by this cap.
    pub fn status(self) -> Detailed {
        match self {
            Full::Concurrency => Detailed::TargetSimulcapped,
            _ => Detailed::TargetDisqualifiedByCap,
        }
    }

    /// What a person reads.
    pub fn info(self) -> arcstr::ArcStr {
        match self {
            Full::Hourly => arcstr::literal!("hourly cap reached"),
            Full::Daily => arcstr::literal!("daily cap reached"),
            Full::Monthly => arcstr::literal!("monthly cap reached"),
            Full::Hard => arcstr::literal!("hard (lifetime) cap reached"),
            Full::Concurrency => arcstr::literal!("concurrency cap reached"),
        }
    }
}

fn pack(window: u32, count: u32) -> u64 {
    (u64::from(window) << 32) | u64::from(count)
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// Of two copies of one counter's raw word taken a moment apart, the one
/// that errs high: the larger count if both are in one window, else the
/// later copy (its window is the newer).
pub fn larger_raw(earlier: u64, later: u64) -> u64 {
    let ((we, ne), (wl, nl)) = (unpack(earlier), unpack(later));
    if we == wl { pack(wl, ne.max(nl)) } else { later }
}

/// One counter that starts from zero in every new window.
#[derive(Debug, Default)]
pub struct Windowed(AtomicU64);

impl Windowed {
    /// The raw (window, count) word, for snapshots.
    pub fn raw(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub fn set_raw(&self, value: u64) {
        self.0.store(value, Ordering::Release);
    }

    /// The count in `window`.
    pub fn get(&self, window: u32) -> u32 {
        let (w, n) = unpack(self.0.load(Ordering::Acquire));
        if w == window { n } else { 0 }
    }

    /// Counts one in `window` unless that would pass `cap`, and returns the
    /// window it counted in. A count that comes late, with a time from the
    /// window just before the one this counter is in (its clock was read
    /// before another thread counted in the next window), or two before
    /// (the next local hour after a spring-forward change skips one),
    /// counts in the newer window: resetting the count to the older window
    /// would let the newer one pass its cap. The later give-back of such a
    /// count finds its own window gone and takes nothing back, so the slot
    /// stays used until the window ends: erring towards fewer calls, never
    /// more. Any other window (a new one, or one further back: the target's
    /// time zone changed, or the clock was set back) starts from zero.
    fn try_add(&self, window: u32, cap: Option<u32>) -> Option<u32> {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let (w, n) = unpack(current);
            let late = w > window && w - window <= 2;
            let (window, n) = if w == window || late { (w, n) } else { (window, 0) };
            if cap.is_some_and(|cap| n >= cap) || n == u32::MAX {
                return None;
            }
            match self.0.compare_exchange_weak(
                current,
                pack(window, n + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(window),
                Err(seen) => current = seen,
            }
        }
    }

    /// Takes one back from `window`; a window already rolled over keeps
    /// its new count.
    fn sub(&self, window: u32) {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let (w, n) = unpack(current);
            if w != window || n == 0 {
                return;
            }
            match self.0.compare_exchange_weak(current, pack(w, n - 1), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }
}

/// A plain counter with an optional cap.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU32);

impl Gauge {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    fn try_add(&self, cap: Option<u32>) -> bool {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            if cap.is_some_and(|cap| current >= cap) || current == u32::MAX {
                return false;
            }
            match self.0.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    fn sub(&self) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Restores a value (snapshots).
    pub fn set(&self, value: u32) {
        self.0.store(value, Ordering::Release);
    }
}

/// The counters of one target. They outlive config reloads: a reload
/// changes the caps, not the counts.
#[derive(Debug, Default)]
pub struct Counters {
    pub hourly: Windowed,
    pub daily: Windowed,
    pub monthly: Windowed,
    /// Lifetime total (its window is always 0).
    pub hard: Windowed,
    /// Counted reservations not yet claimed or expired, plus live calls.
    pub concurrency: Gauge,
    /// Live calls alone (for stats).
    pub calls: Gauge,
}

impl Counters {
    /// The first full cap, without counting anything.
    pub fn check(&self, limits: &Limits, w: Windows) -> Result<(), Full> {
        let full = |count: u32, cap: Option<u32>| cap.is_some_and(|cap| count >= cap);
        if full(self.hourly.get(w.hour), limits.hourly) {
            return Err(Full::Hourly);
        }
        if full(self.daily.get(w.day), limits.daily) {
            return Err(Full::Daily);
        }
        if full(self.monthly.get(w.month), limits.monthly) {
            return Err(Full::Monthly);
        }
        if full(self.hard.get(0), limits.hard) {
            return Err(Full::Hard);
        }
        Ok(())
    }

    /// True when the concurrency cap has no room.
    pub fn simulcapped(&self, limits: &Limits) -> bool {
        limits.concurrency.is_some_and(|cap| self.concurrency.get() >= cap)
    }

    /// Counts one call into every cap and takes a concurrency slot, or
    /// counts nothing and names the first full cap.
    pub fn try_count(&self, limits: &Limits, w: Windows) -> Result<(), Full> {
        // A failed cap rolls back the counts taken before it, in the
        // windows they were taken in (see `Windowed::try_add`).
        let Some(hour) = self.hourly.try_add(w.hour, limits.hourly) else {
            return Err(Full::Hourly);
        };
        let Some(day) = self.daily.try_add(w.day, limits.daily) else {
            self.hourly.sub(hour);
            return Err(Full::Daily);
        };
        let Some(month) = self.monthly.try_add(w.month, limits.monthly) else {
            self.hourly.sub(hour);
            self.daily.sub(day);
            return Err(Full::Monthly);
        };
        if self.hard.try_add(0, limits.hard).is_none() {
            self.hourly.sub(hour);
            self.daily.sub(day);
            self.monthly.sub(month);
            return Err(Full::Hard);
        }
        if !self.concurrency.try_add(limits.concurrency) {
            self.give_back_counts(Windows { hour, day, month });
            return Err(Full::Concurrency);
        }
        Ok(())
    }

    /// Gives back what [`Counters::try_count`] took (a counted reservation
    /// that expired or was released).
    pub fn give_back(&self, w: Windows) {
        self.give_back_counts(w);
        self.concurrency.sub();
    }

    /// Gives back what a counted reservation took when its windows cannot
    /// be told any more (its target's time zone changed since): the hard
    /// count (one window for all time) and the concurrency slot. Its
    /// hourly, daily and monthly counts stay until those windows end.
    pub fn give_back_without_windows(&self) {
        self.hard.sub(0);
        self.concurrency.sub();
    }

    fn give_back_counts(&self, w: Windows) {
        self.hourly.sub(w.hour);
        self.daily.sub(w.day);
        self.monthly.sub(w.month);
        self.hard.sub(0);
    }

    /// A counted reservation became a call: its slot now holds the call.
    pub fn call_started(&self) {
        let _ = self.calls.try_add(None);
    }

    /// A call ended: its slot is free.
    pub fn call_ended(&self) {
        self.calls.sub();
        self.concurrency.sub();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const W: Windows = Windows { hour: 10, day: 1, month: 0 };

    #[test]
    fn windows_roll_over() {
        let c = Counters::default();
        let limits = Limits { hourly: Some(2), ..Limits::default() };
        assert!(c.try_count(&limits, W).is_ok());
        assert!(c.try_count(&limits, W).is_ok());
        assert_eq!(c.try_count(&limits, W), Err(Full::Hourly));
        assert_eq!(c.check(&limits, W), Err(Full::Hourly));
        let next = Windows { hour: 11, ..W };
        assert_eq!(c.check(&limits, next), Ok(()));
        assert!(c.try_count(&limits, next).is_ok());
        assert_eq!(c.hourly.get(next.hour), 1);
        assert_eq!(c.daily.get(W.day), 3);
        // Giving back into a window that rolled over changes nothing.
        c.give_back(W);
        assert_eq!(c.hourly.get(next.hour), 1);
        assert_eq!(c.concurrency.get(), 2);
    }

    #[test]
    fn a_late_count_across_a_skipped_hour_never_resets_the_newer_one() {
        // Clocks go forward at 02:00: local hour numbers go from 01:xx to
        // 03:xx, two apart. A count whose clock was read at 01:59:59.999
        // lands after one at 03:00.
        let zone = Zone::get("America/New_York", 1_741_503_600_000).unwrap();
        let before = Windows::at(&zone, 1_741_503_599_999); // 2025-03-09 01:59:59.999 EST
        let after = Windows::at(&zone, 1_741_503_600_000); // 03:00:00 EDT
        assert_eq!(after.hour - before.hour, 2);
        let c = Counters::default();
        let limits = Limits { hourly: Some(1), ..Limits::default() };
        assert!(c.try_count(&limits, after).is_ok());
        assert_eq!(c.try_count(&limits, before), Err(Full::Hourly));
        assert_eq!(c.hourly.get(after.hour), 1);
        assert_eq!(c.try_count(&limits, after), Err(Full::Hourly), "the 03:00 hour stays full");
    }

    #[test]
    fn a_late_count_never_resets_a_newer_window() {
        let c = Counters::default();
        let limits = Limits { hourly: Some(2), daily: Some(3), ..Limits::default() };
        let next = Windows { hour: 11, ..W };
        assert!(c.try_count(&limits, next).is_ok());
        assert!(c.try_count(&limits, next).is_ok());
        // A count whose clock was read in the hour before: the newer hour
        // is full, and stays so.
        assert_eq!(c.try_count(&limits, W), Err(Full::Hourly));
        assert_eq!(c.hourly.get(next.hour), 2);
        // With room, it counts in the newer hour.
        let c = Counters::default();
        assert!(c.try_count(&limits, next).is_ok());
        assert!(c.try_count(&limits, W).is_ok());
        assert_eq!((c.hourly.get(next.hour), c.daily.get(W.day)), (2, 2));
        // A cap further down rolls back the hour it counted in, the newer one.
        let tight = Limits { hourly: Some(5), daily: Some(2), ..Limits::default() };
        assert_eq!(c.try_count(&tight, W), Err(Full::Daily));
        assert_eq!(c.hourly.get(next.hour), 2);
        // Three hours back is another time base (a new time zone), not a
        // late count: it starts from zero, as a new window does.
        let earlier = Windows { hour: 8, day: 5, month: 1 };
        assert!(c.try_count(&limits, earlier).is_ok());
        assert_eq!(c.hourly.get(earlier.hour), 1);
    }

    #[test]
    fn of_two_copies_the_larger_count_in_one_window_is_kept() {
        assert_eq!(larger_raw(pack(10, 3), pack(10, 2)), pack(10, 3));
        assert_eq!(larger_raw(pack(10, 1), pack(10, 2)), pack(10, 2));
        assert_eq!(larger_raw(pack(10, 5), pack(11, 1)), pack(11, 1), "the window rolled over");
    }

    #[test]
    fn a_full_cap_counts_nothing() {
        let c = Counters::default();
        let limits = Limits { hard: Some(1), concurrency: Some(5), ..Limits::default() };
        assert!(c.try_count(&limits, W).is_ok());
        assert_eq!(c.try_count(&limits, W), Err(Full::Hard));
        assert_eq!((c.hourly.get(W.hour), c.daily.get(W.day), c.concurrency.get()), (1, 1, 1));
        let limits = Limits { concurrency: Some(1), ..Limits::default() };
        assert_eq!(c.try_count(&limits, W), Err(Full::Concurrency));
        assert_eq!((c.hourly.get(W.hour), c.hard.get(0), c.concurrency.get()), (1, 1, 1));
        assert!(c.simulcapped(&limits));
    }

    #[test]
    fn contended_counting_never_passes_a_cap() {
        let c = std::sync::Arc::new(Counters::default());
        let limits = Limits { hourly: Some(1_000), concurrency: Some(700), ..Limits::default() };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..2_000).filter(|_| c.try_count(&limits, W).is_ok()).count())
            })
            .collect();
        let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(ok, 700);
        assert_eq!(c.concurrency.get(), 700);
        assert_eq!(c.hourly.get(W.hour), 700);
    }

    proptest! {
        /// Any interleaving of counting, giving back and calls keeps every
        /// counter within its cap and equal to what a plain model says.
        #[test]
        fn counters_match_a_model(ops in proptest::collection::vec(0u8..4, 0..200), cap in 1u32..6) {
            let c = Counters::default();
            let limits = Limits { hourly: Some(cap), daily: Some(cap + 1), hard: Some(cap + 2), concurrency: Some(cap), ..Limits::default() };
            let (mut counted, mut calls, mut total) = (0u32, 0u32, 0u32);
            for op in ops {
                match op {
                    0 => {
                        let room = total < cap && counted + calls < cap;
                        prop_assert_eq!(c.try_count(&limits, W).is_ok(), room);
                        if room { counted += 1; total += 1; }
                    }
                    1 if counted > 0 => { c.give_back(W); counted -= 1; total -= 1; }
                    2 if counted > 0 => { c.call_started(); counted -= 1; calls += 1; }
                    3 if calls > 0 => { c.call_ended(); calls -= 1; }
                    _ => {}
                }
                prop_assert_eq!(c.concurrency.get(), counted + calls);
                prop_assert_eq!(c.hourly.get(W.hour), total);
                prop_assert!(c.hourly.get(W.hour) <= cap && c.concurrency.get() <= cap);
            }
        }
    }
}
