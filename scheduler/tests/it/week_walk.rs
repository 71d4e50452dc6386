//! Clock-injected walk through ten days of the example schedule (a DST change, Good
//! Friday and Easter Monday included): every node is planned exactly its pool's lead time
//! before a window opens, is ready when it opens, and is deleted when it closes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::common::{NoBootstrap, SimProvider, simulate_nodes, utc};
use chrono::Duration;
use dayshift_config::Schedule;
use dayshift_config::clock::ManualClock;
use dayshift_provisioning::Provider;
use dayshift_scheduler::{
    Launcher, Limits, MemoryStore, NodeRecord, NodeState, NodeStore, PoolPolicy, Reconciler,
};

#[tokio::test]
async fn ten_days_with_dst_and_easter_holidays_follow_the_plan_with_prewarm() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/schedule.toml");
    let schedule = Schedule::load(&root, None).unwrap();
    let (from, to) = (utc("2026-03-28T00:00:00Z"), utc("2026-04-08T00:00:00Z"));
    let plan = schedule.plan(from, to);
    // Mon 30, Tue 31, Wed 1, Thu 2 (Good Friday 3 and Easter Monday 6 closed), Tue 7.
    assert_eq!(plan.len(), 5, "{plan:#?}");

    let clock = Arc::new(ManualClock::new(from));
    let provider = Arc::new(SimProvider::new(clock.clone()));
    let store = Arc::new(MemoryStore::new());
    let default_lead = Duration::minutes(5);
    let boot = Duration::minutes(3);
    let pools = BTreeMap::from([(
        "chat".to_string(),
        PoolPolicy {
            max_nodes: 2,
            default_cold_start: default_lead,
            drain_timeout: Duration::minutes(2),
            elastic: Default::default(),
        },
    )]);
    let r = Reconciler::new(
        "office".into(),
        provider.clone(),
        store.clone(),
        clock.clone(),
        Arc::new(NoBootstrap),
        Arc::new(RwLock::new(schedule)),
        pools,
        // Heartbeats arrive once per simulated minute here.
        Limits {
            heartbeat_grace: Duration::minutes(2),
            ..Limits::default()
        },
    );

    let mut now = from;
    while now < to {
        clock.set(now);
        let report = r.tick().await;
        assert!(report.errors.is_empty(), "{now}: {report:?}");
        simulate_nodes(&store, now, boot).await;
        now += Duration::minutes(1);
    }

    let mut nodes = store.all_nodes().await.unwrap();
    nodes.sort_by_key(|n| n.planned_at);
    assert_eq!(nodes.len(), plan.len(), "one node per window: {nodes:#?}");
    for (i, (node, window)) in nodes.iter().zip(&plan).enumerate() {
        // The first boot uses the configured default; later ones the measured p90 (3 min).
        let lead = if i == 0 { default_lead } else { boot };
        assert_eq!(
            node.planned_at,
            window.start - lead,
            "node {i} planned at the wrong time"
        );
        assert!(
            node.ready_at.unwrap() <= window.start,
            "node {i} not ready at {}",
            window.start
        );
        assert_eq!(
            node.deleted_at,
            Some(window.end),
            "node {i} not deleted at the window's end"
        );
        assert_eq!(node.state, NodeState::Deleted);
    }
    assert!(provider.servers.lock().unwrap().is_empty());
    // Every transition left an event, in lifecycle order.
    let events = store.events();
    let first: Vec<_> = events
        .iter()
        .filter(|e| e.node_id == nodes[0].id)
        .map(|e| e.to)
        .collect();
    use NodeState::*;
    assert_eq!(
        first,
        vec![
            Planned,
            Creating,
            Booting,
            Provisioning,
            Loading,
            Ready,
            Draining,
            Deleting,
            Deleted
        ]
    );
}

