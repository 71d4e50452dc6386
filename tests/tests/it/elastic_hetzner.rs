//! Wake on demand and elastic scaling against the fake Hetzner API (issue 19): `dayshift
//! serve` as a real process, servers that are real OpenSSH test hosts, `dayshift-node`
//! bootstrapped onto them over SSH. The schedule has no window: the pool has no server
//! until a request comes; concurrent clients wake one node (their requests wait for it),
//! their load adds a second, every request is answered, and when they stop the pool goes
//! back to zero — the fake's server list is empty again.

use std::path::Path;
use std::time::{Duration, Instant};

use dayshift_tests::pebble::{free_port, wait_port};
use dayshift_tests::serve::{
    PoolSpec, ServeProc, ServeSpec, TlsSpec, create_key, listed_servers, live_hosts, sqlite_rows,
};
use dayshift_tests::{FakeHcloud, fixtures};

/// `dayshift serve` against the fake with tiny-llama `pools` and a schedule without any
/// window (only requests bring a node); the caller edits the pools' elastic settings.
fn no_window_spec(d: &Path, fake: &FakeHcloud, port: u16, pools: &[&str]) -> ServeSpec {
    std::fs::write(d.join("schedule.toml"), "timezone = \"UTC\"\n").unwrap();
    ServeSpec {
        dir: d.to_path_buf(),
        port,
        endpoint: fake.endpoint(),
        ssh_port: fake.ssh_port(),
        tls: TlsSpec::Off,
        pools: pools
            .iter()
            .map(|name| PoolSpec {
                name: name.to_string(),
                model: "tiny-llama".into(),
                locations: vec!["fsn1".into()],
                cold_start_secs: 20,
                drain_timeout_secs: 10,
            })
            .collect(),
        budget: None,
        database_url: None,
        public_port: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_wakes_a_pool_with_no_window_which_scales_to_two_and_back_to_zero() {
    fixtures::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fake = fixtures::fake_with_hosts().await;
    let port = free_port();
    let spec = no_window_spec(d, &fake, port, &["chat"]);
    let config = spec.write();
    // Elastic settings, and a 10 s billing unit so that an idle node is deleted at once
    // rather than at the end of its paid hour (the hour rule is tested in the scheduler).
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "max_nodes = 1\n",
            "max_nodes = 2\nwake_on_demand = true\ntarget_in_flight = 1\n\
             scale_up_after = \"2s\"\nscale_down_after = \"4s\"\nmin_wake = \"2s\"\n",
        )
        .replace("queue_timeout = \"30s\"", "queue_timeout = \"120s\"")
        .replace(
            "[provider.server_types.cx22]",
            "[provider.billing]\nunit = \"10s\"\n\n[provider.server_types.cx22]",
        );
    std::fs::write(&config, text).unwrap();
    spec.mirror_tiny_model("tiny-llama");
    let key = create_key(&config, "elastic");
    let serve = ServeProc::start(&config, &d.join("serve.log"), 200);
    let log = || serve.log_text();
    wait_port(port, "dayshift serve").await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest12::Client::builder()
        .timeout(Duration::from_secs(150))
        .build()
        .unwrap();

    // Nothing runs before a request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(live_hosts(&fake), 0, "a server without any request");

    // Four clients send requests back to back until two nodes have registered.
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (http, key, stop) = (http.clone(), key.clone(), stop.clone());
        let url = format!("{base}/v1/chat/completions");
        clients.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(180)
            {
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&serde_json::json!({
                        "model": "tiny-llama",
                        "messages": [{"role": "user", "content": format!("hello {i}")}],
                        "max_tokens": 16,
                    }))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                out.push((status, r.text().await.unwrap_or_default()));
            }
            out
        }));
    }
    let db = spec.db_path();
    let registered = || {
        sqlite_rows(
            &db,
            "SELECT COUNT(*) FROM nodes WHERE registered_at IS NOT NULL",
        )
        .first()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut first = None;
    loop {
        let n = registered();
        if n >= 1 && first.is_none() {
            first = Some(started.elapsed().as_secs_f64());
        }
        if n >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not reach two nodes:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    for (status, body) in &answers {
        assert_eq!(
            *status,
            200,
            "a request was not answered: {body}\n{}",
            log()
        );
    }
    assert!(log().contains("waking the pool"), "{}", log());
    eprintln!(
        "wake on demand (fake Hetzner, SSH bootstrap): first node registered {:.1} s after the first request, second {second:.1} s; {} requests, all 200",
        first.unwrap_or_default(),
        answers.len()
    );

    // Idle: both servers are deleted and the fake lists none.
    let deadline = Instant::now() + Duration::from_secs(90);
    while live_hosts(&fake) > 0
        || listed_servers(&fake).await["servers"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the pool did not return to zero:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let created = sqlite_rows(&db, "SELECT COUNT(*) FROM nodes");
    assert_eq!(created, vec!["2".to_string()], "two servers in all");
    let target = sqlite_rows(
        &db,
        "SELECT target, cause FROM pool_scale WHERE pool = 'chat'",
    );
    assert_eq!(target, vec!["0|load_down".to_string()], "{}", log());
    dayshift_tests::processes::signal(serve.child.id(), libc::SIGTERM);
    drop(serve);
}

/// A wake request written to the store by another replica (a follower's gateway: its
/// notice reaches only its own loop) starts a node within seconds, not at the leader's
/// next 15 s idle tick. The scheduler runs with its production timing; the rows are
/// written into the shared SQLite store as a follower's `Store::request_wake` writes them.
/// Two pools are woken a few seconds apart; each must be planned within 10 s, and the
/// leader's log must say that the store's wake request woke it (without that poll the
/// line never appears and each wake waits for the idle tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wake_recorded_by_another_replica_starts_a_node_within_seconds() {
    fixtures::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fake = fixtures::fake_with_hosts().await;
    let port = free_port();
    let spec = no_window_spec(d, &fake, port, &["a", "b"]);
    let config = spec.write();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_nodes = 1\n", "max_nodes = 1\nwake_on_demand = true\n");
    std::fs::write(&config, text).unwrap();
    spec.mirror_tiny_model("tiny-llama");
    let serve = ServeProc::start_production_timing(&config, &d.join("serve.log"));
    wait_port(port, "dayshift serve").await;
    let db = spec.db_path();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serve.log_text().contains("runs the scheduler") {
        assert!(
            Instant::now() < deadline,
            "no leader:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (name, after) in [("a", 2), ("b", 5)] {
        tokio::time::sleep(Duration::from_secs(after)).await;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let st = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=10); \
                 c.execute(sys.argv[2]); c.commit()",
            ])
            .arg(&db)
            .arg(format!(
                "INSERT INTO pool_wake (pool, requested_at) VALUES ('{name}', {now_ms}) \
                 ON CONFLICT (pool) DO UPDATE SET requested_at = excluded.requested_at"
            ))
            .status()
            .expect("python3");
        assert!(st.success(), "writing the wake request");
        let asked = Instant::now();
        loop {
            let rows = sqlite_rows(
                &db,
                &format!("SELECT COUNT(*) FROM nodes WHERE pool = '{name}'"),
            );
            if rows.first().is_some_and(|n| n != "0") {
                break;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(10),
                "pool {name}: no node 10 s after another replica's wake request\n{}",
                serve.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "pool {name}: node planned {:?} after the wake request",
            asked.elapsed()
        );
    }
    assert!(
        serve
            .log_text()
            .contains("a wake request recorded in the store wakes the scheduler"),
        "the leader did not see the wake requests in the store:\n{}",
        serve.log_text()
    );
    drop(serve);
}
