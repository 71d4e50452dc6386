//! Elastic windows (issue 19) walked with the manual clock: a `1-3` window under a
//! scripted load curve rents exactly the hand-worked node-hours, with every scale-down
//! in the last minutes of a paid hour; flapping load does not churn servers; a pool
//! woken on demand keeps its node for `min_wake` and drains it inside its paid unit (or
//! is refused by the budget, and says so); a `0-2` window starts no node until load or
//! a wake asks for one, and a `1-3` window's floor is pre-warmed.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::common::{NoBootstrap, SimProvider, chat_budget, simulate_nodes, utc};
use chrono::{DateTime, Duration, Utc};
use dayshift_config::Schedule;
use dayshift_config::billing::BillingRule;
use dayshift_config::clock::ManualClock;
use dayshift_scheduler::budget::Budget;
use dayshift_scheduler::{
    ElasticPolicy, Limits, LoadSample, MemoryStore, NodeRecord, NodeStore, PoolPolicy, Reconciler,
    ScaleCause, TickReport,
};

/// Monday 7 December 2026.
const DAY: &str = "2026-12-07";
/// A node is ready this long after it is planned (`simulate_nodes`).
const BOOT: i64 = 3;
/// The walk's step: one load sample per step, then one tick.
const STEP: i64 = 30;

fn at(hms: &str) -> DateTime<Utc> {
    utc(&format!("{DAY}T{hms}Z"))
}

fn window(nodes: &str) -> String {
    format!(
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"08:00\"\nend = \"18:00\"\nnodes = \"{nodes}\"\n"
    )
}

/// The office pool: 4 requests in flight per node, up after 5 minutes above,
/// down after 15 minutes below, samples every 30 s, at most 3 nodes.
fn elastic() -> ElasticPolicy {
    ElasticPolicy {
        min_nodes: None,
        wake_on_demand: false,
        target_in_flight: 4,
        scale_up_after: Duration::minutes(5),
        scale_down_after: Duration::minutes(15),
        min_wake: Duration::hours(1),
        sample_every: Duration::seconds(STEP),
        paid_unit: None,
    }
}

/// One pool `chat` on a simulated provider, Hetzner billing with a 2-minute margin.
struct Sim {
    clock: Arc<ManualClock>,
    provider: Arc<SimProvider>,
    store: Arc<MemoryStore>,
    r: Reconciler,
    /// Every scale decision of the walk.
    scaled: Vec<(DateTime<Utc>, ScaleCause, u32)>,
    /// Servers rented after each step.
    servers: BTreeMap<DateTime<Utc>, usize>,
}

impl Sim {
    fn new(schedule: &str, max_nodes: u32, elastic: ElasticPolicy, start: DateTime<Utc>) -> Sim {
        let clock = Arc::new(ManualClock::new(start));
        let provider = Arc::new(SimProvider::new(clock.clone()));
        let store = Arc::new(MemoryStore::new());
        let r = Reconciler::new(
            "office".into(),
            provider.clone(),
            store.clone(),
            clock.clone(),
            Arc::new(NoBootstrap),
            Arc::new(RwLock::new(
                Schedule::parse("schedule.toml", schedule, None).unwrap(),
            )),
            BTreeMap::from([(
                "chat".to_string(),
                PoolPolicy {
                    max_nodes,
                    default_cold_start: Duration::minutes(5),
                    drain_timeout: Duration::minutes(2),
                    elastic,
                },
            )]),
            Limits {
                heartbeat_grace: Duration::minutes(2),
                ..Limits::default()
            },
        )
        .with_billing_rule(BillingRule::HETZNER, Duration::minutes(2));
        Sim {
            clock,
            provider,
            store,
            r,
            scaled: Vec::new(),
            servers: BTreeMap::new(),
        }
    }

    fn with_budget(self, budget: Budget) -> Sim {
        Sim {
            r: self.r.with_budget(budget),
            ..self
        }
    }

