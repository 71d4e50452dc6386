//! Turning a local wall-clock time on a date into an instant, with dayshift's DST rules:
//! a time in a spring-forward gap moves to the first instant after the gap; a time in a
//! fall-back overlap takes its first occurrence.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A wall-clock time of day in minutes since midnight (0..=1440; 1440 is "24:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(pub u32);

impl WallTime {
    /// Parses "HH:MM" (00:00 to 24:00).
    pub fn parse(text: &str) -> Result<WallTime, String> {
        let bad = || format!("expected a time \"HH:MM\" from 00:00 to 24:00, found \"{text}\"");
        let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        if !h.bytes().all(|b| b.is_ascii_digit()) || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if m >= 60 || h > 24 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(WallTime(h * 60 + m))
    }
}

impl std::fmt::Display for WallTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// The instant at which the wall clock in `tz` shows `date` + `minutes` (minutes may
/// exceed one day). Gap: first instant after it. Overlap: first occurrence.
pub fn resolve(tz: Tz, date: NaiveDate, minutes: u32) -> Option<DateTime<Utc>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    let local = midnight.checked_add_signed(Duration::minutes(i64::from(minutes)))?;
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
            let mut probe = local;
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
