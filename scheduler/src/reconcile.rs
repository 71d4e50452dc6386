//! The reconcile loop: desired nodes per pool (schedule with pre-warm) against actual
//! nodes (store + provider list). Level-triggered and idempotent: every tick looks at the
//! whole picture and takes each node one step further; a crash at any point leaves rows
//! and labelled servers from which the next tick (after a restart) carries on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};
use dayshift_config::Schedule;
use dayshift_config::clock::Clock;
use dayshift_provisioning::{
    LABEL_NODE, LabelSelector, Provider, ProviderError, Server, ServerStatus,
};
use tracing::{info, warn};

use crate::budget::Budget;
use crate::desired::{COLD_START_SAMPLES, expected_cold_start};
use crate::elastic::{ElasticPolicy, ScaleCause, ScaleState, decide, load_stats, nodes_for};
use crate::launch::{LaunchError, Launcher};
use crate::lifecycle::{NodeRecord, NodeState};
use crate::store::{NodeStore, StoreError};
use dayshift_config::billing::BillingRule;
use dayshift_config::schedule::NodeRange;
use dayshift_config::settings::RangeRule;

/// How the error of a node that reported a start failure begins (no GPU, model does not
/// fit, model does not load); the ingress writes it, the loop recognises it.
pub const START_FAILED: &str = "node start failed";

/// The pre-warm lead is at most this many times the pool's configured cold start.
pub const LEAD_CAP_FACTOR: i32 = 3;

/// Consecutive start failures of a pool (since this loop started) after which it plans
/// no new node: one replacement is tried, then the pool stops with a notice.
pub const START_FAILURES_TO_STOP: usize = 2;

/// Nodes a pool wants now, and keeps (see [`Reconciler::wanted`]).
#[derive(Debug, Clone, Copy)]
struct Wanted {
    want: u32,
    keep: u32,
}

/// Per-pool settings the loop needs.
#[derive(Debug, Clone)]
pub struct PoolPolicy {
    /// Never more nodes than this.
    pub max_nodes: u32,
    /// Assumed cold start before any boot of the pool was measured.
    pub default_cold_start: Duration,
    /// How long in-flight requests may take at drain.
    pub drain_timeout: Duration,
    /// Elastic windows and waking (the defaults: fixed windows, no waking).
    pub elastic: ElasticPolicy,
}

impl PoolPolicy {
    /// How the pool's node range follows from the schedule's.
    pub fn range_rule(&self) -> RangeRule {
        RangeRule {
            min_nodes: self.elastic.min_nodes,
            max_nodes: self.max_nodes,
            wake_on_demand: self.elastic.wake_on_demand,
        }
    }
}

/// Loop-wide limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A node that has not registered this long after creation fails.
    pub loading_timeout: Duration,
    /// A ready node whose last heartbeat is older than this fails (and is replaced).
    pub heartbeat_grace: Duration,
    /// Attempts at creating a node's server before the node fails.
    pub max_create_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// Attempts at a retryable bootstrap failure (SSH timeout, connection refused)
    /// before the node fails.
    pub max_bootstrap_attempts: u32,
    /// Next tick at most this long after one while some node is on its way, draining,
    /// deleting or waiting for a retry.
    pub busy_every: Duration,
    /// Next tick at most this long after one when nothing moves.
    pub idle_every: Duration,
    /// Next tick never sooner than this after one.
    pub min_gap: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            loading_timeout: Duration::minutes(20),
            heartbeat_grace: Duration::seconds(30),
            max_create_attempts: 5,
            backoff_base: Duration::seconds(5),
            max_bootstrap_attempts: 3,
            busy_every: Duration::seconds(2),
            idle_every: Duration::seconds(15),
            min_gap: Duration::milliseconds(200),
        }
    }
}

/// What the loop was doing when a [`TickError`] happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickStep {
    /// Listing the provider's servers.
    ListServers,
    /// Reading or writing node rows.
    Store,
    /// Building a server spec or creating the server.
    Create,
    /// Setting a created server up (SSH bootstrap).
    Bootstrap,
    /// Deleting a node's server.
    Delete,
    /// Deleting a server no live node owns.
    DeleteOrphan,
}

impl std::fmt::Display for TickStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TickStep::ListServers => "list servers",
            TickStep::Store => "store",
            TickStep::Create => "create",
            TickStep::Bootstrap => "bootstrap",
            TickStep::Delete => "delete",
            TickStep::DeleteOrphan => "delete orphan",
        })
    }
}

/// A failure met during a tick (the tick goes on after each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickError {
    /// What the loop was doing.
    pub step: TickStep,
    /// The node (or, for orphans, the server) it concerns, if any.
    pub subject: Option<String>,
    /// True when the loop tries the step again by itself (a later tick); false when it
    /// will not (a node that fails because of an error is listed in
    /// [`TickReport::failed`] with the reason in its row, not here).
    pub will_retry: bool,
    /// What happened.
    pub message: String,
}

impl TickError {
    fn new(step: TickStep, subject: Option<&str>, will_retry: bool, message: String) -> Self {
        TickError {
            step,
            subject: subject.map(str::to_string),
            will_retry,
            message,
        }
    }

    fn store(e: StoreError) -> Self {
        TickError::new(TickStep::Store, None, true, e.to_string())
    }
}

