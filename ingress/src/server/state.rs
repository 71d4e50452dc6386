//! The shared server state, and the hooks the scheduler uses to steer routing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dayshift_config::clock::Clock;
use dayshift_config::protocol::Secret;
use dayshift_config::schedule::NodeRange;
use dayshift_config::{Config, Schedule};
use tokio::sync::broadcast;

use super::keys_cache::KeyCache;
use super::limits::Limiter;
use super::metrics::Metrics;
use super::registry::{PoolRuntime, Registry};
use super::usage_writer::UsageSender;
use crate::control::{ControlContext, Routing, ScaleView};
use crate::store::{NewNode, NodeState, Store, hash_secret};

pub use crate::control::NodeNotice;

/// What the scheduler last did, for the status page and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ControlStatus {
    /// True when this ingress holds the scheduler lock and runs the reconcile loop.
    pub leader: bool,
    /// Ticks run by this ingress.
    pub ticks: u64,
    /// When the last tick ran.
    pub last_tick: Option<DateTime<Utc>>,
    /// Pools the budget kept from starting a node at the last tick, with the reason.
    pub budget_blocked: Vec<String>,
    /// Pools stopped at the last tick because their nodes could not start, with the reason.
    pub pools_stopped: Vec<String>,
    /// Errors of the last tick.
    pub last_errors: Vec<String>,
    /// Errors since start.
    pub errors_total: u64,
    /// Servers deleted because no node owned them, since start.
    pub orphans_deleted_total: u64,
}

/// Tunables that tests shorten.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Heartbeat interval asked of nodes.
    pub heartbeat_interval: Duration,
    /// Silence after which a node leaves routing (default: 3 heartbeat intervals).
    pub stale_after: Duration,
    /// How long a verified API key stays cached (revocation takes effect after this).
    pub key_cache_ttl: Duration,
    /// How long a join token is valid for a first registration.
    pub join_token_ttl: Duration,
    /// Usage rows written per batch at most.
    pub usage_batch: usize,
    /// Longest wait before a partial usage batch is written.
    pub usage_flush: Duration,
    /// How often the gateway writes each pool's load sample to the store.
    pub load_sample_every: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            heartbeat_interval: Duration::from_secs(5),
            stale_after: Duration::from_secs(15),
            key_cache_ttl: Duration::from_secs(2),
            join_token_ttl: Duration::from_secs(3600),
            usage_batch: 500,
            usage_flush: Duration::from_millis(250),
            load_sample_every: Duration::from_secs(5),
        }
    }
}

/// Everything a request handler needs. Cheap to clone (`Arc`).
pub struct AppState {
    /// The validated config (shared with the scheduler).
    pub config: Arc<Config>,
    /// The schedule, if the config names one.
    pub schedule: std::sync::RwLock<Option<Schedule>>,
    /// The store.
    pub store: Store,
    /// Live routing state.
    pub registry: Registry,
    /// The clock (schedule evaluation, status page).
    pub clock: Arc<dyn Clock>,
    /// Tunables.
    pub tuning: Tuning,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Verified API keys.
    pub keys: KeyCache,
    /// Per-key rate and token limits.
    pub limiter: Limiter,
    /// Queue of usage rows for the batch writer.
    pub usage: UsageSender,
    /// sha256 of the admin token.
    pub admin_token_hash: String,
    /// Node notices for the scheduler.
    pub notices: broadcast::Sender<NodeNotice>,
    /// Where mirrored model folders live (`<state_dir>/models/<model>`).
    pub models_dir: PathBuf,
    /// Cached manifests.
    pub manifests: super::mirror::ManifestCache,
    /// The scheduler's last report.
    pub control: std::sync::RwLock<ControlStatus>,
}

impl AppState {
    /// Builds the state (pools from the config).
    pub fn new(
        config: Config,
        schedule: Option<Schedule>,
        store: Store,
        clock: Arc<dyn Clock>,
        tuning: Tuning,
        admin_token: &Secret,
        usage: UsageSender,
    ) -> AppState {
        let pools = config
            .pools
            .iter()
            .map(|(name, p)| {
                let mut pool = PoolRuntime::new(
                    name.clone(),
                    p.model.clone(),
                    Duration::from_secs(p.queue_timeout_secs),
                );
                // Nodes without a prefix cache gain nothing from seeing a conversation
                // again: balance their load instead.
                pool.conversation_affinity = p.prefix_cache;
                pool
            })
            .collect();
        let (notices, _) = broadcast::channel(256);
        let models_dir = config.state_dir.join("models");
        AppState {
            keys: KeyCache::new(store.clone(), tuning.key_cache_ttl),
            limiter: Limiter::new(store.clone(), clock.clone()),
            registry: Registry::new(pools),
            metrics: Metrics::default(),
            admin_token_hash: hash_secret(admin_token.expose()),
            schedule: std::sync::RwLock::new(schedule),
            config: Arc::new(config),
            store,
            clock,
            tuning,
            usage,
            notices,
            models_dir,
            manifests: Default::default(),
            control: Default::default(),
        }
    }

    // ---- hooks for the scheduler -------------------------------------------------

