//! Business hours: when a target takes calls, in its local time.
//!
//! The config lists shifts in Retreaver's form (a day of the week, 0 =
//! Sunday, and `time_open`/`time_close` as HHMM). They compile into one bit
//! per minute of the week, so checking a ping is a bit test on the local
//! minute: no list to walk, and DST is handled by the zone's offset.

use std::fmt;

const WEEK_MINUTES: usize = 7 * 1_440;

/// One shift as written in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    /// 0 = Sunday … 6 = Saturday.
    pub day_of_week: u32,
    /// HHMM, 0000 to 2400.
    pub time_open: u32,
    pub time_close: u32,
    /// `false` closes the day whatever the times say.
    pub work_day: bool,
    /// An overnight shift: open from `time_open` on this day until
    /// `time_close` on the next.
    pub inverted: bool,
}

/// Why a shift cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShiftError {
    Day(u32),
    Time(u32),
    CloseBeforeOpen { open: u32, close: u32 },
}

impl fmt::Display for ShiftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShiftError::Day(d) => write!(f, "day_of_week {d} is not 0 (Sunday) to 6 (Saturday)"),
            ShiftError::Time(t) => write!(f, "{t} is not a time of day as HHMM (0000 to 2400)"),
            ShiftError::CloseBeforeOpen { open, close } => write!(
                f,
                "time_close {close:04} is not after time_open {open:04}; set inverted = true for an overnight shift"
            ),
        }
    }
}

/// Minutes since midnight of an HHMM time.
fn minutes(hhmm: u32) -> Result<u32, ShiftError> {
    let (h, m) = (hhmm / 100, hhmm % 100);
    if m >= 60 || h > 24 || (h == 24 && m > 0) {
        return Err(ShiftError::Time(hhmm));
    }
    Ok(h * 60 + m)
}

/// The minutes of the week a target is open.
#[derive(Clone, PartialEq, Eq)]
pub struct Hours {
    open: Box<[u64; WEEK_MINUTES.div_ceil(64)]>,
}

impl fmt::Debug for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open: u32 = self.open.iter().map(|w| w.count_ones()).sum();
        write!(f, "Hours({open} minutes a week)")
    }
}

impl Hours {
    /// Closed all week.
    pub fn closed() -> Hours {
        Hours { open: Box::new([0; WEEK_MINUTES.div_ceil(64)]) }
    }

    /// Compiles a list of shifts. Days without a shift are closed, and so
    /// is a whole day marked `work_day = false`, whatever other shifts
    /// (its own, or the previous night's overnight one) say.
    pub fn new(shifts: &[Shift]) -> Result<Hours, ShiftError> {
        let mut hours = Hours::closed();
        let mut closed = [false; 7];
        for s in shifts {
            if s.day_of_week > 6 {
                return Err(ShiftError::Day(s.day_of_week));
            }
            let (open, close) = (minutes(s.time_open)?, minutes(s.time_close)?);
            if !s.work_day {
                closed[s.day_of_week as usize] = true;
                continue;
            }
            let day = s.day_of_week as usize * 1_440;
            if s.inverted {
                hours.set(day + open as usize, day + 1_440);
                let next = (s.day_of_week as usize + 1) % 7 * 1_440;
                hours.set(next, next + close as usize);
            } else if close > open {
                hours.set(day + open as usize, day + close as usize);
            } else if close < open {
                return Err(ShiftError::CloseBeforeOpen { open: s.time_open, close: s.time_close });
            }
        }
        for day in (0..7).filter(|&d| closed[d]) {
            for minute in day * 1_440..(day + 1) * 1_440 {
                hours.open[minute / 64] &= !(1 << (minute % 64));
            }
        }
        Ok(hours)
    }

    fn set(&mut self, from: usize, to: usize) {
        for minute in from..to.min(WEEK_MINUTES) {
            self.open[minute / 64] |= 1 << (minute % 64);
        }
    }

    /// True when the target is open at this minute of the week (0 = Sunday
    /// 00:00).
    #[inline]
    pub fn is_open(&self, minute_of_week: u32) -> bool {
        let m = minute_of_week as usize % WEEK_MINUTES;
        self.open[m / 64] & (1 << (m % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shift(day: u32, open: u32, close: u32) -> Shift {
        Shift { day_of_week: day, time_open: open, time_close: close, work_day: true, inverted: false }
    }

    fn at(day: u32, hhmm: u32) -> u32 {
        day * 1_440 + hhmm / 100 * 60 + hhmm % 100
    }

    #[test]
    fn a_day_shift() {
        let hours = Hours::new(&[shift(1, 900, 1700)]).unwrap();
        assert!(!hours.is_open(at(1, 859)));
        assert!(hours.is_open(at(1, 900)));
        assert!(hours.is_open(at(1, 1659)));
        assert!(!hours.is_open(at(1, 1700)));
        assert!(!hours.is_open(at(2, 1000)), "days without a shift are closed");
    }

    #[test]
    fn defaults_and_whole_days() {
        let hours = Hours::new(&[shift(0, 0, 2400)]).unwrap();
        assert!(hours.is_open(at(0, 0)) && hours.is_open(at(0, 2359)));
        assert!(!hours.is_open(at(1, 0)));
        let closed = Hours::new(&[Shift { work_day: false, ..shift(3, 0, 2400) }]).unwrap();
        assert!(!closed.is_open(at(3, 1200)));
    }

    #[test]
    fn a_day_marked_closed_stays_closed_whatever_else_is_listed() {
        let monday_off = Shift { work_day: false, ..shift(1, 0, 2400) };
        let sunday_night = Shift { inverted: true, ..shift(0, 2200, 600) };
        for shifts in [[shift(1, 900, 1700), monday_off], [monday_off, shift(1, 900, 1700)]] {
            let hours = Hours::new(&shifts).unwrap();
            assert!(!hours.is_open(at(1, 1000)));
        }
        let hours = Hours::new(&[sunday_night, monday_off, shift(2, 900, 1700)]).unwrap();
        assert!(hours.is_open(at(0, 2300)));
        assert!(!hours.is_open(at(1, 100)), "Sunday's night shift stops at Monday's midnight");
        assert!(hours.is_open(at(2, 1000)));
    }

    #[test]
    fn an_overnight_shift_runs_into_the_next_day() {
        let friday_night = Shift { inverted: true, ..shift(5, 2200, 600) };
        let hours = Hours::new(&[friday_night]).unwrap();
        assert!(!hours.is_open(at(5, 2159)));
        assert!(hours.is_open(at(5, 2200)));
        assert!(hours.is_open(at(6, 0)));
        assert!(hours.is_open(at(6, 559)));
        assert!(!hours.is_open(at(6, 600)));
        assert!(!hours.is_open(at(5, 300)), "Friday early morning belongs to Thursday's shift");
        // Saturday night wraps into Sunday.
        let hours = Hours::new(&[Shift { inverted: true, ..shift(6, 2300, 100) }]).unwrap();
        assert!(hours.is_open(at(0, 30)));
    }

    #[test]
    fn invalid_shifts() {
        assert_eq!(Hours::new(&[shift(7, 0, 100)]), Err(ShiftError::Day(7)));
        assert_eq!(Hours::new(&[shift(1, 960, 1000)]), Err(ShiftError::Time(960)));
        assert_eq!(Hours::new(&[shift(1, 900, 2401)]), Err(ShiftError::Time(2401)));
        assert_eq!(
            Hours::new(&[shift(1, 1700, 900)]),
            Err(ShiftError::CloseBeforeOpen { open: 1700, close: 900 })
        );
    }
}