impl std::fmt::Display for TickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.subject {
            Some(s) => write!(f, "{} {s}: {}", self.step, self.message)?,
            None => write!(f, "{}: {}", self.step, self.message)?,
        }
        if self.will_retry {
            f.write_str(" (will retry)")?;
        }
        Ok(())
    }
}

/// What one tick did (for logs, metrics and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Nodes planned this tick.
    pub planned: Vec<String>,
    /// Servers created this tick (node ids).
    pub created: Vec<String>,
    /// Nodes that started draining.
    pub draining: Vec<String>,
    /// Servers deleted this tick (node ids).
    pub deleted: Vec<String>,
    /// Servers deleted because no live node owned them (server ids).
    pub orphans_deleted: Vec<String>,
    /// Nodes that failed this tick.
    pub failed: Vec<String>,
    /// Errors met (the tick goes on after each).
    pub errors: Vec<TickError>,
    /// Pools that wanted a node the budget did not allow, with the reason.
    pub budget_blocked: Vec<String>,
    /// Nodes kept serving until shortly before their paid hour ends.
    pub kept_for_paid_hour: Vec<String>,
    /// When the loop wants to run next (set by [`Reconciler::tick`]): the sooner of its
    /// busy or idle period, a node's retry time, and the schedule's next change (early
    /// by the pre-warm lead for openings). Never sooner than `min_gap`.
    pub next_tick: Option<DateTime<Utc>>,
    /// Pools that plan no new node because their nodes could not start, with the reason.
    pub pools_stopped: Vec<String>,
    /// Scale decisions taken this tick (elastic windows, wakes, range changes).
    pub scaled: Vec<ScaleState>,
}

impl TickReport {
    /// Adds another report's entries to this one.
    pub fn merge(&mut self, other: TickReport) {
        self.planned.extend(other.planned);
        self.created.extend(other.created);
        self.draining.extend(other.draining);
        self.deleted.extend(other.deleted);
        self.orphans_deleted.extend(other.orphans_deleted);
        self.failed.extend(other.failed);
        self.errors.extend(other.errors);
        self.budget_blocked.extend(other.budget_blocked);
        self.kept_for_paid_hour.extend(other.kept_for_paid_hour);
        self.next_tick = match (self.next_tick, other.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.pools_stopped.extend(other.pools_stopped);
        self.scaled.extend(other.scaled);
    }
}

/// The reconcile loop's state: everything is read from the store and the provider
/// on each tick, so a new `Reconciler` after a restart picks up where the old one was.
pub struct Reconciler {
    cluster: String,
    provider: Arc<dyn Provider>,
    store: Arc<dyn NodeStore>,
    clock: Arc<dyn Clock>,
    launcher: Arc<dyn Launcher>,
    schedule: Arc<RwLock<Schedule>>,
    pools: BTreeMap<String, PoolPolicy>,
    limits: Limits,
    budget: Option<Budget>,
    paid_hour: BTreeMap<String, (BillingRule, Duration)>,
    /// The provider's billing rule: an elastic pool's idle node is drained just before
    /// its paid unit ends (less the margin), not when it becomes idle.
    billing: (BillingRule, Duration),
    /// Bootstraps run as background tasks (a slow SSH bootstrap does not hold up other
    /// nodes' drains and deletions); the ids of those running.
    background_bootstrap: bool,
    bootstrapping: Arc<std::sync::Mutex<BTreeSet<String>>>,
    /// When this loop started: start failures before it (an earlier config) do not count.
    started: DateTime<Utc>,
}

impl Reconciler {
    /// Runs each SSH bootstrap as a background task: ticks go on (drains, deletions,
    /// other nodes) while a server is set up; the node moves to `loading` (or `failed`)
    /// when its bootstrap ends. A bootstrap cut off by a crash is started again by the
    /// next loop, as the node is still `provisioning`.
    pub fn with_background_bootstrap(mut self) -> Self {
        self.background_bootstrap = true;
        self
    }

    /// Enforces a monthly budget: no new node when the forecast crosses it.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Billing-aware stop for `pool`: a node no longer wanted keeps serving until
    /// `margin` before its paid unit (under `rule`) ends; a wake-up meanwhile reuses it.
    pub fn with_billing_aware_stop(
        mut self,
        pool: &str,
        rule: BillingRule,
        margin: Duration,
    ) -> Self {
        self.paid_hour.insert(pool.to_string(), (rule, margin));
        self
    }

    /// The provider's billing rule, by which an elastic pool's idle nodes are kept until
    /// `margin` before their paid unit ends (default: per started hour, 2 minutes).
    pub fn with_billing_rule(mut self, rule: BillingRule, margin: Duration) -> Self {
        self.billing = (rule, margin);
        self
    }

    /// True when `node` is ready and its paid unit runs on past `now + margin`, and the
    /// pool keeps such nodes: billing-aware stop, or an elastic scale-down (`by_load`).
    fn in_paid_time(&self, node: &NodeRecord, now: DateTime<Utc>, by_load: bool) -> bool {
        let (rule, margin) = match self.paid_hour.get(&node.pool) {
            Some(r) => r,
            None if by_load => &self.billing,
            None => return false,
        };
        // A unit that ends right now is over: the server is in its next one (a deletion
        // now lands after the boundary), so that one's end is what it has paid for.
        let probe = now + Duration::seconds(1);
        node.state == NodeState::Ready
            && (node.server_created_at).is_some_and(|c| now < rule.paid_until(c, probe) - *margin)
    }

