//! Schedule evaluation: DST rules, midnight-crossing windows, holidays, overrides,
//! overlaps, plans and `next_change`.

use chrono::{DateTime, Utc};
use dayshift_config::Schedule;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn sched(src: &str) -> Schedule {
    Schedule::parse("schedule.toml", src, None).unwrap_or_else(|p| panic!("{p}"))
}

fn window(tz: &str, days: &str, start: &str, end: &str) -> Schedule {
    sched(&format!(
        "timezone = \"{tz}\"\n[[window]]\npool = \"chat\"\ndays = \"{days}\"\nstart = \"{start}\"\nend = \"{end}\"\n"
    ))
}

/// (start, end) in RFC 3339 UTC of the plan's intervals in a range.
fn spans(s: &Schedule, from: &str, to: &str) -> Vec<(String, String, u32)> {
    s.plan(utc(from), utc(to))
        .into_iter()
        .map(|i| {
            (
                i.start.format("%Y-%m-%dT%H:%MZ").to_string(),
                i.end.format("%Y-%m-%dT%H:%MZ").to_string(),
                i.nodes,
            )
        })
        .collect()
}

fn span(a: &str, b: &str, n: u32) -> (String, String, u32) {
    (a.to_string(), b.to_string(), n)
}

#[test]
fn berlin_spring_forward_2026_03_29() {
    // Office hours that day are still 08:00-18:00 local: 06:00Z-16:00Z (CEST).
    let s = window("Europe/Berlin", "daily", "08:00", "18:00");
    assert_eq!(
        spans(&s, "2026-03-28T00:00:00Z", "2026-03-30T00:00:00Z"),
        vec![
            span("2026-03-28T07:00Z", "2026-03-28T17:00Z", 1),
            span("2026-03-29T06:00Z", "2026-03-29T16:00Z", 1)
        ]
    );
    // A night window across the change lasts 11 hours instead of 12.
    let s = window("Europe/Berlin", "sat", "20:00", "08:00");
    let p = s.plan(utc("2026-03-28T00:00:00Z"), utc("2026-03-30T00:00:00Z"));
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].start, p[0].end),
        (utc("2026-03-28T19:00:00Z"), utc("2026-03-29T06:00:00Z"))
    );
    assert_eq!((p[0].end - p[0].start).num_hours(), 11);
    // A start inside the gap (02:00-03:00 does not exist) moves to the first instant after it.
    let s = window("Europe/Berlin", "sun", "02:30", "10:00");
    let p = s.plan(utc("2026-03-28T00:00:00Z"), utc("2026-03-30T00:00:00Z"));
    assert_eq!(p[0].start, utc("2026-03-29T01:00:00Z"));
    // An end inside the gap likewise.
    let s = window("Europe/Berlin", "sat", "22:00", "02:30");
    let p = s.plan(utc("2026-03-28T00:00:00Z"), utc("2026-03-30T00:00:00Z"));
    assert_eq!(
        (p[0].start, p[0].end),
        (utc("2026-03-28T21:00:00Z"), utc("2026-03-29T01:00:00Z"))
    );
}

#[test]
fn berlin_fall_back_2026_10_25() {
    let s = window("Europe/Berlin", "sat", "20:00", "08:00");
    let p = s.plan(utc("2026-10-24T00:00:00Z"), utc("2026-10-26T00:00:00Z"));
    assert_eq!(
        (p[0].start, p[0].end),
        (utc("2026-10-24T18:00:00Z"), utc("2026-10-25T07:00:00Z"))
    );
    assert_eq!((p[0].end - p[0].start).num_hours(), 13);
    // 02:30 happens twice; the first occurrence (CEST, +02:00) is taken.
    let s = window("Europe/Berlin", "sun", "02:30", "12:00");
    let p = s.plan(utc("2026-10-24T00:00:00Z"), utc("2026-10-26T00:00:00Z"));
    assert_eq!(
        (p[0].start, p[0].end),
        (utc("2026-10-25T00:30:00Z"), utc("2026-10-25T11:00:00Z"))
    );
    // An all-day window (00:00-24:00) lasts 25 hours that day.
    let s = window("Europe/Berlin", "sun", "00:00", "24:00");
    let p = s.plan(utc("2026-10-24T00:00:00Z"), utc("2026-10-27T00:00:00Z"));
    assert_eq!((p[0].end - p[0].start).num_hours(), 25);
}

