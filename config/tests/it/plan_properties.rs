//! Property tests: for random schedules and ranges, the plan's intervals never overlap
//! per pool, lie inside the range, are merged, and agree with point evaluation.

use chrono::{DateTime, Duration, TimeZone, Utc};
use dayshift_config::Schedule;
use proptest::prelude::*;

const ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "UTC",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];
const DAYS: &[&str] = &["mon-fri", "sat,sun", "daily", "fri-mon", "wed", "tue,thu"];
const POOLS: &[&str] = &["chat", "embed"];

fn hhmm(m: u32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

prop_compose! {
    fn window()(pool in 0..POOLS.len(), days in 0..DAYS.len(), start in 0u32..96, end in 0u32..96, nodes in 1u32..4) -> String {
        format!(
            "[[window]]\npool = \"{}\"\ndays = \"{}\"\nstart = \"{}\"\nend = \"{}\"\nnodes = {nodes}\n",
            POOLS[pool], DAYS[days], hhmm(start * 15), hhmm(end * 15)
        )
    }
}

prop_compose! {
    fn schedule_src()(
        zone in 0..ZONES.len(),
        windows in prop::collection::vec(window(), 1..4),
        holiday_days in prop::collection::vec(0i64..60, 0..3),
        override_day in prop::option::of((0i64..60, any::<bool>(), 0u32..96, 0u32..96)),
    ) -> String {
        let base = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let mut s = format!("timezone = \"{}\"\n", ZONES[zone]);
        for w in windows { s.push_str(&w); }
        let dates: Vec<String> = holiday_days.iter().map(|d| format!("\"{}\"", base + Duration::days(*d))).collect();
        s.push_str(&format!("[holidays]\ndates = [{}]\n", dates.join(", ")));
        if let Some((d, closed, a, b)) = override_day {
            let date = base + Duration::days(d);
            if closed {
                s.push_str(&format!("[[override]]\ndate = \"{date}\"\nclosed = true\n"));
            } else {
                s.push_str(&format!("[[override]]\ndate = \"{date}\"\npool = \"chat\"\nstart = \"{}\"\nend = \"{}\"\nnodes = 2\n", hhmm(a * 15), hhmm(b * 15)));
            }
        }
        s
    }
}

fn instant(minutes: i64) -> DateTime<Utc> {
    // March to May 2026 and October 2026 cover both DST changes in the northern zones.
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + Duration::minutes(minutes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn plan_is_disjoint_inside_the_range_and_matches_point_evaluation(
        src in schedule_src(),
        from_min in 0i64..(60 * 24 * 60),
        len_min in 1i64..(60 * 24 * 20),
        probes in prop::collection::vec(0.0f64..1.0, 1..40),
    ) {
        let s = Schedule::parse("p.toml", &src, None).map_err(|p| TestCaseError::fail(p.to_string()))?;
        let (from, to) = (instant(from_min), instant(from_min + len_min));
        let plan = s.plan(from, to);
        for (i, a) in plan.iter().enumerate() {
            prop_assert!(a.start >= from && a.end <= to && a.start < a.end, "{a:?} outside [{from}, {to})");
            prop_assert!(a.nodes > 0);
            if i > 0 {
                let prev = &plan[i - 1];
                prop_assert!((prev.start, &prev.pool) <= (a.start, &a.pool), "not sorted");
            }
            for b in plan.iter().skip(i + 1).filter(|b| b.pool == a.pool) {
                prop_assert!(a.end <= b.start || b.end <= a.start, "overlap {a:?} {b:?}");
                prop_assert!(!(a.end == b.start && a.nodes == b.nodes), "unmerged neighbours {a:?} {b:?}");
            }
        }
        for p in probes {
            let t = from + Duration::seconds(((to - from).num_seconds() as f64 * p) as i64);
            let point = s.desired_at(t);
            for pool in s.pools() {
                let from_plan = plan.iter().find(|i| i.pool == pool && i.start <= t && t < i.end).map(|i| i.nodes).unwrap_or(0);
                prop_assert_eq!(point.get(&pool).copied().unwrap_or(0), from_plan, "pool {} at {}", pool, t);
            }
        }
        // next_change points at an instant where the desired counts differ.
        if let Some(n) = s.next_change(from) {
            prop_assert!(n > from);
            let before = s.desired_at(n - Duration::seconds(1));
            prop_assert_ne!(before, s.desired_at(n));
        }
    }
}
