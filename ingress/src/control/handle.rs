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
}
