//! The `scaleway` provider: Scaleway Instances (API v1, per zone) on a small typed
//! reqwest client. Tags `key=value` stand in for labels; a server is created stopped,
//! given its cloud-init user data, powered on and awaited until `running` with a public
//! IPv4; delete terminates it and removes any IP or volume left behind, so nothing bills.

mod client;
mod convert;
mod errors;
mod firewall;
mod model;
mod settings;

use std::collections::BTreeMap;
use std::time::Instant;

use async_trait::async_trait;
use dayshift_config::billing::BillingRule;
use reqwest12::Method;
use serde_json::json;

pub use settings::{DEFAULT_ENDPOINT, ScalewaySettings};

use self::client::{Body, Client};
use self::convert::{labels_to_tags, split_id, to_server, to_server_type};
use self::model::{CreateServer, Products, ScwServer, ServerEnvelope, ServerList, TaskEnvelope};
use crate::firewall::SetupError;
use crate::labels::{LABEL_CLUSTER, LABEL_NODE, LabelSelector, Requirement};
use crate::provider::{Placement, Provider, Server, ServerSpec, ServerType};
use crate::{ProviderError, ServerStatus};

/// Scaleway Instances behind the `Provider` trait.
#[derive(Debug, Clone)]
pub struct ScalewayProvider {
    client: Client,
    /// Ids of the named security group by zone (the managed one is checked each create).
    setup: std::sync::Arc<tokio::sync::Mutex<BTreeMap<String, String>>>,
}

/// What is left to clean up after a server: its IPs and volumes.
#[derive(Debug, Default)]
struct Leftovers {
    ips: Vec<String>,
    volumes: Vec<String>,
}

impl ScalewayProvider {
    /// A provider with these settings (no network call yet).
    pub fn new(settings: ScalewaySettings) -> Result<Self, ProviderError> {
        Ok(Self {
            client: Client::new(settings)?,
            setup: Default::default(),
        })
    }

    fn settings(&self) -> &ScalewaySettings {
        self.client.settings()
    }

    /// Servers in one zone, filtered by exact tags on the server side (`?tags=`).
    async fn list_zone(
        &self,
        zone: &str,
        tags: &[String],
    ) -> Result<Vec<ScwServer>, ProviderError> {
        let mut all = Vec::new();
        let tag_query: Vec<String> = tags.iter().map(|t| encode(t)).collect();
        for page in 1..=1000u32 {
            let mut path = format!("/servers?per_page=100&page={page}");
            if !tag_query.is_empty() {
                path.push_str(&format!("&tags={}", tag_query.join(",")));
            }
            let list: ServerList = self.client.get(zone, &path).await?;
            let n = list.servers.len();
            all.extend(list.servers);
            if n < 100 {
                break;
            }
        }
        Ok(all)
    }

    async fn get_raw(&self, zone: &str, uuid: &str) -> Result<ScwServer, ProviderError> {
        let env: ServerEnvelope = self.client.get(zone, &format!("/servers/{uuid}")).await?;
        Ok(env.server)
    }

    /// A server of this name in the zone, if any (names are not unique at Scaleway).
    async fn find_by_name(
        &self,
        zone: &str,
        spec: &ServerSpec,
    ) -> Result<Option<ScwServer>, ProviderError> {
        let cluster = spec.labels.get(LABEL_CLUSTER).cloned().unwrap_or_default();
        let tags = vec![format!("{LABEL_CLUSTER}={cluster}")];
        Ok(self
            .list_zone(zone, &tags)
            .await?
            .into_iter()
            .find(|s| s.name == spec.name))
    }

