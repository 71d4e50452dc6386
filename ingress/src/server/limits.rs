//! Per-key limits: requests per minute (sliding window) and tokens per UTC day.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use dayshift_config::clock::Clock;

use crate::store::{ApiKey, Store, StoreError};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many requests this minute; retry after this many seconds.
    Rate(u64),
    /// Token budget of the day used; retry after this many seconds (next UTC midnight).
    Tokens(u64),
}

#[derive(Default)]
struct KeyWindow {
    recent: VecDeque<Instant>,
    day: i64,
    tokens: i64,
    seeded: bool,
}

/// Limit bookkeeping for every key.
pub struct Limiter {
    store: Store,
    clock: Arc<dyn Clock>,
    keys: Mutex<HashMap<String, KeyWindow>>,
}

fn day_number(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

fn secs_to_midnight(now: DateTime<Utc>) -> u64 {
    let next = now
        .date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0));
    match next {
        Some(n) => (Utc.from_utc_datetime(&n) - now).num_seconds().max(1) as u64,
        None => 3600,
    }
}

impl Limiter {
    /// A limiter; token counts are seeded from the store's usage of the day. Days are
    /// UTC days of `clock`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Limiter {
        Limiter {
            store,
            clock,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of `key` that may produce up to `ceiling` completion tokens
    /// (`n × max_tokens`, 0 when unknown) or says why not: the day's token limit must
    /// leave room for the ceiling.
    pub async fn admit(
        &self,
        key: &ApiKey,
        ceiling: i64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        if key.limits.tokens_per_day.is_none() && key.limits.requests_per_minute.is_none() {
            return Ok(Ok(()));
        }
        let now = self.clock.now();
        let today = day_number(now.timestamp_millis());
        if key.limits.tokens_per_day.is_some() {
            let need_seed = self
                .keys
                .lock()
                .map(|k| k.get(&key.id).is_none_or(|w| !w.seeded || w.day != today))
                .unwrap_or(true);
            if need_seed {
                let since = today * 86_400_000;
                let used = self.store.tokens_used_since(&key.id, since).await?;
                if let Ok(mut keys) = self.keys.lock() {
                    let w = keys.entry(key.id.clone()).or_default();
                    w.day = today;
                    w.tokens = used;
                    w.seeded = true;
                }
            }
        }
        let Ok(mut keys) = self.keys.lock() else {
            return Ok(Ok(()));
        };
        let w = keys.entry(key.id.clone()).or_default();
        let used = if w.day == today { w.tokens } else { 0 };
        if let Some(limit) = key.limits.tokens_per_day
            && (used >= limit || used.saturating_add(ceiling.max(0)) > limit)
        {
            return Ok(Err(Refusal::Tokens(secs_to_midnight(now))));
        }
        if let Some(rpm) = key.limits.requests_per_minute {
            let now = Instant::now();
            let minute = Duration::from_secs(60);
            while w
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= minute)
            {
                w.recent.pop_front();
            }
            if w.recent.len() as i64 >= rpm {
                let wait = w
                    .recent
                    .front()
                    .map(|t| minute.saturating_sub(now.duration_since(*t)).as_secs() + 1)
                    .unwrap_or(60);
                return Ok(Err(Refusal::Rate(wait)));
            }
            w.recent.push_back(now);
        }
        Ok(Ok(()))
    }

    /// Counts tokens a key used (called when a response ends).
    pub fn add_tokens(&self, key_id: &str, tokens: i64) {
        let today = day_number(self.clock.now().timestamp_millis());
        if let Ok(mut keys) = self.keys.lock()
            && let Some(w) = keys.get_mut(key_id)
        {
            if w.day != today {
                w.day = today;
                w.tokens = 0;
            }
            w.tokens += tokens;
        }
    }
}
