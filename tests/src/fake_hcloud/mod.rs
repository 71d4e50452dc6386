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
pub mod json;
mod servers;
mod ssh_keys;
pub mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use api_error::ApiError;
pub use state::{CallRecord, Fault, FaultKind};

use crate::test_host::HostManager;
use state::Account;

/// Marks a request whose actions must run this long (from a `slow_action` fault).
#[derive(Debug, Clone, Copy)]
pub struct SlowAction(pub Duration);

/// Marks a create request whose test host must ignore the user data's host key.
#[derive(Debug, Clone, Copy)]
pub struct WrongHostKey;

/// Marks a request whose action must end in `error` with this code.
#[derive(Debug, Clone)]
pub struct FailAction(pub String);

/// State shared by every handler.
pub struct Shared {
    account: Mutex<Account>,
    /// The test hosts, unless disabled.
    pub hosts: Option<Arc<HostManager>>,
    ip_prefix: [u8; 3],
    next_ip: AtomicU32,
}

impl Shared {
    /// Locks the account (recovering from a poisoned lock: the data stays usable).
    pub fn lock(&self) -> MutexGuard<'_, Account> {
        self.account.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh public IPv4 for a server: `127.a.b.N` on loopback, free on the SSH port.
    pub fn allocate_ip(&self) -> Ipv4Addr {
        for _ in 0..2000 {
            let n = self.next_ip.fetch_add(1, Ordering::SeqCst);
            let p = self.ip_prefix;
            let ip = Ipv4Addr::new(
                p[0],
                p[1],
                (p[2] as u32 + n / 250) as u8,
                (n % 250 + 2) as u8,
            );
            match &self.hosts {
                Some(h) if !h.port_free(ip) => continue,
                _ => return ip,
            }
        }
        // Everything tried is taken: hand out the next address; sshd will report the clash.
        let n = self.next_ip.fetch_add(1, Ordering::SeqCst);
        Ipv4Addr::new(
            self.ip_prefix[0],
            self.ip_prefix[1],
            255,
            (n % 250 + 2) as u8,
        )
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

/// A running fake; stops (and takes its test hosts down) when dropped.
pub struct FakeHcloud {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeHcloud {
    /// Starts a fake on the options' address.
    pub async fn start(opts: FakeOptions) -> anyhow::Result<Self> {
        let hosts = if opts.hosts {
            Some(Arc::new(HostManager::new()?))
        } else {
            None
        };
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(7)
            ^ std::process::id().wrapping_mul(2_654_435_761);
        let ip_prefix = [127, (seed % 250 + 2) as u8, ((seed >> 8) % 200 + 1) as u8];
        let account = Account {
            action_duration: opts.action_duration,
            ..Account::default()
        };
        let shared = Arc::new(Shared {
            account: Mutex::new(account),
            hosts,
            ip_prefix,
            next_ip: AtomicU32::new(0),
        });
        let listener = TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "fake-hcloud stopped");
            }
        });
        tracing::info!(%addr, "fake-hcloud listening");
        Ok(Self {
            addr,
            shared,
            stop: Some(tx),
        })
    }

    /// Address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Marks a (server type, location) pair as out of capacity.
    pub fn set_unavailable(&self, server_type: &str, location: &str) {
        self.shared
            .lock()
            .unavailable
            .push((server_type.into(), location.into()));
    }

    /// Replaces the request budget: `limit` requests, refilled at `per_second`.
    pub fn set_rate_limit(&self, limit: u32, per_second: f64) {
        self.shared.lock().budget = state::Budget::new(limit, per_second);
    }

    /// Every call answered so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.lock().calls.clone()
    }

    /// How many calls of `METHOD /route` were answered with this status.
    pub fn count_calls(&self, method: &str, path: &str, status: u16) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.method == method && c.path == path && c.status == status)
            .count()
    }

    /// User data a server was created with.
    pub fn user_data_of(&self, id: i64) -> Option<String> {
        self.shared
            .lock()
            .servers
            .get(&id)
            .and_then(|s| s.user_data.clone())
    }

    /// The test host manager, when hosts are enabled.
    pub fn hosts(&self) -> Option<&Arc<HostManager>> {
        self.shared.hosts.as_ref()
    }

    /// Port the test hosts' sshd listen on.
    pub fn ssh_port(&self) -> u16 {
        self.shared
            .hosts
            .as_ref()
            .map(|h| h.port())
            .unwrap_or_else(crate::test_host::ssh_port)
    }
}

impl Drop for FakeHcloud {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = &self.shared.hosts {
            h.stop_all();
        }
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
        .route("/v1/server_types", get(catalog_routes::server_types))
        .route("/v1/server_types/{id}", get(catalog_routes::server_type))
        .route("/v1/locations", get(catalog_routes::locations))
        .route("/v1/locations/{id}", get(catalog_routes::location))
        .route("/v1/datacenters", get(catalog_routes::datacenters))
        .route("/v1/images", get(catalog_routes::images))
        .route("/v1/images/{id}", get(catalog_routes::image))
        .route("/v1/pricing", get(catalog_routes::pricing))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            faults_and_log,
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

/// Applies armed faults and logs every call.
async fn faults_and_log(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let fault = shared.lock().take_fault(&method, &path);
    let resp = match fault {
        Some(FaultKind::ServerError { status }) => server_error(status),
        Some(FaultKind::RateLimit {
            reset_after_secs,
            retry_after_secs,
        }) => {
            let mut e = ApiError::rate_limited(unix_now() + reset_after_secs);
            if let Some(secs) =
                retry_after_secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
            {
                e.headers.insert("Retry-After", secs);
            }
            e.into_response()
        }
        Some(FaultKind::ResourceUnavailable) => ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "resource_unavailable",
            "error during placement: the requested resource is currently unavailable",
        )
        .into_response(),
        Some(FaultKind::Delay { ms }) => {
            // Logged up front with status 0: a client that times out never gets an answer.
            shared.lock().calls.push(CallRecord {
                method: method.clone(),
                path: path.clone(),
                status: 0,
            });
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        Some(FaultKind::LoseResponse) => {
            let _lost = next.run(req).await;
            server_error(504)
        }
        Some(FaultKind::WrongHostKey) => {
            req.extensions_mut().insert(WrongHostKey);
            next.run(req).await
        }
        Some(FaultKind::ActionError { code }) => {
            req.extensions_mut().insert(FailAction(code));
            next.run(req).await
        }
        Some(FaultKind::SlowAction { ms }) => {
            req.extensions_mut()
                .insert(SlowAction(Duration::from_millis(ms)));
            next.run(req).await
        }
        None => {
            if shared.lock().budget.take() {
                next.run(req).await
            } else {
                ApiError::rate_limited_bare().into_response()
            }
        }
    };
    let mut resp = resp;
    if !resp.headers().contains_key("ratelimit-limit") {
        let (limit, remaining, reset) = shared.lock().budget.headers();
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
    shared.lock().calls.push(CallRecord {
        method,
        path,
        status: resp.status().as_u16(),
    });
    resp
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
