//! The injectable clock every time-dependent part reads.
//!
//! Time is wall-clock milliseconds since the Unix epoch: reservations expire
//! at a wall time the publisher is told (`expires_at`), caps roll over on
//! calendar boundaries, and snapshots must make sense after a restart, so a
//! monotonic clock would not do. Tests drive a [`ManualClock`] instead of
//! sleeping, which makes TTL and window tests exact and fast.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the engine reads the time from.
#[derive(Clone, Debug)]
pub struct Clock(Source);

#[derive(Clone, Debug)]
enum Source {
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// Milliseconds since the Unix epoch.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Source::System => {
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
            }
            Source::Manual(ms) => ms.load(Ordering::Acquire),
        }
    }

    /// True for a clock that only moves when a test moves it.
    pub fn is_manual(&self) -> bool {
        matches!(self.0, Source::Manual(_))
    }
}

/// A clock that stands still until it is told to move.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `start_ms` milliseconds since the Unix epoch.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(start_ms)))
    }

    /// The [`Clock`] to hand to the engine.
    pub fn clock(&self) -> Clock {
        Clock(Source::Manual(self.0.clone()))
    }

    pub fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::AcqRel);
    }

    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::Release);
    }
}

/// Appends `ms` as RFC 3339 UTC with milliseconds: `2024-05-29T16:16:18.246Z`.
///
/// Written by hand because every reservation answer carries one: it costs
/// no allocation, and the date and time of day are worked out once per
/// second per thread (answers given within a second share them).
pub fn write_rfc3339(ms: u64, out: &mut Vec<u8>) {
    thread_local! {
        /// The last second written, and its text up to the seconds.
        static LAST: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let secs = ms / 1000;
    let (last, mut text) = LAST.get();
    if last != secs {
        text = second_text(secs);
        LAST.set((secs, text));
    }
    out.extend_from_slice(&text);
    let mut millis = *b".000Z";
    put_digits(&mut millis[1..4], (ms % 1000) as u32);
    out.extend_from_slice(&millis);
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since the epoch.
fn second_text(secs: u64) -> [u8; 19] {
    let days = secs / 86_400;
    let rem = (secs % 86_400) as u32;
    let (year, month, day) = civil_from_days(days as i64);
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut buf = [0u8; 19];
    let year = year.clamp(0, 9999) as u32;
    put_digits(&mut buf[0..4], year);
    buf[4] = b'-';
    put_digits(&mut buf[5..7], month);
    buf[7] = b'-';
    put_digits(&mut buf[8..10], day);
    buf[10] = b'T';
    put_digits(&mut buf[11..13], h);
    buf[13] = b':';
    put_digits(&mut buf[14..16], m);
    buf[16] = b':';
    put_digits(&mut buf[17..19], s);
    buf
}

/// `ms` as an RFC 3339 string (for the admin side).
pub fn rfc3339(ms: u64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(ms, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn put_digits(dst: &mut [u8], mut value: u32) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Converts days since 1970-01-01 to a (year, month, day) in the proleptic
/// Gregorian calendar, counting in 400-year eras of 146,097 days.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, March-based
    let mp = (5 * doy + 2) / 153; // month, March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_716_999_378_246), "2024-05-29T16:16:18.246Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    /// The second kept from one answer to the next is never served for
    /// another: instants back and forth across seconds, days and years
    /// each read as jiff reads them.
    #[test]
    fn the_kept_second_is_never_stale() {
        let instants = [
            1_716_999_378_246u64,
            1_716_999_378_999,
            1_716_999_379_000,
            1_716_999_378_001,
            0,
            1_716_999_378_246,
            1_735_689_599_999,
            1_735_689_600_000,
            86_399_999,
            86_400_000,
        ];
        for ms in instants.into_iter().chain((0..2_000).map(|i| 1_700_000_000_000 + i * 997)) {
            let want =
                jiff::Timestamp::from_millisecond(ms as i64).unwrap().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
            assert_eq!(rfc3339(ms), want.to_string(), "{ms}");
        }
    }

    #[test]
    fn agrees_with_jiff_style_arithmetic_over_many_days() {
        // Walk day by day across leap years and check that the date advances
        // by exactly one calendar day each time.
        let mut prev = civil_from_days(-1);
        for d in 0..200_000i64 {
            let cur = civil_from_days(d);
            let next_expected = {
                let (y, m, dd) = prev;
                let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
                let len = match m {
                    1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
                    4 | 6 | 9 | 11 => 30,
                    _ if leap => 29,
                    _ => 28,
                };
                if dd < len {
                    (y, m, dd + 1)
                } else if m < 12 {
                    (y, m + 1, 1)
                } else {
                    (y + 1, 1, 1)
                }
            };
            assert_eq!(cur, next_expected, "day {d}");
            prev = cur;
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let manual = ManualClock::new(1_000);
        let clock = manual.clock();
        assert!(clock.is_manual());
        assert_eq!(clock.now_ms(), 1_000);
        manual.advance(Duration::from_secs(15));
        assert_eq!(clock.now_ms(), 16_000);
        manual.set_ms(5);
        assert_eq!(clock.now_ms(), 5);
    }
}