    /// Nodes the pool's load needs right now: what it stayed at over the last minute
    /// (one burst does not count), at `target_in_flight` each, within `range`.
    async fn needed_now(&self, pool: &str, range: NodeRange, now: DateTime<Utc>) -> u32 {
        let Some(policy) = self.pools.get(pool) else {
            return 0;
        };
        let e = &policy.elastic;
        let from = now - Duration::minutes(1);
        let samples = self
            .store
            .load_samples(pool, from)
            .await
            .unwrap_or_default();
        load_stats(&samples, from, now, e.sample_every)
            .map(|l| nodes_for(l.low, e.target_in_flight).min(range.max))
            .unwrap_or(0)
    }

    /// A loop for `cluster` over the given parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cluster: String,
        provider: Arc<dyn Provider>,
        store: Arc<dyn NodeStore>,
        clock: Arc<dyn Clock>,
        launcher: Arc<dyn Launcher>,
        schedule: Arc<RwLock<Schedule>>,
        pools: BTreeMap<String, PoolPolicy>,
        limits: Limits,
    ) -> Self {
        let started = clock.now();
        Reconciler {
            cluster,
            provider,
            store,
            clock,
            launcher,
            schedule,
            pools,
            limits,
            budget: None,
            paid_hour: BTreeMap::new(),
            billing: (BillingRule::LOCAL, Duration::minutes(2)),
            background_bootstrap: false,
            bootstrapping: Default::default(),
            started,
        }
    }

    /// The schedule handle (replace its content to reload).
    pub fn schedule(&self) -> Arc<RwLock<Schedule>> {
        self.schedule.clone()
    }

    /// The lead time by which `pool` starts early: p90 of its last 10 cold starts, or
    /// its configured default before any was measured; never more than
    /// [`LEAD_CAP_FACTOR`] times the configured default. With few boots measured the p90
    /// is the slowest one, and one start slowed by faults could otherwise raise the lead
    /// past the gap between windows: every node would then be kept across the gaps, no
    /// new boot would refresh the figure, and the pool would rent around the clock.
    pub async fn lead(&self, pool: &str) -> Duration {
        let default = self
            .pools
            .get(pool)
            .map(|p| p.default_cold_start)
            .unwrap_or_else(|| Duration::minutes(5));
        match self
            .store
            .recent_cold_starts(pool, COLD_START_SAMPLES)
            .await
        {
            Ok(samples) => expected_cold_start(&samples, default).min(default * LEAD_CAP_FACTOR),
            Err(_) => default,
        }
    }

    /// The pool's range at `t` (the schedule's, through the pool's floor, cap and
    /// waking rule).
    pub fn range_at(&self, pool: &str, t: DateTime<Utc>) -> dayshift_config::schedule::NodeRange {
        let window = match self.schedule.read() {
            Ok(s) => s.range_at(pool, t),
            Err(_) => Default::default(),
        };
        self.pools
            .get(pool)
            .map(|p| p.range_rule().range(window))
            .unwrap_or_default()
    }

    /// The largest floor (`NodeRange::min`) that `pool`'s schedule asks for at any
    /// instant in `[from, until]`: a window that opens within the lead and closes before
    /// its end (shorter than the cold start) still keeps its pre-warmed node.
    fn most_until(&self, pool: &str, from: DateTime<Utc>, until: DateTime<Utc>) -> u32 {
        let mut most = self.range_at(pool, until).min;
        // The pool's stretches within the lead (a plan over seconds or minutes: cheap).
        let starts: Vec<DateTime<Utc>> = match self.schedule.read() {
            Ok(s) => s
                .plan(
                    from,
                    until
                        .checked_add_signed(Duration::seconds(1))
                        .unwrap_or(until),
                )
                .into_iter()
                .filter(|i| i.pool == pool)
                .map(|i| i.start)
                .collect(),
            Err(_) => Vec::new(),
        };
        for t in starts {
            most = most.max(self.range_at(pool, t).min);
        }
        most
    }

