//! Settings of the Hetzner Cloud provider.

use std::time::Duration;

use crate::firewall::{FirewallPolicy, OperatorKey};

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
    /// The Cloud Firewall every created server gets; `None`: none.
    pub firewall: Option<FirewallPolicy>,
    /// The operator's SSH key, registered in the project (if it is not yet) and named in
    /// every create request; `None`: only the keys in each `ServerSpec`.
    pub operator_key: Option<OperatorKey>,
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
            firewall: None,
            operator_key: None,
        }
    }

    /// Same settings with this firewall for created servers.
    pub fn with_firewall(mut self, firewall: FirewallPolicy) -> Self {
        self.firewall = Some(firewall);
        self
    }

    /// Same settings with the operator's key registered and given to every server.
    pub fn with_operator_key(mut self, key: OperatorKey) -> Self {
        self.operator_key = Some(key);
        self
    }

    /// Same settings against another endpoint (e.g. `http://127.0.0.1:PORT/v1`).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }
}
