//! The Hetzner Cloud provider.

mod convert;
mod errors;
mod firewall;
mod retry;
mod settings;
mod ssh_keys;
mod transport;

use std::time::Instant;

use async_trait::async_trait;
use hcloud::models;
use reqwest12::Method;

pub use settings::{DEFAULT_ENDPOINT, HetznerSettings};

use crate::ProviderError;
use crate::firewall::SetupError;
use crate::labels::{LABEL_CLUSTER, LABEL_NODE, LabelSelector};
use crate::provider::{BillingRule, Placement, Provider, Server, ServerSpec, ServerType};
use retry::with_retry;
use transport::Transport;

const PER_PAGE: i64 = 50;
const NO_BODY: Option<&()> = None;

/// Rents servers from Hetzner Cloud (or anything speaking its API, such as the test fake).
pub struct HetznerProvider {
    settings: HetznerSettings,
    transport: Transport,
    setup: tokio::sync::Mutex<Setup>,
}

/// What the account setup found, kept for later creates.
#[derive(Debug, Default)]
struct Setup {
    /// Id of the named firewall (the managed one is checked on every create).
    firewall: Option<i64>,
    /// The operator key's name in the project.
    ssh_key: Option<String>,
}

impl HetznerProvider {
    /// A provider for the given settings; fails with `Auth` when no token is set.
    pub fn new(settings: HetznerSettings) -> Result<Self, ProviderError> {
        let transport = Transport::new(&settings)?;
        Ok(Self {
            settings,
            transport,
            setup: tokio::sync::Mutex::new(Setup::default()),
        })
    }

    /// The operator key's name in the project (registered on first use), if one is set.
    async fn operator_key_name(&self) -> Result<Option<String>, ProviderError> {
        let Some(key) = &self.settings.operator_key else {
            return Ok(None);
        };
        let mut setup = self.setup.lock().await;
        if let Some(name) = &setup.ssh_key {
            return Ok(Some(name.clone()));
        }
        let name = self.ensure_ssh_key(&key.name, &key.public_openssh).await?;
        setup.ssh_key = Some(name.clone());
        Ok(Some(name))
    }

    /// The settings in use.
    pub fn settings(&self) -> &HetznerSettings {
        &self.settings
    }

    async fn call<T, B>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, ProviderError>
    where
        T: serde::de::DeserializeOwned,
        B: serde::Serialize + ?Sized,
    {
        let what = format!("{method} {path}");
        with_retry(&self.settings, &what, || {
            self.transport.send(method.clone(), path, query, body)
        })
        .await
        .0
    }

    /// Polls an action until it succeeds, fails, or the action timeout passes.
    async fn wait_action(&self, action: &models::Action, what: &str) -> Result<(), ProviderError> {
        self.poll_action(action, what).await?
    }

    /// Polls an action. The outer error means its outcome is unknown (timeout, API
    /// unreachable); the inner one that the action itself failed.
    async fn poll_action(
        &self,
        action: &models::Action,
        what: &str,
    ) -> Result<Result<(), ProviderError>, ProviderError> {
        let deadline = Instant::now() + self.settings.action_timeout;
        let mut current = action.clone();
        loop {
            match current.status {
                models::action::Status::Success => return Ok(Ok(())),
                models::action::Status::Error => {
                    let (code, message) = current
                        .error
                        .as_ref()
                        .map(|e| (e.code.clone(), e.message.clone()))
                        .unwrap_or_default();
                    let detail = format!("{what}: action {} failed: {code}: {message}", current.id);
                    return Ok(Err(match code.as_str() {
                        "resource_unavailable" | "placement_error" => {
                            ProviderError::Capacity(detail)
                        }
                        _ => ProviderError::Transient(detail),
                    }));
                }
                models::action::Status::Running => {}
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::Transient(format!(
                    "{what}: action {} still running after {:?} ({}%); it may still finish: \
                     list servers by label to adopt or delete the server",
                    current.id, self.settings.action_timeout, current.progress
                )));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
            let resp: models::GetActionResponse = self
                .call(
                    Method::GET,
                    &format!("/actions/{}", current.id),
                    &[],
                    NO_BODY,
                )
                .await?;
            current = *resp.action;
        }
    }