    /// Each pool's scale state at `now`: the stored one, or the next decision when one
    /// is due (see [`crate::elastic::decide`]); `changed` says which are new.
    async fn scale_states(&self, now: DateTime<Utc>) -> Vec<(ScaleState, bool)> {
        let mut out = Vec::new();
        for (pool, policy) in &self.pools {
            let range = self.range_at(pool, now);
            let prev = self.store.scale_state(pool).await.ok().flatten();
            let e = &ElasticPolicy {
                paid_unit: Some(*self.paid_hour.get(pool).unwrap_or(&self.billing)),
                ..policy.elastic
            };
            let longest = e.scale_up_after.max(e.scale_down_after) + e.sample_every;
            let samples = if range.is_elastic() {
                self.store
                    .load_samples(pool, now - longest)
                    .await
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let wake = self.store.last_wake_request(pool).await.ok().flatten();
            match decide(prev.as_ref(), pool, range, &samples, wake, e, now) {
                Some(next) => out.push((next, true)),
                None => {
                    if let Some(p) = prev {
                        out.push((p, false));
                    }
                }
            }
        }
        out
    }

    /// Nodes each pool wants and keeps: its scale target, raised to the floor of the
    /// range `lead` ahead (pre-warm for a window that opens), capped at `max_nodes`.
    /// Nodes are kept by looking ahead by the longer of the measured and the configured
    /// cold start: a node started early for a window is not drained because a faster
    /// measured boot shortened the lead meanwhile.
    async fn wanted(
        &self,
        now: DateTime<Utc>,
        states: &[(ScaleState, bool)],
    ) -> BTreeMap<String, Wanted> {
        let mut out = BTreeMap::new();
        for (pool, policy) in &self.pools {
            let lead = self.lead(pool).await;
            let target = states
                .iter()
                .find(|(s, _)| &s.pool == pool)
                .map(|(s, _)| s.target)
                .unwrap_or_else(|| self.range_at(pool, now).min);
            let with_lead = |lead: Duration| {
                let ahead = now
                    .checked_add_signed(lead)
                    .map(|t| self.most_until(pool, now, t))
                    .unwrap_or(0);
                target.max(ahead).min(policy.max_nodes)
            };
            let want = with_lead(lead);
            let keep = with_lead(lead.max(policy.default_cold_start)).max(want);
            out.insert(pool.clone(), Wanted { want, keep });
        }
        out
    }

    /// Desired node count per pool at `now`, with pre-warm (nothing is written).
    pub async fn desired(&self, now: DateTime<Utc>) -> BTreeMap<String, u32> {
        let states = self.scale_states(now).await;
        self.wanted(now, &states)
            .await
            .into_iter()
            .map(|(pool, w)| (pool, w.want))
            .collect()
    }

    /// One pass: sweep orphans, plan or drain per pool, move every node one step; the
    /// report says what happened and when the loop wants to run next.
    pub async fn tick(&self) -> TickReport {
        let now = self.clock.now();
        let mut report = self.tick_at(now).await;
        report.next_tick = Some(self.next_tick(now).await);
        report
    }

    /// When the loop wants to run after a tick at `now`: `busy_every` while some live
    /// node is not ready (on its way, draining, deleting, failed with a server), else
    /// `idle_every`; sooner for a node's retry time, a window that closes (its nodes
    /// drain at once) or opens (early by the pool's pre-warm lead).
    pub async fn next_tick(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut next = now + self.limits.idle_every;
        match self.store.live_nodes().await {
            Ok(nodes) => {
                for n in &nodes {
                    match n.retry_at {
                        // Waiting out a backoff: nothing to do before then.
                        Some(t) if t > now => next = next.min(t),
                        _ if n.state != NodeState::Ready => {
                            next = next.min(now + self.limits.busy_every)
                        }
                        _ => {}
                    }
                }
            }
            Err(_) => next = next.min(now + self.limits.busy_every),
        }
        let mut lead = Duration::zero();
        for pool in self.pools.keys() {
            lead = lead.max(self.lead(pool).await);
        }
        if let Ok(schedule) = self.schedule.read() {
            // Any change (a window closing: its nodes drain at once) at the change itself.
            if let Some(change) = schedule.next_change(now) {
                next = next.min(change);
            }
            // A window opening (or growing): `lead` early, so its nodes are ready on time.
            if let Some(change) = schedule.next_change(now + lead) {
                let before = change - Duration::seconds(1);
                let opens = self
                    .pools
                    .keys()
                    .any(|p| schedule.desired_nodes(p, change) > schedule.desired_nodes(p, before));
                if opens {
                    next = next.min(change - lead);
                }
            }
        }
        next.max(now + self.limits.min_gap)
    }

    async fn tick_at(&self, now: DateTime<Utc>) -> TickReport {
        let mut report = TickReport::default();
        let servers = match self
            .provider
            .list(&LabelSelector::cluster(&self.cluster))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(TickError::new(
                    TickStep::ListServers,
                    None,
                    true,
                    e.to_string(),
                ));
                return report;
            }
        };
        let nodes = match self.store.all_nodes().await {
            Ok(n) => n,
            Err(e) => {
                report.errors.push(TickError::store(e));
                return report;
            }
        };
        self.sweep_orphans(&servers, &nodes, &mut report).await;

