//! Budget stop, billing-aware stop and schedule hot reload.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::common::{NoBootstrap, SimProvider, chat_budget, simulate_nodes, utc};
use chrono::Duration;
use dayshift_config::Schedule;
use dayshift_config::billing::BillingRule;
use dayshift_config::clock::ManualClock;
use dayshift_scheduler::reload::{ReloadOutcome, ScheduleSource};
use dayshift_scheduler::{Limits, MemoryStore, NodeState, NodeStore, PoolPolicy, Reconciler};

const WEEKDAYS_UTC: &str = "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"08:00\"\nend = \"18:00\"\n";

fn reconciler(
    clock: Arc<ManualClock>,
    provider: Arc<SimProvider>,
    store: Arc<MemoryStore>,
    schedule: Arc<RwLock<Schedule>>,
) -> Reconciler {
    Reconciler::new(
        "office".into(),
        provider,
        store,
        clock,
        Arc::new(NoBootstrap),
        schedule,
        BTreeMap::from([(
            "chat".to_string(),
            PoolPolicy {
                max_nodes: 2,
                default_cold_start: Duration::minutes(5),
                drain_timeout: Duration::minutes(2),
                elastic: Default::default(),
            },
        )]),
        Limits {
            heartbeat_grace: Duration::hours(1),
            ..Limits::default()
        },
    )
}

fn sched(src: &str) -> Arc<RwLock<Schedule>> {
    Arc::new(RwLock::new(Schedule::parse("s.toml", src, None).unwrap()))
}

/// Monday 23 November 2026, 07:55 UTC, nothing spent yet this month. The rest of the
/// month's schedule (Mon 23 to Mon 30: 6 weekdays x 10 h at 1.00 EUR/h) commits 60 EUR:
/// under a cap of 100 the node starts; under a cap of 50 it does not, and the report
/// names the skipped window and the figures.
#[tokio::test]
async fn budget_blocks_new_nodes_and_says_which_window() {
    for (cap, blocked) in [("100", false), ("50", true)] {
        let now = utc("2026-11-23T07:55:00Z");
        let clock = Arc::new(ManualClock::new(now));
        let provider = Arc::new(SimProvider::new(clock.clone()));
        let store = Arc::new(MemoryStore::new());
        let r = reconciler(clock, provider.clone(), store.clone(), sched(WEEKDAYS_UTC))
            .with_budget(chat_budget(cap));
        let report = r.tick().await;
        if blocked {
            assert!(report.planned.is_empty());
            assert_eq!(report.budget_blocked.len(), 1);
            let why = &report.budget_blocked[0];
            assert!(
                why.contains("window 2026-11-23 08:00 UTC to 18:00 UTC skipped"),
                "{why}"
            );
            assert!(
                why.contains(
                    "spent 0.00 + committed 60.00 EUR would cross the monthly budget of 50 EUR"
                ),
                "{why}"
            );
            assert_eq!(provider.count(), 0);
        } else {
            assert_eq!(report.planned.len(), 1, "{report:?}");
            assert!(report.budget_blocked.is_empty());
        }
    }
}

/// A node created at 07:55 has paid for 11 hours at 18:00 (until 18:55). With the
/// billing-aware stop and a 5-minute margin it serves until 18:50, then drains; a wake-up
/// at 18:30 (an override window) reuses it instead of renting another server.
#[tokio::test]
async fn billing_aware_stop_keeps_a_paid_node_and_reuses_it() {
    let src = format!(
        "{WEEKDAYS_UTC}[[override]]\ndate = \"2026-11-24\"\npool = \"chat\"\nstart = \"18:30\"\nend = \"18:40\"\n"
    );
    for (with_wakeup, schedule) in [(false, sched(WEEKDAYS_UTC)), (true, sched(&src))] {
        let start = utc("2026-11-23T07:55:00Z");
        let clock = Arc::new(ManualClock::new(start));
        let provider = Arc::new(SimProvider::new(clock.clone()));
        let store = Arc::new(MemoryStore::new());
        let r = reconciler(clock.clone(), provider.clone(), store.clone(), schedule)
            .with_billing_aware_stop("chat", BillingRule::HETZNER, Duration::minutes(5));
        let mut now = start;
        let mut drained_at = None;
        while now <= utc("2026-11-23T19:30:00Z") {
            clock.set(now);
            let report = r.tick().await;
            if !report.draining.is_empty() && drained_at.is_none() {
                drained_at = Some(now);
            }
            simulate_nodes(&store, now, Duration::minutes(1)).await;
            now += Duration::minutes(1);
        }
        let nodes = store.all_nodes().await.unwrap();
        // (The override is on the 24th: on the 23rd both schedules behave alike.)
        let _ = with_wakeup;
        assert_eq!(nodes.len(), 1, "one server for the day: {nodes:#?}");
        assert_eq!(drained_at, Some(utc("2026-11-23T18:50:00Z")));
        assert_eq!(nodes[0].state, NodeState::Deleted);
    }
    // The wake-up case on a day with an evening window.
    let src = format!(
        "{WEEKDAYS_UTC}[[override]]\ndate = \"2026-11-23\"\npool = \"chat\"\nstart = \"08:00\"\nend = \"18:00\"\n[[window]]\npool = \"chat\"\ndays = \"mon\"\nstart = \"18:30\"\nend = \"18:40\"\n"
    );
    let start = utc("2026-11-23T07:55:00Z");
    let clock = Arc::new(ManualClock::new(start));
    let provider = Arc::new(SimProvider::new(clock.clone()));
    let store = Arc::new(MemoryStore::new());
    let r = reconciler(clock.clone(), provider.clone(), store.clone(), sched(&src))
        .with_billing_aware_stop("chat", BillingRule::HETZNER, Duration::minutes(5));
    let mut now = start;
    while now <= utc("2026-11-23T19:30:00Z") {
        clock.set(now);
        r.tick().await;
        simulate_nodes(&store, now, Duration::minutes(1)).await;
        now += Duration::minutes(1);
    }
    let nodes = store.all_nodes().await.unwrap();
    assert_eq!(
        nodes.len(),
        1,
        "the evening wake-up reused the paid node: {nodes:#?}"
    );
    assert_eq!(nodes[0].deleted_at, Some(utc("2026-11-23T18:50:00Z")));
}