    /// One step at `now`: the gateway's sample (`load` requests in flight + queued),
    /// a tick, then what the nodes do (register once booted, heartbeat).
    async fn step(&mut self, now: DateTime<Utc>, load: u32) -> TickReport {
        self.clock.set(now);
        self.store.record_load(LoadSample {
            pool: "chat".into(),
            replica: "ingress-1".into(),
            at: now,
            in_flight: load.min(4 * self.provider.count() as u32),
            queued: load.saturating_sub(4 * self.provider.count() as u32),
            nodes: self.provider.count() as u32,
        });
        let report = self.r.tick().await;
        assert!(report.errors.is_empty(), "{now}: {report:?}");
        for s in &report.scaled {
            self.scaled.push((now, s.cause, s.target));
        }
        simulate_nodes(&self.store, now, Duration::minutes(BOOT)).await;
        self.servers.insert(now, self.provider.count());
        report
    }

    /// Steps from `from` to `to` (inclusive) every [`STEP`] seconds under `load(t)`.
    async fn walk(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        load: impl Fn(DateTime<Utc>) -> u32,
    ) {
        let mut now = from;
        while now <= to {
            self.step(now, load(now)).await;
            now += Duration::seconds(STEP);
        }
    }

    fn servers_at(&self, hms: &str) -> usize {
        self.servers[&at(hms)]
    }

    /// Every node, oldest first.
    async fn nodes(&self) -> Vec<NodeRecord> {
        let mut nodes = self.store.all_nodes().await.unwrap();
        nodes.sort_by_key(|n| (n.planned_at, n.deleted_at));
        nodes
    }
}

/// Hours billed for a node under Hetzner's rule (every started hour).
fn billed_hours(n: &NodeRecord) -> i64 {
    let secs = (n.deleted_at.unwrap() - n.server_created_at.unwrap()).num_seconds();
    (secs + 3599) / 3600
}

/// Asserts that `n`'s drain began in the last 2 minutes of one of its paid hours.
fn drained_at_end_of_paid_hour(n: &NodeRecord) {
    let lived = (n.drain_started_at.unwrap() - n.server_created_at.unwrap()).num_seconds();
    assert!(
        (3480..3600).contains(&(lived % 3600)),
        "node {} drained {lived} s after its server was created: not in the last 2 minutes of a paid hour",
        n.id
    );
}

/// The scripted day (load = requests in flight + queued, all replicas):
/// 08-09 → 2, 09-10 → 6, 10-12 → 10, lunch 12:00-13:30 → 1, 13:30-16 → 11,
/// 16-17 → 5, 17-18 → 2, otherwise 0.
fn office_day(t: DateTime<Utc>) -> u32 {
    let hm = |s: &str| at(&format!("{s}:00"));
    match t {
        t if t < hm("08:00") => 0,
        t if t < hm("09:00") => 2,
        t if t < hm("10:00") => 6,
        t if t < hm("12:00") => 10,
        t if t < hm("13:30") => 1,
        t if t < hm("16:00") => 11,
        t if t < hm("17:00") => 5,
        t if t < hm("18:00") => 2,
        _ => 0,
    }
}