#[test]
fn new_york_dst_2026() {
    // DST starts 2026-03-08 02:00 -> 03:00; ends 2026-11-01 02:00 -> 01:00.
    let s = window("America/New_York", "sun", "02:15", "09:00");
    let p = s.plan(utc("2026-03-07T00:00:00Z"), utc("2026-03-09T00:00:00Z"));
    assert_eq!(
        (p[0].start, p[0].end),
        (utc("2026-03-08T07:00:00Z"), utc("2026-03-08T13:00:00Z"))
    );
    let s = window("America/New_York", "sun", "01:30", "09:00");
    let p = s.plan(utc("2026-10-31T00:00:00Z"), utc("2026-11-02T00:00:00Z"));
    assert_eq!(
        (p[0].start, p[0].end),
        (utc("2026-11-01T05:30:00Z"), utc("2026-11-01T14:00:00Z"))
    );
    let s = window("America/New_York", "mon-fri", "09:00", "17:00");
    assert_eq!(s.desired_nodes("chat", utc("2026-11-02T14:00:00Z")), 1);
    assert_eq!(s.desired_nodes("chat", utc("2026-11-02T13:59:59Z")), 0);
    assert_eq!(s.desired_nodes("chat", utc("2026-10-30T13:00:00Z")), 1);
}

#[test]
fn zone_without_dst() {
    let s = window("Asia/Tokyo", "daily", "09:00", "17:00");
    for day in ["2026-03-29", "2026-10-25", "2026-07-01"] {
        let p = s.plan(
            utc(&format!("{day}T00:00:00Z")),
            utc(&format!("{day}T12:00:00Z")),
        );
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].end - p[0].start).num_hours(), 8);
        assert_eq!(p[0].start, utc(&format!("{day}T00:00:00Z")));
    }
}

#[test]
fn midnight_crossing_windows_belong_to_their_start_day() {
    let s = sched(
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"fri\"\nstart = \"22:00\"\nend = \"06:00\"\n[holidays]\ndates = [\"2026-11-28\"]\n",
    );
    // Friday 2026-11-27 22:00 to Saturday 06:00, even though Saturday is a holiday.
    assert_eq!(
        spans(&s, "2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z"),
        vec![span("2026-11-27T22:00Z", "2026-11-28T06:00Z", 1)]
    );
    assert_eq!(s.desired_nodes("chat", utc("2026-11-28T05:59:00Z")), 1);
    assert_eq!(s.desired_nodes("chat", utc("2026-11-28T06:00:00Z")), 0);
    // A holiday on the start day removes it.
    let s = sched(
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"fri\"\nstart = \"22:00\"\nend = \"06:00\"\n[holidays]\ndates = [\"11-27\"]\n",
    );
    assert!(spans(&s, "2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z").is_empty());
    // A window cut by the range start is cut, not dropped.
    let s = window("UTC", "daily", "22:00", "06:00");
    assert_eq!(
        spans(&s, "2026-11-24T03:00:00Z", "2026-11-24T05:00:00Z"),
        vec![span("2026-11-24T03:00Z", "2026-11-24T05:00Z", 1)]
    );
}

#[test]
fn holidays_fixed_yearly_and_easter_relative() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/schedule.toml");
    let s = Schedule::load(&root, None).unwrap();
    let day = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
    // Easter Sunday 2026 is April 5: Good Friday April 3, Easter Monday April 6.
    assert!(s.is_holiday(day("2026-04-03")));
    assert!(s.is_holiday(day("2026-04-06")));
    assert!(!s.is_holiday(day("2026-04-07")));
    assert!(s.is_holiday(day("2026-05-14"))); // Ascension (easter+39)
    assert!(s.is_holiday(day("2026-05-25"))); // Whit Monday (easter+50)
    assert!(s.is_holiday(day("2026-12-25")) && s.is_holiday(day("2027-12-25")));
    assert_eq!(s.desired_nodes("chat", utc("2026-04-03T10:00:00Z")), 0);
    assert_eq!(s.desired_nodes("chat", utc("2026-04-07T10:00:00Z")), 1);
    let s = sched(
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\nstart = \"08:00\"\nend = \"18:00\"\n[holidays]\ndates = [\"2026-12-31\"]\n",
    );
    assert_eq!(s.desired_nodes("chat", utc("2026-12-31T10:00:00Z")), 0);
    assert_eq!(s.desired_nodes("chat", utc("2027-12-31T10:00:00Z")), 1);
}

