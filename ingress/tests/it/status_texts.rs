//! What `dayshift status`, the status page and `dayshift nodes` say, on the always-open,
//! office-hours and holiday schedules: times in the schedule's zone to the minute, "all
//! day" / "always open" where true, no raw timestamps, no look-ahead limit shown as a
//! window's end; the gateway's live in-flight count in `dayshift nodes`; and each pool's
//! scaling (range now, active nodes, load, last scale decision) on the status page and in
//! `/metrics`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dayshift_config::Schedule;
use dayshift_config::clock::ManualClock;

use crate::common::*;

const ALWAYS: &str = "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\n\
                      start = \"00:00\"\nend = \"24:00\"\nnodes = 1\n";
/// Office hours in Berlin with Christmas Eve and Day as holidays (both pools).
const HOLIDAYS: &str = "timezone = \"Europe/Berlin\"\n\
    [[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"08:00\"\nend = \"18:00\"\nnodes = 1\n\
    [[window]]\npool = \"embed\"\ndays = \"mon-fri\"\nstart = \"08:00\"\nend = \"18:00\"\nnodes = 1\n\
    [holidays]\ndates = [\"12-24\", \"12-25\"]\n";

/// True when `text` has an RFC 3339 time with seconds (`12:34:56`) followed by a
/// fraction or an offset: what a raw timestamp looks like.
fn has_raw_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(8)).any(|i| {
        let d = |k: usize| b[i + k].is_ascii_digit();
        b[i] == b'T'
            && d(1)
            && d(2)
            && b[i + 3] == b':'
            && d(4)
            && d(5)
            && b[i + 6] == b':'
            && d(7)
            && d(8)
    })
}

