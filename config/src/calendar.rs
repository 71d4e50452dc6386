//! Calendar months in a time zone: the month an instant falls in and the month's bounds.
//! The budget, `dayshift cost`, `dayshift cost estimate` and `dayshift status` all take
//! their month from here.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::schedule::resolve;

/// The first day of the month that contains `now` in `tz`.
pub fn month_of(now: DateTime<Utc>, tz: Tz) -> Option<NaiveDate> {
    let local = now.with_timezone(&tz).date_naive();
    NaiveDate::from_ymd_opt(local.year(), local.month(), 1)
}

/// The bounds of the month starting on `first_day`, taken in `tz`: its first instant and
/// the first instant of the next month.
pub fn month_bounds(tz: Tz, first_day: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let next = if first_day.month() == 12 {
        NaiveDate::from_ymd_opt(first_day.year() + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(first_day.year(), first_day.month() + 1, 1)?
    };
    Some((resolve(tz, first_day, 0)?, resolve(tz, next, 0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_in_berlin() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 23:30 UTC on 31 October is already 1 November in Berlin (CET, +1).
        let now = DateTime::parse_from_rfc3339("2025-10-31T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let first = month_of(now, tz).unwrap();
        assert_eq!(first, NaiveDate::from_ymd_opt(2025, 11, 1).unwrap());
        let (start, end) = month_bounds(tz, first).unwrap();
        assert_eq!(start.to_rfc3339(), "2025-10-31T23:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2025-11-30T23:00:00+00:00");
        // December runs into the next year.
        let (_, end) = month_bounds(tz, NaiveDate::from_ymd_opt(2025, 12, 1).unwrap()).unwrap();
        assert_eq!(end.to_rfc3339(), "2025-12-31T23:00:00+00:00");
    }
}