/// The pre-warm lead follows measured boots but never exceeds three times the
/// configured cold start (5 min here): one boot of 19 min (within the 20 min loading
/// timeout) makes the lead 15 min, not 19 — an outlier cannot keep nodes across the gaps
/// between windows for good.
#[tokio::test]
async fn one_slow_boot_raises_the_lead_only_to_three_times_the_configured_cold_start() {
    let start = utc("2026-11-23T07:55:00Z");
    let clock = Arc::new(ManualClock::new(start));
    let provider = Arc::new(SimProvider::new(clock.clone()));
    let store = Arc::new(MemoryStore::new());
    let r = reconciler(clock.clone(), provider, store.clone(), sched(WEEKDAYS_UTC));
    assert_eq!(r.lead("chat").await, Duration::minutes(5));
    let mut now = start;
    while now <= start + Duration::minutes(20) {
        clock.set(now);
        r.tick().await;
        simulate_nodes(&store, now, Duration::minutes(19)).await;
        now += Duration::minutes(1);
    }
    let boots = store.recent_cold_starts("chat", 10).await.unwrap();
    assert_eq!(boots, vec![19 * 60]);
    assert_eq!(r.lead("chat").await, Duration::minutes(15));
}

/// A window shorter than the pre-warm lead (3 min against 5): the node planned at the
/// pre-warm point stays wanted until the window opens, also once the lead's end lies past
/// the window's close (found by e2e_office_day: the node was drained 5 s before its
/// window opened, when the test's nodes booted faster than the lead).
#[tokio::test]
async fn a_window_shorter_than_the_lead_keeps_its_prewarmed_node() {
    let short = "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"08:00\"\nend = \"08:03\"\n";
    let start = utc("2026-11-23T07:54:00Z");
    let clock = Arc::new(ManualClock::new(start));
    let provider = Arc::new(SimProvider::new(clock.clone()));
    let store = Arc::new(MemoryStore::new());
    let r = reconciler(clock.clone(), provider, store.clone(), sched(short));
    let mut now = start;
    while now < utc("2026-11-23T08:03:00Z") {
        clock.set(now);
        let report = r.tick().await;
        simulate_nodes(&store, now, Duration::seconds(30)).await;
        assert!(report.draining.is_empty(), "drained at {now}: {report:?}");
        if now == start {
            assert!(
                report.planned.is_empty(),
                "planned before the pre-warm point"
            );
        }
        now += Duration::seconds(30);
    }
    let nodes = store.all_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1, "one node for the window: {nodes:?}");
    assert_eq!(nodes[0].state, NodeState::Ready);
}

#[tokio::test]
async fn hot_reload_keeps_the_last_good_schedule() {
    let dir = tempfile_dir();
    let path = dir.join("schedule.toml");
    std::fs::write(&path, WEEKDAYS_UTC).unwrap();
    let mut source = ScheduleSource::load(&path, Some([("chat".to_string(), 8)].into())).unwrap();
    let handle = source.handle();
    let t = utc("2026-11-23T09:00:00Z");
    assert_eq!(handle.read().unwrap().desired_nodes("chat", t), 1);
    assert_eq!(source.reload(), ReloadOutcome::Unchanged);
    // A bad edit is rejected with its problems; the schedule in force does not change.
    std::fs::write(&path, WEEKDAYS_UTC.replace("08:00", "8 o'clock")).unwrap();
    match source.reload() {
        ReloadOutcome::Rejected(p) => assert!(p.to_string().contains("window[0].start"), "{p}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(handle.read().unwrap().desired_nodes("chat", t), 1);
    // An unknown pool is rejected too.
    std::fs::write(&path, WEEKDAYS_UTC.replace("\"chat\"", "\"caht\"")).unwrap();
    assert!(matches!(source.reload(), ReloadOutcome::Rejected(_)));
    // A good edit takes effect.
    std::fs::write(&path, WEEKDAYS_UTC.replace("mon-fri", "sat,sun")).unwrap();
    assert_eq!(source.reload(), ReloadOutcome::Reloaded);
    assert_eq!(handle.read().unwrap().desired_nodes("chat", t), 0);
    // SIGHUP reloads at once through the watcher.
    std::fs::write(&path, WEEKDAYS_UTC).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = source.spawn_watch(std::time::Duration::from_secs(3600), move || {
        let _ = tx.send(());
    });
    // The first interval tick fires at once; wait for that reload.
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .unwrap();
    assert_eq!(handle.read().unwrap().desired_nodes("chat", t), 1);
    std::fs::write(&path, WEEKDAYS_UTC.replace("mon-fri", "sun")).unwrap();
    unsafe_free_sighup();
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("SIGHUP reload");
    assert_eq!(handle.read().unwrap().desired_nodes("chat", t), 0);
    task.abort();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dayshift-reload-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Sends SIGHUP to this test process (the watcher's handler is installed, so the default
/// action — terminate — does not apply).
fn unsafe_free_sighup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
