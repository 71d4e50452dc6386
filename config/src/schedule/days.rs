//! Sets of weekdays as written in a schedule file: "mon-fri", "sat,sun", "daily".

use chrono::Weekday;

/// A set of weekdays (bit 0 = Monday … bit 6 = Sunday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DaySet(u8);

const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl DaySet {
    /// Every day of the week.
    pub const ALL: DaySet = DaySet(0x7f);

    /// Parses "mon-fri", "sat,sun", "daily", "fri-mon" (ranges wrap over the week end).
    pub fn parse(text: &str) -> Result<DaySet, String> {
        let t = text.trim().to_ascii_lowercase();
        if t == "daily" || t == "every day" {
            return Ok(DaySet::ALL);
        }
        if t.is_empty() {
            return Err(expected(text));
        }
        let mut bits = 0u8;
        for part in t.split(',') {
            let part = part.trim();
            if let Some((a, b)) = part.split_once('-') {
                let (a, b) = (day_index(a.trim()), day_index(b.trim()));
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(expected(text));
                };
                let mut i = a;
                loop {
                    bits |= 1 << i;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            } else {
                let Some(i) = day_index(part) else {
                    return Err(expected(text));
                };
                bits |= 1 << i;
            }
        }
        Ok(DaySet(bits))
    }

    /// True when `day` is in the set.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }
}

fn day_index(s: &str) -> Option<u8> {
    NAMES
        .iter()
        .position(|n| *n == s)
        .or_else(|| LONG.iter().position(|n| *n == s))
        .map(|i| i as u8)
}

fn expected(text: &str) -> String {
    format!(
        "expected days such as \"mon-fri\", \"sat,sun\" or \"daily\" (day names mon, tue, wed, thu, fri, sat, sun), found \"{text}\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_daily() {
        let wd = DaySet::parse("mon-fri").unwrap();
        assert!(wd.contains(Weekday::Mon) && wd.contains(Weekday::Fri));
        assert!(!wd.contains(Weekday::Sat));
        let we = DaySet::parse("sat, sun").unwrap();
        assert!(we.contains(Weekday::Sun) && !we.contains(Weekday::Mon));
        assert_eq!(DaySet::parse("daily").unwrap(), DaySet::ALL);
        let wrap = DaySet::parse("fri-mon").unwrap();
        assert!(wrap.contains(Weekday::Sat) && wrap.contains(Weekday::Mon));
        assert!(!wrap.contains(Weekday::Tue));
        assert!(DaySet::parse("mon-fro").is_err());
        assert!(DaySet::parse("").is_err());
        assert!(DaySet::parse(",").is_err());
    }
}