async fn page_at(schedule: &str, now: &str) -> String {
    let clock = Arc::new(ManualClock::new(at(now)));
    let gw = gateway_with(Some(clock), "3s").await;
    let s = Schedule::parse("schedule.toml", schedule, None).unwrap();
    gw.state().set_schedule(Some(s));
    let page = gw
        .http
        .get(&gw.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    gw.stop().await;
    assert!(!has_raw_timestamp(&page), "a raw timestamp: {page}");
    page
}

#[tokio::test]
async fn status_page_says_always_open_and_all_day() {
    let page = page_at(ALWAYS, "2026-12-03T10:17:42.123456789Z").await;
    for want in [
        "Now: Thu 2026-12-03 10:17 UTC",
        "chat: all day ×1 (UTC)",
        "<td>always open</td>",
    ] {
        assert!(page.contains(want), "{want}: {page}");
    }
    assert!(!page.contains("00:00 – 00:00"), "{page}");
}

#[tokio::test]
async fn status_page_office_hours_in_the_schedules_zone() {
    // Thu 2026-12-03 10:17:42.5 Berlin.
    let page = page_at(OFFICE_SCHEDULE, "2026-12-03T09:17:42.5Z").await;
    for want in [
        "Now: Thu 2026-12-03 10:17 Europe/Berlin",
        "chat: 08:00–18:00 ×1 (Europe/Berlin)",
        "<td>open until Thu 2026-12-03 18:00; then Fri 2026-12-04 08:00–18:00</td>",
    ] {
        assert!(page.contains(want), "{want}: {page}");
    }
}

#[tokio::test]
async fn status_page_skips_holidays() {
    // Christmas Eve (a Thursday) at 10:00 Berlin: closed; Friday too; next Monday.
    let page = page_at(HOLIDAYS, "2026-12-24T09:00:00Z").await;
    for want in [
        "chat: closed (Europe/Berlin)",
        "<td>next Mon 2026-12-28 08:00–18:00</td>",
    ] {
        assert!(page.contains(want), "{want}: {page}");
    }
}

fn status(config: &Path, at: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(["status", "--at", at, "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The line of `pool` in the status table, with its cells' padding squeezed.
fn pool_line(table: &str, pool: &str) -> String {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("│ {pool} ")))
        .unwrap_or_else(|| panic!("no line for {pool}: {table}"));
    line.split('┆')
        .map(|c| c.trim_matches(|ch: char| ch == '│' || ch.is_whitespace()))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[tokio::test]
async fn dayshift_status_on_the_three_schedules() {
    // A store made by the ingress, then the CLI reads it with each schedule.
    let gw = gateway().await;
    let dir = gw.dir.path().to_path_buf();
    let config = dir.join("dayshift.toml");
    std::fs::write(&config, config_text(&dir, None, "3s")).unwrap();
    let sched = dir.join("schedule.toml");

    std::fs::write(&sched, ALWAYS).unwrap();
    let t = status(&config, "2026-12-03T10:17:42.123456789Z");
    assert!(!has_raw_timestamp(&t), "{t}");
    assert_eq!(
        pool_line(&t, "chat"),
        "chat | tiny-chat | 1 | all day ×1 | none | always open",
        "{t}"
    );
    assert!(!t.contains("open until"), "{t}");

    std::fs::write(&sched, OFFICE_SCHEDULE).unwrap();
    let t = status(&config, "2026-12-03T10:17:42.5+01:00");
    assert!(
        t.starts_with("Cluster \"test\" (local), Thu 2026-12-03 10:17 Europe/Berlin"),
        "{t}"
    );
    assert_eq!(
        pool_line(&t, "chat"),
        "chat | tiny-chat | 1 | 08:00–18:00 ×1 | none | \
         open until Thu 2026-12-03 18:00; then Fri 2026-12-04 08:00–18:00",
        "{t}"
    );
    // Saturday: closed today, next Monday.
    let t = status(&config, "2026-12-05T12:00:00+01:00");
    assert!(
        pool_line(&t, "embed").ends_with("| closed | none | next Mon 2026-12-07 08:00–18:00"),
        "{t}"
    );

    std::fs::write(&sched, HOLIDAYS).unwrap();
    let t = status(&config, "2026-12-24T10:00:00+01:00");
    assert!(
        pool_line(&t, "chat").ends_with("| 0 | closed | none | next Mon 2026-12-28 08:00–18:00"),
        "{t}"
    );
    assert!(
        t.contains("Next schedule change: Mon 2026-12-28 08:00 Europe/Berlin"),
        "{t}"
    );
    gw.stop().await;
}

/// `in_flight` of node `id` as `dayshift nodes --json` reports it.
fn nodes_in_flight(config: &Path, id: &str) -> i64 {
    let out = Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(["nodes", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == id))
        .and_then(|n| n["in_flight"].as_i64())
        .unwrap_or_else(|| panic!("node {id} in {v}"))
}

fn wait_for_in_flight(config: &Path, id: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = nodes_in_flight(config, id);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dayshift nodes shows in-flight {got}, the gateway has {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dayshift_nodes_shows_the_gateways_live_in_flight_count() {
    let gw = gateway().await;
    let dir = gw.dir.path().to_path_buf();
    let config = dir.join("dayshift.toml");
    std::fs::write(&config, config_text(&dir, None, "3s")).unwrap();
    let node = stand_in("n1", true, true).await;
    register(&gw, &node, "chat", "tiny-chat").await;
    let key = api_key(&gw).await;
    // A stream the stand-in holds after its first chunk: one request in flight.
    let mut r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&key)
        .json(&chat_body("tiny-chat", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _first = r.chunk().await.unwrap();
    let c = config.clone();
    tokio::task::spawn_blocking(move || wait_for_in_flight(&c, "n1", 1))
        .await
        .unwrap();
    // The request ends; no heartbeat comes (the stand-in sends none): the store follows
    // the gateway's count anyway.
    node.gate.add_permits(1);
    while r.chunk().await.unwrap().is_some() {}
    let c = config.clone();
    tokio::task::spawn_blocking(move || wait_for_in_flight(&c, "n1", 0))
        .await
        .unwrap();
    gw.stop().await;
}

/// The status page's scaling table and `/metrics`' pool gauges, read from what the store
/// holds (written through the `Store` API as the load sampler and the scheduler do).
///
/// At Thu 2026-12-03 09:17:42Z (10:17 Berlin) `chat`'s window is open: range 1-3 (the
/// pool's max_nodes is 8). Load over the minute before (`write_elastic_history`): the 5 s
/// period at 09:17:10 holds replica a's 6 + 2 and replica b's 3 = 11, the one at
/// 09:17:40 a's 5: (11 + 5) / 2 = 8.0 (the gateway's own sampler adds a 0 of its replica
/// in the last period, which leaves the sum as it is); the 50 at 09:15:00 is older than
/// a minute. The last decision at 09:16:30 (10:16 Berlin) raised the target to 2. `embed` has no
/// window (0-0), no load and no decision.
#[tokio::test]
async fn status_page_and_metrics_show_each_pools_scaling() {
    let clock = Arc::new(ManualClock::new(at("2026-12-03T09:17:42Z")));
    let gw = gateway_with(Some(clock), "3s").await;
    let s = Schedule::parse("schedule.toml", ELASTIC_OFFICE, None).unwrap();
    gw.state().set_schedule(Some(s));
    let store = &gw.state().store;
    write_elastic_history(
        store,
        at("2026-12-03T09:17:42Z"),
        Some("the month's budget would be exceeded"),
    )
    .await;
    let page = gw
        .http
        .get(&gw.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!has_raw_timestamp(&page), "a raw timestamp: {page}");
    for want in [
        "<th>range now</th><th>active nodes</th><th>load</th><th>last scale decision</th>",
        "<tr><td>chat</td><td>1-3</td><td>0</td><td>8.0</td><td>load_up at Thu 10:16 \
         (target 2): load 7.5 over the last 60 s needs 2 node(s) at 4 each; was 1; \
         not acted on: the month's budget would be exceeded</td></tr>",
    ] {
        assert!(page.contains(want), "{want}: {page}");
    }
    // `embed` has no load but the gateway's own sampler's zero (written at start; "-"
    // before its first write).
    assert!(
        ["-", "0.0"].iter().any(|l| page.contains(&format!(
            "<tr><td>embed</td><td>0</td><td>0</td><td>{l}</td><td>none yet</td></tr>"
        ))),
        "{page}"
    );
    let metrics = gw.metrics_text().await;
    for want in [
        "dayshift_pool_range_min{pool=\"chat\"} 1\n",
        "dayshift_pool_range_max{pool=\"chat\"} 3\n",
        "dayshift_pool_range_min{pool=\"embed\"} 0\n",
        "dayshift_pool_range_max{pool=\"embed\"} 0\n",
        "dayshift_pool_active_nodes{pool=\"chat\"} 0\n",
        "dayshift_pool_load{pool=\"chat\"} 8\n",
        "dayshift_pool_target_nodes{pool=\"chat\"} 2\n",
        "dayshift_pool_scale_decision_timestamp_seconds{pool=\"chat\",cause=\"load_up\"} 1796289390\n",
        "dayshift_pool_scale_refused{pool=\"chat\"} 1\n",
        "# TYPE dayshift_pool_load gauge\n",
    ] {
        assert!(metrics.contains(want), "{want}: {metrics}");
    }
    let absent = "dayshift_pool_target_nodes{pool=\"embed\"}";
    assert!(!metrics.contains(absent), "{absent}: {metrics}");
    gw.stop().await;
}
