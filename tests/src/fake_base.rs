//! What fake-hcloud and fake-scaleway share: serving a router on a port until dropped,
//! the real OpenSSH test hosts and the loopback addresses servers get, faults armed
//! through `/__admin/faults` (applied by one middleware, answered in each provider's own
//! error shapes) and the log of every call.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::test_host::HostManager;

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this 5xx status (`500` service_error, `503` unavailable, `502`/`504`
    /// an HTML page as from a load balancer).
    ServerError {
        /// HTTP status.
        status: u16,
    },
    /// Answer `429 rate_limit_exceeded` with `RateLimit-*` headers resetting after N seconds.
    RateLimit {
        /// Seconds until `RateLimit-Reset` (when a budget of 3600 would be full again).
        reset_after_secs: u64,
        /// Also send `Retry-After` with this many seconds.
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Answer `412 resource_unavailable` (no capacity).
    ResourceUnavailable,
    /// Sleep this long before handling the call normally.
    Delay {
        /// Milliseconds.
        ms: u64,
    },
    /// Handle the call normally, then answer `504` as a load balancer whose backend was
    /// too slow would: the change happened, the client does not know.
    LoseResponse,
    /// Create the server, but its test host's sshd presents a host key of its own instead
    /// of the one in the user data.
    WrongHostKey,
    /// Accept the call, but the action it starts ends in `error` with this code (e.g.
    /// `resource_unavailable` when placement fails after the create was accepted).
    ActionError {
        /// Error code of the failed action.
        code: String,
    },
    /// Handle the call normally, but any action it starts runs this long.
    SlowAction {
        /// Milliseconds.
        ms: u64,
    },
}

/// A fault armed for the next `count` calls of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Route as written in the API docs, e.g. `/v1/servers` or `/v1/servers/{id}`.
    pub path: String,
    /// How many calls it hits.
    pub count: u32,
    /// What it does.
    pub fault: FaultKind,
}

/// One call seen by the fake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    /// Method.
    pub method: String,
    /// Route pattern.
    pub path: String,
    /// Status answered; `0` for a call delayed by a fault (logged before its answer).
    pub status: u16,
}

/// Marks a request whose actions must run this long (from a `slow_action` fault).
#[derive(Debug, Clone, Copy)]
pub struct SlowAction(pub Duration);

/// Marks a create request whose test host must ignore the user data's host key.
#[derive(Debug, Clone, Copy)]
pub struct WrongHostKey;

/// Marks a request whose action must end in `error` with this code.
#[derive(Debug, Clone)]
pub struct FailAction(pub String);

/// Armed faults, in order, and every call answered.
#[derive(Debug, Default)]
pub struct FaultLog {
    /// Armed faults.
    pub armed: VecDeque<Fault>,
    /// Every call answered.
    pub calls: Vec<CallRecord>,
}

impl FaultLog {
    /// Takes the first armed fault matching a call, decrementing its count.
    pub fn take(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let idx = self
            .armed
            .iter()
            .position(|f| f.method.eq_ignore_ascii_case(method) && f.path == path && f.count > 0)?;
        let f = self.armed.get_mut(idx)?;
        f.count -= 1;
        let kind = f.fault.clone();
        if f.count == 0 {
            self.armed.remove(idx);
        }
        Some(kind)
    }
}

/// What a fake's handlers share besides the provider's own state: the fault log, the
/// test hosts and the addresses handed to servers.
pub struct Base {
    log: Mutex<FaultLog>,
    /// The test hosts, unless disabled.
    pub hosts: Option<Arc<HostManager>>,
    ip_prefix: [u8; 3],
    next_ip: AtomicU32,
}

impl Base {
    /// Test hosts when `hosts`; server addresses under a `127.a.b` prefix picked from the
    /// clock and the process id (`salt` keeps two kinds of fake in one process apart).
    pub fn new(hosts: bool, salt: u32) -> anyhow::Result<Base> {
        let hosts = if hosts {
            Some(Arc::new(HostManager::new()?))
        } else {
            None
        };
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(salt)
            ^ std::process::id().wrapping_mul(salt);
        Ok(Base {
            log: Mutex::new(FaultLog::default()),
            hosts,
            ip_prefix: [127, (seed % 250 + 2) as u8, ((seed >> 8) % 200 + 1) as u8],
            next_ip: AtomicU32::new(0),
        })
    }

    /// Locks the fault log (recovering from a poisoned lock: the data stays usable).
    pub fn log(&self) -> MutexGuard<'_, FaultLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh public IPv4 for a server: `127.a.b.N` on loopback, free on the SSH port.
    pub fn allocate_ip(&self) -> Ipv4Addr {
        let p = self.ip_prefix;
        for _ in 0..2000 {
            let n = self.next_ip.fetch_add(1, Ordering::SeqCst);
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
        Ipv4Addr::new(p[0], p[1], 255, (n % 250 + 2) as u8)
    }
}

/// A fake provider's own state (account, project), as the common parts use it.
pub trait ProviderApi: Send + 'static {
    /// The provider's answer to a fault that answers in place of the API: `server_error`
    /// (also for `lose_response`, as a 504), `rate_limit` and `resource_unavailable`.
    fn fault_answer(fault: &FaultKind) -> Response;
    /// Answers an unfaulted call before the API does (a rate limit), or lets it through.
    fn admit(&mut self) -> Option<Response> {
        None
    }
    /// A last touch on every answer (e.g. rate-limit headers).
    fn finish(&mut self, _resp: &mut Response) {}
}

