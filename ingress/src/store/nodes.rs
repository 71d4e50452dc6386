//! Node rows and their events: inserts, reads, registration, heartbeats. Every state
//! change writes an event row in the same transaction, and only along a transition the
//! lifecycle allows ([`NodeState::can_go_to`]). The scheduler's writes are in
//! `lifecycle.rs`; it reaches both through the adapter in `control/node_store.rs`.

use chrono::DateTime;
use dayshift_scheduler::NodeEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::ledger::{LedgerInterval, NewInterval};
use super::types::{NewNode, NodeRow, NodeState};
use super::{Result, Store, StoreError, now_ms};

const NODE_COLS: &str = "id, pool, state, provider_id, server_type, location, api_url, \
    tls_cert_sha256, join_token_hash, join_token_expires_at, registered_at, \
    last_heartbeat_at, error, address, server_created_at, drain_started_at, deleted_at, \
    attempts, retry_at, in_flight, host_key, created_at, updated_at";

fn node_from_row(r: &AnyRow) -> Result<NodeRow> {
    let state: String = r.try_get("state")?;
    Ok(NodeRow {
        id: r.try_get("id")?,
        pool: r.try_get("pool")?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        provider_id: r.try_get("provider_id")?,
        server_type: r.try_get("server_type")?,
        location: r.try_get("location")?,
        api_url: r.try_get("api_url")?,
        tls_cert_sha256: r.try_get("tls_cert_sha256")?,
        join_token_hash: r.try_get("join_token_hash")?,
        join_token_expires_at: r.try_get("join_token_expires_at")?,
        registered_at: r.try_get("registered_at")?,
        last_heartbeat_at: r.try_get("last_heartbeat_at")?,
        error: r.try_get("error")?,
        address: r.try_get("address")?,
        server_created_at: r.try_get("server_created_at")?,
        drain_started_at: r.try_get("drain_started_at")?,
        deleted_at: r.try_get("deleted_at")?,
        attempts: r.try_get("attempts")?,
        retry_at: r.try_get("retry_at")?,
        in_flight: r.try_get("in_flight")?,
        host_key: r.try_get("host_key")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// Inserts a node row and its first event.
    pub async fn insert_node(&self, node: &NewNode) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO nodes (id, pool, state, join_token_hash, join_token_expires_at, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&node.id)
        .bind(&node.pool)
        .bind(node.state.as_str())
        .bind(node.join_token_hash.clone())
        .bind(node.join_token_expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut tx, &node.id, now, None, node.state, "created").await?;
        tx.commit().await?;
        Ok(())
    }

    /// One node by id.
    pub async fn get_node(&self, id: &str) -> Result<Option<NodeRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {NODE_COLS} FROM nodes WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// Every node; with `include_final = false` only those not `deleted`/`failed`.
    pub async fn list_nodes(&self, include_final: bool) -> Result<Vec<NodeRow>> {
        let sql = if include_final {
            format!("SELECT {NODE_COLS} FROM nodes ORDER BY created_at, id")
        } else {
            format!(
                "SELECT {NODE_COLS} FROM nodes WHERE state <> 'deleted' AND state <> 'failed' \
                 ORDER BY created_at, id"
            )
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_from_row).collect()
    }

    /// Moves a node to `to` if its state is one of `from` (any state when `from` is
    /// empty), writing an event; `false` when the node is missing or in another state.
    /// A move the lifecycle does not allow is refused ([`StoreError::IllegalTransition`]).
    pub async fn transition(
        &self,
        id: &str,
        from: &[NodeState],
        to: NodeState,
        detail: &str,
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT state FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let current: String = row.try_get("state")?;
        let current: NodeState = current.parse().map_err(StoreError::Corrupt)?;
        if !from.is_empty() && !from.contains(&current) {
            return Ok(false);
        }
        if current != to && !current.can_go_to(to) {
            return Err(StoreError::IllegalTransition {
                node: id.to_string(),
                from: current,
                to,
            });
        }
        let done = sqlx::query(
            "UPDATE nodes SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(id)
        .bind(current.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(&mut tx, id, now, Some(current), to, detail).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records the provider's server for a node.
    pub async fn set_provider_info(
        &self,
        id: &str,
        provider_id: &str,
        server_type: &str,
        location: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET provider_id = $1, server_type = $2, location = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(provider_id)
        .bind(server_type)
        .bind(location.map(str::to_string))
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces a node's join token (hash) and its expiry.
    pub async fn set_join_token(&self, id: &str, token_hash: &str, expires_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET join_token_hash = $1, join_token_expires_at = $2, updated_at = $3 \
             WHERE id = $4",
        )
        .bind(token_hash)
        .bind(expires_at)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a registration: API URL and pinned certificate; a node on its way becomes
    /// `ready` (from any step before it: the `local` provider starts a node at once, so it
    /// may register before the scheduler recorded its server), a draining one stays
    /// draining.
    pub async fn record_registration(
        &self,
        id: &str,
        api_url: &str,
        tls_cert_sha256: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT state FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(());
        };
        let current: String = row.try_get("state")?;
        let current: NodeState = current.parse().map_err(StoreError::Corrupt)?;
        // A node on its way becomes ready (the local provider starts nodes at once, so
        // one may register before the scheduler recorded its server: the scheduler's
        // server fields are merged in later, see `update_lifecycle`). A draining node
        // stays draining.
        let next = if current.is_on_its_way() {
            NodeState::Ready
        } else {
            current
        };
        sqlx::query(
            "UPDATE nodes SET api_url = $1, tls_cert_sha256 = $2, state = $3, \
             registered_at = COALESCE(registered_at, $4), last_heartbeat_at = $4, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(api_url)
        .bind(tls_cert_sha256.map(str::to_string))
        .bind(next.as_str())
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if current != next {
            insert_event(&mut tx, id, now, Some(current), next, "registered").await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a heartbeat time and the requests the gateway has in flight on the node.
    pub async fn record_heartbeat(&self, id: &str, at: i64, in_flight: u32) -> Result<()> {
        sqlx::query("UPDATE nodes SET last_heartbeat_at = $1, in_flight = $2 WHERE id = $3")
            .bind(at)
            .bind(i64::from(in_flight))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the error text of a node (kept with `failed`).
    pub async fn set_error(&self, id: &str, error: &str) -> Result<()> {
        sqlx::query("UPDATE nodes SET error = $1, updated_at = $2 WHERE id = $3")
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A node's events, oldest first.
    pub async fn node_events(&self, id: &str) -> Result<Vec<NodeEvent>> {
        let rows = sqlx::query(
            "SELECT node_id, at, from_state, to_state, detail FROM node_events \
             WHERE node_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let at: i64 = r.try_get("at")?;
                let from: Option<String> = r.try_get("from_state")?;
                let to: String = r.try_get("to_state")?;
                Ok(NodeEvent {
                    node_id: r.try_get("node_id")?,
                    at: DateTime::from_timestamp_millis(at)
                        .ok_or_else(|| StoreError::Corrupt(format!("event time {at}")))?,
                    from: from
                        .map(|f| f.parse().map_err(StoreError::Corrupt))
                        .transpose()?,
                    to: to.parse().map_err(StoreError::Corrupt)?,
                    message: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Opens a billing interval; returns its id.
    pub async fn open_interval(&self, interval: &NewInterval) -> Result<i64> {
        super::ledger::open(self, interval).await
    }

    /// Closes a node's open intervals at `at` (unix ms).
    pub async fn close_intervals(&self, node_id: &str, at: i64) -> Result<()> {
        super::ledger::close(self, node_id, at).await
    }

    /// Intervals overlapping `[from, to)` (unix ms), open ones included.
    pub async fn intervals(&self, from: i64, to: i64) -> Result<Vec<LedgerInterval>> {
        super::ledger::list(self, from, to).await
    }
}

pub(super) async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    node_id: &str,
    at: i64,
    from: Option<NodeState>,
    to: NodeState,
    detail: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO node_events (node_id, at, from_state, to_state, detail) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(node_id)
    .bind(at)
    .bind(from.map(|s| s.as_str().to_string()))
    .bind(to.as_str())
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
