//! The narrow store interface the scheduler needs, and an in-memory implementation for
//! tests. The ingress implements it on SQLite/PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::lifecycle::{NodeRecord, NodeState};

/// A store failure; the reconcile loop retries on its next tick.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// One row of a node's history.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// else acted), in which case nothing is written.
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
}

/// A store in memory: for tests and for trying the scheduler without a database.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Tables>,
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

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))
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
            return Err(StoreError(format!("node {} already exists", node.id)));
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
            return Err(StoreError(format!("node {} does not exist", node.id)));
        };
        if current.state != expected {
            return Ok(false);
        }
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
}
