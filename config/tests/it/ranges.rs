//! Elastic windows' node ranges (issue 19): `nodes = "1-3"` in windows and overrides,
//! the problems a bad range gets (file:line:column and field), the check against the
//! pools' `max_nodes`, and the range at an instant (edges, overlaps, pool rules).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dayshift_config::schedule::{NodeRange, OverrideAction};
use dayshift_config::settings::RangeRule;
use dayshift_config::{Problem, Schedule};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A weekday window 08:00-18:00 UTC of pool `chat`; `nodes` is line 7, its value at
/// column 9.
fn window(nodes: &str) -> String {
    format!(
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"08:00\"\nend = \"18:00\"\nnodes = {nodes}\n"
    )
}

fn parse(src: &str) -> Schedule {
    Schedule::parse("schedule.toml", src, None).unwrap_or_else(|p| panic!("{p}"))
}

fn problem(result: Result<Schedule, dayshift_config::Problems>) -> Problem {
    match result {
        Ok(_) => panic!("expected a problem"),
        Err(p) => {
            assert_eq!(p.0.len(), 1, "expected one problem, got {:#?}", p.0);
            p.0.into_iter().next().unwrap()
        }
    }
}

fn at(p: &Problem, line: usize, column: usize, field: &str, needle: &str) {
    assert_eq!(p.file, "schedule.toml", "{p}");
    assert_eq!((p.line, p.column), (line, column), "{p}");
    assert_eq!(p.field, field, "{p}");
    assert!(
        p.message.contains(needle),
        "`{}` lacks `{needle}`",
        p.message
    );
}

fn range(min: u32, max: u32) -> NodeRange {
    NodeRange { min, max }
}

#[test]
fn a_range_parses_into_the_windows_bounds() {
    for (nodes, min, max) in [
        ("\"1-3\"", 1, 3),
        ("\"0-2\"", 0, 2),
        ("\" 2 - 4 \"", 2, 4),
        ("\"2-2\"", 2, 2),
        ("2", 2, 2),
    ] {
        let s = parse(&window(nodes));
        assert_eq!(
            (s.windows[0].min_nodes, s.windows[0].nodes),
            (min, max),
            "{nodes}"
        );
    }
    // No `nodes`: one node, fixed.
    let s = parse(
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\nstart = \"08:00\"\nend = \"18:00\"\n",
    );
    assert_eq!((s.windows[0].min_nodes, s.windows[0].nodes), (1, 1));
    assert_eq!(range(1, 3).to_string(), "1-3");
    assert_eq!(range(2, 2).to_string(), "2");
    assert!(range(0, 2).is_elastic() && !range(2, 2).is_elastic());
}

#[test]
fn bad_ranges_are_refused_with_position_and_field() {
    let p = problem(Schedule::parse("schedule.toml", &window("\"3-1\""), None));
    at(
        &p,
        7,
        9,
        "window[0].nodes",
        "lower bound 3 above its upper bound 1; write \"1-3\"",
    );
    for bad in [
        "\"x\"",
        "\"1-\"",
        "\"-1-2\"",
        "\"\"",
        "\"1-3-5\"",
        "\"one-two\"",
    ] {
        let p = problem(Schedule::parse("schedule.toml", &window(bad), None));
        at(
            &p,
            7,
            9,
            "window[0].nodes",
            "a range \"MIN-MAX\" such as \"1-3\"",
        );
    }
    for bad in ["\"0-0\"", "\"1-1001\""] {
        let p = problem(Schedule::parse("schedule.toml", &window(bad), None));
        at(
            &p,
            7,
            9,
            "window[0].nodes",
            "upper bound must be from 1 to 1000",
        );
    }
    // A fixed zero is still refused; the message points at the range that means it.
    let p = problem(Schedule::parse("schedule.toml", &window("0"), None));
    at(&p, 7, 9, "window[0].nodes", "at least 1");
    assert!(p.message.contains("\"0-2\""), "{}", p.message);
}

#[test]
fn a_range_above_the_pools_max_nodes_is_refused_a_fixed_count_is_capped() {
    let caps = BTreeMap::from([("chat".to_string(), 2u32)]);
    let p = problem(Schedule::parse_for_pools(
        "schedule.toml",
        &window("\"3-4\""),
        &caps,
    ));
    at(
        &p,
        7,
        9,
        "window[0].nodes",
        "wants at least 3 node(s) of pool \"chat\", whose max_nodes in dayshift.toml is 2",
    );
    // The same in an override (its `nodes` on line 13).
    let src = format!(
        "{}[[override]]\ndate = \"2026-12-24\"\npool = \"chat\"\nstart = \"09:00\"\nend = \"12:00\"\nnodes = \"3-3\"\n",
        window("1")
    );
    let p = problem(Schedule::parse_for_pools("schedule.toml", &src, &caps));
    at(
        &p,
        13,
        9,
        "override[0].nodes",
        "max_nodes in dayshift.toml is 2",
    );
    // A lower bound at the cap, or a fixed count above it, is accepted (capped).
    let rule = RangeRule::fixed(2);
    for (nodes, expect) in [
        ("\"2-5\"", range(2, 2)),
        ("\"1-5\"", range(1, 2)),
        ("5", range(2, 2)),
    ] {
        let s = Schedule::parse_for_pools("schedule.toml", &window(nodes), &caps)
            .unwrap_or_else(|p| panic!("{nodes}: {p}"));
        let window_range = s.range_at("chat", utc("2026-12-07T09:00:00Z"));
        assert_eq!(rule.range(window_range), expect, "{nodes}");
    }
    // Without the pools (plain `parse`), no cap is known: accepted.
    parse(&window("\"3-4\""));
}

