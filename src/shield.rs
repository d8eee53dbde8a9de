//! The Ping Shield's limits: surges (a rate per key and per key and
//! publisher) and publishers who ping a lot but send no calls (a claim
//! ratio over a sliding window). Duplicate pings are stopped by the table
//! itself (the echo of a live reservation, and `already_processing`).
//!
//! Both limits are written by hand because they run on every ping:
//! - the rate is a GCRA (generic cell rate algorithm): one "theoretical
//!   arrival time" per limiter, moved forward by one emission interval per
//!   ping, so a limiter is a single integer and a check is one
//!   compare-and-swap, with no timer and no queue;
//! - the claim window is a ring of buckets with running totals, so adding a
//!   ping or a claim and reading the ratio are O(1).
//!
//! State per (key, publisher) lives in 16 lock shards, is bounded to
//! [`MAX_PAIRS`], and is dropped after it has been idle for a window.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ahash::AHashMap;
use crossbeam::utils::CachePadded;
use parking_lot::Mutex;

use crate::sym::Sym;

/// Which earlier reservations a ping is a repeat of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DedupeScope {
    /// Reservations made on the same RTB key.
    #[default]
    Key,
    /// Reservations made on any key of the campaign.
    Campaign,
}

/// The shield settings of one RTB key.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub dedupe_scope: DedupeScope,
    /// 0: no surge limit.
    pub rate_limit_per_sec: u32,
    /// Pings allowed at once beyond the rate (0: one second's worth).
    pub burst: u32,
    /// 0: no claim-based limit.
    pub min_claim_ratio: f64,
    pub claim_ratio_window_secs: u32,
    pub claim_ratio_min_pings: u32,
    pub throttled_allow_one_in: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            dedupe_scope: DedupeScope::Key,
            rate_limit_per_sec: 0,
            burst: 0,
            min_claim_ratio: 0.0,
            claim_ratio_window_secs: 3_600,
            claim_ratio_min_pings: 1_000,
            throttled_allow_one_in: 10,
        }
    }
}

impl Settings {
    /// True when a ping must go through [`Shield::screen`].
    pub fn limits(&self) -> bool {
        self.rate_limit_per_sec > 0 || self.min_claim_ratio > 0.0
    }

    fn burst(&self) -> u64 {
        u64::from(if self.burst == 0 { self.rate_limit_per_sec } else { self.burst }).max(1)
    }

    fn window_ms(&self) -> u64 {
        u64::from(self.claim_ratio_window_secs.max(1)) * 1000
    }
}

/// A GCRA rate limiter: the theoretical arrival time of the next ping, in
/// nanoseconds (so a rate that does not divide a second is kept to within
/// a nanosecond per ping, not a microsecond). Snapshots keep microseconds.
#[derive(Debug, Default)]
pub struct Gcra(AtomicU64);

impl Gcra {
    /// The theoretical arrival time in µs, for snapshots.
    pub fn raw(&self) -> u64 {
        self.0.load(Ordering::Acquire) / 1_000
    }

    /// Sets the theoretical arrival time from µs (a snapshot's).
    pub fn set_raw(&self, tat_us: u64) {
        self.0.store(tat_us.saturating_mul(1_000), Ordering::Release);
    }

