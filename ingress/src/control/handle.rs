//! What the scheduler needs from the rest of `dayshift serve`, and nothing more: a small
//! context (config, store, clock, join-token lifetime) and the [`Routing`] handle through
//! which it steers the gateway. `server/` implements [`Routing`] on its state; `control/`
//! never reaches into `server/` (like kube-rs' `Arc<Ctx>` passed to a controller).

use std::sync::Arc;
use std::time::Duration;

use dayshift_config::clock::Clock;
use dayshift_config::{Config, Schedule};
use dayshift_scheduler::TickReport;
use tokio::sync::broadcast;

use crate::store::Store;

/// Something that happened to a node, for the scheduler (wakes its reconcile loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeNotice {
    /// The node registered (or re-registered) and is routable.
    Registered {
        /// Node id.
        node_id: String,
        /// Pool.
        pool: String,
    },
    /// No heartbeat for longer than the allowed silence: taken out of routing.
    HeartbeatLost {
        /// Node id.
        node_id: String,
        /// Pool.
        pool: String,
    },
    /// The node could not start (no device, model does not fit, ...) and said why.
    StartFailed {
        /// Node id.
        node_id: String,
        /// Pool.
        pool: String,
        /// Its reason.
        reason: String,
    },
    /// A request found no node of a pool that may be woken, and asked for one.
    WakeRequested {
        /// Pool.
        pool: String,
    },
    /// The node said goodbye.
    Goodbye {
        /// Node id.
        node_id: String,
        /// Pool.
        pool: String,
        /// Its reason.
        reason: String,
    },
}

/// The gateway's routing as the scheduler steers and reads it.
pub trait Routing: Send + Sync {
    /// Requests the gateway has in flight on `node_id` now (0 when it is not routed).
    fn in_flight(&self, node_id: &str) -> u32;
    /// `node_id` takes no new requests (those in flight finish).
    fn set_draining(&self, node_id: &str);
    /// Takes `node_id` out of routing at once (before its server is deleted).
    fn remove_node(&self, node_id: &str);
    /// How many nodes of `pool` are on their way: while above zero, requests for the
    /// pool wait up to its `queue_timeout` instead of getting `503`.
    fn set_nodes_on_the_way(&self, pool: &str, count: u32);
    /// A reloaded schedule (the gateway's `Retry-After` and the status page use it).
    fn set_schedule(&self, schedule: Schedule);
    /// Node notices (registration, heartbeat loss, goodbye) that wake the loop.
    fn subscribe(&self) -> broadcast::Receiver<NodeNotice>;
    /// Whether this ingress runs the scheduler (status page, `/metrics`).
    fn set_leader(&self, leader: bool);
    /// What a tick did (status page, `/metrics`).
    fn record_tick(&self, report: &TickReport);
    /// The pool's scale state as the scheduler last decided it (the gateway wakes a
    /// pool whose target is 0, and answers waiting requests with a budget refusal).
    fn set_scale(&self, pool: &str, view: ScaleView);
}

/// What the gateway knows of a pool's scale state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaleView {
    /// Nodes the scheduler wants now (`None` before its first decision).
    pub target: Option<u32>,
    /// When it decided.
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why it could not start a wanted node (the budget), if it could not.
    pub refused: Option<String>,
    /// How long a node of the pool takes to become ready (p90 of its recent cold
    /// starts, else the configured `cold_start`): a woken request's expected wait.
    pub cold_start: Duration,
}

/// Everything the scheduler inside `dayshift serve` works with. Cheap to clone.
#[derive(Clone)]
pub struct ControlContext {
    /// The validated config.
    pub config: Arc<Config>,
    /// The store.
    pub store: Store,
    /// The clock (injected: tests run the loop at any date).
    pub clock: Arc<dyn Clock>,
    /// How long a node's join token is valid for its first registration.
    pub join_token_ttl: Duration,
    /// The gateway's routing.
    pub routing: Arc<dyn Routing>,
    /// How often each gateway writes its load samples (the scheduler groups them by it).
    pub load_sample_every: Duration,
}
