//! API key checks with a short cache, so the store is not asked on every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::store::{ApiKey, Store, StoreError};

/// Cached answers by the sha256 of the secret: the key (or `None`) and when it was read.
type Entries = HashMap<[u8; 32], (Option<ApiKey>, Instant)>;

/// Verified keys by the sha256 of their secret (raw bytes: no hex string per request),
/// each kept for a short TTL.
pub struct KeyCache {
    store: Store,
    ttl: Duration,
    entries: Mutex<Entries>,
}

impl KeyCache {
    /// A cache over `store`.
    pub fn new(store: Store, ttl: Duration) -> KeyCache {
        KeyCache {
            store,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The live key for `secret`, or `None` (unknown or revoked).
    pub async fn check(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Ok(entries) = self.entries.lock()
            && let Some((key, at)) = entries.get(&hash)
            && at.elapsed() < self.ttl
        {
            return Ok(key.clone());
        }
        let key = self.store.find_api_key(secret).await?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash, (key.clone(), Instant::now()));
        }
        Ok(key)
    }

    /// Forgets every cached key (after a revocation through the admin API).
    pub fn clear(&self) {
        if let Ok(mut e) = self.entries.lock() {
            e.clear();
        }
    }
}