    /// Admits one ping at `now_ns` under `rate` per second with `burst`, or
    /// says how long (ns) until one would be admitted.
    pub fn admit(&self, now_ns: u64, rate: u32, burst: u64) -> Result<(), u64> {
        let mut tat = self.0.load(Ordering::Acquire);
        loop {
            let next = next_arrival(tat, now_ns, rate, burst)?;
            match self.0.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

/// How far ahead of the burst an arrival time may be before it is taken for
/// a clock set back rather than pings whose clock reads arrived out of order.
const CLOCK_STEP_NS: u64 = 1_000_000_000;

/// The interval between pings and the burst's tolerance, in ns.
fn spacing(rate: u32, burst: u64) -> (u64, u64) {
    // Rounded up: never a ping more than the rate (at most a nanosecond
    // per ping fewer).
    let interval = 1_000_000_000u64.div_ceil(u64::from(rate.max(1)));
    (interval, interval.saturating_mul(burst))
}

/// The arrival time to measure a ping at `now_ns` against. Admitting never
/// puts it further ahead than the burst from the clock the admitting ping
/// read. A little further ahead of ours comes from a ping that read the
/// clock a moment later and got here first: it stands (this ping is just
/// measured more strictly, and no room is made). Much further ahead (over a
/// second past the burst) comes from a clock since set back, or a snapshot
/// taken before that, or a reload that cut the burst by more than a second's
/// worth; it would hold the publisher off for the whole step. What was sent
/// before cannot be told: the limiter starts afresh, once.
fn rebase(tat: u64, now_ns: u64, tolerance: u64) -> u64 {
    if tat > now_ns.saturating_add(tolerance).saturating_add(CLOCK_STEP_NS) { now_ns } else { tat }
}

/// The GCRA step: the theoretical arrival time after admitting a ping at
/// `now_ns`, or how long (ns) until one would be admitted.
fn next_arrival(tat: u64, now_ns: u64, rate: u32, burst: u64) -> Result<u64, u64> {
    let (interval, tolerance) = spacing(rate, burst);
    let tat = rebase(tat, now_ns, tolerance);
    let next = tat.max(now_ns) + interval;
    if next - now_ns > tolerance { Err(next - now_ns - tolerance) } else { Ok(next) }
}

/// Buckets per claim window.
const BUCKETS: usize = 60;

fn bucket_ms(window_ms: u64) -> u64 {
    window_ms.div_ceil(BUCKETS as u64).max(1)
}

/// Pings and claims over a sliding window, in 60 buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    bucket_ms: u64,
    /// Index (time / bucket_ms) of the newest bucket.
    head: u64,
    pings: [u32; BUCKETS],
    claims: [u32; BUCKETS],
    total_pings: u64,
    total_claims: u64,
}

impl Window {
    pub fn new(window_ms: u64) -> Window {
        Window {
            bucket_ms: bucket_ms(window_ms),
            head: 0,
            pings: [0; BUCKETS],
            claims: [0; BUCKETS],
            total_pings: 0,
            total_claims: 0,
        }
    }

    /// Moves the window to `now_ms`, emptying the buckets it leaves.
    fn roll(&mut self, now_ms: u64) {
        let index = now_ms / self.bucket_ms;
        if index <= self.head {
            return;
        }
        let steps = (index - self.head).min(BUCKETS as u64);
        for step in 1..=steps {
            let slot = ((self.head + step) % BUCKETS as u64) as usize;
            self.total_pings -= u64::from(self.pings[slot]);
            self.total_claims -= u64::from(self.claims[slot]);
            self.pings[slot] = 0;
            self.claims[slot] = 0;
        }
        self.head = index;
    }

    pub fn ping(&mut self, now_ms: u64) {
        self.roll(now_ms);
        let slot = (self.head % BUCKETS as u64) as usize;
        self.pings[slot] = self.pings[slot].saturating_add(1);
        self.total_pings += 1;
    }

    pub fn claim(&mut self, now_ms: u64) {
        self.roll(now_ms);
        let slot = (self.head % BUCKETS as u64) as usize;
        self.claims[slot] = self.claims[slot].saturating_add(1);
        self.total_claims += 1;
    }

    /// (pings, claims) in the window.
    pub fn totals(&self) -> (u64, u64) {
        (self.total_pings, self.total_claims)
    }
}

/// A (key, publisher) pair as a snapshot keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairImage {
    pub key: Sym,
    pub publisher: Box<str>,
    /// The limiter's theoretical arrival time, in µs.
    pub tat: u64,
    pub bucket_ms: u64,
    pub head: u64,
    pub pings: Vec<u32>,
    pub claims: Vec<u32>,
    pub throttled: u32,
    pub seen_ms: u64,
}

/// What the shield says of a ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Over a surge limit: try again after this many seconds.
    RateLimited {
        retry_after_secs: u32,
    },
    /// The publisher sends too few calls for its pings on this key.
    ClaimLimited,
}

/// The shield state of one (key, publisher).
struct Pair {
    tat: u64,
    window: Window,
    /// Pings seen while limited, to let one in N through.
    throttled: u32,
    seen_ms: u64,
}

/// Tracked (key, publisher) pairs at most; past it, new pairs are not
/// limited one by one (their key's own rate limit still holds).
pub const MAX_PAIRS: usize = 100_000;
const PAIR_SHARDS: usize = 16;

/// The pairs of one lock shard, by (key, publisher index).
type Pairs = AHashMap<(Sym, u32), Pair>;

#[derive(Default)]
pub struct Shield {
    pairs: [CachePadded<Mutex<Pairs>>; PAIR_SHARDS],
    tracked: AtomicUsize,
}