#[tokio::test]
async fn orphans_are_deleted_and_servers_of_crashed_creates_are_adopted() {
    let now = utc("2026-03-30T07:00:00Z"); // Monday 09:00 Berlin: one node wanted.
    let clock = Arc::new(ManualClock::new(now));
    let provider = Arc::new(SimProvider::new(clock.clone()));
    let store = Arc::new(MemoryStore::new());
    let launcher = Arc::new(NoBootstrap);
    // An orphan: a server with our cluster label and no node row.
    let orphan = NodeRecord::planned("ghost".into(), "chat".into(), now);
    provider
        .create(&launcher.spec(&orphan).await.unwrap())
        .await
        .unwrap();
    // A crash after create: the row says `creating`, the server exists.
    let mut crashed = NodeRecord::planned("n1".into(), "chat".into(), now);
    store.insert_node(&crashed, now, "planned").await.unwrap();
    crashed.state = NodeState::Creating;
    store
        .update_node(&crashed, NodeState::Planned, now, "creating")
        .await
        .unwrap();
    provider
        .create(&launcher.spec(&crashed).await.unwrap())
        .await
        .unwrap();

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/schedule.toml");
    let r = Reconciler::new(
        "office".into(),
        provider.clone(),
        store.clone(),
        clock.clone(),
        launcher,
        Arc::new(RwLock::new(Schedule::load(&root, None).unwrap())),
        BTreeMap::from([(
            "chat".to_string(),
            PoolPolicy {
                max_nodes: 1,
                default_cold_start: Duration::minutes(5),
                drain_timeout: Duration::minutes(2),
                elastic: Default::default(),
            },
        )]),
        Limits::default(),
    );
    let report = r.tick().await;
    assert_eq!(report.orphans_deleted.len(), 1, "{report:?}");
    assert!(
        report.planned.is_empty(),
        "the adopted node counts: {report:?}"
    );
    let n1 = store
        .all_nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.id == "n1")
        .unwrap();
    assert_eq!(n1.state, NodeState::Booting);
    assert_eq!(n1.server_id.as_deref(), Some("2"));
    assert_eq!(provider.servers.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn drain_waits_for_in_flight_requests_then_deletes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/schedule.toml");
    let start = utc("2026-03-30T05:50:00Z");
    let clock = Arc::new(ManualClock::new(start));
    let provider = Arc::new(SimProvider::new(clock.clone()));
    let store = Arc::new(MemoryStore::new());
    let r = Reconciler::new(
        "office".into(),
        provider.clone(),
        store.clone(),
        clock.clone(),
        Arc::new(NoBootstrap),
        Arc::new(RwLock::new(Schedule::load(&root, None).unwrap())),
        BTreeMap::from([(
            "chat".to_string(),
            PoolPolicy {
                max_nodes: 1,
                default_cold_start: Duration::minutes(5),
                drain_timeout: Duration::minutes(2),
                elastic: Default::default(),
            },
        )]),
        Limits {
            heartbeat_grace: Duration::hours(1),
            ..Limits::default()
        },
    );
    // Bring a node up during Monday's window (06:00Z-16:00Z).
    for t in [
        "2026-03-30T05:55:00Z",
        "2026-03-30T05:56:00Z",
        "2026-03-30T06:00:00Z",
    ] {
        clock.set(utc(t));
        r.tick().await;
        simulate_nodes(&store, utc(t), Duration::minutes(1)).await;
    }
    let mut node = store.live_nodes().await.unwrap().remove(0);
    assert_eq!(node.state, NodeState::Ready);
    // Two requests are in flight when the window closes.
    node.in_flight = 2;
    store
        .update_node(
            &node,
            NodeState::Ready,
            utc("2026-03-30T15:59:00Z"),
            "heartbeat",
        )
        .await
        .unwrap();
    clock.set(utc("2026-03-30T16:00:00Z"));
    let report = r.tick().await;
    assert_eq!(report.draining, vec![node.id.clone()]);
    assert!(report.deleted.is_empty());
    clock.set(utc("2026-03-30T16:01:00Z"));
    assert!(
        r.tick().await.deleted.is_empty(),
        "deleted while requests were in flight"
    );
    assert_eq!(provider.servers.lock().unwrap().len(), 1);
    // They finish: the next tick deletes it.
    let mut n = store.live_nodes().await.unwrap().remove(0);
    n.in_flight = 0;
    store
        .update_node(
            &n,
            NodeState::Draining,
            utc("2026-03-30T16:01:30Z"),
            "heartbeat",
        )
        .await
        .unwrap();
    clock.set(utc("2026-03-30T16:01:40Z"));
    assert_eq!(r.tick().await.deleted, vec![node.id.clone()]);
    assert!(provider.servers.lock().unwrap().is_empty());
}
