//! Settings of the Hetzner Cloud provider.

use std::time::Duration;

/// The public Hetzner Cloud API endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://api.hetzner.cloud/v1";

/// How to reach Hetzner Cloud and how patiently to retry.
#[derive(Debug, Clone)]
pub struct HetznerSettings {
    /// API base URL including `/v1`; tests point it at the fake.
    pub endpoint: String,
    /// API token (read and write).
    pub token: String,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// How long to wait for a create or delete action to finish.
    pub action_timeout: Duration,
    /// How often to poll a running action.
    pub poll_interval: Duration,
    /// Retries of one call after transient errors or rate limiting.
    pub max_retries: u32,
    /// First backoff delay after a transient error; doubles each retry, with jitter.
    pub backoff_base: Duration,
    /// Upper bound of one backoff delay.
    pub backoff_max: Duration,
    /// Longest wait honoured for a rate limit before giving up with `RateLimited`.
    pub max_rate_limit_wait: Duration,
}

impl HetznerSettings {
    /// Settings for the public API with the given token and default timings.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: token.into(),
            request_timeout: Duration::from_secs(30),
            action_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(2),
            max_retries: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_rate_limit_wait: Duration::from_secs(120),
        }
    }

    /// Same settings against another endpoint (e.g. `http://127.0.0.1:PORT/v1`).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }
}
