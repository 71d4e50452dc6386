//! HTTP calls to the Hetzner Cloud API.
//!
//! Requests use the `hcloud` crate's `Configuration` (endpoint mapping, token, client) and
//! its models for every body. They are sent here rather than through `hcloud::apis`
//! because the generated functions drop response headers, and the provider must read
//! `RateLimit-*` and `Retry-After` to honour the rate limit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hcloud::apis::configuration::Configuration;
use reqwest12::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::HetznerSettings;
use super::errors::{budget_exhausted, map_error, retry_after};
use crate::ProviderError;

/// Sends requests and maps failures; remembers when the rate limit allows the next one.
pub(crate) struct Transport {
    config: Configuration,
    not_before: Mutex<Option<Instant>>,
}

impl Transport {
    /// Builds the `hcloud` configuration for the settings' endpoint and token.
    pub(crate) fn new(settings: &HetznerSettings) -> Result<Self, ProviderError> {
        if settings.token.trim().is_empty() {
            return Err(ProviderError::Auth(
                "no Hetzner API token configured: set one in dayshift.toml".into(),
            ));
        }
        let client = reqwest12::Client::builder()
            .timeout(settings.request_timeout)
            .build()
            .map_err(|e| ProviderError::Invalid(format!("cannot build HTTP client: {e}")))?;
        let mut config = Configuration::new();
        config.base_path_mapping.insert(
            super::DEFAULT_ENDPOINT.to_string(),
            settings.endpoint.trim_end_matches('/').to_string(),
        );
        config.client = client;
        config.bearer_access_token = Some(settings.token.clone());
        config.user_agent = Some(format!("dayshift/{}", env!("CARGO_PKG_VERSION")));
        Ok(Self {
            config,
            not_before: Mutex::new(None),
        })
    }

    /// The base URL requests go to.
    pub(crate) fn base(&self) -> &str {
        self.config.get_default_base_path()
    }

    async fn wait_for_budget(&self) {
        let until = self.not_before.lock().ok().and_then(|g| *g);
        if let Some(until) = until {
            let now = Instant::now();
            if until > now {
                tracing::debug!(wait = ?(until - now), "waiting for the rate limit to refill");
                tokio::time::sleep(until - now).await;
            }
        }
    }

    fn remember_budget(&self, wait: Option<Duration>) {
        if let Ok(mut g) = self.not_before.lock() {
            *g = wait.map(|w| Instant::now() + w);
        }
    }

    /// Sends one request and decodes the JSON answer.
    pub(crate) async fn send<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, ProviderError> {
        self.wait_for_budget().await;
        let what = format!("{method} {path}");
        let url = format!("{}{}", self.base(), path);
        let mut req = self.config.client.request(method, &url).query(query);
        if let Some(ua) = &self.config.user_agent {
            req = req.header(reqwest12::header::USER_AGENT, ua);
        }
        if let Some(token) = &self.config.bearer_access_token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ProviderError::Transient(format!("{what}: cannot reach {url}: {e}")))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| ProviderError::Transient(format!("{what}: reading the answer: {e}")))?;
        if budget_exhausted(&headers) {
            self.remember_budget(retry_after(&headers));
        } else {
            self.remember_budget(None);
        }
        if status.is_client_error() || status.is_server_error() {
            let err = map_error(status, &headers, &text, &what);
            tracing::debug!(%status, error = %err, "provider call failed");
            return Err(err);
        }
        serde_json::from_str(&text).map_err(|e| {
            ProviderError::Transient(format!(
                "{what}: unexpected answer from {url} ({e}); is the endpoint a Hetzner Cloud API?"
            ))
        })
    }
}
