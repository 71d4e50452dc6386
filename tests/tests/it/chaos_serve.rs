//! Chaos against the real `dayshift serve`: several pools' windows open and close every
//! few seconds (schedule rewritten + SIGHUP), the fake Hetzner API answers with random
//! faults (5xx, 429, capacity, slow and lost answers), and the ingress is SIGKILLed at
//! random moments and restarted at once — across at least 25 create → bootstrap (SSH,
//! real `dayshift-node`) → ready → drain → delete cycles (`CHAOS_CYCLES=50` for the
//! longer run: 264 s on the loaded 2-core machine, half the suite's wall time). At the
//! end the fake's server list is empty, every node row is `deleted` or `failed`, and no
//! server outlived its pool's window by more than the stated bound. Counts are printed;
//! CHAOS_SEED replays.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dayshift_tests::fixtures;
use dayshift_tests::pebble::{free_port, wait_port};
use dayshift_tests::processes::signal;
use dayshift_tests::serve::{
    PoolSpec, ServeProc, ServeSpec, TlsSpec, listed_servers, live_hosts, sqlite_rows,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const POOLS: usize = 12;
/// Full cycles required unless `CHAOS_CYCLES` says otherwise.
const MIN_CYCLES: usize = 25;
/// Longest a server may live past its window's end: the drain timeout (10 s) plus a
/// restart after a kill, a rate-limit wait and a few ticks.
const BOUND_SECS: i64 = 45;

fn schedule_text(open: &[bool]) -> String {
    let mut s = String::from("timezone = \"UTC\"\n");
    for (i, o) in open.iter().enumerate() {
        if *o {
            s.push_str(&format!(
                "[[window]]\npool = \"p{i}\"\ndays = \"mon-sun\"\nstart = \"00:00\"\nend = \"24:00\"\nnodes = 1\n"
            ));
        }
    }
    s
}

/// A window of a pool: opened, closed.
type Window = (DateTime<Utc>, Option<DateTime<Utc>>);

fn ms(t: &str) -> Option<DateTime<Utc>> {
    t.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_is_killed_at_random_and_leaks_no_server() {
    fixtures::init_tracing();
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos seed {seed} (set CHAOS_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let min_cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MIN_CYCLES);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fake = fixtures::fake_with_hosts().await;
    let port = free_port();
    let locations = ["fsn1", "nbg1", "hel1"];
    let spec = ServeSpec {
        dir: d.to_path_buf(),
        port,
        endpoint: fake.endpoint(),
        ssh_port: fake.ssh_port(),
        tls: TlsSpec::Off,
        pools: (0..POOLS)
            .map(|i| PoolSpec {
                name: format!("p{i}"),
                model: "tiny-llama".into(),
                locations: (0..3).map(|k| locations[(i + k) % 3].to_string()).collect(),
                cold_start_secs: 3,
                drain_timeout_secs: 10,
            })
            .collect(),
        budget: None,
        database_url: None,
        public_port: None,
    };
    let config = spec.write();
    spec.mirror_tiny_model("tiny-llama");
    let sched_path = d.join("schedule.toml");
    let mut open = vec![false; POOLS];
    std::fs::write(&sched_path, schedule_text(&open)).unwrap();
    let log = d.join("serve.log");
    let db = spec.db_path();

    // Windows per pool: (opened, closed).
    let mut windows: Vec<Vec<Window>> = vec![Vec::new(); POOLS];
    let mut next_toggle: Vec<Instant> = (0..POOLS)
        .map(|_| Instant::now() + Duration::from_millis(rng.random_range(0..3000)))
        .collect();
    let mut serve = Some(ServeProc::start(&config, &log, 150));
    wait_port(port, "dayshift serve").await;
    let mut next_kill = Instant::now() + Duration::from_millis(rng.random_range(2000..7000));
    let (mut kills, mut faults) = (0u32, 0u32);
    let started = Instant::now();
    let cycles = |db: &Path| -> usize {
        sqlite_rows(
            db,
            "SELECT COUNT(DISTINCT node_id) FROM node_events WHERE to_state = 'ready' AND node_id IN \
             (SELECT id FROM nodes WHERE state = 'deleted')",
        )
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
    };
    let deadline = started + Duration::from_secs(420);
    loop {
        let done = cycles(&db);
        if done >= min_cycles {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} full cycles in 7 minutes\n{}",
            serve.as_ref().map(|s| s.log_text()).unwrap_or_default()
        );
        let now = Instant::now();
        let mut changed = false;
        for i in 0..POOLS {
            if now >= next_toggle[i] {
                open[i] = !open[i];
                changed = true;
                let t = Utc::now();
                if open[i] {
                    windows[i].push((t, None));
                    next_toggle[i] = now + Duration::from_millis(rng.random_range(10000..16000));
                } else {
                    if let Some(w) = windows[i].last_mut() {
                        w.1 = Some(t);
                    }
                    next_toggle[i] = now + Duration::from_millis(rng.random_range(2000..4000));
                }
            }
        }
        if changed {
            std::fs::write(&sched_path, schedule_text(&open)).unwrap();
            if let Some(s) = &serve {
                signal(s.child.id(), libc::SIGHUP);
            }
        }
        if rng.random_bool(0.15) {
            fake.inject(fixtures::random_fault(&mut rng));
            faults += 1;
        }
        if now >= next_kill {
            if let Some(mut s) = serve.take() {
                s.kill_hard();
                kills += 1;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
            serve = Some(ServeProc::start(&config, &log, 150));
            next_kill = Instant::now() + Duration::from_millis(rng.random_range(3000..9000));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Every window closes; the last ingress runs undisturbed until everything is gone.
    let closed_all = Utc::now();
    for (i, o) in open.iter_mut().enumerate() {
        if *o {
            *o = false;
            if let Some(w) = windows[i].last_mut() {
                w.1 = Some(closed_all);
            }
        }
    }
    std::fs::write(&sched_path, schedule_text(&open)).unwrap();
    if let Some(s) = &serve {
        signal(s.child.id(), libc::SIGHUP);
    }
    let settle = Instant::now() + Duration::from_secs(120);
    let servers_left = || live_hosts(&fake);
    loop {
        let live = sqlite_rows(
            &db,
            "SELECT COUNT(*) FROM nodes WHERE state NOT IN ('deleted', 'failed') \
             OR (state = 'failed' AND deleted_at IS NULL AND provider_id IS NOT NULL)",
        );
        let live: usize = live.first().and_then(|s| s.parse().ok()).unwrap_or(1);
        if live == 0 && servers_left() == 0 {
            break;
        }
        assert!(
            Instant::now() < settle,
            "{live} live node rows, {} servers left 120 s after the last window closed\n{}",
            servers_left(),
            serve.as_ref().map(|s| s.log_text()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let api = listed_servers(&fake).await;
    assert_eq!(
        api["servers"].as_array().map(Vec::len),
        Some(0),
        "servers left at the fake: {api}"
    );
    let states = sqlite_rows(&db, "SELECT state, COUNT(*) FROM nodes GROUP BY state");
    for row in &states {
        let s = row.split('|').next().unwrap_or("");
        assert!(s == "deleted" || s == "failed", "a node row in {row}");
    }

    // Lifetimes against windows: a server may start early (pre-warm) but not outlive its
    // pool's window by more than the bound.
    let rows = sqlite_rows(
        &db,
        "SELECT id, pool, server_created_at, deleted_at FROM nodes WHERE server_created_at IS NOT NULL",
    );
    let mut worst = 0i64;
    for row in &rows {
        let f: Vec<&str> = row.split('|').collect();
        let [id, pool, created, deleted] = f[..] else {
            continue;
        };
        let (Some(created), Some(deleted)) = (ms(created), ms(deleted)) else {
            panic!("node {id} has a server without a deletion time: {row}");
        };
        let i: usize = pool.trim_start_matches('p').parse().unwrap();
        // The window its server served: the last one opened before the server was deleted.
        let covering = windows[i].iter().rfind(|(o, _)| *o <= deleted).copied();
        let over = match covering {
            Some((_, Some(close))) if deleted > close => (deleted - close).num_seconds(),
            Some(_) => 0,
            None => (deleted - created).num_seconds(),
        };
        worst = worst.max(over);
        assert!(
            over <= BOUND_SECS,
            "node {id} of {pool} lived {over} s past its window (bound {BOUND_SECS} s)"
        );
    }
    let by_state: BTreeMap<String, String> = states
        .iter()
        .filter_map(|r| {
            r.split_once('|')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    println!(
        "chaos: {} full cycles, {} nodes ({by_state:?}), {} servers created, {kills} SIGKILLs of dayshift serve, \
         {faults} injected faults, worst time past a window {worst} s (bound {BOUND_SECS} s), {:.0} s",
        cycles(&db),
        rows.len() + by_state.get("failed").map(|_| 0).unwrap_or(0),
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    drop(serve);
}
