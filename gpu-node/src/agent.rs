//! The node agent: registers with the ingress, heartbeats with load figures,
//! re-registers when the ingress forgets it, and says goodbye at the end.

use crate::api::AppState;
use dayshift_config::node::NodeConfig;
use dayshift_config::protocol::*;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;

/// What registration reports besides the models (fixed for the node's life).
#[derive(Clone)]
pub struct NodeFacts {
    /// API base URL.
    pub api_url: String,
    /// TLS certificate fingerprint.
    pub tls_cert_sha256: Option<String>,
    /// Devices.
    pub gpus: Vec<GpuFacts>,
    /// Capacity.
    pub capacity: Capacity,
}

/// An HTTP client builder for talking to the ingress: trusts the configured ingress CA
/// (file or inline PEM) besides the system roots, and connects to `ingress_address` when
/// one is set. Used for registration, heartbeats and the model mirror.
pub fn ingress_http(cfg: &NodeConfig) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut b = reqwest::Client::builder();
    if let Some(ca) = &cfg.ingress_ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| anyhow::anyhow!("cannot read ingress_ca_file {}: {e}", ca.display()))?;
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    if let Some(pem) = &cfg.ingress_ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
    }
    if let (Some(addr), Some(url)) = (cfg.ingress_address, cfg.ingress_url.as_deref())
        && let Some(host) = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    {
        b = b.resolve(&host, addr);
    }
    Ok(b)
}

/// A client for the ingress's node endpoints.
pub struct Agent {
    http: reqwest::Client,
    base: String,
    node_id: String,
    join_token: Secret,
    api_token: Secret,
    session: tokio::sync::Mutex<Option<Secret>>,
}

enum Beat {
    Ok(HeartbeatAction),
    Unknown,
}

