//! A small typed client of the Instance API on reqwest, with jittered retries.

use std::time::Duration;

use rand::Rng;
use reqwest12::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ScalewaySettings;
use super::errors::{map_error, network};
use crate::ProviderError;

/// What to send.
pub(crate) enum Body<'a> {
    /// Nothing.
    None,
    /// JSON.
    Json(serde_json::Value),
    /// `text/plain` (user data).
    Text(&'a str),
}

/// The HTTP client bound to one account.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest12::Client,
    settings: ScalewaySettings,
}

impl Client {
    /// Builds the client.
    pub(crate) fn new(settings: ScalewaySettings) -> Result<Self, ProviderError> {
        if settings.secret_key.trim().is_empty() {
            return Err(ProviderError::Auth(
                "the Scaleway secret key is empty (set SCW_SECRET_KEY)".into(),
            ));
        }
        let http = reqwest12::Client::builder()
            .timeout(settings.request_timeout)
            .build()
            .map_err(|e| ProviderError::Invalid(format!("cannot build HTTP client: {e}")))?;
        Ok(Self { http, settings })
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &ScalewaySettings {
        &self.settings
    }

    fn url(&self, zone: &str, path: &str) -> String {
        format!("{}/instance/v1/zones/{zone}{path}", self.settings.endpoint)
    }

    /// One request, no retries: the status and body of a success, else a typed error.
    pub(crate) async fn once(
        &self,
        method: Method,
        zone: &str,
        path: &str,
        body: &Body<'_>,
    ) -> Result<(StatusCode, String), ProviderError> {
        let what = format!("{method} {path} in {zone}");
        let mut req = self
            .http
            .request(method, self.url(zone, path))
            .header("X-Auth-Token", &self.settings.secret_key);
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(v),
            Body::Text(t) => req.header("Content-Type", "text/plain").body(t.to_string()),
        };
        let resp = req.send().await.map_err(|e| network(&what, &e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.map_err(|e| network(&what, &e))?;
        if status.is_success() {
            Ok((status, text))
        } else {
            Err(map_error(status.as_u16(), retry_after, &text, &what))
        }
    }

    /// A request retried on transient errors and rate limits.
    pub(crate) async fn call(
        &self,
        method: Method,
        zone: &str,
        path: &str,
        body: Body<'_>,
    ) -> Result<(StatusCode, String), ProviderError> {
        let mut attempt = 0u32;
        loop {
            let result = self.once(method.clone(), zone, path, &body).await;
            let wait = match &result {
                Err(ProviderError::RateLimited { retry_after })
                    if *retry_after <= self.settings.max_rate_limit_wait =>
                {
                    *retry_after
                }
                Err(ProviderError::Transient(_)) => self.backoff(attempt),
                _ => return result,
            };
            if attempt >= self.settings.max_retries {
                tracing::warn!(%method, path, zone, attempt, "giving up after retries");
                return result;
            }
            if let Err(e) = &result {
                tracing::info!(%method, path, zone, attempt, ?wait, error = %e, "retrying Scaleway call");
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// `GET`, decoded.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        zone: &str,
        path: &str,
    ) -> Result<T, ProviderError> {
        let (_, text) = self.call(Method::GET, zone, path, Body::None).await?;
        decode(&text, path)
    }

    /// A JSON request, decoded.
    pub(crate) async fn send_json<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        zone: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ProviderError> {
        let value = serde_json::to_value(body)
            .map_err(|e| ProviderError::Invalid(format!("cannot encode {path}: {e}")))?;
        let (_, text) = self.call(method, zone, path, Body::Json(value)).await?;
        decode(&text, path)
    }

    /// The delay before retry number `attempt`: exponential, capped, jittered in `[d/2, d]`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let s = &self.settings;
        let exp = s
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempt.min(16)));
        let d = exp.min(s.backoff_max);
        let half = d / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// Decodes a JSON answer; an undecodable one is transient (a proxy's page, a cut answer).
pub(crate) fn decode<T: DeserializeOwned>(text: &str, path: &str) -> Result<T, ProviderError> {
    serde_json::from_str(text).map_err(|e| {
        ProviderError::Transient(format!("unexpected answer to {path}: {e}; retry later"))
    })
}
