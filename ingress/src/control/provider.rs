//! The configured provider, built from `dayshift.toml` (tokens from the environment),
//! with its account set up at serve start: the firewall of `provider.firewall` and the
//! operator's SSH key.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use dayshift_config::Config;
use dayshift_config::firewall::FirewallSetting;
use dayshift_config::settings::ProviderKind;
use dayshift_provisioning::{
    FirewallPolicy, HetznerSettings, LocalSettings, ManagedFirewall, OperatorKey, Provider,
    ProviderError, ProviderSettings, ScalewaySettings, SetupError, SshKeyPair, build_provider,
};

/// The `dayshift-node` binary: `provider.node_binary`, else the one next to this program.
pub fn node_binary(config: &Config) -> Result<PathBuf> {
    if let Some(p) = &config.provider.node_binary {
        return Ok(p.clone());
    }
    let me = std::env::current_exe().context("finding this program's path")?;
    let dir = me.parent().context("this program's folder")?.to_path_buf();
    // Test binaries live in target/<profile>/deps; the node binary one level up.
    for d in [dir.clone(), dir.join("..")] {
        let p = d.join("dayshift-node");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no dayshift-node binary next to {} (build it with `cargo build --release -p dayshift-node`, \
         or set provider.node_binary in dayshift.toml)",
        me.display()
    )
}

/// Why the provider could not be started at `dayshift serve` start.
#[derive(Debug, thiserror::Error)]
pub enum ProviderStartError {
    /// The API token's environment variable is empty or unset.
    #[error(
        "the provider's API token is not set: export {0}=… (see provider.token_env in dayshift.toml)"
    )]
    NoToken(String),
    /// `firewall = "auto"` and the ingress's addresses could not be found.
    #[error("provider.firewall = \"auto\": {0}")]
    FirewallSources(String),
    /// The operator's key (`provider.ssh_key`) could not be read.
    #[error("reading the operator SSH key {path}: {reason} (provider.ssh_key in dayshift.toml)")]
    OperatorKey {
        /// The key file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The provider client could not be built.
    #[error("starting the {kind} provider: {error}")]
    Build {
        /// Provider kind.
        kind: ProviderKind,
        /// The failure.
        error: ProviderError,
    },
    /// The account setup (firewall, operator key at the provider) failed.
    #[error("setting up the {kind} account for dayshift: {error}")]
    Setup {
        /// Provider kind.
        kind: ProviderKind,
        /// The failure.
        error: SetupError,
    },
}

/// The firewall policy `provider.firewall` asks for; `None` when unset. With `"auto"`
/// the ingress's addresses are found here (a DNS lookup when only `gateway.public_url`
/// gives them).
pub fn firewall_policy(config: &Config) -> Result<Option<FirewallPolicy>, ProviderStartError> {
    Ok(match &config.provider.firewall {
        None => None,
        Some(FirewallSetting::Named(name)) => Some(FirewallPolicy::Named(name.clone())),
        Some(FirewallSetting::Auto) => {
            let (sources, origin) = config
                .firewall_sources()
                .map_err(ProviderStartError::FirewallSources)?;
            let b = &config.provider.bootstrap;
            let m = ManagedFirewall::new(&config.cluster, sources, vec![b.node_port, b.ssh_port]);
            tracing::info!(firewall = %m.name, %origin,
                sources = ?m.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                tcp_ports = ?m.tcp_ports, "provider.firewall = \"auto\": the nodes let in only these");
            Some(FirewallPolicy::Managed(m))
        }
    })
}

/// The operator's key as registered at the provider: `provider.ssh_key`'s public half
/// under `provider.ssh_key_name` (default `dayshift-CLUSTER-operator`).
fn operator_key(config: &Config) -> Result<Option<OperatorKey>, ProviderStartError> {
    let Some(path) = &config.provider.ssh_key else {
        return Ok(None);
    };
    let pair = SshKeyPair::load(path).map_err(|e| ProviderStartError::OperatorKey {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(OperatorKey {
        name: config
            .provider
            .ssh_key_name
            .clone()
            .unwrap_or_else(|| format!("dayshift-{}-operator", config.cluster)),
        public_openssh: pair.public_openssh(),
    }))
}

/// Builds the provider the config names and sets up its account (the firewall of
/// `provider.firewall`, the operator's SSH key), so a missing firewall stops `serve`
/// before any server is rented. The API token is read from the environment variable
/// `provider.token_env` and never logged.
pub async fn provider_from_config(
    config: &Config,
) -> Result<Arc<dyn Provider>, ProviderStartError> {
    let token = || -> Result<String, ProviderStartError> {
        let name = &config.provider.token_env;
        match std::env::var(name) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            _ => Err(ProviderStartError::NoToken(name.clone())),
        }
    };
    let kind = config.provider.kind;
    let firewall = if kind == ProviderKind::Local {
        None
    } else {
        // A DNS lookup may block: off the runtime's threads.
        let c = config.clone();
        let policy = tokio::task::spawn_blocking(move || firewall_policy(&c))
            .await
            .map_err(|e| ProviderStartError::FirewallSources(format!("lookup failed: {e}")))??;
        if policy.is_none() {
            let b = &config.provider.bootstrap;
            tracing::warn!(
                node_port = b.node_port,
                ssh_port = b.ssh_port,
                "provider.firewall is not set: rented servers are reachable from the whole \
                 internet on every port they listen on (node API and SSH included); set \
                 provider.firewall = \"auto\""
            );
        }
        policy
    };
    let settings = match kind {
        ProviderKind::Local => {
            // The local provider's one server type, `local`, may be declared with a `gpu`:
            // then its nodes run the CUDA build.
            let binary = match config.provider.node_binary_for("local").path {
                Some(p) => p,
                None => node_binary(config).map_err(|e| ProviderStartError::Build {
                    kind,
                    error: ProviderError::Invalid(format!("{e:#}")),
                })?,
            };
            let mut s = LocalSettings::new(
                binary,
                vec!["serve".into(), "--config".into(), "{dir}/user-data".into()],
                config.state_dir.join("local"),
            );
            s.stop_timeout = std::time::Duration::from_secs(30);
            ProviderSettings::Local(s)
        }
        ProviderKind::Hetzner => {
            let mut s = HetznerSettings::new(token()?);
            if let Some(e) = &config.provider.endpoint {
                s = s.with_endpoint(e.clone());
            }
            if let Some(f) = firewall {
                s = s.with_firewall(f);
            }
            if let Some(k) = operator_key(config)? {
                s = s.with_operator_key(k);
            }
            ProviderSettings::Hetzner(s)
        }
        ProviderKind::Scaleway => {
            let mut s = ScalewaySettings::new(token()?);
            if let Some(e) = &config.provider.endpoint {
                s = s.with_endpoint(e.clone());
            }
            let zones: Vec<&str> = config
                .pools
                .values()
                .flat_map(|p| p.locations.iter().map(String::as_str))
                .collect();
            if !zones.is_empty() {
                s = s.with_zones(&zones);
            }
            if let Some(f) = firewall {
                s = s.with_firewall(f);
            }
            ProviderSettings::Scaleway(s)
        }
    };
    let provider = build_provider(settings)
        .await
        .map_err(|error| ProviderStartError::Build { kind, error })?;
    provider
        .prepare()
        .await
        .map_err(|error| ProviderStartError::Setup { kind, error })?;
    tracing::info!(provider = %kind, "provider account ready (firewall and operator key set up)");
    Ok(provider)
}
