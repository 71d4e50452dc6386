//! `dayshift cost` (the ledger report), `dayshift nodes` and `dayshift status`, run as
//! real processes of the `dayshift` binary against a real SQLite store written through
//! `dayshift::store::Store`, checked against a month worked out by hand.
//!
//! # The month: November 2025, Europe/Berlin, Hetzner's rule
//!
//! Month bounds in Berlin (CET all month): 2025-10-31T23:00Z to 2025-11-30T23:00Z = 720 h.
//! Hetzner bills every started hour and one server never costs more than its type's
//! monthly price. Prices: `gpu-l` (pool `chat`) 1.20 EUR/h, cap 600; `gpu-s` (pool
//! `embed`) 0.50 EUR/h, cap 300.
//!
//! | node | pool  | billed life (UTC)                          | in the month | started h | EUR    |
//! |------|-------|--------------------------------------------|--------------|-----------|--------|
//! | e2   | embed | 10-31 21:00 → 11-01 00:30                  | 23:00→00:30 = 1h30m | 2  | 1.00   |
//! | c1   | chat  | 11-03 06:55 → 16:00                        | 9h05m        | 10        | 12.00  |
//! | e1   | embed | 11-03 08:00 → still running                | to 11-30 23:00 = 27 d 15 h = 663 h | 663 | 331.50 → cap 300.00 |
//! | c4   | chat  | 11-03 12:10 → 13:20                        | 1h10m        | 2         | 2.40   |
//! | c2   | chat  | 11-04 06:57 → 16:00                        | 9h03m        | 10        | 12.00  |
//! | c3   | chat  | 11-05 07:00 → 12:30                        | 5h30m        | 6         | 7.20   |
//! | x1   | chat  | 10-15 08:00 → 10:00 (October: not counted) | —            | —         | —      |
//!
//! Total: 1.00 + 12.00 + 300.00 + 2.40 + 12.00 + 7.20 = 334.60 EUR for 2 + 10 + 663 + 2 +
//! 10 + 6 = 693 billed hours on 6 servers.
//!
//! By pool: chat 10 + 2 + 10 + 6 = 28 h, 12 + 2.40 + 12 + 7.20 = 33.60 EUR (4 servers);
//! embed 2 + 663 = 665 h, 1.00 + 300.00 = 301.00 EUR (2 servers).
//!
//! 24/7 renting of the same servers: per pool its most servers at once, all month.
//! chat: c1 and c4 overlap on 11-03 (12:10–13:20), so 2 × min(720 × 1.20 = 864, 600) =
//! 1200.00; embed: e2 ends on 11-01, e1 starts on 11-03, so 1 × min(720 × 0.50 = 360, 300)
//! = 300.00. Sum 1500.00. Saving: (1500 − 334.60) / 1500 = 77.6933… → 77.69 %.
//!
//! Against the fixed window plan (the month is over: all of it): chat's window Mon–Fri
//! 08:00–18:00 × 1 node on the 20 weekdays of November (3–7, 10–14, 17–21, 24–28) = 200
//! node-hours; its servers ran c1 9h05m + c4 1h10m + c2 9h03m + c3 5h30m = 24h48m = 24.8
//! h (lives as they ran, not billed hours): saved 175.2 h × 1.20 = 210.24 EUR. embed has
//! no window (plan 0) and ran e2 1h30m + e1 663 h = 664.5 h: −664.5 h × 0.50 = −332.25.
//! Total: plan 200, rented 689.3, saved −489.3 h, 210.24 − 332.25 = −122.01 EUR.
//!
//! By local day (the Berlin day a server's billed life began in the month): 11-01: e2
//! (cut to the month's start, 00:00 local) 2 h 1.00; 11-03: c1 (07:55 local), e1, c4 →
//! 10 + 663 + 2 = 675 h, 12 + 300 + 2.40 = 314.40 (3 servers); 11-04: c2 10 h 12.00;
//! 11-05: c3 6 h 7.20.
//!
//! By key (usage rows in the month; a node's cost spread over the tokens each key used on
//! it): c1: alice 2 × (1000 + 500) = 3000 tokens, bob 800 + 200 = 1000 → alice 12.00 ×
//! 3/4 = 9.00, bob 3.00; c2: alice 1500 + 500 = 2000 → 12.00; c4: carol 600 + 600 = 1200
//! → 2.40. A 503 of bob's (no node, no tokens) and alice's October request on x1 (9999
//! tokens) do not count. Nodes without tokens (c3, e1, e2) are "(idle)": 7.20 + 300 + 1.00
//! = 308.20. alice: 9.00 + 12.00 = 21.00 for 5000 tokens = 4200.00 EUR per million; bob
//! 3.00 for 1000 = 3000.00; carol 2.40 for 1200 = 2000.00.
//!
//! # `dayshift status --at 2025-11-03T10:00:00+01:00` (Monday, 09:00Z)
//!
//! Schedule: chat Mon–Fri 08:00–18:00 Berlin (07:00Z–17:00Z), 1 node. Wanted now: chat 1,
//! open until 17:00Z, next window Tue 11-04 07:00Z–17:00Z. The month's money is the
//! scheduler's budget forecast, which reads the node rows' server lives (not the ledger
//! rows above): none of this fixture's nodes has a server yet, so spent 0.00 (the
//! month's figures over real server lives are checked in the next section).
//! Committed by the rest of the month's schedule: today 09:00Z→17:00Z = 8 h = 9.60, then
//! 19 weekdays (4 + 5 + 5 + 5 from 11-04 to 11-28) × 10 h × 1.20 = 228.00; 237.60.
//! Forecast 237.60; budget 500.00, left 500.00.
//!
//! # `status` and the budget stop agree (a second store, at Wed 11-12 10:00 Berlin)
//!
//! `dayshift status --json` shows the figures the scheduler's budget stop acts on: the
//! same spent, committed and forecast as `Budget::forecast`, and the same over/under
//! verdict. The nodes are written as the scheduler writes them (`update_lifecycle`,
//! which also keeps the ledger).
//!
//! Berlin is on CET (UTC+1) all month: the month runs 2025-10-31T23:00Z to
//! 2025-11-30T23:00Z, and `--at 2025-11-12T10:00:00+01:00` is 09:00Z. Hetzner bills every
//! started hour, one server never more than its type's monthly price. The budget prices
//! each pool at its first server type: `chat` → `gpu-l` 1.20 EUR/h (cap 600), `embed` →
//! `gpu-s` 0.50 EUR/h (cap 300).
//!
//! Spent (each server's life cut to the month and, while it runs, to 09:00Z):
//!
//! | node | pool  | server life (UTC)                 | in the month        | started h | EUR   |
//! |------|-------|-----------------------------------|---------------------|-----------|-------|
//! | x    | chat  | 10-20 07:00 → 10-20 17:00         | none (October)      | 0         | 0.00  |
//! | a    | chat  | 10-31 20:30 → 11-01 01:10         | 23:00 → 01:10 = 2h10m | 3       | 3.60  |
//! | b    | chat  | 11-03 06:50 → 11-03 17:05         | 10h15m              | 11        | 13.20 |
//! | c    | embed | 11-05 08:00 → 11-05 08:20         | 20 min              | 1         | 0.50  |
//! | d    | chat  | 11-12 06:45 → running             | to 09:00 = 2h15m    | 3         | 3.60  |
//! | p    | chat  | planned, no server yet            | —                   | 0         | 0.00  |
//!
//! Spent = 3.60 + 13.20 + 0.50 + 3.60 = 20.90.
//!
//! Committed by the rest of the month's schedule (chat Mon–Fri 08:00–18:00 Berlin =
//! 07:00Z–17:00Z, 1 node; each day's window one server life): today 09:00Z → 17:00Z =
//! 8 h = 9.60; then the weekdays 11-13, 11-14, 11-17…21, 11-24…28 = 12 days × 10 h ×
//! 1.20 = 144.00. Committed = 9.60 + 144.00 = 153.60. Forecast = 20.90 + 153.60 = 174.50.
//!
//! With the budget of 500.00: under (174.50 ≤ 500), 500.00 − 20.90 = 479.10 left.
//! With a budget of 170.00: over (174.50 > 170), 170.00 − 20.90 = 149.10 left.