fn shard_of(key: Sym, publisher: u32) -> usize {
    (publisher as usize ^ (key.index() as usize).wrapping_mul(31)) % PAIR_SHARDS
}

impl Shield {
    /// Screens one ping of `publisher` on `key`: the key's rate (`key_rate`
    /// is the key's own limiter), the pair's rate, then the claim ratio.
    pub fn screen(
        &self,
        settings: &Settings,
        key: Sym,
        key_rate: &Gcra,
        publisher: u32,
        now_ms: u64,
    ) -> Verdict {
        let now_ns = now_ms.saturating_mul(1_000_000);
        let rate = settings.rate_limit_per_sec;
        let retry =
            |ns: u64| Verdict::RateLimited { retry_after_secs: (ns.div_ceil(1_000_000_000)).max(1) as u32 };
        if rate > 0
            && let Err(ns) = key_rate.admit(now_ns, rate, settings.burst())
        {
            return retry(ns);
        }
        let mut shard = self.pairs[shard_of(key, publisher)].lock();
        if !shard.contains_key(&(key, publisher)) {
            if self.tracked.load(Ordering::Relaxed) >= MAX_PAIRS {
                return Verdict::Pass;
            }
            self.tracked.fetch_add(1, Ordering::Relaxed);
        }
        let pair = shard.entry((key, publisher)).or_insert_with(|| Pair {
            tat: 0,
            window: Window::new(settings.window_ms()),
            throttled: 0,
            seen_ms: now_ms,
        });
        pair.seen_ms = now_ms;
        if rate > 0 {
            match next_arrival(pair.tat, now_ns, rate, settings.burst()) {
                Ok(next) => pair.tat = next,
                Err(ns) => return retry(ns),
            }
        }
        if settings.min_claim_ratio <= 0.0 {
            return Verdict::Pass;
        }
        if pair.window.bucket_ms != bucket_ms(settings.window_ms()) {
            // The window changed with a reload: start it afresh.
            pair.window = Window::new(settings.window_ms());
        }
        pair.window.ping(now_ms);
        let (pings, claims) = pair.window.totals();
        let limited = pings >= u64::from(settings.claim_ratio_min_pings)
            && (claims as f64) < settings.min_claim_ratio * pings as f64;
        if !limited {
            pair.throttled = 0;
            return Verdict::Pass;
        }
        // The first limited ping passes, then one in every N.
        let allowed = (pair.throttled % settings.throttled_allow_one_in.max(1)) == 0;
        pair.throttled = pair.throttled.wrapping_add(1);
        if allowed { Verdict::Pass } else { Verdict::ClaimLimited }
    }

    /// A call was claimed from a reservation of `publisher` on `key`.
    pub fn claimed(&self, settings: &Settings, key: Sym, publisher: u32, now_ms: u64) {
        if settings.min_claim_ratio <= 0.0 {
            return;
        }
        if let Some(pair) = self.pairs[shard_of(key, publisher)].lock().get_mut(&(key, publisher)) {
            pair.window.claim(now_ms);
        }
    }

    /// Drops pairs idle for longer than `idle_ms`.
    pub fn sweep(&self, now_ms: u64, idle_ms: u64) {
        for shard in &self.pairs {
            let mut shard = shard.lock();
            let before = shard.len();
            shard.retain(|_, pair| pair.seen_ms + idle_ms > now_ms);
            self.tracked.fetch_sub(before - shard.len(), Ordering::Relaxed);
        }
    }

    /// (key, publisher) pairs tracked now.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Every pair, for a snapshot; `publisher` names a publisher index.
    pub fn export(&self, publisher: impl Fn(u32) -> Box<str>) -> Vec<PairImage> {
        let mut out = Vec::new();
        for shard in &self.pairs {
            for (&(key, index), pair) in shard.lock().iter() {
                out.push(PairImage {
                    key,
                    publisher: publisher(index),
                    // Microseconds, as snapshots have always kept it.
                    tat: pair.tat / 1_000,
                    bucket_ms: pair.window.bucket_ms,
                    head: pair.window.head,
                    pings: pair.window.pings.to_vec(),
                    claims: pair.window.claims.to_vec(),
                    throttled: pair.throttled,
                    seen_ms: pair.seen_ms,
                });
            }
        }
        out
    }

