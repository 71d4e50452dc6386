//! The loop's error policy for launch failures (retry with backoff or give up, decided
//! from the launcher's typed error) and when a tick asks to run next — both with the
//! manual clock, no sleeping.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use crate::common::{NoBootstrap, SimProvider, utc};
use async_trait::async_trait;
use chrono::Duration;
use dayshift_config::Schedule;
use dayshift_config::clock::ManualClock;
use dayshift_provisioning::{Server, ServerSpec};
use dayshift_scheduler::{
    LaunchError, Launcher, Limits, MemoryStore, NodeRecord, NodeState, NodeStore, PoolPolicy,
    Reconciler, TickStep,
};

/// A launcher whose bootstraps answer from a script (then succeed).
struct ScriptedBootstrap {
    answers: Mutex<VecDeque<Result<(), LaunchError>>>,
    calls: Mutex<u32>,
}

impl ScriptedBootstrap {
    fn new(answers: Vec<Result<(), LaunchError>>) -> Arc<Self> {
        Arc::new(ScriptedBootstrap {
            answers: Mutex::new(answers.into()),
            calls: Mutex::new(0),
        })
    }

    fn calls(&self) -> u32 {
        *self.calls.lock().unwrap()
    }
}

#[async_trait]
impl Launcher for ScriptedBootstrap {
    async fn spec(&self, node: &NodeRecord) -> Result<ServerSpec, LaunchError> {
        NoBootstrap.spec(node).await
    }
    async fn bootstrap(&self, _node: &NodeRecord, _server: &Server) -> Result<(), LaunchError> {
        *self.calls.lock().unwrap() += 1;
        self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()))
    }
}

/// One pool `chat`, open Mon–Fri 09:00–17:00 UTC with one node, pre-warm 5 minutes.
const OFFICE: &str = r#"
timezone = "UTC"
[[window]]
days = "mon-fri"
start = "09:00"
end = "17:00"
pool = "chat"
nodes = 1
"#;

fn reconciler(
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    launcher: Arc<dyn Launcher>,
) -> Reconciler {
    let schedule = Schedule::parse("office.toml", OFFICE, None).unwrap();
    Reconciler::new(
        "office".into(),
        Arc::new(SimProvider::new(clock.clone())),
        store,
        clock,
        launcher,
        Arc::new(RwLock::new(schedule)),
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
            backoff_base: Duration::seconds(10),
            max_bootstrap_attempts: 3,
            heartbeat_grace: Duration::hours(1),
            idle_every: Duration::minutes(30),
            busy_every: Duration::seconds(2),
            ..Limits::default()
        },
    )
}

/// Ticks until the pool's node reaches a state other than the ones on the way to
/// `provisioning`; the clock moves to each node's retry time.
async fn run_until_settled(r: &Reconciler, clock: &ManualClock, store: &MemoryStore) -> NodeRecord {
    for _ in 0..20 {
        r.tick().await;
        let node = store.all_nodes().await.unwrap().remove(0);
        match (node.state, node.retry_at) {
            (NodeState::Provisioning, Some(t)) => clock.set(t),
            (NodeState::Loading | NodeState::Failed, _) => return node,
            _ => clock.set(clock_now(clock) + Duration::seconds(1)),
        }
    }
    panic!("the node did not settle: {:?}", store.all_nodes().await);
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use dayshift_config::clock::Clock;
    clock.now()
}

#[tokio::test]
async fn a_transient_bootstrap_error_is_retried_with_backoff_then_succeeds() {
    let clock = Arc::new(ManualClock::new(utc("2026-11-23T09:00:00Z")));
    let store = Arc::new(MemoryStore::new());
    let launcher = ScriptedBootstrap::new(vec![
        Err(LaunchError::retry("SSH handshake timed out")),
        Err(LaunchError::retry("connection refused")),
    ]);
    let r = reconciler(clock.clone(), store.clone(), launcher.clone());
    // Tick 1 plans, creates; the server runs at once, so the next ticks bootstrap.
    r.tick().await;
    let first = r.tick().await;
    let node = store.all_nodes().await.unwrap().remove(0);
    assert_eq!(node.state, NodeState::Provisioning, "{node:?}");
    let retry_at = node.retry_at.expect("a retry time after a transient error");
    assert!(
        retry_at >= utc("2026-11-23T09:00:20Z"),
        "backoff base 10 s doubled: {retry_at}"
    );
    assert_eq!(node.attempts, 1);
    assert!(
        first
            .errors
            .iter()
            .any(|e| e.step == TickStep::Bootstrap && e.will_retry),
        "{first:?}"
    );
    // Before the retry time nothing is tried again, and the loop asks to wake then.
    let early = r.tick().await;
    assert_eq!(launcher.calls(), 1);
    assert_eq!(early.next_tick, Some(retry_at));

    let node = run_until_settled(&r, &clock, &store).await;
    assert_eq!(node.state, NodeState::Loading, "{node:?}");
    assert_eq!(launcher.calls(), 3);
    assert_eq!(node.attempts, 0, "a success resets the attempts");
    assert_eq!(node.retry_at, None);
}

#[tokio::test]
async fn a_permanent_bootstrap_error_fails_the_node_at_once() {
    let clock = Arc::new(ManualClock::new(utc("2026-11-23T09:00:00Z")));
    let store = Arc::new(MemoryStore::new());
    let launcher = ScriptedBootstrap::new(vec![Err(LaunchError::give_up(
        "server presented host key SHA256:x, expected SHA256:y",
    ))]);
    let r = reconciler(clock.clone(), store.clone(), launcher.clone());
    let node = run_until_settled(&r, &clock, &store).await;
    assert_eq!(node.state, NodeState::Failed);
    assert_eq!(launcher.calls(), 1);
    let error = node.last_error.unwrap();
    assert!(
        error.contains("bootstrap failed: server presented host key"),
        "{error}"
    );
}

