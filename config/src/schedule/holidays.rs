//! Holiday rules: fixed dates, yearly dates and dates relative to Easter Sunday.

use chrono::{Datelike, Duration, NaiveDate};

/// One entry of `[holidays] dates`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolidayRule {
    /// "2026-12-31": that date only.
    Date(NaiveDate),
    /// "12-24": every year on that month and day.
    Yearly {
        /// Month 1–12.
        month: u32,
        /// Day of month.
        day: u32,
    },
    /// "easter", "easter+1", "easter-2": days relative to (Western) Easter Sunday.
    Easter(i64),
}

impl HolidayRule {
    /// Parses one holiday entry.
    pub fn parse(text: &str) -> Result<HolidayRule, String> {
        let t = text.trim().to_ascii_lowercase();
        let bad = || {
            format!(
                "expected a date \"YYYY-MM-DD\", a yearly date \"MM-DD\" or \"easter\", \"easter+N\", \"easter-N\", found \"{text}\""
            )
        };
        if let Some(rest) = t.strip_prefix("easter") {
            if rest.is_empty() {
                return Ok(HolidayRule::Easter(0));
            }
            let (sign, digits) = match rest.as_bytes()[0] {
                b'+' => (1, &rest[1..]),
                b'-' => (-1, &rest[1..]),
                _ => return Err(bad()),
            };
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad());
            }
            let n: i64 = digits.parse().map_err(|_| bad())?;
            return Ok(HolidayRule::Easter(sign * n));
        }
        let parts: Vec<&str> = t.split('-').collect();
        match parts.as_slice() {
            [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
                let date = NaiveDate::parse_from_str(&t, "%Y-%m-%d")
                    .map_err(|_| format!("no such date: \"{text}\" (expected YYYY-MM-DD)"))?;
                Ok(HolidayRule::Date(date))
            }
            [m, d] if m.len() == 2 && d.len() == 2 => {
                let (Ok(month), Ok(day)) = (m.parse::<u32>(), d.parse::<u32>()) else {
                    return Err(bad());
                };
                // 2024 is a leap year, so 02-29 is accepted as a yearly date.
                if NaiveDate::from_ymd_opt(2024, month, day).is_none() {
                    return Err(format!(
                        "no such day of the year: \"{text}\" (expected MM-DD)"
                    ));
                }
                Ok(HolidayRule::Yearly { month, day })
            }
            _ => Err(bad()),
        }
    }

    /// True when this rule makes `date` a holiday.
    pub fn matches(&self, date: NaiveDate) -> bool {
        match *self {
            HolidayRule::Date(d) => d == date,
            HolidayRule::Yearly { month, day } => date.month() == month && date.day() == day,
            HolidayRule::Easter(offset) => {
                easter_sunday(date.year()).is_some_and(|e| e + Duration::days(offset) == date)
                    || easter_sunday(date.year() + 1)
                        .is_some_and(|e| e + Duration::days(offset) == date)
                    || easter_sunday(date.year() - 1)
                        .is_some_and(|e| e + Duration::days(offset) == date)
            }
        }
    }
}

/// Western (Gregorian) Easter Sunday of `year` (anonymous Gregorian algorithm).
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn easter_dates() {
        assert_eq!(easter_sunday(2026), Some(date("2026-04-05")));
        assert_eq!(easter_sunday(2025), Some(date("2025-04-20")));
        assert_eq!(easter_sunday(2027), Some(date("2027-03-28")));
        assert_eq!(easter_sunday(2000), Some(date("2000-04-23")));
    }

    #[test]
    fn rules_match() {
        let good_friday = HolidayRule::parse("easter-2").unwrap();
        assert!(good_friday.matches(date("2026-04-03")));
        assert!(!good_friday.matches(date("2026-04-04")));
        let monday = HolidayRule::parse("Easter+1").unwrap();
        assert!(monday.matches(date("2026-04-06")));
        let pentecost_monday = HolidayRule::parse("easter+50").unwrap();
        assert!(pentecost_monday.matches(date("2026-05-25")));
        let xmas = HolidayRule::parse("12-24").unwrap();
        assert!(xmas.matches(date("2026-12-24")) && xmas.matches(date("2031-12-24")));
        let nye = HolidayRule::parse("2026-12-31").unwrap();
        assert!(nye.matches(date("2026-12-31")) && !nye.matches(date("2027-12-31")));
        assert!(HolidayRule::parse("2026-02-30").is_err());
        assert!(HolidayRule::parse("13-01").is_err());
        assert!(HolidayRule::parse("02-29").is_ok());
        assert!(HolidayRule::parse("easter*2").is_err());
        assert!(HolidayRule::parse("easter+").is_err());
        assert!(HolidayRule::parse("tomorrow").is_err());
    }
}
