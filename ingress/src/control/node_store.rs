//! The adapter between the scheduler's one store seam ([`NodeStore`]) and the ingress:
//! rows come from the store (converted there), in-flight counts from the gateway's
//! routing, and a state change steers routing at once (a draining node gets no new
//! request; a deleted or failed one is gone). A node's billing interval is priced here
//! from the config when its server is first recorded.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dayshift_config::Config;
use dayshift_scheduler::{LoadSample, NodeRecord, NodeState, NodeStore, ScaleState, StoreError};

use super::handle::{ControlContext, Routing};
use crate::store::{LifecycleWrite, NewInterval, Store};

/// The scheduler's view of the ingress store and routing.
pub struct SchedulerStore {
    store: Store,
    config: Arc<Config>,
    routing: Arc<dyn Routing>,
}

impl SchedulerStore {
    /// The adapter over the context's store and routing.
    pub fn new(ctx: &ControlContext) -> Arc<Self> {
        Arc::new(SchedulerStore {
            store: ctx.store.clone(),
            config: ctx.config.clone(),
            routing: ctx.routing.clone(),
        })
    }

    /// The billing interval of a node whose server was just created: the server type's
    /// price now (zero, with a warning, for a type the config does not price).
    fn interval_for(&self, node: &NodeRecord) -> Option<NewInterval> {
        let created = node.server_created_at?;
        let server_type = node.server_type.clone()?;
        let (hourly, monthly) = match self.config.provider.server_types.get(&server_type) {
            Some(t) => (
                t.price.hourly.to_string(),
                t.price.monthly.map(|m| m.to_string()),
            ),
            None => {
                tracing::warn!(node = %node.id, server_type, "server type has no price in dayshift.toml; its cost is recorded as 0");
                ("0".to_string(), None)
            }
        };
        Some(NewInterval {
            node_id: node.id.clone(),
            pool: node.pool.clone(),
            provider: self.config.provider.kind.as_str().to_string(),
            server_type,
            location: node.location.clone(),
            started_at: created.timestamp_millis(),
            hourly_price: hourly,
            monthly_price: monthly,
        })
    }

    /// Routing follows the new state at once.
    fn steer(&self, node: &NodeRecord) {
        match node.state {
            NodeState::Draining => self.routing.set_draining(&node.id),
            NodeState::Deleting | NodeState::Deleted | NodeState::Failed => {
                self.routing.remove_node(&node.id)
            }
            _ => {}
        }
    }

    async fn nodes(&self, include_final: bool) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self.store.list_nodes(include_final).await?;
        Ok(rows
            .into_iter()
            .map(|r| r.lifecycle(self.routing.in_flight(&r.id)))
            .collect())
    }
}

#[async_trait]
impl NodeStore for SchedulerStore {
    async fn insert_node(
        &self,
        node: &NodeRecord,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<(), StoreError> {
        Ok(self
            .store
            .insert_planned(&node.id, &node.pool, at.timestamp_millis(), message)
            .await?)
    }

    async fn update_node(
        &self,
        node: &NodeRecord,
        expected: NodeState,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<bool, StoreError> {
        let interval = self.interval_for(node);
        let done = self
            .store
            .update_lifecycle(
                node,
                expected,
                at.timestamp_millis(),
                message,
                interval.as_ref(),
            )
            .await?;
        if done == LifecycleWrite::Written {
            self.steer(node);
        }
        Ok(done == LifecycleWrite::Written)
    }

    async fn live_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.nodes(false).await
    }

    async fn all_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.nodes(true).await
    }

    async fn recent_cold_starts(&self, pool: &str, n: usize) -> Result<Vec<i64>, StoreError> {
        Ok(self.store.recent_cold_starts(pool, n).await?)
    }

    async fn load_samples(
        &self,
        pool: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<LoadSample>, StoreError> {
        Ok(self.store.load_samples(pool, since).await?)
    }

    async fn scale_state(&self, pool: &str) -> Result<Option<ScaleState>, StoreError> {
        Ok(self.store.scale_state(pool).await?)
    }

    async fn save_scale_state(&self, state: &ScaleState) -> Result<(), StoreError> {
        Ok(self.store.save_scale_state(state).await?)
    }

    async fn last_wake_request(&self, pool: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.store.last_wake_request(pool).await?)
    }
}
