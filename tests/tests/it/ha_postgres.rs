//! Two `dayshift serve` replicas on one real PostgreSQL: one holds the advisory lock and
//! runs the scheduler, the other serves traffic. When the leader is SIGKILLed, the other
//! takes the lock within seconds and carries on with the same nodes: no server is created
//! twice, and at the window's end it drains and deletes them.

use std::process::Command;
use std::time::{Duration, Instant};

use dayshift_tests::fixtures;
use dayshift_tests::pebble::{free_port, wait_port};
use dayshift_tests::processes::signal;
use dayshift_tests::serve::{PoolSpec, ServeProc, ServeSpec, TlsSpec, live_hosts};

const PG: &str = "postgres://postgres@127.0.0.1:55432";

fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(format!("{PG}/{db}"))
        .args(["-At", "-c", sql])
        .output()
        .expect("psql (run scripts/deps/postgres.sh)");
    assert!(
        out.status.success(),
        "psql {sql}: {} (is the test PostgreSQL running? bash scripts/deps/postgres.sh)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn leader_metric(http: &reqwest12::Client, port: u16) -> Option<u8> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("dayshift_scheduler_leader "))
        .and_then(|v| v.trim().parse().ok())
}

const OPEN: &str = "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"mon-sun\"\nstart = \"00:00\"\nend = \"24:00\"\nnodes = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_other_replica_takes_over_without_duplicate_servers() {
    fixtures::init_tracing();
    let db = format!("ha_{}", rand::random::<u32>());
    psql("postgres", &format!("CREATE DATABASE {db}"));
    let url = format!("{PG}/{db}");
    let fake = fixtures::fake_with_hosts().await;
    let (port_a, port_b) = (free_port(), free_port());
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spec = |dir: &std::path::Path, port: u16| ServeSpec {
        dir: dir.to_path_buf(),
        port,
        endpoint: fake.endpoint(),
        ssh_port: fake.ssh_port(),
        tls: TlsSpec::Off,
        pools: vec![PoolSpec {
            name: "chat".into(),
            model: "tiny-llama".into(),
            locations: vec!["fsn1".into(), "nbg1".into()],
            cold_start_secs: 3,
            drain_timeout_secs: 10,
        }],
        budget: None,
        database_url: Some(url.clone()),
        // Nodes register with replica B, which outlives A in this test.
        public_port: Some(port_b),
    };
    let (spec_a, spec_b) = (spec(dirs.0.path(), port_a), spec(dirs.1.path(), port_b));
    let mut configs = Vec::new();
    for s in [&spec_a, &spec_b] {
        // Replicas of one cluster share the operator's SSH key (the one registered at
        // the provider; another key under the same name is refused at start).
        if s.dir != spec_a.dir {
            std::fs::copy(spec_a.dir.join("operator_key"), s.dir.join("operator_key")).unwrap();
        }
        std::fs::write(s.dir.join("schedule.toml"), OPEN).unwrap();
        let c = s.write();
        s.mirror_tiny_model("tiny-llama");
        configs.push(c);
    }
    let http = reqwest12::Client::new();

    let mut a = Some(ServeProc::start(
        &configs[0],
        &dirs.0.path().join("serve.log"),
        150,
    ));
    wait_port(port_a, "replica A").await;
    // A leads before B starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader_metric(&http, port_a).await != Some(1) {
        assert!(Instant::now() < deadline, "A never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = ServeProc::start(&configs[1], &dirs.1.path().join("serve.log"), 150);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port_b))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "replica B did not open port {port_b}:\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A ready node (created by A, registered with B).
    let ready = || psql(&db, "SELECT COUNT(*) FROM nodes WHERE state = 'ready'");
    let deadline = Instant::now() + Duration::from_secs(90);
    while ready() != "1" {
        assert!(
            Instant::now() < deadline,
            "no ready node:\nA: {}\nB: {}",
            a.as_ref().map(|s| s.log_text()).unwrap_or_default(),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        leader_metric(&http, port_b).await,
        Some(0),
        "B follows while A leads"
    );
    let created_before = fake.count_calls("POST", "/v1/servers", 201);
    assert_eq!(created_before, 1);

    // Kill the leader.
    let killed = Instant::now();
    if let Some(mut s) = a.take() {
        s.kill_hard();
    }
    while leader_metric(&http, port_b).await != Some(1) {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "B did not take over:\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = killed.elapsed();
    // B carries on with the same nodes for a while: no new server.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ready(), "1", "{}", b.log_text());
    assert_eq!(
        fake.count_calls("POST", "/v1/servers", 201),
        created_before,
        "a replica created servers twice:\n{}",
        b.log_text()
    );
    let servers = live_hosts(&fake);
    assert_eq!(servers, 1);

    // The window closes: B drains and deletes.
    std::fs::write(spec_b.dir.join("schedule.toml"), "timezone = \"UTC\"\n").unwrap();
    signal(b.child.id(), libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(60);
    while psql(&db, "SELECT COUNT(*) FROM nodes WHERE state <> 'deleted'") != "0"
        || live_hosts(&fake) > 0
    {
        assert!(Instant::now() < deadline, "not deleted:\n{}", b.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "HA: leader killed, the other replica took the lock after {:.1} s; {} servers created in all",
        takeover.as_secs_f64(),
        fake.count_calls("POST", "/v1/servers", 201)
    );
    drop(b);
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
}