const TWO_POOLS: &str = r#"timezone = "UTC"
[[window]]
pool = "chat"
days = "mon-fri"
start = "08:00"
end = "18:00"
[[window]]
pool = "embed"
days = "mon-fri"
start = "09:00"
end = "17:00"
nodes = 2
[holidays]
dates = ["12-24"]
"#;

#[test]
fn overrides_replace_close_and_cover_all_pools() {
    // Replace one pool's windows on a date.
    let s = sched(&format!(
        "{TWO_POOLS}[[override]]\ndate = \"2026-12-23\"\npool = \"chat\"\nstart = \"06:00\"\nend = \"22:00\"\nnodes = 2\n"
    ));
    assert_eq!(
        spans(&s, "2026-12-23T00:00:00Z", "2026-12-24T00:00:00Z"),
        vec![
            span("2026-12-23T06:00Z", "2026-12-23T22:00Z", 2),
            span("2026-12-23T09:00Z", "2026-12-23T17:00Z", 2)
        ]
    );
    // Close one pool on a date.
    let s = sched(&format!(
        "{TWO_POOLS}[[override]]\ndate = \"2026-12-22\"\npool = \"embed\"\nclosed = true\n"
    ));
    let p = s.plan(utc("2026-12-22T00:00:00Z"), utc("2026-12-23T00:00:00Z"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].pool, "chat");
    // An override without a pool applies to every pool; it beats a holiday.
    let s = sched(&format!(
        "{TWO_POOLS}[[override]]\ndate = \"2026-12-24\"\nstart = \"08:00\"\nend = \"12:00\"\n"
    ));
    let p = s.plan(utc("2026-12-24T00:00:00Z"), utc("2026-12-25T00:00:00Z"));
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|i| i.start == utc("2026-12-24T08:00:00Z")
        && i.end == utc("2026-12-24T12:00:00Z")
        && i.nodes == 1));
    // A pool-specific override beats an all-pools one on the same date.
    let s = sched(&format!(
        "{TWO_POOLS}[[override]]\ndate = \"2026-12-22\"\nclosed = true\n[[override]]\ndate = \"2026-12-22\"\npool = \"chat\"\nstart = \"10:00\"\nend = \"11:00\"\n"
    ));
    assert_eq!(
        spans(&s, "2026-12-22T00:00:00Z", "2026-12-23T00:00:00Z"),
        vec![span("2026-12-22T10:00Z", "2026-12-22T11:00Z", 1)]
    );
}

#[test]
fn overlapping_windows_take_the_larger_count() {
    let s = sched(
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\nstart = \"08:00\"\nend = \"18:00\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\nstart = \"12:00\"\nend = \"14:00\"\nnodes = 3\n[[window]]\npool = \"chat\"\ndays = \"daily\"\nstart = \"17:00\"\nend = \"20:00\"\n",
    );
    assert_eq!(
        spans(&s, "2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z"),
        vec![
            span("2026-11-23T08:00Z", "2026-11-23T12:00Z", 1),
            span("2026-11-23T12:00Z", "2026-11-23T14:00Z", 3),
            span("2026-11-23T14:00Z", "2026-11-23T20:00Z", 1),
        ]
    );
    assert_eq!(s.desired_nodes("chat", utc("2026-11-23T13:00:00Z")), 3);
    // Back-to-back windows with the same count merge into one interval.
    let s = sched(
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\nstart = \"00:00\"\nend = \"00:00\"\n",
    );
    assert_eq!(
        spans(&s, "2026-11-23T00:00:00Z", "2026-11-26T00:00:00Z"),
        vec![span("2026-11-23T00:00Z", "2026-11-26T00:00Z", 1)]
    );
}

