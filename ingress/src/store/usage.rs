//! Per-request usage rows, written in batches.

use sqlx::Row;

use super::{Result, Store};

/// Rows per `INSERT` statement (11 values each; far below both databases' limits).
const ROWS_PER_INSERT: usize = 100;

/// One request's usage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    /// When the request arrived (unix ms).
    pub at: i64,
    /// API key id.
    pub key_id: String,
    /// Pool.
    pub pool: String,
    /// Node that answered, if any.
    pub node_id: Option<String>,
    /// Model asked for.
    pub model: String,
    /// Endpoint path, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    /// HTTP status returned.
    pub status: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Of the prompt tokens, those the node took from its prefix cache (not computed).
    pub cached_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Time to the end of the response, ms.
    pub latency_ms: i64,
}

/// Tokens one API key used on one node over a range (the cost ledger's `--by key`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyNodeTokens {
    /// API key id.
    pub key_id: String,
    /// Node that answered.
    pub node_id: String,
    /// Tokens the node computed for the key: prompt tokens not taken from its prefix
    /// cache, plus completion tokens (a cached prompt token costs the GPU next to
    /// nothing, so it does not weigh in the cost split).
    pub tokens: i64,
}

/// Tokens per API key over a range.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyUsage {
    /// API key id.
    pub key_id: String,
    /// Requests.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Of the prompt tokens, those taken from a node's prefix cache.
    pub cached_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
}

impl Store {
    /// Inserts usage rows in one transaction, many rows per statement.
    pub async fn insert_usage(&self, rows: &[UsageRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO usage (at, key_id, pool, node_id, model, endpoint, status, \
                 prompt_tokens, completion_tokens, latency_ms, cached_tokens) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 11;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for c in 1..=11 {
                    if c > 1 {
                        sql.push_str(", ");
                    }
                    sql.push('$');
                    sql.push_str(&(b + c).to_string());
                }
                sql.push(')');
            }
            // Only placeholders are formatted into the text; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for u in chunk {
                q = q
                    .bind(u.at)
                    .bind(u.key_id.clone())
                    .bind(u.pool.clone())
                    .bind(u.node_id.clone())
                    .bind(u.model.clone())
                    .bind(u.endpoint.clone())
                    .bind(u.status)
                    .bind(u.prompt_tokens)
                    .bind(u.completion_tokens)
                    .bind(u.latency_ms)
                    .bind(u.cached_tokens);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Prompt + completion tokens of one key since `since` (unix ms).
    pub async fn tokens_used_since(&self, key_id: &str, since: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS t \
             FROM usage WHERE key_id = $1 AND at >= $2",
        )
        .bind(key_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("t")?)
    }

    /// Usage per key in `[from, to)` (unix ms), sorted by key.
    pub async fn usage_by_key(&self, from: i64, to: i64) -> Result<Vec<KeyUsage>> {
        let rows = sqlx::query(
            "SELECT key_id, CAST(COUNT(*) AS BIGINT) AS n, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS p, \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS k, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS c \
             FROM usage WHERE at >= $1 AND at < $2 GROUP BY key_id ORDER BY key_id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyUsage {
                    key_id: r.try_get("key_id")?,
                    requests: r.try_get("n")?,
                    prompt_tokens: r.try_get("p")?,
                    cached_tokens: r.try_get("k")?,
                    completion_tokens: r.try_get("c")?,
                })
            })
            .collect()
    }

    /// Every usage row in `[from, to)` (unix ms), oldest first.
    pub async fn usage_rows(&self, from: i64, to: i64) -> Result<Vec<UsageRow>> {
        let rows = sqlx::query(
            "SELECT at, key_id, pool, node_id, model, endpoint, status, prompt_tokens, \
             cached_tokens, completion_tokens, latency_ms FROM usage WHERE at >= $1 AND at < $2 ORDER BY id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    at: r.try_get("at")?,
                    key_id: r.try_get("key_id")?,
                    pool: r.try_get("pool")?,
                    node_id: r.try_get("node_id")?,
                    model: r.try_get("model")?,
                    endpoint: r.try_get("endpoint")?,
                    status: r.try_get("status")?,
                    prompt_tokens: r.try_get("prompt_tokens")?,
                    cached_tokens: r.try_get("cached_tokens")?,
                    completion_tokens: r.try_get("completion_tokens")?,
                    latency_ms: r.try_get("latency_ms")?,
                })
            })
            .collect()
    }

    /// Tokens the node computed ([`KeyNodeTokens::tokens`]: prompt tokens less those
    /// taken from its prefix cache, plus completion tokens) per (key, node) in `[from,
    /// to)` (unix ms); rows that no node answered are left out. Sorted by key, then node.
    pub async fn tokens_by_key_and_node(&self, from: i64, to: i64) -> Result<Vec<KeyNodeTokens>> {
        let rows = sqlx::query(
            "SELECT key_id, node_id, CAST(COALESCE(SUM(prompt_tokens - cached_tokens \
             + completion_tokens), 0) AS BIGINT) AS t \
             FROM usage WHERE at >= $1 AND at < $2 AND node_id IS NOT NULL \
             GROUP BY key_id, node_id ORDER BY key_id, node_id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyNodeTokens {
                    key_id: r.try_get("key_id")?,
                    node_id: r.try_get("node_id")?,
                    tokens: r.try_get("t")?,
                })
            })
            .collect()
    }
}
