//! A fake of Scaleway's Instance API (v1, per zone), faithful enough that a client
//! written for the real API works against it: paths under `/instance/v1/zones/{zone}`,
//! `X-Auth-Token`, JSON shapes, status codes (`201` create, `202` action, `204` delete)
//! and `{"type","message"}` error bodies. Servers are created stopped, get their
//! cloud-init user data, and boot a real OpenSSH test host on `poweron` (unless hosts are
//! disabled). Volumes and IPs are resources of their own, so a test can check that
//! nothing is left behind. Faults are injected as for fake-hcloud (`/__admin/faults`).
// Handlers return `Result<_, ScwError>`; the error is large but only built on failures.
#![allow(clippy::result_large_err)]

mod admin;
pub mod catalog;
mod error;
pub mod json;
mod resources;
mod servers;
pub mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use error::ScwError;

use crate::fake_hcloud::{CallRecord, FailAction, Fault, FaultKind, SlowAction, WrongHostKey};
use crate::test_host::HostManager;
use state::Project;

/// State shared by every handler.
pub struct Shared {
    project: Mutex<Project>,
    /// The test hosts, unless disabled.
    pub hosts: Option<Arc<HostManager>>,
    ip_prefix: [u8; 3],
    next_ip: AtomicU32,
}

impl Shared {
    /// Locks the project (recovering from a poisoned lock).
    pub fn lock(&self) -> MutexGuard<'_, Project> {
        self.project.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh public IPv4 `127.a.b.N`, free on the SSH port.
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
        let n = self.next_ip.fetch_add(1, Ordering::SeqCst);
        Ipv4Addr::new(p[0], p[1], 255, (n % 250 + 2) as u8)
    }
}

/// Options of a fake instance.
#[derive(Debug, Clone)]
pub struct ScalewayOptions {
    /// Address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// Start a real sshd test host per powered-on server.
    pub hosts: bool,
    /// How long booting takes at least.
    pub boot_duration: Duration,
}

impl Default for ScalewayOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hosts: true,
            boot_duration: Duration::from_millis(200),
        }
    }
}

/// A running fake; stops (and takes its test hosts down) when dropped.
pub struct FakeScaleway {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeScaleway {
    /// Starts a fake.
    pub async fn start(opts: ScalewayOptions) -> anyhow::Result<Self> {
        let hosts = if opts.hosts {
            Some(Arc::new(HostManager::new()?))
        } else {
            None
        };
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(11)
            ^ std::process::id().wrapping_mul(2_246_822_519);
        let ip_prefix = [127, (seed % 250 + 2) as u8, ((seed >> 8) % 200 + 1) as u8];
        let project = Project {
            boot_duration: opts.boot_duration,
            ..Project::default()
        };
        let shared = Arc::new(Shared {
            project: Mutex::new(project),
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
                tracing::error!(error = %e, "fake-scaleway stopped");
            }
        });
        tracing::info!(%addr, "fake-scaleway listening");
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

    /// The API base URL (`http://ADDR`; the Instance API is under `/instance/v1`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Arms a fault (paths as routed, e.g. `/instance/v1/zones/{zone}/servers`).
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Marks a commercial type as out of stock in a zone (`poweron` fails).
    pub fn set_out_of_stock(&self, commercial_type: &str, zone: &str) {
        self.shared
            .lock()
            .out_of_stock
            .push((commercial_type.into(), zone.into()));
    }

    /// Every call answered so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.lock().calls.clone()
    }

    /// How many calls of `METHOD route` were answered with this status.
    pub fn count_calls(&self, method: &str, path: &str, status: u16) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.method == method && c.path == path && c.status == status)
            .count()
    }

    /// Number of servers, volumes and IPs that exist (in any zone).
    pub fn resource_counts(&self) -> (usize, usize, usize) {
        let p = self.shared.lock();
        (p.servers.len(), p.volumes.len(), p.ips.len())
    }

    /// The test-host number of a server (for `hosts()`), by UUID.
    pub fn host_number(&self, uuid: &str) -> Option<i64> {
        self.shared.lock().servers.get(uuid).map(|s| s.num)
    }

    /// The cloud-init user data a server holds.
    pub fn user_data_of(&self, uuid: &str) -> Option<String> {
        self.shared
            .lock()
            .servers
            .get(uuid)
            .and_then(|s| s.user_data.get("cloud-init").cloned())
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

impl Drop for FakeScaleway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = &self.shared.hosts {
            h.stop_all();
        }
    }
}

/// The full router: `/instance/v1/zones/{zone}/...` and `/__admin/...`.
pub fn router(shared: Arc<Shared>) -> Router {
    const Z: &str = "/instance/v1/zones/{zone}";
    let r = |p: &str| format!("{Z}{p}");
    let api = Router::new()
        .route(&r("/servers"), get(servers::list).post(servers::create))
        .route(
            &r("/servers/{id}"),
            get(servers::get).delete(servers::delete),
        )
        .route(&r("/servers/{id}/action"), post(servers::action))
        .route(&r("/servers/{id}/user_data"), get(servers::user_data_keys))
        .route(
            &r("/servers/{id}/user_data/{key}"),
            get(servers::user_data_get)
                .patch(servers::user_data_set)
                .put(servers::user_data_set)
                .delete(servers::user_data_delete),
        )
        .route(&r("/ips"), get(resources::ips))
        .route(
            &r("/ips/{id}"),
            get(resources::ip).delete(resources::delete_ip),
        )
        .route(&r("/volumes"), get(resources::volumes))
        .route(
            &r("/volumes/{id}"),
            get(resources::volume).delete(resources::delete_volume),
        )
        .route(&r("/tasks/{id}"), get(resources::task))
        .route(&r("/products/servers"), get(resources::products))
        .route(
            &r("/products/servers/availability"),
            get(resources::availability),
        )
        .route(&r("/images"), get(resources::images))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            faults_and_log,
        ))
        .layer(middleware::from_fn(auth));
    Router::new()
        .merge(api)
        .merge(admin::router())
        .fallback(|| async { ScwError::not_found("route", "") })
        .with_state(shared)
}

/// Any non-empty `X-Auth-Token` is accepted; else `401 denied_authentication`.
async fn auth(req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| !t.trim().is_empty());
    if !ok {
        return ScwError::denied().into_response();
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
        Some(FaultKind::ServerError { status }) => ScwError::server_error(status),
        Some(FaultKind::RateLimit {
            reset_after_secs,
            retry_after_secs,
        }) => ScwError::rate_limited(retry_after_secs.unwrap_or(reset_after_secs)).into_response(),
        Some(FaultKind::ResourceUnavailable) => {
            ScwError::out_of_stock("requested type").into_response()
        }
        Some(FaultKind::Delay { ms }) => {
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
            ScwError::server_error(504)
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
        None => next.run(req).await,
    };
    shared.lock().calls.push(CallRecord {
        method,
        path,
        status: resp.status().as_u16(),
    });
    resp
}
