//! API keys: stored as sha256 of the secret plus a short visible prefix; the secret
//! itself is shown once at creation and never stored.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, now_ms};

/// Start of every API key secret.
pub const SECRET_PREFIX: &str = "dsk-";
/// Characters of the secret kept visible (e.g. `dsk-1a2b3c4d`).
pub const VISIBLE_PREFIX_LEN: usize = 12;

/// Per-key limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<i64>,
    /// Prompt + completion tokens per UTC day.
    pub tokens_per_day: Option<i64>,
}

/// A stored API key (no secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKey {
    /// Id, e.g. `key_3f9a0c21`.
    pub id: String,
    /// Operator's name for it.
    pub name: String,
    /// Visible start of the secret.
    pub prefix: String,
    /// Limits.
    pub limits: KeyLimits,
    /// Creation (unix ms).
    pub created_at: i64,
    /// Revocation (unix ms), if revoked.
    pub revoked_at: Option<i64>,
}

/// A key just created: the stored record and the secret, to show once.
#[derive(Debug)]
pub struct NewKey {
    /// The record.
    pub key: ApiKey,
    /// The secret (shown once; never stored, never logged).
    pub secret: dayshift_config::protocol::Secret,
}

/// Lowercase hex sha256 of a secret (API key, join token, session token).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A random token of `bytes` random bytes in hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

const KEY_COLS: &str =
    "id, name, prefix, requests_per_minute, tokens_per_day, created_at, revoked_at";

fn key_from_row(r: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        limits: KeyLimits {
            requests_per_minute: r.try_get("requests_per_minute")?,
            tokens_per_day: r.try_get("tokens_per_day")?,
        },
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Creates an API key; the secret comes back once, in [`NewKey::secret`].
    pub async fn create_api_key(&self, name: &str, limits: KeyLimits) -> Result<NewKey> {
        let secret = format!("{SECRET_PREFIX}{}", random_hex(24));
        let prefix: String = secret.chars().take(VISIBLE_PREFIX_LEN).collect();
        let key = ApiKey {
            id: format!("key_{}", random_hex(4)),
            name: name.to_string(),
            prefix,
            limits,
            created_at: now_ms(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, secret_sha256, requests_per_minute, \
             tokens_per_day, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(hash_secret(&secret))
        .bind(limits.requests_per_minute)
        .bind(limits.tokens_per_day)
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        Ok(NewKey {
            key,
            secret: dayshift_config::protocol::Secret::new(secret),
        })
    }

    /// Every key, oldest first (revoked ones included).
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes the key with this id or visible prefix; `false` when none matched
    /// or it was already revoked.
    pub async fn revoke_api_key(&self, id_or_prefix: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE (id = $2 OR prefix = $2) \
             AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id_or_prefix)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The live (not revoked) key whose secret is `secret`.
    pub async fn find_api_key(&self, secret: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE secret_sha256 = $1 AND revoked_at IS NULL"
        )))
        .bind(hash_secret(secret))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }
}