    /// Tells the gateway how many nodes of `pool` are on their way (creating … loading):
    /// while it is above zero, requests for the pool wait up to its `queue_timeout`
    /// instead of getting `503`. Returns `false` for an unknown pool.
    pub fn set_nodes_on_the_way(&self, pool: &str, count: u32) -> bool {
        match self.registry.pool(pool) {
            Some(p) => {
                p.set_on_the_way(count);
                true
            }
            None => false,
        }
    }

    /// Writes a node row (state `planned`) with a fresh one-time join token bound to
    /// `node_id`, valid for a first registration during the configured TTL. The token
    /// comes back once (to put in the node's config) and is stored only hashed.
    pub async fn create_node(
        &self,
        node_id: &str,
        pool: &str,
    ) -> Result<Secret, crate::store::StoreError> {
        let token = Secret::new(format!("dsj-{}", crate::store::random_hex(24)));
        let expires =
            self.clock.now().timestamp_millis() + self.tuning.join_token_ttl.as_millis() as i64;
        self.store
            .insert_node(&NewNode {
                id: node_id.to_string(),
                pool: pool.to_string(),
                state: NodeState::Planned,
                join_token_hash: Some(hash_secret(token.expose())),
                join_token_expires_at: Some(expires),
            })
            .await?;
        Ok(token)
    }

    /// Asks a registered node to drain (no new requests; its next heartbeat answer is
    /// `drain`). `false` when the node is not registered.
    pub fn request_drain(&self, node_id: &str) -> bool {
        self.registry.request_drain(node_id)
    }

    /// Takes a node out of routing at once (e.g. before deleting it).
    pub fn forget_node(&self, node_id: &str) {
        self.registry.remove_node(node_id);
    }

    /// Records whether this ingress runs the scheduler.
    pub fn set_leader(&self, leader: bool) {
        if let Ok(mut c) = self.control.write() {
            c.leader = leader;
        }
    }

    /// Records what a scheduler tick did.
    pub fn record_tick(&self, report: &dayshift_scheduler::TickReport) {
        if let Ok(mut c) = self.control.write() {
            c.ticks += 1;
            c.last_tick = Some(self.clock.now());
            c.budget_blocked = report.budget_blocked.clone();
            c.pools_stopped = report.pools_stopped.clone();
            c.last_errors = report.errors.iter().map(ToString::to_string).collect();
            c.errors_total += report.errors.len() as u64;
            c.orphans_deleted_total += report.orphans_deleted.len() as u64;
        }
    }

    /// A copy of the scheduler's status.
    pub fn control_status(&self) -> ControlStatus {
        self.control.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Subscribes to node notices (registration, heartbeat loss, goodbye).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeNotice> {
        self.notices.subscribe()
    }

    /// Replaces the schedule (hot reload).
    pub fn set_schedule(&self, schedule: Option<Schedule>) {
        if let Ok(mut s) = self.schedule.write() {
            *s = schedule;
        }
    }

    /// The pool's node range at `now` (the schedule's, through the pool's floor, cap and
    /// waking rule); `0-0` without a schedule.
    pub fn pool_range(&self, pool: &str, now: DateTime<Utc>) -> NodeRange {
        let window = self
            .schedule
            .read()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.range_at(pool, now)))
            .unwrap_or_default();
        self.config
            .pools
            .get(pool)
            .map(|p| p.range_rule().range(window))
            .unwrap_or_default()
    }

    /// When `pool` next has a window open after `now` (or now, if open).
    pub fn next_window(&self, pool: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let guard = self.schedule.read().ok()?;
        let schedule = guard.as_ref()?;
        let horizon = now + chrono::Duration::days(31);
        schedule
            .plan(now, horizon)
            .into_iter()
            .find(|i| i.pool == pool && i.nodes > 0)
            .map(|i| i.start)
    }
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;

/// The scheduler's context over this state: it reaches routing only through
/// [`Routing`].
pub fn control_context(state: &SharedState) -> ControlContext {
    ControlContext {
        config: state.config.clone(),
        store: state.store.clone(),
        clock: state.clock.clone(),
        join_token_ttl: state.tuning.join_token_ttl,
        routing: state.clone(),
        load_sample_every: state.tuning.load_sample_every,
    }
}

impl Routing for AppState {
    fn in_flight(&self, node_id: &str) -> u32 {
        self.registry
            .node(node_id)
            .map(|h| h.in_flight())
            .unwrap_or(0)
    }

    fn set_draining(&self, node_id: &str) {
        if let Some(h) = self.registry.node(node_id) {
            h.set_draining();
        }
    }

    fn remove_node(&self, node_id: &str) {
        self.forget_node(node_id);
    }

    fn set_nodes_on_the_way(&self, pool: &str, count: u32) {
        AppState::set_nodes_on_the_way(self, pool, count);
    }

    fn set_schedule(&self, schedule: Schedule) {
        AppState::set_schedule(self, Some(schedule));
    }

    fn subscribe(&self) -> broadcast::Receiver<NodeNotice> {
        AppState::subscribe(self)
    }

    fn set_leader(&self, leader: bool) {
        AppState::set_leader(self, leader);
    }

    fn record_tick(&self, report: &dayshift_scheduler::TickReport) {
        AppState::record_tick(self, report);
    }

    fn set_scale(&self, pool: &str, view: ScaleView) {
        if let Some(p) = self.registry.pool(pool) {
            p.set_scale(view);
        }
    }
}