#[test]
fn next_change() {
    let s = sched(TWO_POOLS);
    // Monday 2026-11-23 07:00: the next change is chat's start at 08:00.
    assert_eq!(
        s.next_change(utc("2026-11-23T07:00:00Z")),
        Some(utc("2026-11-23T08:00:00Z"))
    );
    assert_eq!(
        s.next_change(utc("2026-11-23T08:00:00Z")),
        Some(utc("2026-11-23T09:00:00Z"))
    );
    assert_eq!(
        s.next_change(utc("2026-11-23T16:59:59Z")),
        Some(utc("2026-11-23T17:00:00Z"))
    );
    assert_eq!(
        s.next_change(utc("2026-11-23T17:00:00Z")),
        Some(utc("2026-11-23T18:00:00Z"))
    );
    // Friday evening: next is Monday morning.
    assert_eq!(
        s.next_change(utc("2026-11-27T18:00:00Z")),
        Some(utc("2026-11-30T08:00:00Z"))
    );
    // Across the holiday on Thursday 2026-12-24: Wednesday evening -> Friday morning.
    assert_eq!(
        s.next_change(utc("2026-12-23T18:00:00Z")),
        Some(utc("2026-12-25T08:00:00Z"))
    );
    // A schedule with a single override far ahead still finds it; none afterwards.
    let s = sched(
        "timezone = \"UTC\"\n[[override]]\ndate = \"2027-06-01\"\npool = \"chat\"\nstart = \"08:00\"\nend = \"09:00\"\n",
    );
    assert_eq!(
        s.next_change(utc("2026-11-23T00:00:00Z")),
        Some(utc("2027-06-01T08:00:00Z"))
    );
    assert_eq!(s.next_change(utc("2027-06-01T09:00:00Z")), None);
    // desired_at lists every pool, closed ones with 0.
    let s = sched(TWO_POOLS);
    let d = s.desired_at(utc("2026-11-23T08:30:00Z"));
    assert_eq!(d.get("chat"), Some(&1));
    assert_eq!(d.get("embed"), Some(&0));
}

#[test]
fn times_with_seconds() {
    // "HH:MM:SS" for windows shorter than a minute (rehearsals); "HH:MM" stays the norm.
    let s = window("Europe/Berlin", "daily", "09:00:30", "09:00:50");
    let p = s.plan(utc("2026-07-01T00:00:00Z"), utc("2026-07-02T00:00:00Z"));
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].start, p[0].end),
        (utc("2026-07-01T07:00:30Z"), utc("2026-07-01T07:00:50Z"))
    );
    assert_eq!(
        s.next_change(utc("2026-07-01T07:00:31Z")),
        Some(utc("2026-07-01T07:00:50Z"))
    );
    // Shown as written: seconds only where there are some.
    assert_eq!(s.windows[0].start.to_string(), "09:00:30");
    assert_eq!(
        window("UTC", "daily", "09:00:00", "24:00").windows[0]
            .start
            .to_string(),
        "09:00"
    );
    // A time with seconds inside the spring-forward gap moves to the gap's end, 03:00:00.
    let s = window("Europe/Berlin", "sun", "02:30:15", "10:00");
    let p = s.plan(utc("2026-03-29T00:00:00Z"), utc("2026-03-30T00:00:00Z"));
    assert_eq!(p[0].start, utc("2026-03-29T01:00:00Z"));
    // Out of range or malformed: refused with the expected forms named.
    for bad in [
        "09:00:60",
        "24:00:01",
        "9:00:5",
        "09:00:",
        "09:00:00:00",
        "09:0a:00",
    ] {
        let src = format!(
            "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\nstart = \"{bad}\"\nend = \"10:00\"\n"
        );
        let err = Schedule::parse("schedule.toml", &src, None)
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"))
            .to_string();
        assert!(err.contains("HH:MM:SS"), "{bad}: {err}");
    }
}
