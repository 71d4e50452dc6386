//! What the reconcile loop writes: a node's lifecycle fields with compare-and-set on its
//! state, its event, and its billing interval — all in one transaction, so a crash never
//! leaves a created server without its ledger row or a deleted one with an open interval.

use sqlx::Row;

use super::ledger::NewInterval;
use super::nodes::insert_event;
use super::types::{NodeRecord, NodeState};
use super::{Result, Store, StoreError};

/// The fields the scheduler owns on a node row, as stored (unix ms).
struct LifecycleUpdate {
    id: String,
    state: NodeState,
    provider_id: Option<String>,
    server_type: Option<String>,
    location: Option<String>,
    address: Option<String>,
    server_created_at: Option<i64>,
    drain_started_at: Option<i64>,
    deleted_at: Option<i64>,
    attempts: i64,
    retry_at: Option<i64>,
    error: Option<String>,
}

impl From<&NodeRecord> for LifecycleUpdate {
    fn from(n: &NodeRecord) -> Self {
        let ms = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_millis());
        LifecycleUpdate {
            id: n.id.clone(),
            state: n.state,
            provider_id: n.server_id.clone(),
            server_type: n.server_type.clone(),
            location: n.location.clone(),
            address: n.address.clone(),
            server_created_at: ms(n.server_created_at),
            drain_started_at: ms(n.drain_started_at),
            deleted_at: ms(n.deleted_at),
            attempts: i64::from(n.attempts),
            retry_at: ms(n.retry_at),
            error: n.last_error.clone(),
        }
    }
}

/// What [`Store::update_lifecycle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleWrite {
    /// The row was in the expected state and was replaced.
    Written,
    /// The node registered meanwhile (it is ready or draining now): only the server
    /// fields were merged in, the state was left alone.
    MergedServer,
    /// The row had moved on (or is missing): nothing written.
    Stale,
}

impl Store {
    /// Writes the scheduler's fields of a node if its stored state is still `expected`,
    /// with an event when the state changes (only along a transition the lifecycle
    /// allows: else [`StoreError::IllegalTransition`] and nothing is written). In the
    /// same transaction: opens the node's billing interval (`interval`, at
    /// `server_created_at`) when the server is recorded for the first time, and closes its
    /// open intervals when `deleted_at` is first set.
    pub async fn update_lifecycle(
        &self,
        node: &NodeRecord,
        expected: NodeState,
        at: i64,
        message: &str,
        interval: Option<&NewInterval>,
    ) -> Result<LifecycleWrite> {
        let u = &LifecycleUpdate::from(node);
        let mut tx = self.begin_write().await?;
        let row =
            sqlx::query("SELECT state, server_created_at, deleted_at FROM nodes WHERE id = $1")
                .bind(&u.id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Ok(LifecycleWrite::Stale);
        };
        let current: String = row.try_get("state")?;
        let current: NodeState = current.parse().map_err(StoreError::Corrupt)?;
        let had_server: Option<i64> = row.try_get("server_created_at")?;
        let had_deleted: Option<i64> = row.try_get("deleted_at")?;
        let outcome = if current == expected {
            if expected != u.state && !expected.can_go_to(u.state) {
                return Err(StoreError::IllegalTransition {
                    node: u.id.clone(),
                    from: expected,
                    to: u.state,
                });
            }
            sqlx::query(
                "UPDATE nodes SET state = $1, provider_id = $2, server_type = $3, location = $4, \
                 address = $5, server_created_at = $6, drain_started_at = $7, deleted_at = $8, \
                 attempts = $9, retry_at = $10, error = $11, updated_at = $12 \
                 WHERE id = $13 AND state = $14",
            )
            .bind(u.state.as_str())
            .bind(u.provider_id.clone())
            .bind(u.server_type.clone())
            .bind(u.location.clone())
            .bind(u.address.clone())
            .bind(u.server_created_at)
            .bind(u.drain_started_at)
            .bind(u.deleted_at)
            .bind(u.attempts)
            .bind(u.retry_at)
            .bind(u.error.clone())
            .bind(at)
            .bind(&u.id)
            .bind(expected.as_str())
            .execute(&mut *tx)
            .await?;
            if expected != u.state {
                insert_event(&mut tx, &u.id, at, Some(expected), u.state, message).await?;
            }
            LifecycleWrite::Written
        } else if expected.is_on_its_way()
            && matches!(current, NodeState::Ready | NodeState::Draining)
            && u.provider_id.is_some()
        {
            sqlx::query(
                "UPDATE nodes SET provider_id = COALESCE(provider_id, $1), \
                 server_type = COALESCE(server_type, $2), location = COALESCE(location, $3), \
                 address = COALESCE(address, $4), \
                 server_created_at = COALESCE(server_created_at, $5), updated_at = $6 \
                 WHERE id = $7",
            )
            .bind(u.provider_id.clone())
            .bind(u.server_type.clone())
            .bind(u.location.clone())
            .bind(u.address.clone())
            .bind(u.server_created_at)
            .bind(at)
            .bind(&u.id)
            .execute(&mut *tx)
            .await?;
            LifecycleWrite::MergedServer
        } else {
            return Ok(LifecycleWrite::Stale);
        };
        if had_server.is_none()
            && let (Some(started), Some(i)) = (u.server_created_at, interval)
        {
            let open: i64 =
                sqlx::query("SELECT COUNT(*) AS n FROM ledger_intervals WHERE node_id = $1")
                    .bind(&u.id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
            if open == 0 {
                sqlx::query(
                    "INSERT INTO ledger_intervals (node_id, pool, provider, server_type, \
                     location, started_at, hourly_price, monthly_price) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&i.node_id)
                .bind(&i.pool)
                .bind(&i.provider)
                .bind(&i.server_type)
                .bind(i.location.clone())
                .bind(started)
                .bind(&i.hourly_price)
                .bind(i.monthly_price.clone())
                .execute(&mut *tx)
                .await?;
            }
        }
        if had_deleted.is_none()
            && outcome == LifecycleWrite::Written
            && let Some(end) = u.deleted_at
        {
            sqlx::query(
                "UPDATE ledger_intervals SET ended_at = $1 WHERE node_id = $2 AND ended_at IS NULL",
            )
            .bind(end)
            .bind(&u.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Cold starts (row created → first registration, seconds) of the pool's `n` most
    /// recent boots, newest first.
    pub async fn recent_cold_starts(&self, pool: &str, n: usize) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT created_at, registered_at FROM nodes \
             WHERE pool = $1 AND registered_at IS NOT NULL \
             ORDER BY registered_at DESC LIMIT $2",
        )
        .bind(pool)
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let created: i64 = r.try_get("created_at")?;
                let registered: i64 = r.try_get("registered_at")?;
                Ok(((registered - created) / 1000).max(0))
            })
            .collect()
    }

    /// Inserts a planned node row (scheduler) with its first event, at `at` (unix ms).
    pub async fn insert_planned(&self, id: &str, pool: &str, at: i64, message: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO nodes (id, pool, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(id)
        .bind(pool)
        .bind(NodeState::Planned.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut tx, id, at, None, NodeState::Planned, message).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the node's SSH host public key (before its server is created).
    pub async fn set_host_key(&self, id: &str, host_key: &str) -> Result<()> {
        sqlx::query("UPDATE nodes SET host_key = $1 WHERE id = $2")
            .bind(host_key)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