use crate::common::{ELASTIC_OFFICE, at, write_elastic_history};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::DateTime;
use dayshift::store::{LifecycleWrite, NewInterval, NewNode, NodeState, Store, UsageRow};
use dayshift_config::billing::to_cents;
use dayshift_config::{Config, Schedule};
use dayshift_scheduler::budget::Budget;
use rust_decimal::Decimal;

fn dayshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(args)
        .output()
        .expect("run dayshift")
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

fn json_of(out: &Output) -> serde_json::Value {
    let s = ok_stdout(out);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{s}"))
}

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp_millis()
}

const SCHEDULE: &str = r#"
timezone = "Europe/Berlin"

[[window]]
pool = "chat"
days = "mon-fri"
start = "08:00"
end = "18:00"
nodes = 1
"#;

/// Writes dayshift.toml + schedule.toml into `dir`; the store lives in `dir/state` unless
/// `database_url` is given.
fn write_config(dir: &Path, database_url: Option<&str>) -> PathBuf {
    let db = database_url
        .map(|u| format!("database_url = \"{u}\"\n"))
        .unwrap_or_default();
    let config = format!(
        r#"cluster = "office"
state_dir = "{state}"
{db}schedule = "schedule.toml"

[provider]
kind = "hetzner"
ssh_key = "id_ed25519"

[provider.server_types.gpu-l]
hourly = "1.20"
monthly = "600"

[provider.server_types.gpu-s]
hourly = "0.50"
monthly = "300"

[pools.chat]
model = "chat-model"
server_types = ["gpu-l"]
locations = ["fsn1"]
image = "ubuntu-24.04"
max_nodes = 2

[pools.embed]
model = "embed-model"
server_types = ["gpu-s"]
locations = ["fsn1"]
image = "ubuntu-24.04"
max_nodes = 1

[gateway]
listen = "127.0.0.1:0"

[tls]
mode = "off"

[budget]
monthly = "500.00"
"#,
        state = dir.join("state").display()
    );
    std::fs::write(dir.join("schedule.toml"), SCHEDULE).unwrap();
    let path = dir.join("dayshift.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// One billing interval, opened and (when `end` is given) closed through the store.
async fn interval(store: &Store, node: &str, pool: &str, start: &str, end: Option<&str>) {
    let (server_type, hourly, monthly) = if pool == "chat" {
        ("gpu-l", "1.20", "600")
    } else {
        ("gpu-s", "0.50", "300")
    };
    store
        .open_interval(&NewInterval {
            node_id: node.into(),
            pool: pool.into(),
            provider: "hetzner".into(),
            server_type: server_type.into(),
            location: Some("fsn1".into()),
            started_at: ms(start),
            hourly_price: hourly.into(),
            monthly_price: Some(monthly.into()),
        })
        .await
        .unwrap();
    if let Some(end) = end {
        store.close_intervals(node, ms(end)).await.unwrap();
    }
}

fn usage(at: &str, key: &str, node: Option<&str>, prompt: i64, completion: i64) -> UsageRow {
    UsageRow {
        at: ms(at),
        key_id: key.into(),
        pool: "chat".into(),
        node_id: node.map(str::to_string),
        model: "chat-model".into(),
        endpoint: "/v1/chat/completions".into(),
        status: if node.is_some() { 200 } else { 503 },
        prompt_tokens: prompt,
        cached_tokens: 0,
        completion_tokens: completion,
        latency_ms: 120,
    }
}

/// Key ids of alice, bob and carol.
struct Keys {
    alice: String,
    bob: String,
    carol: String,
}

/// Writes the hand-worked month (see the module comment) into `store`.
async fn write_month(store: &Store) -> Keys {
    interval(
        store,
        "x1",
        "chat",
        "2025-10-15T08:00:00Z",
        Some("2025-10-15T10:00:00Z"),
    )
    .await;
    interval(
        store,
        "e2",
        "embed",
        "2025-10-31T21:00:00Z",
        Some("2025-11-01T00:30:00Z"),
    )
    .await;
    interval(
        store,
        "c1",
        "chat",
        "2025-11-03T06:55:00Z",
        Some("2025-11-03T16:00:00Z"),
    )
    .await;
    interval(store, "e1", "embed", "2025-11-03T08:00:00Z", None).await;
    interval(
        store,
        "c4",
        "chat",
        "2025-11-03T12:10:00Z",
        Some("2025-11-03T13:20:00Z"),
    )
    .await;
    interval(
        store,
        "c2",
        "chat",
        "2025-11-04T06:57:00Z",
        Some("2025-11-04T16:00:00Z"),
    )
    .await;
    interval(
        store,
        "c3",
        "chat",
        "2025-11-05T07:00:00Z",
        Some("2025-11-05T12:30:00Z"),
    )
    .await;
    let limits = dayshift::store::KeyLimits::default();
    let alice = store.create_api_key("alice", limits).await.unwrap().key.id;
    let bob = store.create_api_key("bob", limits).await.unwrap().key.id;
    let carol = store.create_api_key("carol", limits).await.unwrap().key.id;
    store
        .insert_usage(&[
            usage("2025-10-15T09:00:00Z", &alice, Some("x1"), 9000, 999),
            usage("2025-11-03T07:30:00Z", &alice, Some("c1"), 1000, 500),
            usage("2025-11-03T08:30:00Z", &alice, Some("c1"), 1000, 500),
            usage("2025-11-03T09:00:00Z", &bob, Some("c1"), 800, 200),
            usage("2025-11-03T12:30:00Z", &carol, Some("c4"), 600, 600),
            usage("2025-11-03T18:30:00Z", &bob, None, 0, 0),
            usage("2025-11-04T10:00:00Z", &alice, Some("c2"), 1500, 500),
        ])
        .await
        .unwrap();
    Keys { alice, bob, carol }
}

/// Nodes for `dayshift nodes` / `status`: one ready, one booting (chat), one deleted (embed).
async fn write_nodes(store: &Store) {
    for (id, pool) in [("n-ready", "chat"), ("n-boot", "chat"), ("n-gone", "embed")] {
        store
            .insert_node(&NewNode {
                id: id.into(),
                pool: pool.into(),
                state: NodeState::Planned,
                join_token_hash: None,
                join_token_expires_at: None,
            })
            .await
            .unwrap();
    }
    for (id, to) in [
        ("n-ready", NodeState::Creating),
        ("n-ready", NodeState::Booting),
        ("n-boot", NodeState::Creating),
        ("n-boot", NodeState::Booting),
        // The store only moves along the lifecycle's transitions.
        ("n-gone", NodeState::Draining),
        ("n-gone", NodeState::Deleting),
        ("n-gone", NodeState::Deleted),
    ] {
        assert!(store.transition(id, &[], to, "test").await.unwrap());
    }
    store
        .record_registration(
            "n-ready",
            "https://203.0.113.7:8443",
            Some(&"ab".repeat(32)),
        )
        .await
        .unwrap();
    // Its last heartbeat reported 3 requests in flight.
    store
        .record_heartbeat("n-ready", dayshift::store::now_ms(), 3)
        .await
        .unwrap();
}

async fn sqlite_fixture(dir: &Path) -> (PathBuf, Keys) {
    let config = write_config(dir, None);
    let url = format!(
        "sqlite://{}",
        dir.join("state").join("dayshift.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    let keys = write_month(&store).await;
    write_nodes(&store).await;
    store.close().await;
    (config, keys)
}

const POOL_TABLE: &str = "\
Cost of cluster \"office\" for 2025-11 (2025-11-01 00:00 to 2025-12-01 00:00, Europe/Berlin), from the store's ledger
Billing rule (hetzner): every started hour, one server never more than its type's monthly price
┌───────┬─────────┬──────────────┬──────────┬──────────┐
│ pool  ┆ servers ┆ billed hours ┆ cost EUR ┆ 24/7 EUR │
╞═══════╪═════════╪══════════════╪══════════╪══════════╡
│ chat  ┆ 4       ┆ 28           ┆ 33.60    ┆ 1200.00  │
│ embed ┆ 2       ┆ 665          ┆ 301.00   ┆ 300.00   │
│ total ┆ 6       ┆ 693          ┆ 334.60   ┆ 1500.00  │
└───────┴─────────┴──────────────┴──────────┴──────────┘
24/7 renting of the same servers (per pool: its most servers at once, all month): 1500.00 EUR
Saving against 24/7: 77.69 %
Against the fixed window plan (each window's upper bound for its whole length), 2025-11-01 00:00 to 2025-12-01 00:00:
┌───────┬─────────────────┬───────────────────┬──────────────────┬───────────┐
│ pool  ┆ plan node-hours ┆ rented node-hours ┆ saved node-hours ┆ saved EUR │
╞═══════╪═════════════════╪═══════════════════╪══════════════════╪═══════════╡
│ chat  ┆ 200             ┆ 24.8              ┆ 175.2            ┆ 210.24    │
│ embed ┆ 0               ┆ 664.5             ┆ -664.5           ┆ -332.25   │
│ total ┆ 200             ┆ 689.3             ┆ -489.3           ┆ -122.01   │
└───────┴─────────────────┴───────────────────┴──────────────────┴───────────┘
A negative saving: the pool's servers ran longer than its windows' plan (woken outside a window, kept past a window's end, or no window at all).
";

/// Checks every view of the hand-worked month against the store at `config`.
fn check_month(config: &Path, keys: &Keys) {
    let c = config.to_str().unwrap();
    let base = ["cost", "--config", c, "--month", "2025-11"];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        dayshift(&args)
    };

    // Table, by pool (the default).
    assert_eq!(ok_stdout(&run(&[])), POOL_TABLE);

    // JSON, by pool.
    let j = json_of(&run(&["--json"]));
    assert_eq!(j["month"], "2025-11");
    assert_eq!(j["timezone"], "Europe/Berlin");
    assert_eq!(j["from"], "2025-10-31T23:00:00+00:00");
    assert_eq!(j["to"], "2025-11-30T23:00:00+00:00");
    assert_eq!(j["provider"], "hetzner");
    assert_eq!(
        j["billing"],
        serde_json::json!({"unit_secs": 3600, "minimum_secs": 0, "monthly_cap": true})
    );
    assert_eq!(j["by"], "pool");
    assert_eq!(
        j["rows"],
        serde_json::json!([
            {"pool": "chat", "servers": 4, "billed_hours": 28, "cost": "33.60", "always_on": "1200.00"},
            {"pool": "embed", "servers": 2, "billed_hours": 665, "cost": "301.00", "always_on": "300.00"},
        ])
    );
    assert_eq!(
        j["total"],
        serde_json::json!({"servers": 6, "billed_hours": 693, "cost": "334.60"})
    );
    assert_eq!(j["always_on"], "1500.00");
    assert_eq!(
        j["always_on_by_pool"],
        serde_json::json!({"chat": "1200.00", "embed": "300.00"})
    );
    assert_eq!(j["saving_percent"], "77.69");
    assert_eq!(
        j["fixed_plan"],
        serde_json::json!({
            "from": "2025-10-31T23:00:00+00:00",
            "until": "2025-11-30T23:00:00+00:00",
            "pools": [
                {"pool": "chat", "plan_hours": 200, "rented_hours": 24.8, "saved_hours": 175.2, "saved": "210.24"},
                {"pool": "embed", "plan_hours": 0, "rented_hours": 664.5, "saved_hours": -664.5, "saved": "-332.25"},
            ],
            "total": {"plan_hours": 200, "rented_hours": 689.3, "saved_hours": -489.3, "saved": "-122.01"},
        })
    );

    // CSV, by pool.
    assert_eq!(
        ok_stdout(&run(&["--csv"])),
        "pool,servers,billed_hours,cost,always_on\n\
         chat,4,28,33.60,1200.00\n\
         embed,2,665,301.00,300.00\n"
    );

    // By node: CSV (times in UTC, machine-readable), JSON and the table's local times.
    assert_eq!(
        ok_stdout(&run(&["--by", "node", "--csv"])),
        "node,pool,provider,server_type,hourly_price,monthly_price,start,end,running,billed_hours,cost\n\
         e2,embed,hetzner,gpu-s,0.50,300,2025-10-31T23:00:00+00:00,2025-11-01T00:30:00+00:00,false,2,1.00\n\
         c1,chat,hetzner,gpu-l,1.20,600,2025-11-03T06:55:00+00:00,2025-11-03T16:00:00+00:00,false,10,12.00\n\
         e1,embed,hetzner,gpu-s,0.50,300,2025-11-03T08:00:00+00:00,2025-11-30T23:00:00+00:00,false,663,300.00\n\
         c4,chat,hetzner,gpu-l,1.20,600,2025-11-03T12:10:00+00:00,2025-11-03T13:20:00+00:00,false,2,2.40\n\
         c2,chat,hetzner,gpu-l,1.20,600,2025-11-04T06:57:00+00:00,2025-11-04T16:00:00+00:00,false,10,12.00\n\
         c3,chat,hetzner,gpu-l,1.20,600,2025-11-05T07:00:00+00:00,2025-11-05T12:30:00+00:00,false,6,7.20\n"
    );
    let j = json_of(&run(&["--by", "node", "--json"]));
    assert_eq!(j["by"], "node");
    let nodes: Vec<(String, String)> = j["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().to_string(),
                r["cost"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("e2", "1.00"),
        ("c1", "12.00"),
        ("e1", "300.00"),
        ("c4", "2.40"),
        ("c2", "12.00"),
        ("c3", "7.20"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(nodes, want);
    assert_eq!(j["total"]["cost"], "334.60");
    let e1 = &j["rows"][2];
    assert_eq!(
        (&e1["node"], &e1["hourly_price"], &e1["monthly_price"]),
        (
            &serde_json::json!("e1"),
            &serde_json::json!("0.50"),
            &serde_json::json!("300")
        )
    );
    assert_eq!(e1["start"], "2025-11-03T08:00:00+00:00");
    assert_eq!(e1["end"], "2025-11-30T23:00:00+00:00");
    let table = ok_stdout(&run(&["--by", "node"]));
    assert!(
        table.contains(
            "│ c1    ┆ chat  ┆ hetzner  ┆ gpu-l       ┆ 1.20  ┆ 600       ┆ 2025-11-03 07:55 ┆ 2025-11-03 17:00 ┆ 10           ┆ 12.00    │"
        ),
        "{table}"
    );
    assert!(
        table.contains(
            "│ e2    ┆ embed ┆ hetzner  ┆ gpu-s       ┆ 0.50  ┆ 300       ┆ 2025-11-01 00:00 ┆ 2025-11-01 01:30 ┆ 2            ┆ 1.00     │"
        ),
        "{table}"
    );
    assert!(
        table.contains(
            "│ total ┆       ┆          ┆             ┆       ┆           ┆                  ┆                  ┆ 693          ┆ 334.60   │"
        ),
        "{table}"
    );

    // By local day.
    assert_eq!(
        ok_stdout(&run(&["--by", "day", "--csv"])),
        "day,servers,billed_hours,cost\n\
         2025-11-01,1,2,1.00\n\
         2025-11-03,3,675,314.40\n\
         2025-11-04,1,10,12.00\n\
         2025-11-05,1,6,7.20\n"
    );
    let j = json_of(&run(&["--by", "day", "--json"]));
    assert_eq!(
        j["rows"][1],
        serde_json::json!({"day": "2025-11-03", "servers": 3, "billed_hours": 675, "cost": "314.40"})
    );

    // By API key: ids are random, so the expected rows are sorted by the real ids.
    let mut want = vec![
        ("(idle)".to_string(), String::new(), 0u64, "308.20", None),
        (
            keys.alice.clone(),
            "alice".into(),
            5000,
            "21.00",
            Some("4200.00"),
        ),
        (
            keys.bob.clone(),
            "bob".into(),
            1000,
            "3.00",
            Some("3000.00"),
        ),
        (
            keys.carol.clone(),
            "carol".into(),
            1200,
            "2.40",
            Some("2000.00"),
        ),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let mut csv = String::from("key,name,tokens,cost,per_million_tokens\n");
    for (k, n, t, c, p) in &want {
        csv.push_str(&format!("{k},{n},{t},{c},{}\n", p.unwrap_or("")));
    }
    assert_eq!(ok_stdout(&run(&["--by", "key", "--csv"])), csv);
    let j = json_of(&run(&["--by", "key", "--json"]));
    let rows: Vec<serde_json::Value> = want
        .iter()
        .map(|(k, n, t, c, p)| {
            serde_json::json!({"key": k, "name": n, "tokens": t, "cost": c, "per_million_tokens": p})
        })
        .collect();
    assert_eq!(j["rows"], serde_json::Value::Array(rows));
    let table = ok_stdout(&run(&["--by", "key"]));
    assert!(
        table.contains("│ (idle)       ┆       ┆ 0      ┆ 308.20   ┆                   │"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "│ {} ┆ alice ┆ 5000   ┆ 21.00    ┆ 4200.00           │",
            keys.alice
        )),
        "{table}"
    );
    assert!(
        table.contains("│ total        ┆       ┆ 7200   ┆ 334.60   ┆                   │"),
        "{table}"
    );

    // A month with no servers: zeros, not an error.
    let out = dayshift(&["cost", "--config", c, "--month", "2025-09", "--json"]);
    let j = json_of(&out);
    assert_eq!(j["total"]["cost"], "0.00");
    assert_eq!(j["rows"], serde_json::json!([]));
}

#[tokio::test]
async fn cost_matches_the_hand_worked_month_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (config, keys) = sqlite_fixture(dir.path()).await;
    check_month(&config, &keys);
}

#[tokio::test]
async fn cost_reads_the_same_month_from_postgresql() {
    let admin_url = std::env::var("DAYSHIFT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/postgres".into());
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL test server not reachable at {admin_url}: {e}\n\
                 run `bash scripts/deps/postgres.sh` (or set DAYSHIFT_TEST_PG_URL)"
            )
        });
    let db = format!("dayshift_cost_report_{}", std::process::id());
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let url = format!("{}/{db}", admin_url.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(&url));
    let store = Store::open(&url).await.unwrap();
    let keys = write_month(&store).await;
    store.close().await;
    check_month(&config, &keys);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn nodes_lists_the_stored_nodes_with_their_model() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = sqlite_fixture(dir.path()).await;
    let c = config.to_str().unwrap();
    let j = json_of(&dayshift(&["nodes", "--config", c, "--json"]));
    // Listed by creation time; these rows may share a millisecond, so compare by id.
    let mut nodes = j["nodes"].as_array().unwrap().clone();
    nodes.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let got: Vec<(&str, &str, &str, &str)> = nodes
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap(),
                n["pool"].as_str().unwrap(),
                n["state"].as_str().unwrap(),
                n["model"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("n-boot", "chat", "booting", "chat-model"),
            ("n-ready", "chat", "ready", "chat-model"),
        ],
        "deleted nodes are left out without --all: {j}"
    );
    // No server address from a provider yet: the registered API URL stands in.
    assert_eq!(nodes[1]["address"], "https://203.0.113.7:8443");
    assert_eq!(nodes[0]["address"], serde_json::Value::Null);
    assert_eq!(nodes[1]["in_flight"], 3);
    assert!(nodes[1].get("join_token_hash").is_none());
    assert!(nodes[1]["age_secs"].as_i64().unwrap() >= 0);
    let j = json_of(&dayshift(&["nodes", "--config", c, "--json", "--all"]));
    let all = j["nodes"].as_array().unwrap();
    assert_eq!(all.len(), 3);
    let gone = all.iter().find(|n| n["id"] == "n-gone").unwrap();
    assert_eq!(gone["state"], "deleted");
    assert_eq!(gone["model"], "embed-model");

    let table = ok_stdout(&dayshift(&["nodes", "--config", c]));
    let header = table.lines().nth(1).unwrap();
    for col in [
        "id",
        "pool",
        "state",
        "age",
        "address",
        "model",
        "in flight",
    ] {
        assert!(header.contains(col), "{table}");
    }
    let ready = table.lines().find(|l| l.contains("n-ready")).unwrap();
    assert!(
        ready.contains("ready") && ready.contains("https://203.0.113.7:8443"),
        "{table}"
    );
    assert!(ready.contains("chat-model"), "{table}");
    assert!(
        ready.trim_end().ends_with("┆ 3         │"),
        "in flight: {table}"
    );
    let booting = table.lines().find(|l| l.contains("n-boot")).unwrap();
    assert!(
        booting.trim_end().ends_with("┆ -         │"),
        "in flight: {table}"
    );
    assert!(!table.contains("n-gone"), "{table}");
}

#[tokio::test]
async fn status_shows_schedule_nodes_and_money_at_an_instant() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = sqlite_fixture(dir.path()).await;
    let c = config.to_str().unwrap();
    let at = "2025-11-03T10:00:00+01:00";
    let j = json_of(&dayshift(&["status", "--config", c, "--at", at, "--json"]));
    assert_eq!(j["cluster"], "office");
    assert_eq!(j["provider"], "hetzner");
    assert_eq!(j["at"], "2025-11-03T09:00:00+00:00");
    assert_eq!(j["timezone"], "Europe/Berlin");
    assert_eq!(j["next_change"], "2025-11-03T17:00:00+00:00");
    assert_eq!(
        j["nodes_by_state"],
        serde_json::json!({"booting": 1, "ready": 1})
    );
    let chat = &j["pools"][0];
    assert_eq!(chat["pool"], "chat");
    assert_eq!(chat["model"], "chat-model");
    assert_eq!(chat["wanted_now"], 1);
    assert_eq!(
        chat["today"],
        serde_json::json!([{"start": "2025-11-03T07:00:00+00:00", "end": "2025-11-03T17:00:00+00:00", "nodes": 1, "min_nodes": 1}])
    );
    assert_eq!(chat["nodes"], serde_json::json!({"booting": 1, "ready": 1}));
    assert_eq!(chat["open_until"], "2025-11-03T17:00:00+00:00");
    assert_eq!(
        chat["next_window"],
        serde_json::json!({"start": "2025-11-04T07:00:00+00:00", "end": "2025-11-04T17:00:00+00:00", "nodes": 1, "min_nodes": 1})
    );
    let embed = &j["pools"][1];
    assert_eq!(embed["pool"], "embed");
    assert_eq!(embed["wanted_now"], 0);
    assert_eq!(embed["today"], serde_json::json!([]));
    assert_eq!(embed["next_window"], serde_json::Value::Null);
    assert_eq!(
        j["month"],
        serde_json::json!({
            "month": "2025-11",
            "spent": "0.00",
            "committed": "237.60",
            "forecast": "237.60",
            "budget": "500.00",
            "budget_left": "500.00",
            "over_budget": false,
        })
    );

    let table = ok_stdout(&dayshift(&["status", "--config", c, "--at", at]));
    assert!(
        table.starts_with("Cluster \"office\" (hetzner), Mon 2025-11-03 10:00 Europe/Berlin\n"),
        "{table}"
    );
    let chat_line = table.lines().find(|l| l.starts_with("│ chat")).unwrap();
    for part in [
        "chat-model",
        "08:00–18:00 ×1",
        "booting 1, ready 1",
        "open until Mon 2025-11-03 18:00",
    ] {
        assert!(chat_line.contains(part), "{part}: {table}");
    }
    assert!(
        table.contains("Nodes: booting 1, ready 1 (2 live)"),
        "{table}"
    );
    assert!(
        table.contains("Next schedule change: Mon 2025-11-03 18:00 Europe/Berlin"),
        "{table}"
    );
    assert!(
        table.contains(
            "Month 2025-11 to date: 0.00 EUR spent; the rest of the schedule commits 237.60 EUR \
             (forecast 237.60 EUR); budget 500.00 EUR, 500.00 EUR left"
        ),
        "{table}"
    );
}

#[test]
fn read_only_commands_never_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);
    let c = config.to_str().unwrap();
    for args in [
        vec!["cost", "--config", c],
        vec!["nodes", "--config", c],
        vec!["status", "--config", c],
    ] {
        let out = dayshift(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no store at") && err.contains("has `dayshift serve` run"),
            "{args:?}: {err}"
        );
    }
    assert!(!dir.path().join("state").join("dayshift.db").exists());
    let out = dayshift(&["cost", "--month", "2025-11"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --config"));
    let out = dayshift(&["cost", "--config", c, "--month", "2025-13"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--month"));
}

// ---- `status` and the budget stop agree (see the module comment) ----

const BUDGET_AT: &str = "2025-11-12T10:00:00+01:00";

/// One node: id, pool, server type, server created, server deleted (None: running;
/// a created of None: planned, no server yet).
type Life = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

const BUDGET_LIVES: &[Life] = &[
    (
        "x",
        "chat",
        "gpu-l",
        Some("2025-10-20T07:00:00Z"),
        Some("2025-10-20T17:00:00Z"),
    ),
    (
        "a",
        "chat",
        "gpu-l",
        Some("2025-10-31T20:30:00Z"),
        Some("2025-11-01T01:10:00Z"),
    ),
    (
        "b",
        "chat",
        "gpu-l",
        Some("2025-11-03T06:50:00Z"),
        Some("2025-11-03T17:05:00Z"),
    ),
    (
        "c",
        "embed",
        "gpu-s",
        Some("2025-11-05T08:00:00Z"),
        Some("2025-11-05T08:20:00Z"),
    ),
    ("d", "chat", "gpu-l", Some("2025-11-12T06:45:00Z"), None),
    ("p", "chat", "gpu-l", None, None),
];

/// Writes each node as the scheduler does: planned, then its server recorded (which opens
/// its billing interval), then deleted (which closes it).
async fn write_server_lives(store: &Store) {
    for &(id, pool, server_type, created, deleted) in BUDGET_LIVES {
        let planned = created.map(ms).unwrap_or(ms("2025-11-12T08:59:00Z")) - 60_000;
        store
            .insert_planned(id, pool, planned, "test: planned")
            .await
            .unwrap();
        let Some(created) = created else { continue };
        let (hourly, monthly) = if pool == "chat" {
            ("1.20", "600")
        } else {
            ("0.50", "300")
        };
        let interval = NewInterval {
            node_id: id.into(),
            pool: pool.into(),
            provider: "hetzner".into(),
            server_type: server_type.into(),
            location: Some("fsn1".into()),
            started_at: ms(created),
            hourly_price: hourly.into(),
            monthly_price: Some(monthly.into()),
        };
        // Along the lifecycle's own transitions (the store refuses any other).
        let mut n = dayshift_scheduler::NodeRecord::planned(
            id.into(),
            pool.into(),
            DateTime::from_timestamp_millis(planned).unwrap(),
        );
        let created_at = DateTime::from_timestamp_millis(ms(created)).unwrap();
        n.state = NodeState::Creating;
        write(store, &n, NodeState::Planned, ms(created), None).await;
        n.state = NodeState::Booting;
        n.server_id = Some(format!("srv-{id}"));
        n.server_type = Some(server_type.into());
        n.location = Some("fsn1".into());
        n.server_created_at = Some(created_at);
        n.attempts = 1;
        write(store, &n, NodeState::Creating, ms(created), Some(&interval)).await;
        if let Some(deleted) = deleted {
            let deleted_at = DateTime::from_timestamp_millis(ms(deleted)).unwrap();
            n.drain_started_at = Some(deleted_at);
            for (from, to) in [
                (NodeState::Booting, NodeState::Draining),
                (NodeState::Draining, NodeState::Deleting),
                (NodeState::Deleting, NodeState::Deleted),
            ] {
                n.state = to;
                if to == NodeState::Deleted {
                    n.deleted_at = Some(deleted_at);
                }
                write(store, &n, from, ms(deleted), None).await;
            }
        }
    }
}

async fn write(
    store: &Store,
    n: &dayshift_scheduler::NodeRecord,
    from: NodeState,
    at: i64,
    interval: Option<&NewInterval>,
) {
    let written = store
        .update_lifecycle(n, from, at, "test", interval)
        .await
        .unwrap();
    assert_eq!(written, LifecycleWrite::Written);
}

/// The same nodes as the scheduler's reconcile loop sees them.
fn scheduler_nodes() -> Vec<dayshift_scheduler::NodeRecord> {
    BUDGET_LIVES
        .iter()
        .map(|&(id, pool, server_type, created, deleted)| {
            let mut n = dayshift_scheduler::NodeRecord::planned(
                id.into(),
                pool.into(),
                at("2025-10-01T00:00:00Z"),
            );
            n.state = match (created, deleted) {
                (None, _) => NodeState::Planned,
                (Some(_), None) => NodeState::Ready,
                (Some(_), Some(_)) => NodeState::Deleted,
            };
            n.server_type = Some(server_type.into());
            n.server_created_at = created.map(at);
            n.deleted_at = deleted.map(at);
            n
        })
        .collect()
}

fn cents(d: Decimal) -> String {
    format!("{:.2}", to_cents(d))
}

#[tokio::test]
async fn status_shows_the_figures_and_verdict_the_budget_stop_acts_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("budget.db").display());
    let store = Store::open(&url).await.unwrap();
    write_server_lives(&store).await;
    store.close().await;

    for (budget, over, left) in [("500.00", false, "479.10"), ("170.00", true, "149.10")] {
        let sub = dir.path().join(budget);
        std::fs::create_dir(&sub).unwrap();
        let path = write_config(&sub, Some(&url));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"500.00\"", &format!("\"{budget}\""))).unwrap();

        // The scheduler's side: the budget it is built with and the nodes it reads.
        let config = Config::load(&path).unwrap();
        let schedule = Schedule::load(
            &sub.join("schedule.toml"),
            Some(config.pool_names().as_slice()),
        )
        .unwrap();
        let budget_stop = Budget::from_config(&config).expect("the config sets a budget");
        let f = budget_stop
            .forecast(&schedule, &scheduler_nodes(), at(BUDGET_AT))
            .expect("the month is in range");
        assert_eq!(
            (cents(f.spent), cents(f.committed), cents(f.total())),
            ("20.90".into(), "153.60".into(), "174.50".into()),
            "the hand-worked figures (see the module comment)"
        );
        assert_eq!(f.over(), over, "budget {budget}");

        // `dayshift status --json`, as a process, over the store.
        let c = path.to_str().unwrap();
        let j = json_of(&dayshift(&[
            "status", "--config", c, "--at", BUDGET_AT, "--json",
        ]));
        assert_eq!(
            j["month"],
            serde_json::json!({
                "month": "2025-11",
                "spent": cents(f.spent),
                "committed": cents(f.committed),
                "forecast": cents(f.total()),
                "budget": budget,
                "budget_left": left,
                "over_budget": f.over(),
            }),
            "budget {budget}"
        );
    }
}

