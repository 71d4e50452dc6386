//! The `Provider` trait and the plain data types it speaks.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ProviderError;
use crate::firewall::SetupError;
use crate::labels::{LABEL_CLUSTER, LABEL_NODE, LABEL_POOL, LabelSelector, Labels};
pub use dayshift_config::billing::BillingRule;

/// Where a server may be placed: a server type in a location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Provider's server type name, e.g. `cx22`.
    pub server_type: String,
    /// Provider's location name, e.g. `fsn1`; `None` lets the provider choose.
    pub location: Option<String>,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSpec {
    /// Server name, unique within the provider account.
    pub name: String,
    /// Preferred server type.
    pub server_type: String,
    /// System image, e.g. `ubuntu-24.04`.
    pub image: String,
    /// Preferred location; `None` lets the provider choose.
    pub location: Option<String>,
    /// Labels; must contain the dayshift cluster, node and pool labels.
    pub labels: Labels,
    /// Names of SSH keys registered with the provider to authorise for root.
    pub ssh_keys: Vec<String>,
    /// cloud-init user data.
    pub user_data: Option<String>,
    /// Placements tried in order after the preferred one fails with `Capacity`.
    pub fallbacks: Vec<Placement>,
}

impl ServerSpec {
    /// Checks what every provider requires: a hostname-like name and the three dayshift
    /// labels (so no server can leak unnoticed).
    pub fn validate(&self) -> Result<(), ProviderError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !self.name.starts_with('-');
        if !name_ok {
            return Err(ProviderError::Invalid(format!(
                "server name `{}` must be 1-63 letters, digits or dashes",
                self.name
            )));
        }
        for key in [LABEL_CLUSTER, LABEL_NODE, LABEL_POOL] {
            if self.labels.get(key).is_none_or(|v| v.is_empty()) {
                return Err(ProviderError::Invalid(format!(
                    "server {} lacks the label {key}: every dayshift server must carry \
                     {LABEL_CLUSTER}, {LABEL_NODE} and {LABEL_POOL} (use dayshift_labels())",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Every placement to try, the preferred one first.
    pub fn placements(&self) -> Vec<Placement> {
        let mut all = vec![Placement {
            server_type: self.server_type.clone(),
            location: self.location.clone(),
        }];
        for p in &self.fallbacks {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        all
    }
}

/// Lifecycle status of a server as the provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerStatus {
    /// Being created.
    Initializing,
    /// Booting.
    Starting,
    /// Running.
    Running,
    /// Shutting down.
    Stopping,
    /// Powered off (or, for `local`, the process exited).
    Off,
    /// Being deleted.
    Deleting,
    /// Anything else.
    Unknown,
}

/// A server as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// Provider's id for the server (opaque).
    pub id: String,
    /// Server name.
    pub name: String,
    /// Current status.
    pub status: ServerStatus,
    /// Public IPv4 address, once assigned.
    pub ipv4: Option<Ipv4Addr>,
    /// Labels.
    pub labels: Labels,
    /// Server type name.
    pub server_type: String,
    /// Location name.
    pub location: Option<String>,
    /// When the provider created it (start of billing).
    pub created: DateTime<Utc>,
    /// For `local`: the TCP port the node was told to listen on.
    pub port: Option<u16>,
}

/// Price of a server type in one location, net of VAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationPrice {
    /// Location name.
    pub location: String,
    /// Price per started hour.
    pub hourly: Decimal,
    /// Monthly cap.
    pub monthly: Decimal,
}

/// A server type and its prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerType {
    /// Name, e.g. `cx22`.
    pub name: String,
    /// Human description.
    pub description: String,
    /// CPU cores.
    pub cores: u32,
    /// Memory in GB.
    pub memory_gb: f64,
    /// Disk in GB.
    pub disk_gb: f64,
    /// Prices per location.
    pub prices: Vec<LocationPrice>,
}

impl ServerType {
    /// Price in a location, if the type is sold there.
    pub fn price_in(&self, location: &str) -> Option<&LocationPrice> {
        self.prices.iter().find(|p| p.location == location)
    }
}

/// A place that rents out servers.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Short name of the provider kind, e.g. `hetzner` or `local`.
    fn kind(&self) -> &'static str;

    /// Sets up what created servers rely on in the account (the configured firewall, the
    /// operator's SSH key), before the first create; `dayshift serve` calls it at start
    /// and refuses to run when it fails. Creates do it again where needed (a managed
    /// firewall's rules are restored when they drift). Default: nothing to set up.
    async fn prepare(&self) -> Result<(), SetupError> {
        Ok(())
    }

    /// Creates a server and waits until the provider reports it created and running.
    /// On `Capacity` the spec's fallback placements are tried in order. Idempotent: when a
    /// server with this name and the same cluster and node labels exists, it is returned;
    /// a name used by another node is `Invalid`.
    async fn create(&self, spec: &ServerSpec) -> Result<Server, ProviderError>;

    /// Fetches one server by id; `NotFound` when it does not exist.
    async fn get(&self, id: &str) -> Result<Server, ProviderError>;

    /// Lists every server whose labels match the selector.
    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, ProviderError>;

    /// Deletes a server and waits until it is gone; `NotFound` when it does not exist.
    async fn delete(&self, id: &str) -> Result<(), ProviderError>;

    /// Server types with their prices.
    async fn server_types(&self) -> Result<Vec<ServerType>, ProviderError>;

    /// The provider's billing rule, as data (`dayshift_config::billing::BillingRule`).
    fn billing_rule(&self) -> BillingRule;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_start_with_the_preferred_one_without_duplicates() {
        let spec = ServerSpec {
            name: "n".into(),
            server_type: "cx22".into(),
            image: "ubuntu-24.04".into(),
            location: Some("fsn1".into()),
            labels: Labels::new(),
            ssh_keys: vec![],
            user_data: None,
            fallbacks: vec![
                Placement {
                    server_type: "cx22".into(),
                    location: Some("fsn1".into()),
                },
                Placement {
                    server_type: "cx22".into(),
                    location: Some("nbg1".into()),
                },
            ],
        };
        let p = spec.placements();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].location.as_deref(), Some("nbg1"));
    }
}