/// The hand-worked day. Rules: a level needs ceil(load / 4) nodes; up when every
/// 30-s sample of the last 5 min needed more (so 5 min after a rise, at a whole
/// minute here), down when every sample of the last 15 min needed fewer (15 min after
/// a fall); a node over the target is kept until 2 min before its paid hour ends,
/// then drained (the youngest first); the window's close drains at once.
///
/// | time  | decision            | servers (created → deleted)                   |
/// |-------|---------------------|-----------------------------------------------|
/// | 07:55 | pre-warm floor 1    | A 07:55 (ready 07:58)                          |
/// | 08:00 | range 1-3, target 1 |                                               |
/// | 09:05 | load 6 → up to 2    | B 09:05                                       |
/// | 10:05 | load 10 → up to 3   | C 10:05                                       |
/// | 12:15 | load 1 → down to 1  | A, B, C all inside a paid hour: kept           |
/// | 12:53 |                     | A's 5th hour ends 12:55: A drained (4h58 → 5 h)|
/// | 13:03 |                     | B, C's hours end 13:05: C (younger) drained   |
/// |       |                     | (2h58 → 3 h); B stays (target 1)              |
/// | 13:35 | load 11 → up to 3   | D, E 13:35                                    |
/// | 16:15 | load 5 → down to 2  | D, E paid to 16:35, B to 17:05                |
/// | 16:33 |                     | D drained (2h58 → 3 h)                        |
/// | 17:15 | load 2 → down to 1  | E paid to 17:35, B to 18:05                   |
/// | 17:33 |                     | E drained (3h58 → 4 h)                        |
/// | 18:00 | window closes       | B drained at once (8h55 → 9 h)                |
///
/// Node-hours: A 5 + B 9 + C 3 + D 3 + E 4 = 24; the fixed plan (`nodes = 3`, each
/// node 07:55-18:00) rents 3 × 11 = 33.
#[tokio::test]
async fn scripted_office_day_rents_the_hand_worked_node_hours() {
    let mut sim = Sim::new(&window("1-3"), 3, elastic(), at("07:50:00"));
    sim.walk(at("07:50:00"), at("18:30:00"), office_day).await;

    use ScaleCause::*;
    let decisions: Vec<(String, ScaleCause, u32)> = sim
        .scaled
        .iter()
        .map(|(t, c, n)| (t.format("%H:%M:%S").to_string(), *c, *n))
        .collect();
    let expect: Vec<(String, ScaleCause, u32)> = [
        ("07:50:00", Range, 0),
        ("08:00:00", Range, 1),
        ("09:05:00", LoadUp, 2),
        ("10:05:00", LoadUp, 3),
        ("12:15:00", LoadDown, 1),
        ("13:35:00", LoadUp, 3),
        ("16:15:00", LoadDown, 2),
        ("17:15:00", LoadDown, 1),
        ("18:00:00", Range, 0),
    ]
    .into_iter()
    .map(|(t, c, n)| (t.to_string(), c, n))
    .collect();
    assert_eq!(decisions, expect);

    let nodes = sim.nodes().await;
    let life: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n.server_created_at.unwrap().format("%H:%M").to_string(),
                n.deleted_at.unwrap().format("%H:%M").to_string(),
            )
        })
        .collect();
    let expect: Vec<(String, String)> = [
        ("07:55", "12:53"), // A
        ("09:05", "18:00"), // B
        ("10:05", "13:03"), // C
        ("13:35", "16:33"), // D
        ("13:35", "17:33"), // E
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(life, expect, "{nodes:#?}");
    assert!(nodes[0].ready_at.unwrap() <= at("08:00:00"), "pre-warmed");

    let hours: i64 = nodes.iter().map(billed_hours).sum();
    assert_eq!(hours, 24, "node-hours rented");
    // Every scale-down drained in the last 2 minutes of its node's paid hour; only the
    // window's close drains at once.
    for n in &nodes {
        if n.deleted_at != Some(at("18:00:00")) {
            drained_at_end_of_paid_hour(n);
        }
    }

    for (hms, servers) in [
        ("07:54:30", 0),
        ("07:55:00", 1),
        ("09:04:30", 1),
        ("09:05:00", 2),
        ("10:05:00", 3),
        ("12:30:00", 3), // lunch: all kept inside their paid hours
        ("12:52:30", 3),
        ("12:53:00", 2),
        ("13:03:00", 1),
        ("13:34:30", 1),
        ("13:35:00", 3),
        ("16:33:00", 2),
        ("17:33:00", 1),
        ("17:59:30", 1),
        ("18:00:00", 0),
    ] {
        assert_eq!(sim.servers_at(hms), servers, "servers at {hms}");
    }
    assert_eq!(sim.provider.count(), 0);
}