        let mut states = self.scale_states(now).await;
        for (state, changed) in &states {
            if *changed {
                match self.store.save_scale_state(state).await {
                    Ok(()) => {
                        info!(pool = %state.pool, target = state.target, "scale: {}", state.reason);
                        report.scaled.push(state.clone());
                    }
                    Err(e) => report.errors.push(TickError::store(e)),
                }
            }
        }
        for (pool, wanted) in &self.wanted(now, &states).await {
            let (want, keep_n) = (&wanted.want, wanted.keep);
            let scale = states.iter_mut().find(|(s, _)| &s.pool == pool);
            // Nodes over an elastic pool's target (load fell, now or at an earlier
            // decision) are kept to the end of their paid unit; a new range (a window
            // closes) drains at once, as for fixed windows.
            let by_load = scale
                .as_ref()
                .is_some_and(|(s, _)| s.range.is_elastic() && s.cause != ScaleCause::Range);
            // If load came back while they were kept, the nodes it needs now are not
            // drained at the end of their paid unit (the next sustained rise would
            // rent them again minutes later).
            let keep_n = match scale.as_ref() {
                Some((s, _)) if by_load => keep_n.max(self.needed_now(pool, s.range, now).await),
                _ => keep_n,
            };
            let active: Vec<&NodeRecord> = nodes
                .iter()
                .filter(|n| &n.pool == pool && n.state.is_active())
                .collect();
            let have = active.len() as u32;
            if have < *want
                && let Some(reason) = self.start_failure_stop(pool, &nodes)
            {
                warn!(pool = %pool, "pool stopped: {reason}");
                report.pools_stopped.push(format!("{pool}: {reason}"));
            } else if have < *want
                && let Some(reason) =
                    self.budget_refusal(pool, &nodes, now, scale.as_ref().map(|(s, _)| s))
            {
                warn!(pool = %pool, "no new node: {reason}");
                report.budget_blocked.push(format!("{pool}: {reason}"));
                if let Some((s, _)) = scale
                    && s.refused.as_deref() != Some(reason.as_str())
                {
                    s.refused = Some(reason);
                    if let Err(e) = self.store.save_scale_state(s).await {
                        report.errors.push(TickError::store(e));
                    }
                }
            } else if have < *want {
                // The budget allows the node now (e.g. a new month): the refusal no
                // longer stands, for the gateway and the status.
                if let Some((s, _)) = scale
                    && s.refused.is_some()
                {
                    s.refused = None;
                    if let Err(e) = self.store.save_scale_state(s).await {
                        report.errors.push(TickError::store(e));
                    }
                }
                for _ in have..*want {
                    let id = new_node_id(now);
                    let node = NodeRecord::planned(id.clone(), pool.clone(), now);
                    match self
                        .store
                        .insert_node(
                            &node,
                            now,
                            &format!("pool {pool} wants {want} node(s), has {have}"),
                        )
                        .await
                    {
                        Ok(()) => {
                            info!(node = %id, pool = %pool, "planned a node");
                            report.planned.push(id);
                        }
                        Err(e) => report.errors.push(TickError::store(e)),
                    }
                }
            } else if have > keep_n {
                // Drain the excess: nodes not yet ready first (youngest first), then the
                // ready ones with the fewest requests in flight.
                let mut excess: Vec<&NodeRecord> = Vec::new();
                for n in active.iter().copied() {
                    if self.in_paid_time(n, now, by_load) {
                        report.kept_for_paid_hour.push(n.id.clone());
                    } else {
                        excess.push(n);
                    }
                }
                excess.sort_by_key(|n| {
                    (
                        n.state == NodeState::Ready,
                        n.in_flight,
                        std::cmp::Reverse(n.planned_at),
                    )
                });
                // Nodes in paid time drain last: they may serve what is still wanted.
                let to_drain = ((have - keep_n) as usize).min(excess.len());
                for n in excess.into_iter().take(to_drain) {
                    let mut next = n.clone();
                    next.state = NodeState::Draining;
                    next.drain_started_at = Some(now);
                    match self
                        .store
                        .update_node(
                            &next,
                            n.state,
                            now,
                            &format!("pool {pool} wants {want} node(s)"),
                        )
                        .await
                    {
                        Ok(true) => {
                            info!(node = %n.id, pool = %pool, "draining");
                            report.draining.push(n.id.clone());
                        }
                        Ok(false) => {}
                        Err(e) => report.errors.push(TickError::store(e)),
                    }
                }
            }
        }

