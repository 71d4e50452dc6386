//! A pool's windows in words for people: `dayshift status` and the ingress's status page
//! both describe the schedule through this module, so they say the same thing. Times are
//! in the schedule's time zone and to the minute; "all day" and "always open" are said
//! where they are the truth, and a window's end is never the edge of a look-ahead.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

use super::{Interval, Schedule, resolve};

/// How far ahead (days) an end or a next window is looked for, step by step: about two
/// years in all, as [`Schedule::next_change`].
const HORIZONS_DAYS: [i64; 3] = [8, 64, 800];

/// An unbroken stretch in which a pool wants at least one node (counts may change within).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stretch {
    /// First instant of the stretch (for the stretch open now: when it opened, or the
    /// start of the look-back when that is earlier).
    pub start: DateTime<Utc>,
    /// First instant after it; `None` when it does not end within about two years.
    pub end: Option<DateTime<Utc>>,
    /// Nodes wanted at its start (at `now` for the stretch open now).
    pub nodes: u32,
}

/// A pool's windows as seen at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolWindows {
    /// The stretch open at the instant, if any.
    pub current: Option<Stretch>,
    /// The first stretch that starts after the instant (after `current`, if any).
    pub next: Option<Stretch>,
}

/// One local day of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Day {
    /// No node wanted at any time of the day.
    Closed,
    /// Nodes wanted from the day's first to its last instant, as many as given (the
    /// largest count of the day).
    AllDay(u32),
    /// Stretches of the day, cut at its start and end.
    Spans(Vec<Interval>),
}

impl Schedule {
    /// `pool`'s stretch open at `now` and the next one, looking up to about two years ahead.
    pub fn pool_windows(&self, pool: &str, now: DateTime<Utc>) -> PoolWindows {
        let mut found = PoolWindows {
            current: None,
            next: None,
        };
        for days in HORIZONS_DAYS {
            let Some(horizon) = now.checked_add_signed(Duration::days(days)) else {
                break;
            };
            let stretches = self.stretches(pool, now, horizon);
            let mut it = stretches.into_iter().peekable();
            found.current = it.next_if(|s| s.start <= now);
            found.next = it.next();
            let current_known = found.current.as_ref().is_none_or(|c| c.end.is_some());
            let next_known = found.next.as_ref().is_some_and(|n| n.end.is_some());
            if current_known && next_known {
                break;
            }
        }
        found
    }

    /// `pool`'s wanted nodes on local date `date` (DST-aware day bounds).
    pub fn pool_day(&self, pool: &str, date: NaiveDate) -> Day {
        let (Some(from), Some(to)) = (
            resolve(self.timezone, date, 0),
            date.succ_opt().and_then(|d| resolve(self.timezone, d, 0)),
        ) else {
            return Day::Closed;
        };
        let mine: Vec<Interval> = self
            .plan(from, to)
            .into_iter()
            .filter(|i| i.pool == pool && i.nodes > 0)
            .collect();
        let whole = !mine.is_empty()
            && mine.first().is_some_and(|i| i.start == from)
            && mine.last().is_some_and(|i| i.end == to)
            && mine.windows(2).all(|w| w[0].end == w[1].start);
        match (mine.is_empty(), whole) {
            (true, _) => Day::Closed,
            (false, true) => Day::AllDay(mine.iter().map(|i| i.nodes).max().unwrap_or(0)),
            (false, false) => Day::Spans(mine),
        }
    }

