//! A fake of Scaleway's Instance API (v1, per zone), faithful enough that a client
//! written for the real API works against it: paths under `/instance/v1/zones/{zone}`,
//! `X-Auth-Token`, JSON shapes, status codes (`201` create, `202` action, `204` delete)
//! and `{"type","message"}` error bodies. Servers are created stopped, get their
//! cloud-init user data, and boot a real OpenSSH test host on `poweron` (unless hosts are
//! disabled). Volumes and IPs are resources of their own, so a test can check that
//! nothing is left behind. Security groups (with the project's default one per zone) and
//! their rules are served in the API's JSON; a server carries its group. Faults are injected as for fake-hcloud (`/__admin/faults`).
// Handlers return `Result<_, ScwError>`; the error is large but only built on failures.
#![allow(clippy::result_large_err)]

mod admin;
pub mod catalog;
mod error;
pub mod json;
mod paging;
mod resources;
mod security_groups;
mod servers;
mod sg_rules;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use error::ScwError;

use crate::fake_base::{Base, Fake, FaultKind, ProviderApi, faults_and_log};
use state::Project;

/// State shared by every handler.
pub type Shared = crate::fake_base::Shared<Project>;

impl ProviderApi for Project {
    fn fault_answer(fault: &FaultKind) -> Response {
        match fault {
            FaultKind::RateLimit {
                reset_after_secs,
                retry_after_secs,
            } => ScwError::rate_limited(retry_after_secs.unwrap_or(*reset_after_secs))
                .into_response(),
            FaultKind::ResourceUnavailable => {
                ScwError::out_of_stock("requested type").into_response()
            }
            FaultKind::ServerError { status } => ScwError::server_error(*status),
            _ => ScwError::server_error(500),
        }
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

/// A running fake Scaleway Instance API; stops (and takes its test hosts down) when dropped.
pub type FakeScaleway = Fake<Project>;

impl Fake<Project> {
    /// Starts a fake.
    pub async fn start(opts: ScalewayOptions) -> anyhow::Result<Self> {
        let project = Project {
            boot_duration: opts.boot_duration,
            ..Project::default()
        };
        let shared = Arc::new(Shared::new(project, Base::new(opts.hosts, 2_246_822_519)?));
        Fake::serve(opts.listen, shared.clone(), router(shared), "fake-scaleway").await
    }

    /// The API base URL (`http://ADDR`; the Instance API is under `/instance/v1`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Marks a commercial type as out of stock in a zone (`poweron` fails).
    pub fn set_out_of_stock(&self, commercial_type: &str, zone: &str) {
        self.shared()
            .lock()
            .out_of_stock
            .push((commercial_type.into(), zone.into()));
    }

    /// Number of servers, volumes and IPs that exist (in any zone).
    pub fn resource_counts(&self) -> (usize, usize, usize) {
        let p = self.shared().lock();
        (p.servers.len(), p.volumes.len(), p.ips.len())
    }

    /// The test-host number of a server (for `hosts()`), by UUID.
    pub fn host_number(&self, uuid: &str) -> Option<i64> {
        self.shared().lock().servers.get(uuid).map(|s| s.num)
    }

    /// A server's security group and its rules in order:
    /// `{"server", "security_group": {...as the API shows it}, "rules": [rule objects]}`
    /// (`None` for an unknown server). Also at `GET /__admin/servers/{id}/security_group`.
    pub fn server_security_group(&self, uuid: &str) -> Option<serde_json::Value> {
        security_groups::effective(&self.shared().lock(), uuid)
    }

    /// The cloud-init user data a server holds.
    pub fn user_data_of(&self, uuid: &str) -> Option<String> {
        self.shared()
            .lock()
            .servers
            .get(uuid)
            .and_then(|s| s.user_data.get("cloud-init").cloned())
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
        .route(
            &r("/security_groups"),
            get(security_groups::list).post(security_groups::create),
        )
        .route(
            &r("/security_groups/default/rules"),
            get(sg_rules::default_rules),
        )
        .route(
            &r("/security_groups/{id}"),
            get(security_groups::get)
                .patch(security_groups::update)
                .put(security_groups::update)
                .delete(security_groups::delete),
        )
        .route(
            &r("/security_groups/{id}/rules"),
            get(sg_rules::list)
                .post(sg_rules::create)
                .put(sg_rules::set_all),
        )
        .route(
            &r("/security_groups/{id}/rules/{rule_id}"),
            get(sg_rules::get)
                .patch(sg_rules::update)
                .put(sg_rules::update)
                .delete(sg_rules::delete),
        )
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            faults_and_log::<Project>,
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
