//! A fake of the Hetzner Cloud API, faithful enough that the `hcloud` crate and dayshift's
//! `hetzner` provider work against it unchanged. Servers get real OpenSSH test hosts
//! unless hosts are disabled. Faults are injected through `POST /__admin/faults`.
// Handlers return `Result<_, ApiError>`; the error is large but only built on failures.
#![allow(clippy::result_large_err)]

mod actions;
mod admin;
mod api_error;
pub mod catalog;
mod catalog_routes;
mod firewall_actions;
mod firewall_rules;
mod firewalls;
pub mod json;
mod servers;
mod ssh_keys;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

pub use crate::fake_base::{CallRecord, FailAction, Fault, FaultKind, SlowAction, WrongHostKey};
pub use api_error::ApiError;

use crate::fake_base::{Base, Fake, ProviderApi, faults_and_log};
use state::Account;

/// State shared by every handler.
pub type Shared = crate::fake_base::Shared<Account>;

impl ProviderApi for Account {
    fn fault_answer(fault: &FaultKind) -> Response {
        match fault {
            FaultKind::RateLimit {
                reset_after_secs,
                retry_after_secs,
            } => {
                let mut e = ApiError::rate_limited(unix_now() + reset_after_secs);
                if let Some(secs) =
                    retry_after_secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
                {
                    e.headers.insert("Retry-After", secs);
                }
                e.into_response()
            }
            FaultKind::ResourceUnavailable => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "resource_unavailable",
                "error during placement: the requested resource is currently unavailable",
            )
            .into_response(),
            FaultKind::ServerError { status } => server_error(*status),
            _ => server_error(500),
        }
    }

    /// Hetzner's request budget: an empty one answers `429` before the API.
    fn admit(&mut self) -> Option<Response> {
        (!self.budget.take()).then(|| ApiError::rate_limited_bare().into_response())
    }

    /// `X-Correlation-Id` on every answer (clients show it with errors), and the
    /// `RateLimit-*` headers on every answer that has none yet.
    fn finish(&mut self, resp: &mut Response) {
        self.answered += 1;
        let id = format!("{:016x}", self.answered.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert("X-Correlation-Id", v);
        }
        if resp.headers().contains_key("ratelimit-limit") {
            return;
        }
        let (limit, remaining, reset) = self.budget.headers();
        let h = resp.headers_mut();
        for (name, value) in [
            ("RateLimit-Limit", limit as u64),
            ("RateLimit-Remaining", remaining as u64),
            ("RateLimit-Reset", reset),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
                h.insert(name, v);
            }
        }
    }
}

/// Options of a fake instance.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// Start a real sshd test host per server.
    pub hosts: bool,
    /// How long create actions run by default.
    pub action_duration: Duration,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hosts: true,
            action_duration: Duration::from_millis(300),
        }
    }
}

/// A running fake Hetzner Cloud API; stops (and takes its test hosts down) when dropped.
pub type FakeHcloud = Fake<Account>;

impl Fake<Account> {
    /// Starts a fake on the options' address.
    pub async fn start(opts: FakeOptions) -> anyhow::Result<Self> {
        let account = Account {
            action_duration: opts.action_duration,
            ..Account::default()
        };
        let shared = Arc::new(Shared::new(account, Base::new(opts.hosts, 2_654_435_761)?));
        Fake::serve(opts.listen, shared.clone(), router(shared), "fake-hcloud").await
    }