    /// Restores pairs from a snapshot; `publisher` gives a name's index.
    pub fn import(&self, images: Vec<PairImage>, publisher: impl Fn(&str) -> u32) {
        for image in images {
            let mut window = Window::new(image.bucket_ms.saturating_mul(BUCKETS as u64));
            window.bucket_ms = image.bucket_ms.max(1);
            window.head = image.head;
            for (i, (p, c)) in image.pings.iter().zip(&image.claims).take(BUCKETS).enumerate() {
                window.pings[i] = *p;
                window.claims[i] = *c;
            }
            window.total_pings = window.pings.iter().map(|&n| u64::from(n)).sum();
            window.total_claims = window.claims.iter().map(|&n| u64::from(n)).sum();
            let index = publisher(&image.publisher);
            let tat = image.tat.saturating_mul(1_000);
            let pair = Pair { tat, window, throttled: image.throttled, seen_ms: image.seen_ms };
            let mut shard = self.pairs[shard_of(image.key, index)].lock();
            if shard.insert((image.key, index), pair).is_none() {
                self.tracked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `admit` with times in µs, as these tests are written.
    fn us(g: &Gcra, now_us: u64, rate: u32, burst: u64) -> Result<(), u64> {
        g.admit(now_us * 1_000, rate, burst).map_err(|ns| ns.div_ceil(1_000))
    }

    #[test]
    fn a_rate_that_does_not_divide_a_second_is_kept() {
        // 600,000 a second is an interval of 1.67 µs: in µs it was 1 µs,
        // a million a second.
        let g = Gcra::default();
        let start = 1_000_000_000_000u64;
        let admitted = (0..2_000_000u64).filter(|i| g.admit(start + i * 500, 600_000, 10).is_ok()).count();
        assert!((599_000..=600_010).contains(&admitted), "{admitted} in one second");
    }
    use proptest::prelude::*;

    #[test]
    fn gcra_allows_a_burst_then_the_rate() {
        let g = Gcra::default();
        let start = 1_000_000_000;
        for i in 0..5 {
            assert_eq!(us(&g, start, 10, 5), Ok(()), "burst ping {i}");
        }
        // The sixth waits one interval (100 ms at 10/s).
        assert_eq!(us(&g, start, 10, 5), Err(100_000));
        assert_eq!(us(&g, start + 99_999, 10, 5), Err(1));
        assert_eq!(us(&g, start + 100_000, 10, 5), Ok(()));
        // After a second idle, the whole burst is back.
        let later = start + 2_000_000;
        for _ in 0..5 {
            assert_eq!(us(&g, later, 10, 5), Ok(()));
        }
        assert!(us(&g, later, 10, 5).is_err());
    }

    #[test]
    fn a_clock_set_back_does_not_hold_a_publisher_off() {
        let g = Gcra::default();
        let start = 100_000_000;
        while us(&g, start, 10, 5).is_ok() {}
        // A minute earlier: the limiter starts afresh, a whole burst, and
        // not a minute later.
        let back = start - 60_000_000;
        for i in 0..5 {
            assert_eq!(us(&g, back, 10, 5), Ok(()), "burst ping {i}");
        }
        assert_eq!(us(&g, back, 10, 5), Err(100_000));
    }

    #[test]
    fn a_ping_that_read_the_clock_a_moment_earlier_gets_no_fresh_burst() {
        let g = Gcra::default();
        let now = 100_000_000;
        // 500 µs apart, a burst of 4,000: saturated at `now`.
        while us(&g, now, 2_000, 4_000).is_ok() {}
        // A ping whose clock read came 1 ms before the last one's.
        assert!(us(&g, now - 1_000, 2_000, 4_000).is_err());
        assert!(us(&g, now, 2_000, 4_000).is_err());
    }

    proptest! {
        /// Over any span, a GCRA admits at most burst + rate × span pings.
        #[test]
        fn gcra_never_admits_more_than_the_rate(rate in 1u32..2_000, burst in 1u64..50, steps in proptest::collection::vec(0u64..5_000_000, 1..400)) {
            let g = Gcra::default();
            let start = 10_000_000_000u64;
            let mut now = start;
            let mut admitted = 0u64;
            for step in steps {
                now += step;
                if g.admit(now, rate, burst).is_ok() {
                    admitted += 1;
                }
                let interval = 1_000_000_000u64.div_ceil(u64::from(rate));
                let allowed = burst + (now - start) / interval;
                prop_assert!(admitted <= allowed, "{} admitted, {} allowed", admitted, allowed);
            }
        }

        /// The same with pings whose clock reads arrive out of order (read,
        /// then preempted before they reach the limiter): never more than
        /// the rate allows up to the latest time read.
        #[test]
        fn gcra_holds_with_clock_reads_out_of_order(rate in 1u32..5_000, burst in 1u64..50, steps in proptest::collection::vec(-3_000_000i64..5_000_000, 1..400)) {
            let g = Gcra::default();
            let start = 10_000_000_000u64;
            let (mut now, mut latest) = (start, start);
            let mut admitted = 0u64;
            for step in steps {
                // Reads at most 5 ms behind the latest one.
                now = now.saturating_add_signed(step).max(start).max(latest.saturating_sub(5_000_000));
                latest = latest.max(now);
                if g.admit(now, rate, burst).is_ok() {
                    admitted += 1;
                }
                let interval = 1_000_000_000u64.div_ceil(u64::from(rate));
                let allowed = burst + (latest - start) / interval;
                prop_assert!(admitted <= allowed, "{} admitted, {} allowed", admitted, allowed);
            }
        }
    }

    #[test]
    fn windows_slide_by_bucket() {
        let mut w = Window::new(60_000); // 1 s buckets
        for t in 0..30 {
            w.ping(t * 1000);
        }
        w.claim(29_000);
        assert_eq!(w.totals(), (30, 1));
        w.ping(60_000);
        // The first second's bucket left the window.
        assert_eq!(w.totals(), (30, 1));
        w.ping(89_000);
        assert_eq!(w.totals(), (2, 0), "everything up to 29 s has left");
        w.ping(1_000_000);
        assert_eq!(w.totals(), (1, 0));
    }

    fn limited(settings: &Settings) -> Settings {
        Settings {
            min_claim_ratio: 0.1,
            claim_ratio_min_pings: 20,
            throttled_allow_one_in: 4,
            ..settings.clone()
        }
    }

    #[test]
    fn the_claim_limit_throttles_and_recovers() {
        let shield = Shield::default();
        let settings = limited(&Settings::default());
        let key = Sym::intern("shield-test-key");
        let rate = Gcra::default();
        let now = 1_000_000;
        // 19 pings: below the minimum, all pass.
        for _ in 0..19 {
            assert_eq!(shield.screen(&settings, key, &rate, 7, now), Verdict::Pass);
        }
        // From the 20th, with no claims, only one in four passes.
        let verdicts: Vec<Verdict> = (0..8).map(|_| shield.screen(&settings, key, &rate, 7, now)).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Pass).count(), 2, "{verdicts:?}");
        // Another publisher is not affected.
        assert_eq!(shield.screen(&settings, key, &rate, 8, now), Verdict::Pass);
        // Three claims bring 3/28 over 10 %: everything passes again.
        for _ in 0..3 {
            shield.claimed(&settings, key, 7, now);
        }
        assert_eq!(shield.screen(&settings, key, &rate, 7, now), Verdict::Pass);
        assert_eq!(shield.screen(&settings, key, &rate, 7, now), Verdict::Pass);
        // Idle pairs are dropped.
        shield.sweep(now + 3_600_001, 3_600_000);
        assert_eq!(shield.tracked(), 0);
    }

    #[test]
    fn a_spent_limiter_stays_spent_through_a_snapshot() {
        let shield = Shield::default();
        let settings = Settings { rate_limit_per_sec: 10, burst: 3, ..Settings::default() };
        let key = Sym::intern("shield-snapshot-key");
        let now = 1_000_000;
        // Key limiter (rate 10/s, burst 3) spent at `now`; the pair too.
        let rate = Gcra::default();
        while shield.screen(&settings, key, &rate, 7, now) == Verdict::Pass {}
        let (restored_rate, restored) = (Gcra::default(), Shield::default());
        restored_rate.set_raw(rate.raw());
        restored.import(shield.export(|_| "p".into()), |_| 7);
        let fresh = Gcra::default();
        // The key's limiter is still spent, and so is the pair's (checked with
        // a fresh key limiter).
        assert!(matches!(
            restored.screen(&settings, key, &restored_rate, 7, now),
            Verdict::RateLimited { .. }
        ));
        assert!(matches!(restored.screen(&settings, key, &fresh, 7, now), Verdict::RateLimited { .. }));
        // One interval (100 ms) later, a ping passes again.
        assert_eq!(restored.screen(&settings, key, &restored_rate, 7, now + 100), Verdict::Pass);
    }
}
