//! The store's queries on SQLite and on a real PostgreSQL server (started by
//! `scripts/deps/postgres.sh`; URL from DAYSHIFT_TEST_PG_URL).

use dayshift::store::{KeyLimits, NewInterval, NewNode, NodeState, Store, UsageRow};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:55432/postgres";

/// A fresh PostgreSQL database for one test.
async fn pg_store(name: &str) -> Store {
    let admin_url = std::env::var("DAYSHIFT_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG.into());
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL test server not reachable at {admin_url}: {e}\n\
                 run `bash scripts/deps/postgres.sh` (or set DAYSHIFT_TEST_PG_URL)"
            )
        });
    let db = format!("dayshift_test_{name}_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap();
    Store::open(&format!("{base}/{db}")).await.unwrap()
}

async fn exercise(store: &Store) {
    // Nodes and events.
    store
        .insert_node(&NewNode {
            id: "n1".into(),
            pool: "chat".into(),
            state: NodeState::Planned,
            join_token_hash: Some("ab".repeat(32)),
            join_token_expires_at: Some(42),
        })
        .await
        .unwrap();
    assert!(
        store
            .transition("n1", &[NodeState::Planned], NodeState::Creating, "create")
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition("n1", &[NodeState::Planned], NodeState::Booting, "stale")
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition("nope", &[], NodeState::Booting, "missing")
            .await
            .unwrap()
    );
    store
        .set_provider_info("n1", "srv-7", "ccx63", Some("fsn1"))
        .await
        .unwrap();
    store
        .record_registration("n1", "https://127.0.0.1:8443", Some("cd"))
        .await
        .unwrap();
    store.record_heartbeat("n1", 1234, 2).await.unwrap();
    let n = store.get_node("n1").await.unwrap().unwrap();
    assert_eq!(n.state, NodeState::Ready);
    assert_eq!(n.provider_id.as_deref(), Some("srv-7"));
    assert_eq!(n.tls_cert_sha256.as_deref(), Some("cd"));
    assert_eq!(n.last_heartbeat_at, Some(1234));
    assert!(n.registered_at.is_some());
    let ev = store.node_events("n1").await.unwrap();
    let states: Vec<&str> = ev.iter().map(|e| e.to.as_str()).collect();
    assert_eq!(states, vec!["planned", "creating", "ready"]);
    // A move the lifecycle does not allow is refused, and nothing is written.
    let err = store
        .transition("n1", &[], NodeState::Deleted, "skip ahead")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot go from ready to deleted"),
        "{err}"
    );
    for to in [NodeState::Draining, NodeState::Deleting, NodeState::Deleted] {
        assert!(store.transition("n1", &[], to, "gone").await.unwrap());
    }
    assert_eq!(store.list_nodes(false).await.unwrap().len(), 0);
    assert_eq!(store.list_nodes(true).await.unwrap().len(), 1);

    // Keys.
    let k = store
        .create_api_key(
            "alice",
            KeyLimits {
                requests_per_minute: Some(5),
                tokens_per_day: None,
            },
        )
        .await
        .unwrap();
    assert!(k.secret.expose().starts_with(&k.key.prefix));
    let found = store
        .find_api_key(k.secret.expose())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.limits.requests_per_minute, Some(5));
    assert!(store.find_api_key("dsk-other").await.unwrap().is_none());
    assert!(store.revoke_api_key(&k.key.id).await.unwrap());
    assert!(!store.revoke_api_key(&k.key.id).await.unwrap());
    assert!(
        store
            .find_api_key(k.secret.expose())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.list_api_keys().await.unwrap()[0].revoked_at.is_some());

    // Usage (one batch).
    let rows: Vec<UsageRow> = (0..250)
        .map(|i| UsageRow {
            at: 1000 + i,
            key_id: if i % 2 == 0 {
                "key_a".into()
            } else {
                "key_b".into()
            },
            pool: "chat".into(),
            node_id: Some("n1".into()),
            model: "m".into(),
            endpoint: "/v1/chat/completions".into(),
            status: 200,
            prompt_tokens: 10,
            // key_a's prompts start with 4 tokens the node had cached
            cached_tokens: if i % 2 == 0 { 4 } else { 0 },
            completion_tokens: 5,
            latency_ms: 3,
        })
        .collect();
    store.insert_usage(&rows).await.unwrap();
    assert_eq!(store.tokens_used_since("key_a", 0).await.unwrap(), 125 * 15);
    assert_eq!(store.tokens_used_since("key_a", 10_000).await.unwrap(), 0);
    let by = store.usage_by_key(0, 2000).await.unwrap();
    assert_eq!(by.len(), 2);
    assert_eq!(
        (
            by[0].requests,
            by[0].prompt_tokens,
            by[0].cached_tokens,
            by[0].completion_tokens
        ),
        (125, 1250, 500, 625)
    );
    // The cost split weighs the tokens the node computed: cached prompt tokens left out.
    let per_node = store.tokens_by_key_and_node(0, 2000).await.unwrap();
    let tokens: Vec<(&str, i64)> = per_node
        .iter()
        .map(|t| (t.key_id.as_str(), t.tokens))
        .collect();
    assert_eq!(tokens, vec![("key_a", 125 * 11), ("key_b", 125 * 15)]);
    assert_eq!(store.usage_rows(0, i64::MAX).await.unwrap().len(), 250);

    // Ledger.
    let id = store
        .open_interval(&NewInterval {
            node_id: "n1".into(),
            pool: "chat".into(),
            provider: "hetzner".into(),
            server_type: "ccx63".into(),
            location: Some("fsn1".into()),
            started_at: 1_000,
            hourly_price: "0.85".into(),
            monthly_price: Some("530.00".into()),
        })
        .await
        .unwrap();
    assert!(id > 0);
    assert_eq!(store.intervals(0, 10_000).await.unwrap()[0].ended_at, None);
    store.close_intervals("n1", 5_000).await.unwrap();
    let iv = store.intervals(0, 10_000).await.unwrap();
    assert_eq!(iv.len(), 1);
    assert_eq!(iv[0].ended_at, Some(5_000));
    assert_eq!(iv[0].hourly_price, "0.85");
    assert!(store.intervals(6_000, 10_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/dayshift.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    exercise(&store).await;
    let row: (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(row.0.to_lowercase(), "wal");
    store.close().await;
    // Reopening runs no migration twice and keeps the data.
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(store.list_nodes(true).await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_memory_store() {
    let store = Store::open_in_memory().await.unwrap();
    exercise(&store).await;
}

#[tokio::test]
async fn postgres_store() {
    let store = pg_store("exercise").await;
    exercise(&store).await;
    store.close().await;
}

/// The elastic windows' tables (issue 19): load samples, scale states, wake requests.
async fn exercise_elastic(store: &Store) {
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use dayshift_config::schedule::NodeRange;
    use dayshift_scheduler::{LoadSample, ScaleCause, ScaleState};

    let t0: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap();
    let t = |ms: i64| t0 + Duration::milliseconds(ms);
    let sample = |pool: &str, replica: &str, at: i64, in_flight: u32, queued: u32| LoadSample {
        pool: pool.into(),
        replica: replica.into(),
        at: t(at),
        in_flight,
        queued,
        nodes: 2,
    };

    // Samples round-trip, oldest first (then by replica), per pool.
    store
        .record_load(&[
            sample("chat", "r2", 0, 3, 1),
            sample("chat", "r1", 0, 2, 0),
            sample("chat", "r1", 5_001, 4, 2),
            sample("embed", "r1", 5_001, 9, 9),
            sample("chat", "r1", 10_002, 0, 0),
        ])
        .await
        .unwrap();
    // The same (pool, replica, instant) again is ignored: the first write stands.
    store
        .record_load(&[sample("chat", "r1", 5_001, 40, 40)])
        .await
        .unwrap();
    let all = store.load_samples("chat", t0).await.unwrap();
    assert_eq!(
        all,
        vec![
            sample("chat", "r1", 0, 2, 0),
            sample("chat", "r2", 0, 3, 1),
            sample("chat", "r1", 5_001, 4, 2),
            sample("chat", "r1", 10_002, 0, 0),
        ]
    );
    assert_eq!(store.load_samples("chat", t(5_001)).await.unwrap().len(), 2);
    assert_eq!(
        store.load_samples("embed", t0).await.unwrap(),
        vec![sample("embed", "r1", 5_001, 9, 9)]
    );
    assert!(store.load_samples("nope", t0).await.unwrap().is_empty());
    // Pruning drops what is older than the cut, in every pool.
    assert_eq!(store.prune_load(t(5_001)).await.unwrap(), 2);
    assert_eq!(store.load_samples("chat", t0).await.unwrap().len(), 2);
    assert_eq!(store.prune_load(t(20_000)).await.unwrap(), 3);
    assert!(store.load_samples("chat", t0).await.unwrap().is_empty());
    assert!(store.load_samples("embed", t0).await.unwrap().is_empty());

    // Scale states: none, then the saved one (load kept to the thousandth), then
    // replaced by the next decision.
    assert_eq!(store.scale_state("chat").await.unwrap(), None);
    let woken = ScaleState {
        pool: "chat".into(),
        target: 1,
        range: NodeRange { min: 0, max: 3 },
        decided_at: t(123),
        cause: ScaleCause::Wake,
        reason: "woken by a request at 09:00:00 UTC; kept at least until 09:58:00 UTC".into(),
        load: 2.34567,
        woken_until: Some(t(58 * 60_000)),
        refused: Some("wake refused: spent 1.00 + committed 0.00 EUR ...".into()),
    };
    store.save_scale_state(&woken).await.unwrap();
    assert_eq!(
        store.scale_state("chat").await.unwrap(),
        Some(ScaleState {
            load: 2.346,
            ..woken.clone()
        })
    );
    let down = ScaleState {
        pool: "chat".into(),
        target: 0,
        range: NodeRange { min: 0, max: 3 },
        decided_at: t(60 * 60_000),
        cause: ScaleCause::LoadDown,
        reason: "load stayed at 0.0 or less".into(),
        load: 0.0,
        woken_until: None,
        refused: None,
    };
    store.save_scale_state(&down).await.unwrap();
    assert_eq!(store.scale_state("chat").await.unwrap(), Some(down.clone()));
    let embed = ScaleState {
        pool: "embed".into(),
        target: 3,
        range: NodeRange { min: 1, max: 3 },
        cause: ScaleCause::LoadUp,
        load: 11.0,
        ..down.clone()
    };
    store.save_scale_state(&embed).await.unwrap();
    assert_eq!(store.scale_states().await.unwrap(), vec![down, embed]);

    // Wake requests: the later time stands, whatever order they are written in.
    assert_eq!(store.last_wake_request("chat").await.unwrap(), None);
    store.request_wake("chat", t(2_000)).await.unwrap();
    store.request_wake("chat", t(1_000)).await.unwrap();
    assert_eq!(
        store.last_wake_request("chat").await.unwrap(),
        Some(t(2_000))
    );
    store.request_wake("chat", t(3_000)).await.unwrap();
    assert_eq!(
        store.last_wake_request("chat").await.unwrap(),
        Some(t(3_000))
    );
    assert_eq!(store.last_wake_request("embed").await.unwrap(), None);

    // Hourly roll-up: whole hours before the cut, once; the hour in progress stays raw.
    let h = |hours: i64, secs: i64| hours * 3_600_000 + secs * 1000;
    store
        .record_load(&[
            sample("chat", "r1", h(1, 0), 4, 0),
            sample("chat", "r2", h(1, 1), 1, 1),
            sample("chat", "r1", h(1, 10), 2, 0),
            sample("chat", "r1", h(2, 0), 8, 0),
            sample("chat", "r1", h(3, 0), 5, 0),
        ])
        .await
        .unwrap();
    let every = Duration::seconds(5);
    let pools = ["chat".to_string()];
    assert_eq!(
        store
            .roll_up_load(&pools, t(h(3, 30)), every)
            .await
            .unwrap(),
        2
    );
    // Again: nothing new before the cut; later the third hour.
    assert_eq!(
        store
            .roll_up_load(&pools, t(h(3, 30)), every)
            .await
            .unwrap(),
        0
    );
    let hours = store.hour_loads("chat").await.unwrap();
    assert_eq!(hours.len(), 2);
    // 10:00: the period at 10:00:00 has r1's 4 and r2's 1 + 1 (6); the one at 10:00:10
    // r1's 2 and r2's last 2 (two periods old, still counted): 10 over 2 periods.
    assert_eq!(
        (hours[0].hour, hours[0].load_sum, hours[0].periods),
        (t(h(1, 0)), 10.0, 2)
    );
    assert_eq!(
        (hours[1].hour, hours[1].load_sum, hours[1].periods),
        (t(h(2, 0)), 8.0, 1)
    );
    assert_eq!(
        store.roll_up_load(&pools, t(h(4, 0)), every).await.unwrap(),
        1
    );
    assert!(store.hour_loads("embed").await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_memory_store_elastic_tables() {
    let store = Store::open_in_memory().await.unwrap();
    exercise_elastic(&store).await;
}

#[tokio::test]
async fn postgres_store_elastic_tables() {
    let store = pg_store("elastic").await;
    exercise_elastic(&store).await;
    store.close().await;
}

/// The migrations embedded in the binary (`store::migrations`) are exactly what sqlx
/// reads from `ingress/migrations/<backend>/` (what `sqlx::migrate!` embedded before):
/// same versions, descriptions, types and checksums, so a store migrated by an earlier
/// build carries on, and a new migration file cannot be forgotten in the list.
#[tokio::test]
async fn embedded_migrations_match_the_folders() {
    use dayshift::store::migrations;
    use sqlx::migrate::{Migration, Migrator};
    for (folder, ours) in [
        ("sqlite", migrations::sqlite()),
        ("postgres", migrations::postgres()),
    ] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(folder);
        let from_files = Migrator::new(dir.as_path())
            .await
            .expect("migrations folder");
        let key = |m: &Migration| {
            (
                m.version,
                m.description.to_string(),
                m.migration_type,
                m.checksum.to_vec(),
                m.no_tx,
            )
        };
        let a: Vec<_> = ours.iter().map(key).collect();
        let b: Vec<_> = from_files.iter().map(key).collect();
        assert_eq!(a.len(), 5, "{folder}: {a:?}");
        assert_eq!(
            a, b,
            "ingress/src/store/migrations.rs lists other migrations than migrations/{folder}/"
        );
    }
}
