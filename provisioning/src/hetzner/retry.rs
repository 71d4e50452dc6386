//! Jittered exponential backoff for transient errors and rate limits.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use super::HetznerSettings;
use crate::ProviderError;

/// The delay before retry number `attempt` (0-based): `base * 2^attempt`, capped, with
/// jitter in `[d/2, d]`.
pub(crate) fn backoff(settings: &HetznerSettings, attempt: u32) -> Duration {
    let exp = settings
        .backoff_base
        .saturating_mul(2u32.saturating_pow(attempt.min(16)));
    let d = exp.min(settings.backoff_max);
    let half = d / 2;
    let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter_ms)
}

/// Runs `op` until it succeeds, fails with a non-retryable error, or the retries are spent.
/// Returns the result and how many retries were made.
pub(crate) async fn with_retry<T, F, Fut>(
    settings: &HetznerSettings,
    what: &str,
    mut op: F,
) -> (Result<T, ProviderError>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 0u32;
    loop {
        let result = op().await;
        let wait = match &result {
            Err(ProviderError::RateLimited { retry_after }) => {
                if *retry_after > settings.max_rate_limit_wait {
                    return (result, attempt);
                }
                *retry_after
            }
            Err(ProviderError::Transient(_)) => backoff(settings, attempt),
            _ => return (result, attempt),
        };
        if attempt >= settings.max_retries {
            tracing::warn!(what, attempt, "giving up after retries");
            return (result, attempt);
        }
        if let Err(e) = &result {
            tracing::info!(what, attempt, ?wait, error = %e, "retrying provider call");
        }
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut s = HetznerSettings::new("t");
        s.backoff_base = Duration::from_millis(100);
        s.backoff_max = Duration::from_millis(1000);
        for _ in 0..50 {
            let d0 = backoff(&s, 0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d9 = backoff(&s, 9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000));
        }
    }
}