    /// Creates, configures and powers on one server in one placement.
    async fn create_in(
        &self,
        spec: &ServerSpec,
        place: &Placement,
    ) -> Result<Server, ProviderError> {
        let zone = place
            .location
            .clone()
            .unwrap_or_else(|| self.settings().default_zone.clone());
        let existing = self.find_by_name(&zone, spec).await?;
        let server = match existing {
            Some(s) => {
                let labels = convert::tags_to_labels(&s.tags);
                if labels.get(LABEL_NODE) != spec.labels.get(LABEL_NODE) {
                    return Err(ProviderError::Invalid(format!(
                        "server name {} is already used by node {:?} in {zone}; pick another name",
                        spec.name,
                        labels.get(LABEL_NODE)
                    )));
                }
                tracing::info!(name = %spec.name, id = %s.id, zone, "server exists already; adopting it");
                s
            }
            None => self.post_server(&zone, spec, place).await?,
        };
        if server.state == "stopped" {
            if let Some(user_data) = &spec.user_data {
                self.client
                    .call(
                        Method::PATCH,
                        &zone,
                        &format!("/servers/{}/user_data/cloud-init", server.id),
                        Body::Text(user_data),
                    )
                    .await?;
            }
            let powered = self
                .client
                .send_json::<TaskEnvelope, _>(
                    Method::POST,
                    &zone,
                    &format!("/servers/{}/action", server.id),
                    &json!({ "action": "poweron" }),
                )
                .await;
            match powered {
                Ok(t) => {
                    tracing::info!(task = %t.task.id, status = %t.task.status, "poweron started")
                }
                Err(e @ ProviderError::Capacity(_)) => {
                    // No GPU left for it: remove the stopped server so nothing bills.
                    tracing::warn!(zone, server_type = %place.server_type, error = %e, "poweron out of stock; removing the stopped server");
                    let id = convert::server_id(&zone, &server.id);
                    if let Err(cleanup) = self.delete(&id).await {
                        tracing::error!(%id, error = %cleanup, "could not remove a server that failed to start; the orphan sweep will retry");
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        self.wait_running(&zone, &server.id).await
    }

    /// `POST /servers`, after making sure no earlier attempt created it (names are not
    /// unique at Scaleway, so a blind retry would leak a server).
    async fn post_server(
        &self,
        zone: &str,
        spec: &ServerSpec,
        place: &Placement,
    ) -> Result<ScwServer, ProviderError> {
        let security_group = self
            .security_group_for(zone)
            .await
            .map_err(SetupError::into_provider_error)?;
        let body = CreateServer {
            name: &spec.name,
            commercial_type: &place.server_type,
            image: &spec.image,
            tags: labels_to_tags(&spec.labels),
            dynamic_ip_required: true,
            project: self.settings().project.as_deref(),
            security_group: security_group.as_deref(),
        };
        let body = serde_json::to_value(&body)
            .map_err(|e| ProviderError::Invalid(format!("cannot encode the server: {e}")))?;
        let mut attempt = 0u32;
        loop {
            if attempt > 0
                && let Some(s) = self.find_by_name(zone, spec).await?
            {
                return Ok(s);
            }
            let result = self
                .client
                .once(Method::POST, zone, "/servers", &Body::Json(body.clone()))
                .await;
            let wait = match result {
                Ok((_, text)) => {
                    let env: ServerEnvelope = client::decode(&text, "/servers")?;
                    return Ok(env.server);
                }
                Err(ProviderError::RateLimited { retry_after })
                    if retry_after <= self.settings().max_rate_limit_wait
                        && attempt < self.settings().max_retries =>
                {
                    retry_after
                }
                Err(ProviderError::Transient(e)) if attempt < self.settings().max_retries => {
                    tracing::info!(attempt, error = %e, "create failed transiently; checking before retrying");
                    self.client.backoff(attempt)
                }
                Err(e) => return Err(e),
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn wait_running(&self, zone: &str, uuid: &str) -> Result<Server, ProviderError> {
        let deadline = Instant::now() + self.settings().action_timeout;
        loop {
            let s = self.get_raw(zone, uuid).await?;
            let server = to_server(zone, &s);
            if server.status == ServerStatus::Running && server.ipv4.is_some() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::Transient(format!(
                    "server {uuid} in {zone} is still `{}` after {:?}; dayshift will check again, or delete it",
                    s.state,
                    self.settings().action_timeout
                )));
            }
            tokio::time::sleep(self.settings().poll_interval).await;
        }
    }

    async fn wait_gone(&self, zone: &str, uuid: &str) -> Result<(), ProviderError> {
        let deadline = Instant::now() + self.settings().action_timeout;
        loop {
            match self.get_raw(zone, uuid).await {
                Err(ProviderError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
                Ok(s) if Instant::now() >= deadline => {
                    return Err(ProviderError::Transient(format!(
                        "server {uuid} in {zone} still exists (`{}`) after terminate; retry the delete",
                        s.state
                    )));
                }
                Ok(_) => tokio::time::sleep(self.settings().poll_interval).await,
            }
        }
    }

    /// Deletes an IP or volume object; one that is already gone is fine.
    async fn delete_leftover(&self, zone: &str, path: &str) -> Result<(), ProviderError> {
        match self
            .client
            .call(Method::DELETE, zone, path, Body::None)
            .await
        {
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Percent-encodes a tag for the query string.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Provider for ScalewayProvider {
    fn kind(&self) -> &'static str {
        "scaleway"
    }

    async fn prepare(&self) -> Result<(), SetupError> {
        for zone in self.settings().all_zones() {
            self.security_group_for(&zone).await?;
        }
        Ok(())
    }

    async fn create(&self, spec: &ServerSpec) -> Result<Server, ProviderError> {
        spec.validate()?;
        let mut last = None;
        for place in spec.placements() {
            match self.create_in(spec, &place).await {
                Err(e @ ProviderError::Capacity(_)) => {
                    tracing::warn!(server_type = %place.server_type, zone = ?place.location, error = %e, "no capacity; trying the next placement");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| {
            ProviderError::Capacity(format!("no placement left for {}", spec.name))
        }))
    }

    async fn get(&self, id: &str) -> Result<Server, ProviderError> {
        let (zone, uuid) = split_id(id).ok_or_else(|| {
            ProviderError::NotFound(format!("no Scaleway server `{id}` (ids are zone/uuid)"))
        })?;
        Ok(to_server(zone, &self.get_raw(zone, uuid).await?))
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, ProviderError> {
        let tags: Vec<String> = selector
            .requirements()
            .iter()
            .filter_map(|r| match r {
                Requirement::Equals(k, v) => Some(format!("{k}={v}")),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for zone in self.settings().all_zones() {
            for s in self.list_zone(&zone, &tags).await? {
                let server = to_server(&zone, &s);
                if selector.matches(&server.labels) {
                    out.push(server);
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        let (zone, uuid) = split_id(id).ok_or_else(|| {
            ProviderError::NotFound(format!("no Scaleway server `{id}` (ids are zone/uuid)"))
        })?;
        let s = self.get_raw(zone, uuid).await?;
        let leftovers = Leftovers {
            ips: s
                .public_ip
                .iter()
                .chain(s.public_ips.iter())
                .map(|ip| ip.id.clone())
                .collect(),
            volumes: s.volumes.values().map(|v| v.id.clone()).collect(),
        };
        let gone = if matches!(s.state.as_str(), "stopped" | "stopped in place") {
            // A stopped server cannot be terminated; delete it, then its volumes.
            self.client
                .call(
                    Method::DELETE,
                    zone,
                    &format!("/servers/{uuid}"),
                    Body::None,
                )
                .await
                .map(|_| ())
        } else {
            self.client
                .send_json::<TaskEnvelope, _>(
                    Method::POST,
                    zone,
                    &format!("/servers/{uuid}/action"),
                    &json!({ "action": "terminate" }),
                )
                .await
                .map(|t| tracing::info!(task = %t.task.id, "terminate started"))
        };
        match gone {
            // A retried call may find the server gone already: the first attempt worked.
            Ok(()) | Err(ProviderError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.wait_gone(zone, uuid).await?;
        let mut seen = BTreeMap::new();
        for ip in leftovers.ips {
            seen.entry(format!("/ips/{ip}")).or_insert(());
        }
        for v in leftovers.volumes {
            seen.entry(format!("/volumes/{v}")).or_insert(());
        }
        for path in seen.keys() {
            self.delete_leftover(zone, path).await?;
        }
        tracing::info!(%id, "server terminated; no IP or volume left");
        Ok(())
    }

    async fn server_types(&self) -> Result<Vec<ServerType>, ProviderError> {
        let mut by_name: BTreeMap<String, ServerType> = BTreeMap::new();
        for zone in self.settings().all_zones() {
            let mut products: Option<Products> = None;
            for page in 1..=20u32 {
                let p: Products = self
                    .client
                    .get(
                        &zone,
                        &format!("/products/servers?per_page=100&page={page}"),
                    )
                    .await?;
                let n = p.servers.len();
                match &mut products {
                    Some(all) => all.servers.extend(p.servers),
                    None => products = Some(p),
                }
                if n < 100 {
                    break;
                }
            }
            for (name, product) in products.map(|p| p.servers).unwrap_or_default() {
                let t = to_server_type(&name, &zone, &product);
                match by_name.get_mut(&name) {
                    Some(existing) => existing.prices.extend(t.prices),
                    None => {
                        by_name.insert(name, t);
                    }
                }
            }
        }
        Ok(by_name.into_values().collect())
    }

    fn billing_rule(&self) -> BillingRule {
        BillingRule::SCALEWAY
    }
}
