//! The scheduler's [`NodeStore`](dayshift_scheduler::NodeStore) on the ingress store,
//! joined with live routing: in-flight counts come from the gateway, and state changes
//! steer routing at once (a draining node gets no new request; a deleted one is gone).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dayshift_config::Config;
use dayshift_scheduler::store::{NodeStore as SchedulerNodeStore, StoreError as SchedulerError};
use dayshift_scheduler::{NodeRecord as Planned, NodeState};

use crate::server::state::SharedState;
use crate::store::{
    LifecycleUpdate, LifecycleWrite, NewInterval, NodeRecord, NodeStore, Store, StoreError,
};

/// The scheduler's view of the store.
pub struct SchedulerStore {
    state: SharedState,
}

impl SchedulerStore {
    /// A view over the server's store and registry.
    pub fn new(state: SharedState) -> Arc<Self> {
        Arc::new(SchedulerStore { state })
    }

    fn store(&self) -> &Store {
        &self.state.store
    }

    fn to_planned(&self, r: NodeRecord) -> Planned {
        // The gateway's own count is exact; the stored one (last heartbeat) is the
        // fallback for a node that is not routable here.
        let in_flight = self
            .state
            .registry
            .node(&r.id)
            .map(|h| h.in_flight())
            .unwrap_or(0);
        Planned {
            state: r.state,
            planned_at: from_ms(r.created_at).unwrap_or_else(Utc::now),
            server_id: r.provider_id,
            address: r.address,
            server_type: r.server_type,
            location: r.location,
            server_created_at: r.server_created_at.and_then(from_ms),
            ready_at: r.registered_at.and_then(from_ms),
            drain_started_at: r.drain_started_at.and_then(from_ms),
            deleted_at: r.deleted_at.and_then(from_ms),
            in_flight,
            last_heartbeat: r.last_heartbeat_at.and_then(from_ms),
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            retry_at: r.retry_at.and_then(from_ms),
            last_error: r.error,
            id: r.id,
            pool: r.pool,
        }
    }

    /// The billing interval of a node whose server was just created: the server type's
    /// price now (zero, with a warning, for a type the config does not price).
    fn interval_for(&self, node: &Planned) -> Option<NewInterval> {
        let created = node.server_created_at?;
        let server_type = node.server_type.clone()?;
        let config: &Config = &self.state.config;
        let (hourly, monthly) = match config.provider.server_types.get(&server_type) {
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
            provider: config.provider.kind.as_str().to_string(),
            server_type,
            location: node.location.clone(),
            started_at: created.timestamp_millis(),
            hourly_price: hourly,
            monthly_price: monthly,
        })
    }

    /// Routing follows the new state at once.
    fn steer(&self, node: &Planned) {
        match node.state {
            NodeState::Draining => {
                if let Some(h) = self.state.registry.node(&node.id) {
                    h.set_draining();
                }
            }
            NodeState::Deleting | NodeState::Deleted | NodeState::Failed => {
                self.state.forget_node(&node.id);
            }
            _ => {}
        }
    }
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

fn err(e: StoreError) -> SchedulerError {
    SchedulerError(e.to_string())
}

#[async_trait]
impl SchedulerNodeStore for SchedulerStore {
    async fn insert_node(
        &self,
        node: &Planned,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<(), SchedulerError> {
        self.store()
            .insert_planned(&node.id, &node.pool, at.timestamp_millis(), message)
            .await
            .map_err(err)
    }

    async fn update_node(
        &self,
        node: &Planned,
        expected: NodeState,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<bool, SchedulerError> {
        let u = LifecycleUpdate {
            id: node.id.clone(),
            state: node.state,
            provider_id: node.server_id.clone(),
            server_type: node.server_type.clone(),
            location: node.location.clone(),
            address: node.address.clone(),
            server_created_at: node.server_created_at.map(|t| t.timestamp_millis()),
            drain_started_at: node.drain_started_at.map(|t| t.timestamp_millis()),
            deleted_at: node.deleted_at.map(|t| t.timestamp_millis()),
            attempts: i64::from(node.attempts),
            retry_at: node.retry_at.map(|t| t.timestamp_millis()),
            error: node.last_error.clone(),
        };
        let interval = self.interval_for(node);
        let done = self
            .store()
            .update_lifecycle(
                &u,
                expected,
                at.timestamp_millis(),
                message,
                interval.as_ref(),
            )
            .await
            .map_err(err)?;
        if done == LifecycleWrite::Written {
            self.steer(node);
        }
        Ok(done == LifecycleWrite::Written)
    }

    async fn live_nodes(&self) -> Result<Vec<Planned>, SchedulerError> {
        let rows = self.store().list_nodes(false).await.map_err(err)?;
        Ok(rows.into_iter().map(|r| self.to_planned(r)).collect())
    }

    async fn all_nodes(&self) -> Result<Vec<Planned>, SchedulerError> {
        let rows = self.store().list_nodes(true).await.map_err(err)?;
        Ok(rows.into_iter().map(|r| self.to_planned(r)).collect())
    }

    async fn recent_cold_starts(&self, pool: &str, n: usize) -> Result<Vec<i64>, SchedulerError> {
        self.store().recent_cold_starts(pool, n).await.map_err(err)
    }
}