/// State shared by every handler of a fake: the provider's own (behind a lock) and the
/// common parts.
pub struct Shared<P> {
    state: Mutex<P>,
    /// Fault log, test hosts and server addresses.
    pub base: Base,
}

impl<P> Shared<P> {
    /// The provider's state beside the common parts.
    pub fn new(state: P, base: Base) -> Self {
        Shared {
            state: Mutex::new(state),
            base,
        }
    }

    /// Locks the provider's state (recovering from a poisoned lock: the data stays usable).
    pub fn lock(&self) -> MutexGuard<'_, P> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies armed faults and logs every call (by method and route pattern).
pub async fn faults_and_log<P: ProviderApi>(
    State(shared): State<Arc<Shared<P>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let fault = shared.base.log().take(&method, &path);
    let mut resp = match fault {
        Some(FaultKind::Delay { ms }) => {
            // Logged up front with status 0: a client that times out never gets an answer.
            shared.base.log().calls.push(CallRecord {
                method: method.clone(),
                path: path.clone(),
                status: 0,
            });
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        Some(FaultKind::LoseResponse) => {
            let _lost = next.run(req).await;
            P::fault_answer(&FaultKind::ServerError { status: 504 })
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
        Some(answered) => P::fault_answer(&answered),
        None => {
            // The lock is let go before the API handles the call.
            let refused = shared.lock().admit();
            match refused {
                Some(refused) => refused,
                None => next.run(req).await,
            }
        }
    };
    shared.lock().finish(&mut resp);
    shared.base.log().calls.push(CallRecord {
        method,
        path,
        status: resp.status().as_u16(),
    });
    resp
}

/// `/__admin/faults` (POST a fault or a list, GET, DELETE), `/__admin/calls` and
/// `/__admin/hosts`; each fake adds its own admin routes.
pub fn admin_routes<P: ProviderApi>() -> Router<Arc<Shared<P>>> {
    Router::new()
        .route(
            "/__admin/faults",
            post(add_fault::<P>)
                .get(list_faults::<P>)
                .delete(clear_faults::<P>),
        )
        .route("/__admin/calls", get(calls::<P>))
        .route("/__admin/hosts", get(hosts::<P>))
}

/// `POST /__admin/faults` with a `Fault` (or a list of them).
async fn add_fault<P: ProviderApi>(
    State(shared): State<Arc<Shared<P>>>,
    Json(body): Json<Value>,
) -> Result<StatusCode, (StatusCode, String)> {
    let faults: Vec<Fault> = if body.is_array() {
        serde_json::from_value(body)
    } else {
        serde_json::from_value(body).map(|f| vec![f])
    }
    .map_err(|e| (StatusCode::BAD_REQUEST, format!("not a fault: {e}")))?;
    shared.base.log().armed.extend(faults);
    Ok(StatusCode::NO_CONTENT)
}

async fn list_faults<P: ProviderApi>(State(shared): State<Arc<Shared<P>>>) -> Json<Value> {
    Json(json!({ "faults": shared.base.log().armed }))
}

async fn clear_faults<P: ProviderApi>(State(shared): State<Arc<Shared<P>>>) -> StatusCode {
    shared.base.log().armed.clear();
    StatusCode::NO_CONTENT
}

async fn calls<P: ProviderApi>(State(shared): State<Arc<Shared<P>>>) -> Json<Value> {
    Json(json!({ "calls": shared.base.log().calls }))
}

async fn hosts<P: ProviderApi>(State(shared): State<Arc<Shared<P>>>) -> Json<Value> {
    let list = shared
        .base
        .hosts
        .as_ref()
        .map(|h| h.describe())
        .unwrap_or_default();
    Json(json!({ "hosts": list }))
}

/// A running fake; stops (and takes its test hosts down) when dropped.
pub struct Fake<P: ProviderApi> {
    addr: SocketAddr,
    shared: Arc<Shared<P>>,
    stop: Option<oneshot::Sender<()>>,
}

impl<P: ProviderApi> Fake<P> {
    /// Serves `app` (built over `shared`) on `listen`; `name` names it in logs.
    pub async fn serve(
        listen: SocketAddr,
        shared: Arc<Shared<P>>,
        app: Router,
        name: &'static str,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "{name} stopped");
            }
        });
        tracing::info!(%addr, "{name} listening");
        Ok(Self {
            addr,
            shared,
            stop: Some(tx),
        })
    }

    /// The provider state behind it.
    pub(crate) fn shared(&self) -> &Shared<P> {
        &self.shared
    }

    /// Address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Arms a fault (paths as routed, e.g. `/v1/servers/{id}`).
    pub fn inject(&self, fault: Fault) {
        self.shared.base.log().armed.push_back(fault);
    }

    /// Every call answered so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.base.log().calls.clone()
    }

    /// How many calls of `METHOD /route` were answered with this status.
    pub fn count_calls(&self, method: &str, path: &str, status: u16) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.method == method && c.path == path && c.status == status)
            .count()
    }

    /// The test host manager, when hosts are enabled.
    pub fn hosts(&self) -> Option<&Arc<HostManager>> {
        self.shared.base.hosts.as_ref()
    }

    /// Port the test hosts' sshd listen on.
    pub fn ssh_port(&self) -> u16 {
        self.hosts()
            .map(|h| h.port())
            .unwrap_or_else(crate::test_host::ssh_port)
    }
}

impl<P: ProviderApi> Drop for Fake<P> {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = &self.shared.base.hosts {
            h.stop_all();
        }
    }
}