/// Load alternating between 12 (three nodes' worth) and 0 from 09:00 to 11:00, with
/// several rhythms (minutes high / low), then 2 for the rest of the window.
///
/// No server is created and deleted within one paid hour: a node over the target is
/// drained only in the last 2 minutes of a paid hour, so every deleted server lived at
/// least 58 minutes. The count is bounded: at most 2 servers above the floor of 1 exist
/// at once, each lives at least 58 minutes, and the flapping can hold them up to
/// 11:00 + 15 min (scale-down) + 1 h (paid time) = 12:15, so from 09:00 at most
/// 2 × ceil(195 / 58) = 8 extra servers, 9 in all. The walk does far better, 3 at most:
/// - 3/3: never 5 minutes high, so never up: only the floor's node.
/// - 6/6: up at 09:05; never 15 minutes low until 11:15: down once.
/// - 6/16 and 10/20: the target goes 3 → 1 → 3 every cycle (6 and 4 scale-downs), but
///   the extra nodes are kept through their paid hour and taken again by the next rise;
///   at the end of a paid hour, a node the load of the last minute needs is not drained
///   (10/20: load is back at 10:00, the hour of the 09:05 nodes ends at 10:05).
#[tokio::test]
async fn flapping_load_does_not_churn_servers() {
    // (minutes high, minutes low, scale-downs decided, servers created during the day)
    for (high, low, downs, expect) in [(3, 3, 0, 1), (6, 6, 1, 3), (6, 16, 6, 3), (10, 20, 4, 3)] {
        let cycle = high + low;
        let load = move |t: DateTime<Utc>| {
            if t < at("08:00:00") || t >= at("18:00:00") {
                0
            } else if t >= at("09:00:00") && t < at("11:00:00") {
                let m = (t - at("09:00:00")).num_minutes();
                if m % cycle < high { 12 } else { 0 }
            } else {
                2
            }
        };
        let mut sim = Sim::new(&window("1-3"), 3, elastic(), at("07:50:00"));
        sim.walk(at("07:50:00"), at("18:10:00"), load).await;
        let nodes = sim.nodes().await;
        eprintln!("{high}/{low}: {:?}", sim.scaled);
        for n in &nodes {
            eprintln!(
                "  {:?} {:?} {:?}",
                n.server_created_at, n.drain_started_at, n.deleted_at
            );
        }
        for n in &nodes {
            let lived = n.deleted_at.unwrap() - n.server_created_at.unwrap();
            assert!(
                lived >= Duration::minutes(58),
                "{high}/{low}: node {} lived only {lived}",
                n.id
            );
            if n.deleted_at != Some(at("18:00:00")) {
                drained_at_end_of_paid_hour(n);
            }
        }
        let decided = sim
            .scaled
            .iter()
            .filter(|(_, c, _)| *c == ScaleCause::LoadDown)
            .count();
        assert_eq!(decided, downs, "{high}/{low}: {:?}", sim.scaled);
        assert!(nodes.len() <= 9);
        assert_eq!(nodes.len(), expect, "{high}/{low}: {nodes:#?}");
    }
}

/// A pool with `wake_on_demand` and no window: no node until a request asks; the next
/// tick plans one; it stays at least `min_wake` and, with no load, is drained in the
/// last 2 minutes of its paid hour. With `min_wake` of exactly one paid hour (the
/// default), the 2-minute margin ends it at 58 minutes instead of starting a second hour.
#[tokio::test]
async fn a_woken_node_stays_min_wake_then_drains_inside_its_paid_hour() {
    // (min_wake in minutes, kept at least until, deleted)
    for (min_wake, until, deleted) in [
        (30, "10:30:30", "10:58:30"),
        (60, "10:58:30", "10:58:30"),
        (90, "11:30:30", "11:58:30"),
    ] {
        let policy = ElasticPolicy {
            wake_on_demand: true,
            min_wake: Duration::minutes(min_wake),
            ..elastic()
        };
        let mut sim = Sim::new("timezone = \"UTC\"\n", 2, policy, at("09:50:00"));
        sim.walk(at("09:50:00"), at("10:00:00"), |_| 0).await;
        assert_eq!(sim.provider.count(), 0, "no node before a request");
        // A request at 10:00:10 finds no node: the gateway asks for a wake.
        sim.store.request_wake("chat", at("10:00:10"));
        let report = sim.step(at("10:00:30"), 1).await;
        assert_eq!(report.planned.len(), 1, "{report:?}");
        let state = sim.store.scale_state("chat").await.unwrap().unwrap();
        assert_eq!((state.cause, state.target), (ScaleCause::Wake, 1));
        let until = at(until);
        assert_eq!(state.woken_until, Some(until), "min_wake {min_wake}");
        assert!(state.reason.contains(&until.format("%H:%M:%S").to_string()));
        // The queued request is served once the node is ready, then nothing comes.
        sim.walk(at("10:01:00"), at("12:30:00"), |t| {
            u32::from(t < at("10:03:30"))
        })
        .await;
        let nodes = sim.nodes().await;
        assert_eq!(nodes.len(), 1, "{nodes:#?}");
        let n = &nodes[0];
        assert_eq!(n.server_created_at, Some(at("10:00:30")));
        assert_eq!(n.deleted_at, Some(at(deleted)), "min_wake {min_wake}");
        assert!(n.deleted_at.unwrap() >= until);
        drained_at_end_of_paid_hour(n);
        let state = sim.store.scale_state("chat").await.unwrap().unwrap();
        assert_eq!((state.cause, state.target), (ScaleCause::LoadDown, 0));
    }
}