#[tokio::test]
async fn a_transient_error_that_persists_fails_after_the_attempt_limit() {
    let clock = Arc::new(ManualClock::new(utc("2026-11-23T09:00:00Z")));
    let store = Arc::new(MemoryStore::new());
    let launcher = ScriptedBootstrap::new(vec![
        Err(LaunchError::retry("timeout")),
        Err(LaunchError::retry("timeout")),
        Err(LaunchError::retry("timeout")),
        Err(LaunchError::retry("timeout")),
    ]);
    let r = reconciler(clock.clone(), store.clone(), launcher.clone());
    let node = run_until_settled(&r, &clock, &store).await;
    assert_eq!(node.state, NodeState::Failed);
    assert_eq!(launcher.calls(), 3, "max_bootstrap_attempts");
    assert!(node.last_error.unwrap().contains("after 3 attempts"));
}

#[tokio::test]
async fn a_spec_that_cannot_be_built_fails_or_retries_by_policy() {
    struct NoSpec(LaunchError);
    #[async_trait]
    impl Launcher for NoSpec {
        async fn spec(&self, _node: &NodeRecord) -> Result<ServerSpec, LaunchError> {
            Err(self.0.clone())
        }
        async fn bootstrap(&self, _: &NodeRecord, _: &Server) -> Result<(), LaunchError> {
            Ok(())
        }
    }
    for (error, failed) in [
        (
            LaunchError::give_up("pool chat is no longer configured"),
            true,
        ),
        (
            LaunchError::retry("storing the join token: database is locked"),
            false,
        ),
    ] {
        let clock = Arc::new(ManualClock::new(utc("2026-11-23T09:00:00Z")));
        let store = Arc::new(MemoryStore::new());
        let r = reconciler(clock.clone(), store.clone(), Arc::new(NoSpec(error)));
        r.tick().await;
        let node = store.all_nodes().await.unwrap().remove(0);
        assert_eq!(node.state == NodeState::Failed, failed, "{node:?}");
        if !failed {
            assert_eq!(node.state, NodeState::Creating);
            assert!(node.retry_at.is_some());
        }
    }
}

/// The wake-up timing that `dayshift serve` follows, tested with the manual clock: idle
/// ticks are `idle_every` apart, but the loop wakes a pre-warm lead before a window
/// opens, ticks `busy_every` while a node moves, and wakes exactly when a window closes.
#[tokio::test]
async fn tick_says_when_it_wants_to_run_next() {
    let clock = Arc::new(ManualClock::new(utc("2026-11-23T07:00:00Z")));
    let store = Arc::new(MemoryStore::new());
    let r = reconciler(clock.clone(), store.clone(), Arc::new(NoBootstrap));

    // Nothing moves at 07:00: idle period (30 min).
    let report = r.tick().await;
    assert_eq!(report.next_tick, Some(utc("2026-11-23T07:30:00Z")));
    // At 08:40 the next wake is the window's start less the 5-minute lead.
    clock.set(utc("2026-11-23T08:40:00Z"));
    let report = r.tick().await;
    assert_eq!(report.next_tick, Some(utc("2026-11-23T08:55:00Z")));
    // At 08:55 a node is planned and moves: busy period.
    clock.set(utc("2026-11-23T08:55:00Z"));
    let report = r.tick().await;
    assert_eq!(report.planned.len(), 1);
    assert_eq!(report.next_tick, Some(utc("2026-11-23T08:55:02Z")));
    // Ready all day: at 16:50 the next wake is the window's end, not 17:20.
    let mut node = store.all_nodes().await.unwrap().remove(0);
    while node.state != NodeState::Loading {
        clock.set(clock_now(&clock) + Duration::seconds(2));
        r.tick().await;
        node = store.all_nodes().await.unwrap().remove(0);
    }
    let mut ready = node.clone();
    ready.state = NodeState::Ready;
    ready.ready_at = Some(clock_now(&clock));
    ready.last_heartbeat = ready.ready_at;
    assert!(
        store
            .update_node(&ready, NodeState::Loading, clock_now(&clock), "registered")
            .await
            .unwrap()
    );
    clock.set(utc("2026-11-23T16:50:00Z"));
    // It heartbeats all day (as the ingress records).
    let mut beat = ready.clone();
    beat.last_heartbeat = Some(clock_now(&clock));
    assert!(
        store
            .update_node(&beat, NodeState::Ready, clock_now(&clock), "heartbeat")
            .await
            .unwrap()
    );
    let report = r.tick().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.next_tick, Some(utc("2026-11-23T17:00:00Z")));
    // At 17:00 the node starts draining at once.
    clock.set(utc("2026-11-23T17:00:00Z"));
    let report = r.tick().await;
    assert_eq!(report.draining.len(), 1, "{report:?}");
}

#[tokio::test]
async fn the_store_refuses_a_transition_the_lifecycle_does_not_allow() {
    let store = MemoryStore::new();
    let now = utc("2026-11-23T09:00:00Z");
    let node = NodeRecord::planned("n1".into(), "chat".into(), now);
    store.insert_node(&node, now, "planned").await.unwrap();
    let mut ready = node.clone();
    ready.state = NodeState::Ready;
    let err = store
        .update_node(&ready, NodeState::Planned, now, "skip ahead")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot go from planned to ready"),
        "{err}"
    );
    assert_eq!(
        store.all_nodes().await.unwrap()[0].state,
        NodeState::Planned
    );
    assert_eq!(store.events().len(), 1, "nothing written");
}