impl Agent {
    /// A client for `cfg.ingress_url`; `None` when the node runs standalone.
    /// `api_token` is the credential the node's API demands, handed to the ingress at
    /// registration.
    pub fn new(cfg: &NodeConfig, api_token: Secret) -> anyhow::Result<Option<Self>> {
        let Some(base) = &cfg.ingress_url else {
            return Ok(None);
        };
        let b = ingress_http(cfg)?
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5));
        Ok(Some(Agent {
            http: b.build()?,
            base: base.trim_end_matches('/').to_string(),
            node_id: cfg.node_id.clone(),
            join_token: cfg.join_token.clone(),
            api_token,
            session: tokio::sync::Mutex::new(None),
        }))
    }

    async fn register(&self, app: &AppState, facts: &NodeFacts) -> anyhow::Result<u64> {
        let body = RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            node_id: self.node_id.clone(),
            join_token: self.join_token.clone(),
            api_url: facts.api_url.clone(),
            tls_cert_sha256: facts.tls_cert_sha256.clone(),
            models: app.served_models(),
            gpus: facts.gpus.clone(),
            capacity: facts.capacity.clone(),
            node_version: env!("CARGO_PKG_VERSION").into(),
            api_token: self.api_token.clone(),
        };
        let resp = self
            .http
            .post(format!("{}{REGISTER_PATH}", self.base))
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            anyhow::bail!(
                "ingress refused registration ({status}): {}",
                text.chars().take(300).collect::<String>()
            );
        }
        let r: RegisterResponse = resp.json().await?;
        *self.session.lock().await = Some(r.session_token);
        Ok(r.heartbeat_interval_secs.clamp(1, 300))
    }

    async fn register_until_ok(
        &self,
        app: &AppState,
        facts: &NodeFacts,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<u64> {
        let mut wait = 1u64;
        loop {
            match self.register(app, facts).await {
                Ok(iv) => {
                    tracing::info!(node_id = %self.node_id, "registered with the ingress");
                    return Some(iv);
                }
                Err(e) => tracing::warn!("registration failed, retrying in {wait}s: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                _ = stop.changed() => return None,
            }
            wait = (wait * 2).min(10);
        }
    }

    async fn heartbeat(&self, app: &AppState) -> anyhow::Result<Beat> {
        let m = &app.metrics;
        let body = HeartbeatRequest {
            node_id: self.node_id.clone(),
            state: app.state(),
            load: LoadFigures {
                running_sequences: m.running.load(Relaxed) as u32,
                queued_requests: m.queued.load(Relaxed) as u32,
                kv_cache_used_tokens: m.kv_used_tokens.load(Relaxed),
                kv_cache_total_tokens: m.kv_total_tokens.load(Relaxed),
                generation_tokens_per_second: m.tokens_per_second(),
                requests_in_flight: m.http_in_flight.load(Relaxed) as u32,
            },
        };
        let token = self.session.lock().await.clone().unwrap_or_default();
        let resp = self
            .http
            .post(format!("{}{HEARTBEAT_PATH}", self.base))
            .bearer_auth(token.expose())
            .json(&body)
            .send()
            .await?;
        let s = resp.status();
        if s == reqwest::StatusCode::UNAUTHORIZED || s == reqwest::StatusCode::NOT_FOUND {
            return Ok(Beat::Unknown);
        }
        if !s.is_success() {
            anyhow::bail!("heartbeat answered {s}");
        }
        let r: HeartbeatResponse = resp.json().await.unwrap_or_default();
        Ok(match r.action {
            HeartbeatAction::Reregister => Beat::Unknown,
            a => Beat::Ok(a),
        })
    }

    /// Registers, then heartbeats until `stop` flips; sends `true` on `drain` when the
    /// ingress asks the node to drain.
    pub async fn run(
        self: Arc<Self>,
        app: Arc<AppState>,
        facts: NodeFacts,
        mut stop: watch::Receiver<bool>,
        drain: watch::Sender<bool>,
    ) {
        let Some(mut interval) = self.register_until_ok(&app, &facts, &mut stop).await else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(interval)) => {}
                _ = stop.changed() => return,
            }
            match self.heartbeat(&app).await {
                Ok(Beat::Ok(HeartbeatAction::Drain)) => {
                    tracing::info!("the ingress asked this node to drain");
                    let _ = drain.send(true);
                }
                Ok(Beat::Ok(_)) => {}
                Ok(Beat::Unknown) => {
                    tracing::warn!(
                        "the ingress does not know this node (restarted?): registering again"
                    );
                    match self.register_until_ok(&app, &facts, &mut stop).await {
                        Some(iv) => interval = iv,
                        None => return,
                    }
                }
                Err(e) => tracing::warn!("heartbeat failed: {e}"),
            }
        }
    }

    /// Tells the ingress that this node cannot start and why (before it registered, so
    /// with the join token as bearer). A few tries, as the ingress may be restarting;
    /// returns whether the ingress took the report.
    pub async fn report_start_failure(
        &self,
        kind: StartFailureKind,
        reason: &str,
        gpus: Vec<GpuFacts>,
    ) -> bool {
        let body = StartFailure {
            protocol_version: PROTOCOL_VERSION,
            node_id: self.node_id.clone(),
            kind,
            reason: reason.into(),
            gpus,
        };
        for attempt in 1..=3u64 {
            match self
                .http
                .post(format!("{}{FAIL_PATH}", self.base))
                .bearer_auth(self.join_token.expose())
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(
                        kind = kind.as_str(),
                        "start failure reported to the ingress"
                    );
                    return true;
                }
                Ok(r) => {
                    // A refusal (unknown node, used-up token) will not change on a retry.
                    tracing::warn!(
                        "the ingress refused the start failure report: {}",
                        r.status()
                    );
                    return false;
                }
                Err(e) => tracing::warn!("reporting the start failure failed (try {attempt}): {e}"),
            }
            tokio::time::sleep(Duration::from_secs(attempt)).await;
        }
        false
    }

    /// Tells the ingress the node leaves (best effort, one try).
    pub async fn goodbye(&self, reason: &str) {
        let token = self.session.lock().await.clone();
        let Some(token) = token else { return };
        let body = GoodbyeRequest {
            node_id: self.node_id.clone(),
            reason: reason.into(),
        };
        match self
            .http
            .post(format!("{}{GOODBYE_PATH}", self.base))
            .bearer_auth(token.expose())
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => tracing::info!("said goodbye to the ingress"),
            // After an ingress-ordered drain the ingress has already taken the node out
            // of routing and forgotten its session: nothing left to say.
            Ok(r)
                if r.status() == reqwest::StatusCode::UNAUTHORIZED
                    || r.status() == reqwest::StatusCode::NOT_FOUND =>
            {
                tracing::info!("the ingress had already let this node go ({})", r.status())
            }
            Ok(r) => tracing::warn!("goodbye answered {}", r.status()),
            Err(e) => tracing::warn!("goodbye failed: {e}"),
        }
    }
}