    /// Deletes a server whose creation failed, so it does not linger (best effort: the
    /// orphan sweep finds it by label otherwise).
    async fn discard_failed(&self, id: i64, why: &ProviderError) {
        tracing::warn!(id, reason = %why, "create action failed; deleting the broken server");
        if let Err(e) = self.delete(&id.to_string()).await {
            tracing::warn!(id, error = %e, "could not delete the failed server; the orphan sweep will");
        }
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<models::Server>, ProviderError> {
        let resp: models::ListServersResponse = self
            .call(
                Method::GET,
                "/servers",
                &[("name", name.to_string())],
                NO_BODY,
            )
            .await?;
        Ok(resp.servers.into_iter().find(|s| s.name == name))
    }

    /// One create attempt in one placement.
    async fn create_in(
        &self,
        spec: &ServerSpec,
        placement: &Placement,
    ) -> Result<Server, ProviderError> {
        let mut req = models::CreateServerRequest::new(
            spec.image.clone(),
            spec.name.clone(),
            placement.server_type.clone(),
        );
        req.location = placement.location.clone();
        req.labels = Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let mut ssh_keys = spec.ssh_keys.clone();
        if let Some(name) = self.operator_key_name().await?
            && !ssh_keys.contains(&name)
        {
            ssh_keys.push(name);
        }
        req.ssh_keys = (!ssh_keys.is_empty()).then_some(ssh_keys);
        req.firewalls = self
            .firewall_for_create()
            .await
            .map_err(SetupError::into_provider_error)?
            .map(|id| vec![models::CreateServerRequestFirewalls::new(id)]);
        req.user_data = spec.user_data.clone();
        req.start_after_create = Some(true);
        let what = format!("create server {}", spec.name);
        let (result, _retries) = with_retry(&self.settings, &what, || {
            self.transport.send::<models::CreateServerResponse, _>(
                Method::POST,
                "/servers",
                &[],
                Some(&req),
            )
        })
        .await;
        let created = match result {
            Ok(resp) => resp,
            Err(ProviderError::Invalid(msg)) => {
                // The name may be taken by this very node (an earlier attempt whose answer
                // was lost, or a create before a restart): adopt it; create is idempotent.
                match self.find_by_name(&spec.name).await? {
                    Some(s) if same_node(&s.labels, &spec.labels) => {
                        tracing::info!(name = %spec.name, id = s.id, "adopting the server an earlier create made");
                        return self.wait_running(s.id, &what).await;
                    }
                    Some(_) => {
                        return Err(ProviderError::Invalid(format!(
                            "{msg}: the name {} belongs to a server of another node; pick another name",
                            spec.name
                        )));
                    }
                    None => return Err(ProviderError::Invalid(msg)),
                }
            }
            Err(e) => return Err(e),
        };
        tracing::info!(name = %spec.name, id = created.server.id, server_type = %placement.server_type,
            location = ?placement.location, "server created, waiting for its action");
        let id = created.server.id;
        for action in std::iter::once(created.action.as_ref()).chain(created.next_actions.iter()) {
            if let Err(failed) = self.poll_action(action, &what).await? {
                self.discard_failed(id, &failed).await;
                return Err(failed);
            }
        }
        self.wait_running(id, &what).await
    }

    /// Fetches the server until it reports `running` (or the action timeout passes).
    async fn wait_running(&self, id: i64, what: &str) -> Result<Server, ProviderError> {
        let deadline = Instant::now() + self.settings.action_timeout;
        loop {
            let s = self.get(&id.to_string()).await?;
            if s.status == crate::ServerStatus::Running && s.ipv4.is_some() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::Transient(format!(
                    "{what}: server {id} is {:?} after {:?}; list by label to adopt or delete it",
                    s.status, self.settings.action_timeout
                )));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }
}

/// True when both label sets name the same dayshift cluster and node.
fn same_node<A, B>(a: &A, b: &B) -> bool
where
    A: LabelLookup,
    B: LabelLookup,
{
    [LABEL_CLUSTER, LABEL_NODE]
        .iter()
        .all(|k| a.label(k).is_some() && a.label(k) == b.label(k))
}

/// Label access over the map types in play.
trait LabelLookup {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for std::collections::HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl LabelLookup for crate::Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

fn parse_id(id: &str) -> Result<i64, ProviderError> {
    id.parse()
        .map_err(|_| ProviderError::NotFound(format!("`{id}` is not a Hetzner server id")))
}

#[async_trait]
impl Provider for HetznerProvider {
    fn kind(&self) -> &'static str {
        "hetzner"
    }

