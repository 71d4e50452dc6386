//! Turning a local wall-clock time on a date into an instant, with dayshift's DST rules:
//! a time in a spring-forward gap moves to the first instant after the gap; a time in a
//! fall-back overlap takes its first occurrence.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A wall-clock time of day in seconds since midnight (0..=86400; 86400 is "24:00").
/// Schedules write "HH:MM" (seconds are for windows shorter than a minute, e.g. a
/// rehearsal: "HH:MM:SS").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(pub u32);

impl WallTime {
    /// Seconds in a day: "24:00".
    pub const DAY: u32 = 86_400;

    /// Parses "HH:MM" or "HH:MM:SS" (00:00 to 24:00).
    pub fn parse(text: &str) -> Result<WallTime, String> {
        let bad = || {
            format!(
                "expected a time \"HH:MM\" (or \"HH:MM:SS\") from 00:00 to 24:00, found \"{text}\""
            )
        };
        let parts: Vec<&str> = text.trim().split(':').collect();
        let (h, m, s) = match parts[..] {
            [h, m] => (h, m, "00"),
            [h, m, s] => (h, m, s),
            _ => return Err(bad()),
        };
        if h.is_empty() || h.len() > 2 || m.len() != 2 || s.len() != 2 {
            return Err(bad());
        }
        if ![h, m, s]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        let num = |p: &str| p.parse::<u32>().map_err(|_| bad());
        let (h, m, s) = (num(h)?, num(m)?, num(s)?);
        if m >= 60 || s >= 60 || h > 24 || (h == 24 && (m, s) != (0, 0)) {
            return Err(bad());
        }
        Ok(WallTime(h * 3600 + m * 60 + s))
    }
}

impl std::fmt::Display for WallTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (h, m, s) = (self.0 / 3600, self.0 / 60 % 60, self.0 % 60);
        if s == 0 {
            write!(f, "{h:02}:{m:02}")
        } else {
            write!(f, "{h:02}:{m:02}:{s:02}")
        }
    }
}

/// The instant at which the wall clock in `tz` shows `date` + `seconds` (seconds may
/// exceed one day). Gap: first instant after it. Overlap: first occurrence.
pub fn resolve(tz: Tz, date: NaiveDate, seconds: u32) -> Option<DateTime<Utc>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    let local = midnight.checked_add_signed(Duration::seconds(i64::from(seconds)))?;
    resolve_local(tz, local)
}

/// Like [`resolve`], for a naive local date-time.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => {
            // In a gap: the first local minute after it that exists is the transition.
            // Real zone transitions fall on whole minutes; gaps are at most a day long.
            // Start from the whole minute, so a time with seconds lands on the transition.
            let mut probe = local.with_second(0)?;
            for _ in 0..(48 * 60) {
                probe = probe.checked_add_signed(Duration::minutes(1))?;
                match tz.from_local_datetime(&probe) {
                    LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
                    LocalResult::Ambiguous(a, b) => return Some(a.min(b).with_timezone(&Utc)),
                    LocalResult::None => {}
                }
            }
            None
        }
    }
}