/// A budget that cannot pay a woken node's `min_wake` refuses the wake: no server, and
/// the scale state (what waiting requests are answered with) says why.
#[tokio::test]
async fn a_wake_the_budget_cannot_pay_is_refused_and_says_so() {
    let policy = ElasticPolicy {
        wake_on_demand: true,
        ..elastic()
    };
    let mut sim = Sim::new("timezone = \"UTC\"\n", 2, policy, at("09:50:00"))
        .with_budget(chat_budget("0.50"));
    sim.step(at("09:50:00"), 0).await;
    sim.store.request_wake("chat", at("10:00:10"));
    let report = sim.step(at("10:00:30"), 1).await;
    assert!(report.planned.is_empty(), "{report:?}");
    assert_eq!(report.budget_blocked.len(), 1, "{report:?}");
    sim.walk(at("10:01:00"), at("10:10:00"), |_| 1).await;
    assert_eq!(sim.provider.count(), 0);
    assert!(sim.store.all_nodes().await.unwrap().is_empty());
    let state = sim.store.scale_state("chat").await.unwrap().unwrap();
    assert_eq!(state.cause, ScaleCause::Wake);
    let refused = state.refused.expect("the refusal is recorded");
    assert!(refused.starts_with("wake refused"), "{refused}");
    assert!(
        refused.contains("this node's 1.00 EUR (its minimum wake)")
            && refused.contains("monthly budget of 0.50 EUR"),
        "{refused}"
    );
}

/// `nodes = "0-2"`: nothing at the window's start; load that needs a node for 5 min
/// starts one, and so does a wake request. `nodes = "1-3"`: the floor's node is planned
/// a lead time (5 min) before the window and ready when it opens.
#[tokio::test]
async fn zero_floor_waits_for_load_or_a_wake_and_a_floor_is_prewarmed() {
    // Load 3 (one node's worth) from 09:00: up at 09:05.
    let mut sim = Sim::new(&window("0-2"), 2, elastic(), at("07:50:00"));
    let load = |t: DateTime<Utc>| if t >= at("09:00:00") { 3 } else { 0 };
    sim.walk(at("07:50:00"), at("09:10:00"), load).await;
    assert_eq!(sim.servers_at("08:00:00"), 0);
    assert_eq!(sim.servers_at("09:04:30"), 0);
    assert_eq!(sim.servers_at("09:05:00"), 1);
    assert_eq!(
        sim.scaled.last().map(|(t, c, n)| (*t, *c, *n)),
        Some((at("09:05:00"), ScaleCause::LoadUp, 1))
    );

    // A wake request at 08:30:10 inside the window starts one at the next tick.
    let mut sim = Sim::new(&window("0-2"), 2, elastic(), at("07:50:00"));
    sim.walk(at("07:50:00"), at("08:30:00"), |_| 0).await;
    assert_eq!(sim.provider.count(), 0);
    sim.store.request_wake("chat", at("08:30:10"));
    let report = sim.step(at("08:30:30"), 1).await;
    assert_eq!(report.planned.len(), 1, "{report:?}");
    assert_eq!(sim.provider.count(), 1);

    // The floor of `1-3` is pre-warmed.
    let mut sim = Sim::new(&window("1-3"), 3, elastic(), at("07:50:00"));
    sim.walk(at("07:50:00"), at("08:01:00"), |_| 0).await;
    assert_eq!(sim.servers_at("07:54:30"), 0);
    assert_eq!(sim.servers_at("07:55:00"), 1);
    let nodes = sim.nodes().await;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].planned_at, at("07:55:00"));
    assert!(nodes[0].ready_at.unwrap() <= at("08:00:00"));
}

