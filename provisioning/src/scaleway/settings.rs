//! Settings of the Scaleway Instances provider.

use std::time::Duration;

use crate::firewall::FirewallPolicy;

/// The public Scaleway API endpoint (the Instance API lives under `/instance/v1`).
pub const DEFAULT_ENDPOINT: &str = "https://api.scaleway.com";

/// How to reach Scaleway and how patiently to retry.
#[derive(Debug, Clone)]
pub struct ScalewaySettings {
    /// API base URL without `/instance/v1`; tests point it at the fake.
    pub endpoint: String,
    /// Secret key, sent as `X-Auth-Token`.
    pub secret_key: String,
    /// Project the servers are created in (`None`: the key's default project).
    pub project: Option<String>,
    /// Zone used when a placement names none, e.g. `fr-par-2`.
    pub default_zone: String,
    /// Every zone dayshift may have servers in (listed and searched by `list`/`get`).
    pub zones: Vec<String>,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// How long to wait for a server to run (or to be gone after terminate).
    pub action_timeout: Duration,
    /// How often to poll a server's state.
    pub poll_interval: Duration,
    /// Retries of one call after transient errors or rate limiting.
    pub max_retries: u32,
    /// First backoff delay after a transient error; doubles each retry, with jitter.
    pub backoff_base: Duration,
    /// Upper bound of one backoff delay.
    pub backoff_max: Duration,
    /// Longest wait honoured for a rate limit before giving up with `RateLimited`.
    pub max_rate_limit_wait: Duration,
    /// The security group every created Instance goes into (per zone); `None`: the
    /// zone's default security group.
    pub firewall: Option<FirewallPolicy>,
}

impl ScalewaySettings {
    /// Settings for the public API with the given secret key and default timings.
    pub fn new(secret_key: impl Into<String>) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            secret_key: secret_key.into(),
            project: None,
            default_zone: "fr-par-2".to_string(),
            zones: vec!["fr-par-2".to_string()],
            request_timeout: Duration::from_secs(30),
            action_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(3),
            max_retries: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_rate_limit_wait: Duration::from_secs(120),
            firewall: None,
        }
    }

    /// Same settings against another endpoint (e.g. `http://127.0.0.1:PORT`).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }

    /// Same settings with this security group for created Instances.
    pub fn with_firewall(mut self, firewall: FirewallPolicy) -> Self {
        self.firewall = Some(firewall);
        self
    }

    /// Same settings with these zones; the first one becomes the default zone.
    pub fn with_zones(mut self, zones: &[&str]) -> Self {
        if let Some(first) = zones.first() {
            self.default_zone = first.to_string();
        }
        self.zones = zones.iter().map(|z| z.to_string()).collect();
        self
    }

    /// Every zone to search: the configured ones, the default zone included.
    pub(crate) fn all_zones(&self) -> Vec<String> {
        let mut all = self.zones.clone();
        if !all.contains(&self.default_zone) {
            all.push(self.default_zone.clone());
        }
        all
    }
}