    /// The API base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr())
    }

    /// Marks a (server type, location) pair as out of capacity.
    pub fn set_unavailable(&self, server_type: &str, location: &str) {
        self.shared()
            .lock()
            .unavailable
            .push((server_type.into(), location.into()));
    }

    /// Replaces the request budget: `limit` requests, refilled at `per_second`.
    pub fn set_rate_limit(&self, limit: u32, per_second: f64) {
        self.shared().lock().budget = state::Budget::new(limit, per_second);
    }

    /// The rules in effect on a server, gathered from every firewall applied to it:
    /// `{"server", "firewalls": [ids], "firewall_names": [...], "rules": [rule objects]}`
    /// (`None` for an unknown server). Also at `GET /__admin/servers/{id}/firewall`.
    pub fn server_firewall(&self, id: i64) -> Option<serde_json::Value> {
        firewalls::effective_rules(&self.shared().lock(), id)
    }

    /// The firewall named so, as `GET /v1/firewalls/{id}` shows it.
    pub fn firewall_by_name(&self, name: &str) -> Option<serde_json::Value> {
        let account = self.shared().lock();
        let f = account.firewalls.values().find(|f| f.name == name)?;
        Some(firewalls::render(&account, f))
    }

    /// User data a server was created with.
    pub fn user_data_of(&self, id: i64) -> Option<String> {
        self.shared()
            .lock()
            .servers
            .get(&id)
            .and_then(|s| s.user_data.clone())
    }
}

/// The full router: `/v1/...` (authenticated, faults, call log) and `/__admin/...`.
pub fn router(shared: Arc<Shared>) -> Router {
    let v1 = Router::new()
        .route("/v1/servers", get(servers::list).post(servers::create))
        .route(
            "/v1/servers/{id}",
            get(servers::get).delete(servers::delete),
        )
        .route("/v1/servers/{id}/actions", get(servers::actions))
        .route("/v1/actions", get(actions::list))
        .route("/v1/actions/{id}", get(actions::get))
        .route("/v1/ssh_keys", get(ssh_keys::list).post(ssh_keys::create))
        .route(
            "/v1/ssh_keys/{id}",
            get(ssh_keys::get).delete(ssh_keys::delete),
        )
        .route(
            "/v1/firewalls",
            get(firewalls::list).post(firewalls::create),
        )
        .route("/v1/firewalls/actions", get(firewall_actions::all_actions))
        .route(
            "/v1/firewalls/actions/{id}",
            get(firewall_actions::any_action),
        )
        .route(
            "/v1/firewalls/{id}",
            get(firewalls::get)
                .put(firewalls::update)
                .delete(firewalls::delete),
        )
        .route("/v1/firewalls/{id}/actions", get(firewall_actions::actions))
        .route(
            "/v1/firewalls/{id}/actions/set_rules",
            post(firewall_actions::set_rules),
        )
        .route(
            "/v1/firewalls/{id}/actions/apply_to_resources",
            post(firewall_actions::apply_to_resources),
        )
        .route(
            "/v1/firewalls/{id}/actions/remove_from_resources",
            post(firewall_actions::remove_from_resources),
        )
        .route(
            "/v1/firewalls/{id}/actions/{action_id}",
            get(firewall_actions::action),
        )
        .route("/v1/server_types", get(catalog_routes::server_types))
        .route("/v1/server_types/{id}", get(catalog_routes::server_type))
        .route("/v1/locations", get(catalog_routes::locations))
        .route("/v1/locations/{id}", get(catalog_routes::location))
        .route("/v1/datacenters", get(catalog_routes::datacenters_gone))
        .route(
            "/v1/datacenters/{id}",
            get(catalog_routes::datacenters_gone),
        )
        .route("/v1/images", get(catalog_routes::images))
        .route("/v1/images/{id}", get(catalog_routes::image))
        .route("/v1/pricing", get(catalog_routes::pricing))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            faults_and_log::<Account>,
        ))
        .layer(middleware::from_fn(auth));
    Router::new()
        .merge(v1)
        .merge(admin::router())
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(shared)
}

/// Any non-empty bearer token is accepted; anything else is `401 unauthorized`.
async fn auth(req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.trim().is_empty());
    if !ok {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unable to authenticate",
        )
        .into_response();
    }
    next.run(req).await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn server_error(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match status {
        502 | 504 => (code, Html("<html><body><h1>Bad Gateway</h1></body></html>")).into_response(),
        503 => {
            ApiError::new(code, "unavailable", "service temporarily unavailable").into_response()
        }
        _ => ApiError::new(code, "service_error", "internal error, please retry").into_response(),
    }
}