/// A busy pool whose range changes (an overlapping `2-3` window from 13:00 to 15:00
/// on top of the day's `1-3`) keeps the nodes its load needs: the new range brings the
/// target within it instead of starting again at its floor, which would drain a
/// needed node at 13:00 and rent another at 13:05.
#[tokio::test]
async fn a_range_change_keeps_the_nodes_the_load_needs() {
    let src = format!(
        "{}[[window]]\npool = \"chat\"\ndays = \"mon\"\nstart = \"13:00\"\nend = \"15:00\"\nnodes = \"2-3\"\n",
        window("1-3")
    );
    let mut sim = Sim::new(&src, 3, elastic(), at("07:50:00"));
    let busy = |t: DateTime<Utc>| {
        if t >= at("08:00:00") && t < at("18:00:00") {
            10
        } else {
            0
        }
    };
    sim.walk(at("07:50:00"), at("18:00:00"), busy).await;
    use ScaleCause::*;
    let decisions: Vec<(DateTime<Utc>, ScaleCause, u32)> = sim.scaled.clone();
    assert_eq!(
        decisions,
        vec![
            (at("07:50:00"), Range, 0),
            (at("08:00:00"), Range, 1),
            (at("08:05:00"), LoadUp, 3),
            (at("13:00:00"), Range, 3),
            (at("15:00:00"), Range, 3),
            (at("18:00:00"), Range, 0),
        ]
    );
    let nodes = sim.nodes().await;
    assert_eq!(nodes.len(), 3, "{nodes:#?}");
    assert!(nodes.iter().all(|n| n.deleted_at == Some(at("18:00:00"))));
}

/// The budget counts an elastic window at its floor, and checks a node the load wants
/// above it with one paid hour on top. A `1-3` window, 1 EUR/h, from Mon 7 December
/// 2026 07:50 to the month's end: 19 weekdays × 10 h = 190 EUR at the floor (570 at the
/// cap). The floor's node starts at 07:55 (spent 0 + committed 190 ≤ either cap). Load
/// 6 from 09:00 wants a second node at 09:05: spent 2.00 (07:55–09:05, two started
/// hours) + committed 189.00 (09:05–18:00 → 9 h, + 18 × 10) + 1.00 for the new node =
/// 192.00: it starts under a cap of 192, and is refused under 191.50 — where the floor
/// alone (191.00) would still pass — while the floor's node runs on.
#[tokio::test]
async fn the_budget_counts_an_elastic_window_at_its_floor_and_checks_each_node_above_it() {
    let busy = |t: DateTime<Utc>| if t >= at("09:00:00") { 6 } else { 0 };
    for (cap, second_node) in [("192", true), ("191.50", false)] {
        let mut sim =
            Sim::new(&window("1-3"), 3, elastic(), at("07:50:00")).with_budget(chat_budget(cap));
        sim.walk(at("07:50:00"), at("08:00:00"), |_| 0).await;
        assert_eq!(sim.servers_at("08:00:00"), 1, "cap {cap}: the floor's node");
        sim.walk(at("08:00:30"), at("09:10:00"), busy).await;
        let want = if second_node { 2 } else { 1 };
        assert_eq!(sim.provider.count(), want, "cap {cap}");
        let state = sim.store.scale_state("chat").await.unwrap().unwrap();
        assert_eq!((state.cause, state.target), (ScaleCause::LoadUp, 2));
        match state.refused {
            Some(why) => {
                assert!(!second_node, "cap {cap}: refused {why}");
                assert_eq!(
                    why,
                    "no node above the window's floor: spent 2.00 + committed 189.00 + this \
                     node's 1.00 EUR (one paid unit) would cross the monthly budget of 191.50 EUR"
                );
            }
            None => assert!(second_node, "cap {cap}: not refused"),
        }
        if !second_node {
            // The operator shortens the schedule (Mondays only): the rest of the month
            // commits today and three more Mondays (39 h, not 189); the refused node
            // starts at the next tick and the refusal no longer stands.
            let mondays = window("1-3").replace("mon-fri", "mon");
            *sim.r.schedule().write().unwrap() =
                Schedule::parse("schedule.toml", &mondays, None).unwrap();
            sim.walk(at("09:10:30"), at("09:11:00"), busy).await;
            assert_eq!(sim.provider.count(), 2, "cap {cap}, Mondays only");
            let state = sim.store.scale_state("chat").await.unwrap().unwrap();
            assert_eq!(state.refused, None);
        }
    }
}