    /// `pool`'s unbroken stretches overlapping `[from, to)`; a stretch reaching `to` has
    /// no known end (`end: None`).
    fn stretches(&self, pool: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Stretch> {
        let mut out: Vec<Stretch> = Vec::new();
        let mut last_end: Option<DateTime<Utc>> = None;
        for i in self.plan(from, to) {
            if i.pool != pool || i.nodes == 0 {
                continue;
            }
            match out.last_mut() {
                Some(s) if last_end == Some(i.start) => s.end = Some(i.end),
                _ => out.push(Stretch {
                    start: i.start,
                    end: Some(i.end),
                    nodes: i.nodes,
                }),
            }
            last_end = Some(i.end);
        }
        for s in &mut out {
            if s.end.is_none_or(|e| e >= to) {
                s.end = None;
            }
        }
        out
    }
}

/// An instant in `tz`, to the minute: "Mon 2026-11-23 08:00".
pub fn minute(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M").to_string()
}

/// The time of day of `t` in `tz` ("08:00"), or "24:00" when `t` is the end of `date`.
fn clock_on(t: DateTime<Utc>, tz: Tz, date: NaiveDate) -> String {
    let local = t.with_timezone(&tz);
    let midnight = local.time() == NaiveTime::MIN;
    if local.date_naive() == date {
        local.format("%H:%M").to_string()
    } else if midnight && date.succ_opt() == Some(local.date_naive()) {
        "24:00".into()
    } else {
        local.format("%a %H:%M").to_string()
    }
}

/// A day in words: "all day ×1", "08:00–18:00 ×1", "08:00–18:00 ×1-3" (an elastic
/// window's range), "00:00–06:00 ×1, 22:00–24:00 ×1", "closed".
pub fn describe_day(day: &Day, tz: Tz) -> String {
    match day {
        Day::Closed => "closed".into(),
        Day::AllDay(n) => format!("all day ×{n}"),
        Day::Spans(spans) => spans
            .iter()
            .map(|i| {
                let date = i.start.with_timezone(&tz).date_naive();
                format!(
                    "{}–{} ×{}",
                    clock_on(i.start, tz, date),
                    clock_on(i.end, tz, date),
                    super::NodeRange {
                        min: i.min_nodes,
                        max: i.nodes,
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A stretch in words: "Mon 2026-11-23 08:00–18:00" (the end's day added when it is
/// another day), "Mon 2026-11-23 08:00 onwards" when it has no end in sight.
pub fn describe_stretch(s: &Stretch, tz: Tz) -> String {
    let date = s.start.with_timezone(&tz).date_naive();
    match s.end {
        Some(e) => format!("{}–{}", minute(s.start, tz), clock_on(e, tz, date)),
        None => format!(
            "{} onwards (no end in the next two years)",
            minute(s.start, tz)
        ),
    }
}

/// Now and next in words: "always open", "open until Mon 2026-11-23 18:00; then Tue
/// 2026-11-24 08:00–18:00", "next Tue 2026-11-24 08:00–18:00", "no window in the next
/// two years".
pub fn describe_windows(w: &PoolWindows, tz: Tz) -> String {
    let next = w.next.as_ref().map(|n| describe_stretch(n, tz));
    match (&w.current, next) {
        (Some(Stretch { end: None, .. }), _) => "always open".into(),
        (Some(Stretch { end: Some(e), .. }), Some(n)) => {
            format!("open until {}; then {n}", minute(*e, tz))
        }
        (Some(Stretch { end: Some(e), .. }), None) => format!(
            "open until {}; then no window in the next two years",
            minute(*e, tz)
        ),
        (None, Some(n)) => format!("next {n}"),
        (None, None) => "no window in the next two years".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(text: &str) -> Schedule {
        Schedule::parse("s.toml", text, None).expect("valid schedule")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("instant")
            .with_timezone(&Utc)
    }

    const ALWAYS: &str = "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\n\
                          start = \"00:00\"\nend = \"24:00\"\n";
    const OFFICE: &str = "timezone = \"Europe/Berlin\"\n[[window]]\npool = \"chat\"\n\
                          days = \"mon-fri\"\nstart = \"08:00\"\nend = \"18:00\"\n\
                          [holidays]\ndates = [\"12-24\", \"12-25\"]\n";

    #[test]
    fn always_open_says_so() {
        let s = sched(ALWAYS);
        let now = at("2026-12-03T10:17:42.123456789Z");
        let w = s.pool_windows("chat", now);
        assert_eq!(describe_windows(&w, s.timezone), "always open");
        assert_eq!(s.pool_day("chat", now.date_naive()), Day::AllDay(1));
        assert_eq!(
            describe_day(&s.pool_day("chat", now.date_naive()), s.timezone),
            "all day ×1"
        );
    }

    #[test]
    fn office_hours_in_the_schedules_zone_to_the_minute() {
        let s = sched(OFFICE);
        let tz = s.timezone;
        // Thu 2026-12-03 10:17 Berlin: open until 18:00, then Friday.
        let now = at("2026-12-03T09:17:42.5Z");
        let w = s.pool_windows("chat", now);
        assert_eq!(
            describe_windows(&w, tz),
            "open until Thu 2026-12-03 18:00; then Fri 2026-12-04 08:00–18:00"
        );
        assert_eq!(
            describe_day(&s.pool_day("chat", now.date_naive()), tz),
            "08:00–18:00 ×1"
        );
        // Friday evening: next Monday.
        let w = s.pool_windows("chat", at("2026-12-04T19:00:00Z"));
        assert_eq!(describe_windows(&w, tz), "next Mon 2026-12-07 08:00–18:00");
        // Saturday: closed all day.
        assert_eq!(
            describe_day(&s.pool_day("chat", "2026-12-05".parse().unwrap()), tz),
            "closed"
        );
    }

    #[test]
    fn holidays_are_skipped() {
        let s = sched(OFFICE);
        let tz = s.timezone;
        // Wed 2026-12-23 after hours: Thu 24 and Fri 25 are holidays → Mon 28.
        let w = s.pool_windows("chat", at("2026-12-23T18:30:00Z"));
        assert_eq!(describe_windows(&w, tz), "next Mon 2026-12-28 08:00–18:00");
        assert_eq!(
            describe_day(&s.pool_day("chat", "2026-12-24".parse().unwrap()), tz),
            "closed"
        );
    }

    #[test]
    fn night_windows_and_far_ends() {
        let s = sched(
            "timezone = \"Europe/Berlin\"\n[[window]]\npool = \"night\"\ndays = \"mon\"\n\
             start = \"22:00\"\nend = \"06:00\"\n",
        );
        let tz = s.timezone;
        // Mon 2026-12-07: 22:00 to Tue 06:00.
        assert_eq!(
            describe_day(&s.pool_day("night", "2026-12-07".parse().unwrap()), tz),
            "22:00–24:00 ×1"
        );
        assert_eq!(
            describe_day(&s.pool_day("night", "2026-12-08".parse().unwrap()), tz),
            "00:00–06:00 ×1"
        );
        let w = s.pool_windows("night", at("2026-12-07T12:00:00Z"));
        assert_eq!(
            describe_windows(&w, tz),
            "next Mon 2026-12-07 22:00–Tue 06:00"
        );
        // A pool the schedule does not name.
        let w = s.pool_windows("other", at("2026-12-07T12:00:00Z"));
        assert_eq!(describe_windows(&w, tz), "no window in the next two years");
    }
}
