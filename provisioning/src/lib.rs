//! Provisioning: the `Provider` trait and its implementations (`hetzner`, `local`),
//! cloud-init user data and the SSH bootstrap of a rented server.

#![warn(missing_docs)]

pub mod error;
pub mod firewall;
pub mod hetzner;
pub mod labels;
pub mod provider;
pub mod scaleway;

pub use error::ProviderError;
pub use firewall::{FirewallPolicy, ManagedFirewall, OperatorKey, SetupError};
pub use hetzner::{HetznerProvider, HetznerSettings};
pub use labels::{LABEL_CLUSTER, LABEL_NODE, LABEL_POOL, LabelSelector, Labels, dayshift_labels};
pub use provider::{
    BillingRule, LocationPrice, Placement, Provider, Server, ServerSpec, ServerStatus, ServerType,
};
pub use scaleway::{ScalewayProvider, ScalewaySettings};
pub mod local;
pub use local::{LocalProvider, LocalSettings};
pub mod bootstrap;
pub mod cloud_init;
pub mod keys;
pub use bootstrap::{
    Artifacts, BootstrapError, BootstrapReport, BootstrapSettings, BootstrapTarget, StartCommand,
    bootstrap,
};
pub use cloud_init::{CloudInit, WriteFile};
pub use keys::{KeyError, SshKeyPair, parse_public_key};
pub mod factory;
pub use factory::{ProviderSettings, build_provider};
pub mod node;
pub use node::{NodeRequest, PreparedNode, prepare_node};
