//! The narrow store interface the scheduler needs — the one seam between the reconcile
//! loop and any database — and an in-memory implementation for tests. The ingress
//! implements it on SQLite/PostgreSQL (`ingress/src/control/node_store.rs`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::elastic::{LoadSample, ScaleState};
use crate::lifecycle::{NodeRecord, NodeState};

/// A store failure. The reconcile loop retries every kind on its next tick; the kind
/// says whether that can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed (transient: the next tick retries).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The node row does not exist.
    #[error("store: node {0} does not exist")]
    NoSuchNode(String),
    /// A node row with this id exists already.
    #[error("store: node {0} already exists")]
    NodeExists(String),
    /// The write would move a node along a transition the lifecycle does not allow
    /// ([`NodeState::can_go_to`]); nothing was written. A bug in the caller.
    #[error("store: node {node} cannot go from {from} to {to}; nothing was written")]
    IllegalTransition {
        /// Node id.
        node: String,
        /// Its stored state.
        from: NodeState,
        /// The state asked for.
        to: NodeState,
    },
    /// A stored value could not be read back.
    #[error("store: bad stored value: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Wraps a backend error (database, pool, I/O).
    pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable(Box::new(e))
    }

    /// Checks that a write from `from` to `to` is a lifecycle transition (or no change).
    pub fn check_transition(node: &str, from: NodeState, to: NodeState) -> Result<(), Self> {
        if from == to || from.can_go_to(to) {
            Ok(())
        } else {
            Err(StoreError::IllegalTransition {
                node: node.to_string(),
                from,
                to,
            })
        }
    }
}

/// One row of a node's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeEvent {
    /// Node id.
    pub node_id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// State before (None for the first row).
    pub from: Option<NodeState>,
    /// State after.
    pub to: NodeState,
    /// What happened, for operators.
    pub message: String,
}

/// What the scheduler reads and writes.
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Writes a new node row (state `planned`) and its first event.
    async fn insert_node(
        &self,
        node: &NodeRecord,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<(), StoreError>;

    /// Replaces the row of `node.id` if its stored state is still `expected`, and writes an
    /// event when the state changes. Returns false when the state had moved on (someone
    /// else acted), in which case nothing is written. A change the lifecycle does not
    /// allow (`expected` → `node.state`) is refused with [`StoreError::IllegalTransition`].
    async fn update_node(
        &self,
        node: &NodeRecord,
        expected: NodeState,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<bool, StoreError>;

    /// Every node not in a final state.
    async fn live_nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    /// Every node, final ones included (for reports and tests).
    async fn all_nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    /// Cold starts (planned → ready, seconds) of the pool's most recent `n` boots, newest first.
    async fn recent_cold_starts(&self, pool: &str, n: usize) -> Result<Vec<i64>, StoreError>;

    /// The pool's load samples (every replica's) taken at or after `since`, oldest first.
    async fn load_samples(
        &self,
        pool: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<LoadSample>, StoreError>;

    /// The pool's scale state, if one was decided.
    async fn scale_state(&self, pool: &str) -> Result<Option<ScaleState>, StoreError>;

    /// Writes the pool's scale state (replacing the last one).
    async fn save_scale_state(&self, state: &ScaleState) -> Result<(), StoreError>;

    /// When a request last asked to wake `pool` (it found no node), if ever.
    async fn last_wake_request(&self, pool: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
}

/// A store in memory: for tests and for trying the scheduler without a database.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Tables>,
    elastic: Mutex<ElasticTables>,
}

/// The memory store's elastic tables: load samples, scale states, wake requests.
#[derive(Debug, Default)]
struct ElasticTables {
    samples: Vec<LoadSample>,
    states: BTreeMap<String, ScaleState>,
    wakes: BTreeMap<String, DateTime<Utc>>,
}

/// The memory store's tables: node rows by id and the event log.
type Tables = (BTreeMap<String, NodeRecord>, Vec<NodeEvent>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<NodeEvent> {
        self.inner.lock().map(|g| g.1.clone()).unwrap_or_default()
    }

    /// Records a gateway load sample (what the ingress's sampler writes).
    pub fn record_load(&self, sample: LoadSample) {
        if let Ok(mut g) = self.elastic.lock() {
            g.samples.push(sample);
        }
    }

    /// Records that a request asked to wake `pool` at `at` (what the gateway writes).
    pub fn request_wake(&self, pool: &str, at: DateTime<Utc>) {
        if let Ok(mut g) = self.elastic.lock() {
            g.wakes.insert(pool.to_string(), at);
        }
    }

    fn elastic(&self) -> Result<std::sync::MutexGuard<'_, ElasticTables>, StoreError> {
        self.elastic
            .lock()
            .map_err(|_| StoreError::Corrupt("memory store lock poisoned".into()))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Corrupt("memory store lock poisoned".into()))
    }
}

#[async_trait]
impl NodeStore for MemoryStore {
    async fn insert_node(
        &self,
        node: &NodeRecord,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        if g.0.contains_key(&node.id) {
            return Err(StoreError::NodeExists(node.id.clone()));
        }
        g.0.insert(node.id.clone(), node.clone());
        g.1.push(NodeEvent {
            node_id: node.id.clone(),
            at,
            from: None,
            to: node.state,
            message: message.to_string(),
        });
        Ok(())
    }

    async fn update_node(
        &self,
        node: &NodeRecord,
        expected: NodeState,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock()?;
        let Some(current) = g.0.get(&node.id) else {
            return Err(StoreError::NoSuchNode(node.id.clone()));
        };
        if current.state != expected {
            return Ok(false);
        }
        StoreError::check_transition(&node.id, expected, node.state)?;
        g.0.insert(node.id.clone(), node.clone());
        if expected != node.state {
            g.1.push(NodeEvent {
                node_id: node.id.clone(),
                at,
                from: Some(expected),
                to: node.state,
                message: message.to_string(),
            });
        }
        Ok(true)
    }

    async fn live_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Ok(self
            .lock()?
            .0
            .values()
            .filter(|n| !n.state.is_final())
            .cloned()
            .collect())
    }

    async fn all_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Ok(self.lock()?.0.values().cloned().collect())
    }

    async fn recent_cold_starts(&self, pool: &str, n: usize) -> Result<Vec<i64>, StoreError> {
        let g = self.lock()?;
        let mut boots: Vec<(DateTime<Utc>, i64)> =
            g.0.values()
                .filter(|r| r.pool == pool)
                .filter_map(|r| Some((r.ready_at?, r.cold_start_secs()?)))
                .collect();
        boots.sort_by_key(|b| std::cmp::Reverse(b.0));
        Ok(boots.into_iter().take(n).map(|b| b.1).collect())
    }

    async fn load_samples(
        &self,
        pool: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<LoadSample>, StoreError> {
        let mut v: Vec<LoadSample> = self
            .elastic()?
            .samples
            .iter()
            .filter(|s| s.pool == pool && s.at >= since)
            .cloned()
            .collect();
        v.sort_by_key(|s| s.at);
        Ok(v)
    }

    async fn scale_state(&self, pool: &str) -> Result<Option<ScaleState>, StoreError> {
        Ok(self.elastic()?.states.get(pool).cloned())
    }

    async fn save_scale_state(&self, state: &ScaleState) -> Result<(), StoreError> {
        self.elastic()?
            .states
            .insert(state.pool.clone(), state.clone());
        Ok(())
    }

    async fn last_wake_request(&self, pool: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.elastic()?.wakes.get(pool).copied())
    }
}