// ---- elastic windows: `status` shows each pool's scaling, `cost estimate` is load-aware ----

/// Turns the fixture's config at `dir` elastic: `chat` may have 3 nodes (4 requests in
/// flight each), and its schedule is `schedule` (an elastic window).
fn make_elastic(dir: &Path, schedule: &str) -> PathBuf {
    let path = dir.join("dayshift.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("max_nodes = 2\n"));
    std::fs::write(
        &path,
        text.replace("max_nodes = 2\n", "max_nodes = 3\ntarget_in_flight = 4\n"),
    )
    .unwrap();
    std::fs::write(dir.join("schedule.toml"), schedule).unwrap();
    path
}

/// A load sample of pool `chat` from `replica` at `t`.
fn load(replica: &str, t: &str, in_flight: u32, queued: u32) -> dayshift_scheduler::LoadSample {
    dayshift_scheduler::LoadSample {
        pool: "chat".into(),
        replica: replica.into(),
        at: at(t),
        in_flight,
        queued,
        nodes: 1,
    }
}

/// `dayshift status` at Mon 2025-11-03 10:00 Berlin (09:00Z) on the elastic office
/// schedule: `chat` may use 1-3 nodes, has 2 active (ready + booting) and a load of
/// (11 + 5) / 2 = 8.0 over the last minute (`write_elastic_history`: the 5 s period at
/// 08:59:25Z holds replica a's 6 + 2 and replica b's 3; the one at 08:59:55Z a's 5; the
/// 50 at 08:57:18Z is older than a minute). Its last decision (08:58:48Z = 09:58 Berlin)
/// raised the target to 2.
/// `embed` has no window: 0-0, no node live (its one node is deleted), no sample, no
/// decision.
#[tokio::test]
async fn status_shows_each_pools_range_load_and_last_decision() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = sqlite_fixture(dir.path()).await;
    let config = make_elastic(dir.path(), ELASTIC_OFFICE);
    let url = format!(
        "sqlite://{}",
        dir.path().join("state").join("dayshift.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    write_elastic_history(&store, at("2025-11-03T09:00:00Z"), None).await;
    store.close().await;
    let c = config.to_str().unwrap();
    let when = "2025-11-03T10:00:00+01:00";
    let j = json_of(&dayshift(&[
        "status", "--config", c, "--at", when, "--json",
    ]));
    assert_eq!(j["pools"][0]["pool"], "chat");
    assert_eq!(
        j["pools"][0]["scaling"],
        serde_json::json!({
            "range": {"min": 1, "max": 3},
            "active_nodes": 2,
            "load": 8.0,
            "load_window_secs": 60,
            "last_decision": {
                "at": "2025-11-03T08:58:48+00:00",
                "cause": "load_up",
                "reason": "load 7.5 over the last 60 s needs 2 node(s) at 4 each; was 1",
                "target": 2,
                "range": {"min": 1, "max": 3},
                "load": 7.5,
                "woken_until": null,
                "refused": null,
            },
        })
    );
    assert_eq!(
        j["pools"][1]["scaling"],
        serde_json::json!({
            "range": {"min": 0, "max": 0},
            "active_nodes": 0,
            "load": null,
            "load_window_secs": 60,
            "last_decision": null,
        })
    );
    // What the scheduler wants now: the last decision's target (taken for this range).
    assert_eq!(j["pools"][0]["wanted_now"], 2);

    let table = ok_stdout(&dayshift(&["status", "--config", c, "--at", when]));
    assert!(
        table.contains("Scaling (load: requests in flight + queued, all ingress replicas)"),
        "{table}"
    );
    let squeezed: Vec<String> = table
        .lines()
        .filter(|l| l.starts_with("│ "))
        .map(|l| {
            l.split('┆')
                .map(|c| c.trim_matches(|ch: char| ch == '│' || ch.is_whitespace()))
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    for want in [
        "chat | 1-3 | 2 | 8.0 | load_up at Mon 09:58 (target 2): load 7.5 over the last 60 s \
         needs 2 node(s) at 4 each; was 1",
        "embed | 0 | 0 | - | none yet",
    ] {
        assert!(
            squeezed.iter().any(|l| l == want),
            "{want}: {squeezed:#?}\n{table}"
        );
    }
}

/// `chat` on Mondays 09:00-13:00 Berlin, 1-3 nodes.
const ELASTIC_MONDAYS: &str = r#"
timezone = "Europe/Berlin"

[[window]]
pool = "chat"
days = "mon"
start = "09:00"
end = "13:00"
nodes = "1-3"
"#;

/// `dayshift cost estimate` with a load history in the store, worked out by hand.
///
/// # The history (January 2026, Berlin = UTC+1; `chat`, target_in_flight 4)
///
/// Load = in flight + queued; within a 5 s period each replica's latest sample counts and
/// replicas add up; the periods of one weekday and local hour are averaged over the weeks.
///
/// | Monday hour | periods (samples)                                                  | average | nodes_for(·, 4) | in range 1-3 |
/// |-------------|--------------------------------------------------------------------|---------|-----------------|--------------|
/// | 09          | 01-05 09:10:00-05: a 9 then a 3 (a's latest), b 1 + 1 → 3 + 2 = 5; 01-12 09:20: a 4 + 1 = 5 | 5  | ⌈1.25⌉ = 2 | 2 |
/// | 10          | 01-05 10:30: a 12 + 2 = 14; 01-12 10:30:00-02: a 10, b 4 → 14       | 14      | ⌈3.5⌉ = 4       | 3 (capped)   |
/// | 11          | 01-05 11:00: a 0                                                   | 0       | 0               | 1 (floor)    |
/// | 12          | none                                                               | —       | —               | 3 (no history: the upper bound) |
///
/// Not counted: Tue 01-06 10:00 (a 40: another weekday) and Mon 01-05 08:30 (a 20: an
/// hour with no window). 10 samples, 2026-01-05 08:30 to 2026-01-12 10:30 Berlin.
///
/// # February 2026 (Mondays 2, 9, 16, 23), Hetzner: every started hour at 1.20 EUR
///
/// - Window hours: 4 × 4 = 16, 12 of them with history (hours 09, 10, 11).
/// - Fixed plan: 3 nodes × 4 h × 4 Mondays = 48 node-hours; as server lives: 3 servers
///   of 4 h each Monday = 48 billed hours = 57.60 EUR (the month's existing estimate:
///   12 servers, peak 3, 24/7 = 3 × min(672 h × 1.20, 600) = 1800.00, saving 96.80 %).
/// - Load-aware, each Monday 2 + 3 + 1 + 3 = 9 node-hours; server lives: server 1
///   09-13 (4 h), server 2 09-11 and 12-13 (2 h + 1 h), server 3 10-11 and 12-13 (1 h +
///   1 h) = 9 billed hours; the month 36 node-hours = 36 billed hours = 43.20 EUR.
/// - Saved against the fixed plan: 57.60 − 43.20 = 14.40 EUR.
#[tokio::test]
async fn cost_estimate_is_load_aware_on_a_hand_worked_history() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None);
    let config = make_elastic(dir.path(), ELASTIC_MONDAYS);
    let c = config.to_str().unwrap();
    let estimate = || dayshift(&["cost", "estimate", "--config", c, "--month", "2026-02"]);
    let estimate_json = || {
        json_of(&dayshift(&[
            "cost", "estimate", "--config", c, "--month", "2026-02", "--json",
        ]))
    };

    // No store yet, then an empty store: one line, the fixed plan stays the only view.
    let t = ok_stdout(&estimate());
    let line = t.lines().last().unwrap();
    assert!(
        line.starts_with("No load history (no store at ")
            && line.ends_with(" yet): the fixed plan above is the only view."),
        "{t}"
    );
    assert!(!dir.path().join("state").join("dayshift.db").exists());
    let url = format!(
        "sqlite://{}",
        dir.path().join("state").join("dayshift.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    let j = estimate_json();
    assert_eq!(j["load_aware"], serde_json::Value::Null);
    assert_eq!(
        j["no_load_history"],
        "no load samples of the schedule's pools in the store yet"
    );

    store
        .record_load(&[
            load("a", "2026-01-05T08:30:00+01:00", 20, 0),
            load("a", "2026-01-05T09:10:00+01:00", 9, 0),
            load("b", "2026-01-05T09:10:01+01:00", 1, 1),
            load("a", "2026-01-05T09:10:03+01:00", 3, 0),
            load("a", "2026-01-05T10:30:00+01:00", 12, 2),
            load("a", "2026-01-05T11:00:00+01:00", 0, 0),
            load("a", "2026-01-06T10:00:00+01:00", 40, 0),
            load("a", "2026-01-12T09:20:00+01:00", 4, 1),
            load("a", "2026-01-12T10:30:00+01:00", 10, 0),
            load("b", "2026-01-12T10:30:02+01:00", 4, 0),
        ])
        .await
        .unwrap();
    store.close().await;

    let j = estimate_json();
    assert_eq!(
        j,
        serde_json::json!({
            "month": "2026-02",
            "pools": [{"pool": "chat", "billed_hours": 48, "servers": 12, "peak_nodes": 3,
                       "cost": "57.60", "always_on": "1800.00"}],
            "total": "57.60",
            "always_on": "1800.00",
            "saving_percent": "96.80",
            "load_aware": {
                "history": {
                    "samples": 10,
                    "rolled_up_hours": 0,
                    "first": "2026-01-05T07:30:00+00:00",
                    "last": "2026-01-12T09:30:02+00:00",
                },
                "pools": [{
                    "pool": "chat",
                    "window_hours": 16,
                    "hours_with_history": 12,
                    "fixed_node_hours": 48,
                    "load_aware_node_hours": 36,
                    "fixed_billed_hours": 48,
                    "load_aware_billed_hours": 36,
                    "fixed_cost": "57.60",
                    "load_aware_cost": "43.20",
                }],
                "fixed_total": "57.60",
                "load_aware_total": "43.20",
                "saved": "14.40",
            },
            "no_load_history": null,
            // At the floor: 4 Mondays × 4 h × 1 node × 1.20 EUR.
            "at_floor_total": "19.20",
        })
    );
    let t = ok_stdout(&estimate());
    assert!(
        t.contains("at their floors: 19.20 EUR (what the budget counts as committed)"),
        "{t}"
    );
    assert!(
        t.contains(
            "Load-aware (10 load samples, 2026-01-05 to 2026-01-12): each window hour rents"
        ),
        "{t}"
    );
    let row = t
        .lines()
        .find(|l| l.starts_with("│ chat") && l.contains("43.20"))
        .unwrap_or_else(|| panic!("{t}"));
    let cells: Vec<&str> = row
        .split('┆')
        .map(|c| c.trim_matches(|ch: char| ch == '│' || ch.is_whitespace()))
        .collect();
    assert_eq!(
        cells,
        ["chat", "16", "12", "48", "36", "57.60", "43.20"],
        "{t}"
    );
    assert!(
        t.contains("Load-aware saving against the fixed plan: 14.40 EUR"),
        "{t}"
    );

    // The same history after the sampler's hourly roll-up and the raw samples' pruning
    // (what a store holds after days): the same figures, from 7 rolled-up hours (Jan 5
    // 08, 09, 10 and 11 Berlin, Jan 6 10, Jan 12 09 and 10).
    let store = Store::open(&url).await.unwrap();
    let far = at("2027-01-01T00:00:00Z");
    let rolled = store
        .roll_up_load(&["chat".to_string()], far, chrono::Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(rolled, 7);
    assert_eq!(store.prune_load(far).await.unwrap(), 10);
    // Rolling up again writes nothing new (an hour already there is kept).
    store
        .roll_up_load(&["chat".to_string()], far, chrono::Duration::seconds(5))
        .await
        .unwrap();
    store.close().await;
    let again = estimate_json();
    assert_eq!(again["load_aware"]["pools"], j["load_aware"]["pools"]);
    assert_eq!(again["load_aware"]["saved"], "14.40");
    assert_eq!(again["load_aware"]["history"]["samples"], 0);
    assert_eq!(again["load_aware"]["history"]["rolled_up_hours"], rolled);
}