        let nodes = match self.store.all_nodes().await {
            Ok(n) => n,
            Err(e) => {
                report.errors.push(TickError::store(e));
                return report;
            }
        };
        let by_node: BTreeMap<&str, &Server> = servers
            .iter()
            .filter_map(|s| s.labels.get(LABEL_NODE).map(|n| (n.as_str(), s)))
            .collect();
        // Every node's step at once: each acts on its own row and server.
        let mut steps = Vec::new();
        for node in nodes {
            if node.state == NodeState::Deleted
                || (node.state == NodeState::Failed && node.deleted_at.is_some())
            {
                continue;
            }
            if node.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let server = by_node.get(node.id.as_str()).copied();
            steps.push(async move {
                let mut part = TickReport::default();
                if let Err(e) = self.step(node, server, now, &mut part).await {
                    part.errors.push(TickError::store(e));
                }
                part
            });
        }
        for part in futures_util::future::join_all(steps).await {
            report.merge(part);
        }
        report
    }

    /// Why `pool` may plan no new node: its last [`START_FAILURES_TO_STOP`] nodes (planned
    /// since this loop started) all reported a start failure, so another one of the same
    /// server type would fail the same way. A restart (with a fixed config) clears it.
    fn start_failure_stop(&self, pool: &str, nodes: &[NodeRecord]) -> Option<String> {
        let mut recent: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|n| n.pool == pool && n.planned_at >= self.started)
            .collect();
        recent.sort_by_key(|n| std::cmp::Reverse(n.planned_at));
        let last: Vec<&NodeRecord> = recent.into_iter().take(START_FAILURES_TO_STOP).collect();
        let all_failed_at_start = last.len() == START_FAILURES_TO_STOP
            && last.iter().all(|n| {
                n.state == NodeState::Failed
                    && n.last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with(START_FAILED))
            });
        if !all_failed_at_start {
            return None;
        }
        let why = last[0].last_error.as_deref().unwrap_or(START_FAILED);
        Some(format!(
            "its last {START_FAILURES_TO_STOP} nodes could not start ({why}); no new node \
             until the cause is fixed and dayshift is restarted"
        ))
    }

    /// Why the budget forbids a new node of `pool` now, if it does. A node wanted by a
    /// wake or by load (beyond the schedule's floor) also counts what it commits to: a
    /// woken node its `min_wake`, a load node one paid unit.
    fn budget_refusal(
        &self,
        pool: &str,
        nodes: &[NodeRecord],
        now: DateTime<Utc>,
        scale: Option<&ScaleState>,
    ) -> Option<String> {
        let budget = self.budget.as_ref()?;
        let schedule = self.schedule.read().ok()?;
        let f = budget.forecast(&schedule, nodes, now)?;
        let extra_secs = match scale.map(|s| s.cause) {
            Some(ScaleCause::Wake) => self
                .pools
                .get(pool)
                .map(|p| p.elastic.min_wake.num_seconds())
                .unwrap_or(0),
            Some(ScaleCause::LoadUp) => budget.rule.unit_secs as i64,
            _ => 0,
        };
        let extra = match budget.prices.get(pool) {
            Some(price) if extra_secs > 0 => budget.rule.charge(extra_secs, price).cost,
            _ => rust_decimal::Decimal::ZERO,
        };
        if scale.is_some_and(|s| s.cause == ScaleCause::Wake) && f.total() + extra > f.cap {
            return Some(format!(
                "wake refused: spent {:.2} + committed {:.2} + this node's {:.2} EUR (its minimum wake) would cross the monthly budget of {} EUR",
                f.spent, f.committed, extra, f.cap
            ));
        }
        if f.total() + extra <= f.cap {
            return None;
        }
        if scale.is_some_and(|s| s.cause == ScaleCause::LoadUp) {
            return Some(format!(
                "no node above the window's floor: spent {:.2} + committed {:.2} + this node's {:.2} EUR (one paid unit) would cross the monthly budget of {} EUR",
                f.spent, f.committed, extra, f.cap
            ));
        }
        let window = schedule
            .plan(now, now + Duration::days(2))
            .into_iter()
            .find(|i| i.pool == pool)
            .map(|i| {
                format!(
                    "window {} to {}",
                    i.start.format("%Y-%m-%d %H:%M UTC"),
                    i.end.format("%H:%M UTC")
                )
            })
            .unwrap_or_else(|| "the current window".into());
        Some(format!(
            "{window} skipped: spent {:.2} + committed {:.2} EUR would cross the monthly budget of {} EUR",
            f.spent, f.committed, f.cap
        ))
    }

    async fn sweep_orphans(
        &self,
        servers: &[Server],
        nodes: &[NodeRecord],
        report: &mut TickReport,
    ) {
        let owners: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| !n.state.is_final())
            .map(|n| n.id.as_str())
            .collect();
        for s in servers {
            let owner = s.labels.get(LABEL_NODE).map(String::as_str);
            // A server of a failed node that still has its row is deleted by its step,
            // which also closes its billing interval.
            let failed_owner = nodes.iter().any(|n| {
                Some(n.id.as_str()) == owner
                    && n.state == NodeState::Failed
                    && n.deleted_at.is_none()
            });
            if owner.is_some_and(|o| owners.contains(o)) || failed_owner {
                continue;
            }
            warn!(server = %s.id, name = %s.name, "deleting an orphan server (no live node owns it)");
            match self.provider.delete(&s.id).await {
                Ok(()) | Err(ProviderError::NotFound(_)) => {
                    report.orphans_deleted.push(s.id.clone())
                }
                Err(e) => report.errors.push(TickError::new(
                    TickStep::DeleteOrphan,
                    Some(&s.id),
                    true,
                    e.to_string(),
                )),
            }
        }
    }

    async fn save(
        &self,
        node: &NodeRecord,
        from: NodeState,
        now: DateTime<Utc>,
        message: &str,
    ) -> Result<bool, StoreError> {
        self.store.update_node(node, from, now, message).await
    }

    fn backoff(&self, attempts: u32) -> Duration {
        backoff(self.limits.backoff_base, attempts)
    }

    async fn fail(
        &self,
        mut node: NodeRecord,
        now: DateTime<Utc>,
        why: String,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let from = node.state;
        warn!(node = %node.id, state = %from, "node failed: {why}");
        node.state = NodeState::Failed;
        node.last_error = Some(why.clone());
        node.retry_at = None;
        if self.save(&node, from, now, &why).await? {
            report.failed.push(node.id.clone());
        }
        Ok(())
    }

    /// Takes one node one step further.
    async fn step(
        &self,
        mut node: NodeRecord,
        server: Option<&Server>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let state = node.state;
        match state {
            NodeState::Planned => {
                node.state = NodeState::Creating;
                self.save(&node, state, now, "asking the provider for a server")
                    .await?;
                self.create(node, now, report).await
            }
            NodeState::Creating => match server {
                // Created before a crash: adopt it.
                Some(s) => {
                    adopt(&mut node, s);
                    node.state = NodeState::Booting;
                    self.save(&node, state, now, "found its server after a restart")
                        .await?;
                    Ok(())
                }
                None => self.create(node, now, report).await,
            },
            NodeState::Booting => match server {
                Some(s) if s.status == ServerStatus::Running => {
                    adopt(&mut node, s);
                    node.state = NodeState::Provisioning;
                    self.save(&node, state, now, "server running; bootstrapping over SSH")
                        .await?;
                    self.provision(node, s, now, report).await
                }
                Some(_) => Ok(()),
                None => {
                    self.fail(
                        node,
                        now,
                        "its server disappeared while booting".into(),
                        report,
                    )
                    .await
                }
            },
            NodeState::Provisioning => match server {
                Some(s) => self.provision(node, s, now, report).await,
                None => {
                    self.fail(
                        node,
                        now,
                        "its server disappeared while provisioning".into(),
                        report,
                    )
                    .await
                }
            },
            NodeState::Loading => {
                if server.is_none() {
                    return self
                        .fail(
                            node,
                            now,
                            "its server disappeared while loading".into(),
                            report,
                        )
                        .await;
                }
                let since = node.server_created_at.unwrap_or(node.planned_at);
                if now - since > self.limits.loading_timeout {
                    return self
                        .fail(
                            node,
                            now,
                            "it did not register in time (see the node's log)".into(),
                            report,
                        )
                        .await;
                }
                Ok(())
            }
            NodeState::Ready => {
                let last = node.last_heartbeat.or(node.ready_at).unwrap_or(now);
                if now - last > self.limits.heartbeat_grace || server.is_none() {
                    return self
                        .fail(node, now, "heartbeats stopped; replacing it".into(), report)
                        .await;
                }
                Ok(())
            }
            NodeState::Draining => {
                let timeout = self
                    .pools
                    .get(&node.pool)
                    .map(|p| p.drain_timeout)
                    .unwrap_or_else(|| Duration::minutes(2));
                let started = node.drain_started_at.unwrap_or(now);
                if node.in_flight == 0 || now - started >= timeout || server.is_none() {
                    node.state = NodeState::Deleting;
                    let why = if node.in_flight == 0 {
                        "drained"
                    } else {
                        "drain timeout"
                    };
                    self.save(&node, state, now, why).await?;
                    return self.delete(node, server, now, report).await;
                }
                Ok(())
            }
            NodeState::Deleting => self.delete(node, server, now, report).await,
            NodeState::Failed => {
                // Close its server and billing interval.
                if let Some(s) = server {
                    match self.provider.delete(&s.id).await {
                        Ok(()) | Err(ProviderError::NotFound(_)) => {}
                        Err(e) => {
                            report.errors.push(TickError::new(
                                TickStep::Delete,
                                Some(&node.id),
                                true,
                                format!("deleting the server of the failed node: {e}"),
                            ));
                            return Ok(());
                        }
                    }
                }
                node.deleted_at = Some(now);
                self.save(&node, state, now, "server deleted").await?;
                Ok(())
            }
            NodeState::Deleted => Ok(()),
        }
    }

    async fn create(
        &self,
        mut node: NodeRecord,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let spec = match self.launcher.spec(&node).await {
            Ok(s) => s,
            Err(e) => {
                let e = e.context("cannot build the server spec");
                return self
                    .after_launch_error(
                        node,
                        NodeState::Creating,
                        TickStep::Create,
                        e,
                        self.limits.max_create_attempts,
                        now,
                        report,
                    )
                    .await;
            }
        };
        match self.provider.create(&spec).await {
            Ok(server) => {
                adopt(&mut node, &server);
                node.attempts = 0;
                node.retry_at = None;
                node.last_error = None;
                node.state = NodeState::Booting;
                info!(node = %node.id, server = %server.id, "server created");
                if self
                    .save(
                        &node,
                        NodeState::Creating,
                        now,
                        &format!("server {} created", server.id),
                    )
                    .await?
                {
                    report.created.push(node.id.clone());
                }
                Ok(())
            }
            Err(e) => {
                node.attempts += 1;
                if matches!(e, ProviderError::Auth(_) | ProviderError::Invalid(_))
                    || node.attempts >= self.limits.max_create_attempts
                {
                    return self
                        .fail(node, now, format!("create failed: {e}"), report)
                        .await;
                }
                let wait = match &e {
                    ProviderError::RateLimited { retry_after } => Duration::from_std(*retry_after)
                        .unwrap_or_else(|_| self.backoff(node.attempts)),
                    _ => self.backoff(node.attempts),
                };
                node.retry_at = Some(now + wait);
                node.last_error = Some(e.to_string());
                report.errors.push(TickError::new(
                    TickStep::Create,
                    Some(&node.id),
                    true,
                    e.to_string(),
                ));
                self.save(&node, NodeState::Creating, now, "create failed; will retry")
                    .await?;
                Ok(())
            }
        }
    }

    async fn provision(
        &self,
        mut node: NodeRecord,
        server: &Server,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        if self.background_bootstrap {
            {
                let Ok(mut running) = self.bootstrapping.lock() else {
                    return Ok(());
                };
                if !running.insert(node.id.clone()) {
                    return Ok(());
                }
            }
            let (launcher, store, clock) = (
                self.launcher.clone(),
                self.store.clone(),
                self.clock.clone(),
            );
            let running = self.bootstrapping.clone();
            let server = server.clone();
            let policy = self.bootstrap_policy();
            tokio::spawn(async move {
                let id = node.id.clone();
                let result = launcher.bootstrap(&node, &server).await;
                let at = clock.now();
                let message = match result {
                    Ok(()) => {
                        node.state = NodeState::Loading;
                        node.attempts = 0;
                        node.retry_at = None;
                        "dayshift-node started; loading the model".to_string()
                    }
                    Err(e) => policy.apply(&mut node, e, at),
                };
                if let Err(e) = store
                    .update_node(&node, NodeState::Provisioning, at, &message)
                    .await
                {
                    warn!(node = %id, error = %e, "recording the bootstrap's end");
                }
                if let Ok(mut r) = running.lock() {
                    r.remove(&id);
                }
            });
            return Ok(());
        }
        match self.launcher.bootstrap(&node, server).await {
            Ok(()) => {
                node.state = NodeState::Loading;
                node.attempts = 0;
                node.retry_at = None;
                self.save(
                    &node,
                    NodeState::Provisioning,
                    now,
                    "dayshift-node started; loading the model",
                )
                .await?;
                Ok(())
            }
            Err(e) => {
                self.after_launch_error(
                    node,
                    NodeState::Provisioning,
                    TickStep::Bootstrap,
                    e.context("bootstrap failed"),
                    self.limits.max_bootstrap_attempts,
                    now,
                    report,
                )
                .await
            }
        }
    }

    fn bootstrap_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.limits.max_bootstrap_attempts,
            backoff_base: self.limits.backoff_base,
            context: "bootstrap failed",
        }
    }

    /// The loop's error policy for a failed launch step: a retryable error under the
    /// attempt limit keeps the node in `state` with a backoff (`retry_at`); anything
    /// else fails it.
    #[allow(clippy::too_many_arguments)]
    async fn after_launch_error(
        &self,
        mut node: NodeRecord,
        state: NodeState,
        step: TickStep,
        e: LaunchError,
        max_attempts: u32,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        node.attempts += 1;
        if !e.is_retryable() || node.attempts >= max_attempts {
            let why = if e.is_retryable() {
                format!("{e} (after {} attempts)", node.attempts)
            } else {
                e.to_string()
            };
            return self.fail(node, now, why, report).await;
        }
        node.retry_at = Some(now + self.backoff(node.attempts));
        node.last_error = Some(e.to_string());
        warn!(node = %node.id, attempt = node.attempts, "{e}; will retry");
        report.errors.push(TickError::new(
            step,
            Some(&node.id),
            true,
            e.message.clone(),
        ));
        self.save(&node, state, now, &format!("{e}; will retry"))
            .await?;
        Ok(())
    }

    async fn delete(
        &self,
        mut node: NodeRecord,
        server: Option<&Server>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let id = server
            .map(|s| s.id.clone())
            .or_else(|| node.server_id.clone());
        if let Some(id) = id {
            match self.provider.delete(&id).await {
                Ok(()) | Err(ProviderError::NotFound(_)) => {}
                Err(e) => {
                    report.errors.push(TickError::new(
                        TickStep::Delete,
                        Some(&node.id),
                        true,
                        e.to_string(),
                    ));
                    return Ok(());
                }
            }
        }
        node.state = NodeState::Deleted;
        node.deleted_at = Some(now);
        if self
            .save(&node, NodeState::Deleting, now, "server deleted")
            .await?
        {
            info!(node = %node.id, "deleted");
            report.deleted.push(node.id.clone());
        }
        Ok(())
    }
}

