//! Scheduler: the node lifecycle state machine, the reconcile loop (desired nodes from
//! the schedule against actual servers and rows), and the cost ledger.

pub mod budget;
pub mod desired;
pub mod elastic;
pub mod launch;
pub mod ledger;
pub mod lifecycle;
pub mod reconcile;
pub mod reload;
pub mod store;

pub use elastic::{ElasticPolicy, LoadSample, ScaleCause, ScaleState};
pub use launch::{ErrorPolicy, LaunchError, Launcher};
pub use lifecycle::{NodeRecord, NodeState};
pub use reconcile::{
    Limits, PoolPolicy, Reconciler, START_FAILED, START_FAILURES_TO_STOP, TickError, TickReport,
    TickStep,
};
pub use store::{MemoryStore, NodeEvent, NodeStore, StoreError};
