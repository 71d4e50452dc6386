//! The cost ledger: each node's billing intervals with the price at the time.

use sqlx::Row;

use super::{Result, Store};

/// An interval to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInterval {
    /// Node id.
    pub node_id: String,
    /// Pool.
    pub pool: String,
    /// Provider kind, e.g. `hetzner`.
    pub provider: String,
    /// Server type.
    pub server_type: String,
    /// Location.
    pub location: Option<String>,
    /// Start (unix ms).
    pub started_at: i64,
    /// Hourly price, decimal text (EUR).
    pub hourly_price: String,
    /// Monthly cap, decimal text (EUR).
    pub monthly_price: Option<String>,
}

/// A stored interval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerInterval {
    /// Row id.
    pub id: i64,
    /// Node id.
    pub node_id: String,
    /// Pool.
    pub pool: String,
    /// Provider kind.
    pub provider: String,
    /// Server type.
    pub server_type: String,
    /// Location.
    pub location: Option<String>,
    /// Start (unix ms).
    pub started_at: i64,
    /// End (unix ms); `None` while the server lives.
    pub ended_at: Option<i64>,
    /// Hourly price, decimal text.
    pub hourly_price: String,
    /// Monthly cap, decimal text.
    pub monthly_price: Option<String>,
}

pub(super) async fn open(store: &Store, i: &NewInterval) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO ledger_intervals (node_id, pool, provider, server_type, location, \
         started_at, hourly_price, monthly_price) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         RETURNING id",
    )
    .bind(&i.node_id)
    .bind(&i.pool)
    .bind(&i.provider)
    .bind(&i.server_type)
    .bind(i.location.clone())
    .bind(i.started_at)
    .bind(&i.hourly_price)
    .bind(i.monthly_price.clone())
    .fetch_one(&store.pool)
    .await?;
    Ok(row.try_get("id")?)
}

pub(super) async fn close(store: &Store, node_id: &str, at: i64) -> Result<()> {
    sqlx::query(
        "UPDATE ledger_intervals SET ended_at = $1 WHERE node_id = $2 AND ended_at IS NULL",
    )
    .bind(at)
    .bind(node_id)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub(super) async fn list(store: &Store, from: i64, to: i64) -> Result<Vec<LedgerInterval>> {
    let rows = sqlx::query(
        "SELECT id, node_id, pool, provider, server_type, location, started_at, ended_at, \
         hourly_price, monthly_price FROM ledger_intervals \
         WHERE started_at < $1 AND (ended_at IS NULL OR ended_at > $2) ORDER BY started_at, id",
    )
    .bind(to)
    .bind(from)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LedgerInterval {
                id: r.try_get("id")?,
                node_id: r.try_get("node_id")?,
                pool: r.try_get("pool")?,
                provider: r.try_get("provider")?,
                server_type: r.try_get("server_type")?,
                location: r.try_get("location")?,
                started_at: r.try_get("started_at")?,
                ended_at: r.try_get("ended_at")?,
                hourly_price: r.try_get("hourly_price")?,
                monthly_price: r.try_get("monthly_price")?,
            })
        })
        .collect()
}
