//! API key checks with a short cache, so the store is not asked on every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{ApiKey, Store, StoreError, hash_secret};

/// Verified keys by secret hash, each kept for a short TTL.
pub struct KeyCache {
    store: Store,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Option<ApiKey>, Instant)>>,
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
        let hash = hash_secret(secret);
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
