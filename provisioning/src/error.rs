//! Typed provider errors: callers decide on retries from the variant, never from text.

use std::time::Duration;

/// What went wrong when talking to a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The server type or location has no capacity right now; try another placement.
    #[error("no capacity: {0} (try another location or server type, or retry later)")]
    Capacity(String),
    /// The provider's rate limit was hit; retry after the given delay.
    #[error("rate limited by the provider: retry after {retry_after:?}")]
    RateLimited {
        /// How long to wait before the next request.
        retry_after: Duration,
    },
    /// A temporary failure (5xx, network, timeout); retrying later may succeed.
    #[error("transient provider error: {0} (retry later)")]
    Transient(String),
    /// The credentials were refused.
    #[error("authentication failed: {0} (check the provider API token in dayshift.toml)")]
    Auth(String),
    /// The request was rejected as invalid; retrying the same request will not help.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The server (or other object) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
}

impl ProviderError {
    /// True for errors where retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. } | ProviderError::Transient(_)
        )
    }
}