#[test]
fn an_override_opens_a_day_with_a_range() {
    // Thursday 24 December 2026: the override replaces the weekday window.
    let src = format!(
        "{}[[override]]\ndate = \"2026-12-24\"\npool = \"chat\"\nstart = \"09:00\"\nend = \"12:00\"\nnodes = \"0-2\"\n",
        window("\"1-3\"")
    );
    let s = parse(&src);
    match &s.overrides[0].action {
        OverrideAction::Open {
            nodes, min_nodes, ..
        } => assert_eq!((*min_nodes, *nodes), (0, 2)),
        other => panic!("expected an opening, got {other:?}"),
    }
    assert_eq!(s.range_at("chat", utc("2026-12-24T08:30:00Z")), range(0, 0));
    assert_eq!(s.range_at("chat", utc("2026-12-24T10:00:00Z")), range(0, 2));
    assert_eq!(s.range_at("chat", utc("2026-12-24T12:00:00Z")), range(0, 0));
    // The day before, the window's range.
    assert_eq!(s.range_at("chat", utc("2026-12-23T10:00:00Z")), range(1, 3));
}

#[test]
fn range_at_a_windows_edges_and_where_windows_overlap() {
    let s = parse(&window("\"1-3\""));
    for (t, r) in [
        ("2026-12-07T07:59:59Z", range(0, 0)),
        ("2026-12-07T08:00:00Z", range(1, 3)),
        ("2026-12-07T17:59:59Z", range(1, 3)),
        ("2026-12-07T18:00:00Z", range(0, 0)),
        ("2026-12-06T10:00:00Z", range(0, 0)), // Sunday
    ] {
        assert_eq!(s.range_at("chat", utc(t)), r, "{t}");
    }
    assert_eq!(
        s.range_at("embed", utc("2026-12-07T10:00:00Z")),
        range(0, 0)
    );
    // Overlapping windows take the larger bound of each.
    let src = format!(
        "{}[[window]]\npool = \"chat\"\ndays = \"mon\"\nstart = \"12:00\"\nend = \"14:00\"\nnodes = \"2-2\"\n[[window]]\npool = \"chat\"\ndays = \"mon\"\nstart = \"13:00\"\nend = \"15:00\"\nnodes = \"0-5\"\n",
        window("\"1-3\"")
    );
    let s = parse(&src);
    for (t, r) in [
        ("2026-12-07T11:00:00Z", range(1, 3)),
        ("2026-12-07T12:30:00Z", range(2, 3)),
        ("2026-12-07T13:30:00Z", range(2, 5)),
        ("2026-12-07T14:30:00Z", range(1, 5)),
        ("2026-12-07T16:00:00Z", range(1, 3)),
    ] {
        assert_eq!(s.range_at("chat", utc(t)), r, "{t}");
    }
    // The plan's intervals carry both bounds.
    let plan: Vec<(String, u32, u32)> = s
        .plan(utc("2026-12-07T00:00:00Z"), utc("2026-12-08T00:00:00Z"))
        .into_iter()
        .map(|i| (i.start.format("%H:%M").to_string(), i.min_nodes, i.nodes))
        .collect();
    let expect: Vec<(String, u32, u32)> = [
        ("08:00", 1, 3),
        ("12:00", 2, 3),
        ("13:00", 2, 5),
        ("14:00", 1, 5),
        ("15:00", 1, 3),
    ]
    .into_iter()
    .map(|(t, a, b)| (t.to_string(), a, b))
    .collect();
    assert_eq!(plan, expect);
}

#[test]
fn a_pools_rule_turns_the_windows_range_into_its_own() {
    let elastic = |min_nodes, wake| RangeRule {
        min_nodes,
        max_nodes: 3,
        wake_on_demand: wake,
    };
    // Inside a window: the pool's floor (at most the window's count) and cap.
    assert_eq!(elastic(None, false).range(range(1, 5)), range(1, 3));
    assert_eq!(elastic(Some(0), false).range(range(2, 2)), range(0, 2));
    assert_eq!(elastic(Some(2), false).range(range(1, 1)), range(1, 1));
    assert_eq!(RangeRule::fixed(3).range(range(2, 2)), range(2, 2));
    // Outside: up to max_nodes when a request may wake the pool, else none.
    assert_eq!(elastic(None, true).range(range(0, 0)), range(0, 3));
    assert_eq!(elastic(Some(1), false).range(range(0, 0)), range(0, 0));
}