/// The error policy of a bootstrap running as a background task (it has no tick to
/// report to): retry with backoff while the error is retryable and attempts remain.
struct RetryPolicy {
    max_attempts: u32,
    backoff_base: Duration,
    context: &'static str,
}

impl RetryPolicy {
    /// Updates `node` after a failure at `at` and returns the event message.
    fn apply(&self, node: &mut NodeRecord, e: LaunchError, at: DateTime<Utc>) -> String {
        let e = e.context(self.context);
        node.attempts += 1;
        if e.is_retryable() && node.attempts < self.max_attempts {
            node.retry_at = Some(at + backoff(self.backoff_base, node.attempts));
            node.last_error = Some(e.to_string());
            warn!(node = %node.id, attempt = node.attempts, "{e}; will retry");
            return format!("{e}; will retry");
        }
        let why = if e.is_retryable() {
            format!("{e} (after {} attempts)", node.attempts)
        } else {
            e.to_string()
        };
        warn!(node = %node.id, "node failed: {why}");
        node.state = NodeState::Failed;
        node.last_error = Some(why.clone());
        node.retry_at = None;
        why
    }
}

/// `base` doubled per attempt (capped at 2^8), with up to 50 % jitter.
fn backoff(base: Duration, attempts: u32) -> Duration {
    let base = base.num_milliseconds().max(1);
    let exp = base.saturating_mul(1i64 << attempts.min(8));
    let jitter = rand::random_range(0..=exp / 2);
    Duration::milliseconds(exp + jitter)
}

fn adopt(node: &mut NodeRecord, s: &Server) {
    node.server_id = Some(s.id.clone());
    node.server_type = Some(s.server_type.clone());
    node.location = s.location.clone();
    node.server_created_at = node.server_created_at.or(Some(s.created));
    if let Some(ip) = s.ipv4 {
        node.address = Some(match s.port {
            Some(p) => format!("{ip}:{p}"),
            None => ip.to_string(),
        });
    }
}

/// A fresh node id: time-ordered and random, usable in labels and hostnames.
pub fn new_node_id(now: DateTime<Utc>) -> String {
    format!(
        "n{}{:06x}",
        now.format("%y%m%d%H%M%S"),
        rand::random_range(0..0x100_0000u32)
    )
}
