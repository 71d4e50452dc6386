//! The gateway's live in-flight count per node, kept in the store so that `dayshift
//! nodes` (which reads only the store) shows it, not the count of the last heartbeat.

use super::{Result, Store};

impl Store {
    /// Stores `in_flight` as node `id`'s requests in flight (leaves the heartbeat time).
    pub async fn record_in_flight(&self, id: &str, in_flight: u32) -> Result<()> {
        sqlx::query("UPDATE nodes SET in_flight = $1 WHERE id = $2")
            .bind(i64::from(in_flight))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
