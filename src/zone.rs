//! Time zones, and the local calendar that business hours and cap windows
//! follow.
//!
//! Zones come from the IANA database bundled into the binary (jiff's copy),
//! so a target's hours and caps do not depend on the machine's zoneinfo.
//! Looking up an offset through the database is a binary search over a
//! zone's whole history; a [`Zone`] keeps the transitions around the time it
//! was loaded (a year back, two ahead) in a short table, and asks the
//! database only outside it.

use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::tz::{TimeZone, TimeZoneDatabase};

/// How far back and ahead of its load time a zone keeps its transitions.
const BEHIND_SECS: i64 = 400 * 86_400;
const AHEAD_SECS: i64 = 800 * 86_400;

fn database() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

#[derive(Clone, Debug)]
pub struct Zone {
    name: Box<str>,
    tz: TimeZone,
    /// (first second, its offset from UTC in seconds), ascending; covers
    /// `[span.0, span.1)`.
    offsets: Vec<(i64, i32)>,
    span: (i64, i64),
}

impl Zone {
    /// The zone named `name` (IANA, such as `America/New_York`, or `UTC`),
    /// with its transitions around `now_ms` tabled.
    pub fn get(name: &str, now_ms: u64) -> Result<Zone, String> {
        let tz = database().get(name).map_err(|_| format!("{name:?} is not an IANA time zone"))?;
        let now = (now_ms / 1000) as i64;
        let span = (now - BEHIND_SECS, now + AHEAD_SECS);
        let start = Timestamp::from_second(span.0).map_err(|e| e.to_string())?;
        let mut offsets = vec![(span.0, tz.to_offset(start).seconds())];
        for transition in tz.following(start) {
            let at = transition.timestamp().as_second();
            if at >= span.1 {
                break;
            }
            offsets.push((at, transition.offset().seconds()));
        }
        Ok(Zone { name: name.into(), tz, offsets, span })
    }

    /// Coordinated Universal Time.
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
            offsets: vec![(i64::MIN, 0)],
            span: (i64::MIN, i64::MAX),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Seconds east of UTC at `secs` (seconds since the epoch).
    pub fn offset_at(&self, secs: i64) -> i32 {
        if secs >= self.span.0 && secs < self.span.1 {
            let i = self.offsets.partition_point(|&(from, _)| from <= secs);
            return self.offsets[i.saturating_sub(1)].1;
        }
        Timestamp::from_second(secs).map_or(0, |ts| self.tz.to_offset(ts).seconds())
    }

    /// The local wall-clock time at `now_ms`.
    #[inline]
    pub fn local(&self, now_ms: u64) -> Local {
        let secs = (now_ms / 1000) as i64;
        Local(secs + i64::from(self.offset_at(secs)))
    }
}

/// A local wall-clock time: seconds since 1970-01-01T00:00 in local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local(pub i64);

impl Local {
    /// Local days since 1970-01-01.
    pub fn day(self) -> i64 {
        self.0.div_euclid(86_400)
    }

    /// Local hours since 1970-01-01T00:00.
    pub fn hour(self) -> i64 {
        self.0.div_euclid(3_600)
    }

    /// 0 = Sunday … 6 = Saturday (1970-01-01 was a Thursday).
    pub fn weekday(self) -> u32 {
        (self.day() + 4).rem_euclid(7) as u32
    }

    /// Minutes since local midnight.
    pub fn minute_of_day(self) -> u32 {
        (self.0.rem_euclid(86_400) / 60) as u32
    }

    /// Minutes since Sunday 00:00.
    pub fn minute_of_week(self) -> u32 {
        self.weekday() * 1_440 + self.minute_of_day()
    }

    /// Local months since January 1970.
    pub fn month(self) -> i64 {
        let (year, month, _) = crate::clock::civil_from_days(self.day());
        (year - 1970) * 12 + i64::from(month) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC civil time.
    fn utc(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    #[test]
    fn offsets_follow_dst_in_new_york() {
        let zone = Zone::get("America/New_York", utc("2026-01-01T00:00:00Z")).unwrap();
        // 2026-03-08 02:00 EST → 03:00 EDT (07:00 UTC).
        let before = zone.local(utc("2026-03-08T06:59:59Z"));
        let after = zone.local(utc("2026-03-08T07:00:00Z"));
        assert_eq!(before.minute_of_day(), 119);
        assert_eq!(after.minute_of_day(), 180);
        assert_eq!(after.weekday(), 0, "a Sunday");
        // 2026-11-01 02:00 EDT → 01:00 EST (06:00 UTC).
        assert_eq!(zone.local(utc("2026-11-01T05:59:00Z")).minute_of_day(), 119);
        assert_eq!(zone.local(utc("2026-11-01T06:00:00Z")).minute_of_day(), 60);
    }

    #[test]
    fn tabled_offsets_agree_with_the_database() {
        let now = utc("2026-06-01T00:00:00Z");
        for name in ["America/New_York", "Europe/London", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"] {
            let zone = Zone::get(name, now).unwrap();
            let tz = database().get(name).unwrap();
            let mut secs = (now / 1000) as i64 - 500 * 86_400;
            while secs < (now / 1000) as i64 + 900 * 86_400 {
                let expected = tz.to_offset(Timestamp::from_second(secs).unwrap()).seconds();
                assert_eq!(zone.offset_at(secs), expected, "{name} at {secs}");
                secs += 3_607;
            }
        }
    }

    #[test]
    fn calendar_fields() {
        let local = Zone::utc().local(utc("2024-02-29T13:45:10Z"));
        assert_eq!(local.weekday(), 4, "a Thursday");
        assert_eq!(local.minute_of_day(), 13 * 60 + 45);
        assert_eq!(local.month(), (2024 - 1970) * 12 + 1);
        let jan = Zone::utc().local(utc("1970-01-31T23:59:59Z"));
        assert_eq!(jan.month(), 0);
        assert_eq!(Zone::utc().local(utc("1970-02-01T00:00:00Z")).month(), 1);
    }

    #[test]
    fn unknown_zones_are_errors() {
        assert!(Zone::get("Mars/Olympus_Mons", 0).is_err());
        assert!(Zone::get("America/New_York", 0).is_ok());
    }
}
