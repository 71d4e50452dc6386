//! The provider firewall created servers get (`provider.firewall`), and the account
//! setup a provider does once at `dayshift serve` start ([`SetupError`]).

use dayshift_config::firewall::Cidr;

use crate::ProviderError;

/// How rented servers are fenced by the provider's firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallPolicy {
    /// Attach the operator's firewall (Hetzner Cloud Firewall, Scaleway security group)
    /// of this name; it must exist.
    Named(String),
    /// dayshift creates and keeps this firewall.
    Managed(ManagedFirewall),
}

/// A firewall dayshift keeps: inbound TCP to `tcp_ports` from `sources` only, nothing
/// else inbound; outbound open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFirewall {
    /// Its name at the provider, e.g. `dayshift-office-nodes`.
    pub name: String,
    /// The cluster (label `dayshift-cluster` on Hetzner, tag on Scaleway).
    pub cluster: String,
    /// Networks let in (the ingress's addresses), sorted, without duplicates.
    pub sources: Vec<Cidr>,
    /// TCP ports let in (the node port and SSH), sorted, without duplicates.
    pub tcp_ports: Vec<u16>,
}

impl ManagedFirewall {
    /// The firewall of `cluster` letting `sources` reach `tcp_ports`.
    pub fn new(cluster: &str, mut sources: Vec<Cidr>, mut tcp_ports: Vec<u16>) -> Self {
        sources.sort();
        sources.dedup();
        tcp_ports.sort_unstable();
        tcp_ports.dedup();
        ManagedFirewall {
            name: managed_name(cluster),
            cluster: cluster.to_string(),
            sources,
            tcp_ports,
        }
    }
}

/// The name of the firewall dayshift keeps for `cluster`.
pub fn managed_name(cluster: &str) -> String {
    format!("dayshift-{cluster}-nodes")
}

/// The operator's SSH key to register at the provider (name and OpenSSH public line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorKey {
    /// Name to register it under when it is not registered yet.
    pub name: String,
    /// The public key, `ssh-ed25519 AAAA… comment`.
    pub public_openssh: String,
}

/// What stops a provider's account setup (firewall, operator key) at serve start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// `provider.firewall` names a firewall that does not exist.
    #[error(
        "provider.firewall = \"{name}\": no {what} of that name at {provider}{scope}: \
         create it there ({how}) or set provider.firewall = \"auto\" to let dayshift \
         create one that lets in only the ingress"
    )]
    FirewallMissing {
        /// Provider kind, e.g. `hetzner`.
        provider: &'static str,
        /// The configured name.
        name: String,
        /// `Cloud Firewall` or `security group`.
        what: &'static str,
        /// Where it was looked for (e.g. ` in zone fr-par-2`), or empty.
        scope: String,
        /// How to make one.
        how: &'static str,
    },
    /// Two or more firewalls carry the configured name, so which to attach is unclear.
    #[error(
        "provider.firewall = \"{name}\": {count} {what}s of that name at {provider}{scope}: \
         rename or delete all but one"
    )]
    FirewallAmbiguous {
        /// Provider kind.
        provider: &'static str,
        /// The configured name.
        name: String,
        /// `Cloud Firewall` or `security group`.
        what: &'static str,
        /// Where.
        scope: String,
        /// How many matched.
        count: usize,
    },
    /// The provider API failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl SetupError {
    /// The error as a `ProviderError` for paths that speak only that (server create).
    pub fn into_provider_error(self) -> ProviderError {
        match self {
            SetupError::Provider(e) => e,
            other => ProviderError::Invalid(other.to_string()),
        }
    }
}