    async fn prepare(&self) -> Result<(), SetupError> {
        self.operator_key_name().await?;
        self.firewall_for_create().await?;
        Ok(())
    }

    async fn create(&self, spec: &ServerSpec) -> Result<Server, ProviderError> {
        spec.validate()?;
        let mut tried = Vec::new();
        for placement in spec.placements() {
            match self.create_in(spec, &placement).await {
                Ok(server) => return Ok(server),
                Err(ProviderError::Capacity(msg)) => {
                    tracing::warn!(name = %spec.name, server_type = %placement.server_type,
                        location = ?placement.location, reason = %msg, "no capacity; trying the next placement");
                    tried.push(format!(
                        "{} in {}",
                        placement.server_type,
                        placement.location.as_deref().unwrap_or("any location")
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Err(ProviderError::Capacity(format!(
            "no capacity for server {} in any placement tried ({}); add fallbacks to the pool or retry later",
            spec.name,
            tried.join(", ")
        )))
    }

    async fn get(&self, id: &str) -> Result<Server, ProviderError> {
        let id = parse_id(id)?;
        let resp: models::GetServerResponse = self
            .call(Method::GET, &format!("/servers/{id}"), &[], NO_BODY)
            .await?;
        resp.server
            .as_deref()
            .map(convert::server)
            .ok_or_else(|| ProviderError::NotFound(format!("server {id}")))
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, ProviderError> {
        let mut out = Vec::new();
        let mut page = 1i64;
        loop {
            let mut query = vec![
                ("page", page.to_string()),
                ("per_page", PER_PAGE.to_string()),
            ];
            if !selector.requirements().is_empty() {
                query.push(("label_selector", selector.to_string()));
            }
            let resp: models::ListServersResponse =
                self.call(Method::GET, "/servers", &query, NO_BODY).await?;
            out.extend(resp.servers.iter().map(convert::server));
            match resp.meta.pagination.next_page {
                Some(next) if next > page => page = next,
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        let id = parse_id(id)?;
        let path = format!("/servers/{id}");
        let what = format!("delete server {id}");
        let (result, retries) = with_retry(&self.settings, &what, || {
            self.transport.send::<models::DeleteServerResponse, _>(
                Method::DELETE,
                &path,
                &[],
                NO_BODY,
            )
        })
        .await;
        let resp = match result {
            Ok(resp) => resp,
            // An earlier attempt deleted it but its answer was lost.
            Err(ProviderError::NotFound(_)) if retries > 0 => {
                tracing::info!(id, "server already gone after a retried delete");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Some(action) = resp.action {
            self.wait_action(&action, &format!("delete server {id}"))
                .await?;
        }
        tracing::info!(id, "server deleted");
        Ok(())
    }

    async fn server_types(&self) -> Result<Vec<ServerType>, ProviderError> {
        let mut out = Vec::new();
        let mut page = 1i64;
        loop {
            let query = [
                ("page", page.to_string()),
                ("per_page", PER_PAGE.to_string()),
            ];
            let resp: models::ListServerTypesResponse = self
                .call(Method::GET, "/server_types", &query, NO_BODY)
                .await?;
            out.extend(resp.server_types.iter().map(convert::server_type));
            match resp.meta.pagination.next_page {
                Some(next) if next > page => page = next,
                _ => break,
            }
        }
        Ok(out)
    }

    fn billing_rule(&self) -> BillingRule {
        BillingRule::HETZNER
    }
}
