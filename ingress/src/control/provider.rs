//! The configured provider, built from `dayshift.toml` (tokens from the environment).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use dayshift_config::Config;
use dayshift_config::settings::ProviderKind;
use dayshift_provisioning::{
    HetznerSettings, LocalSettings, Provider, ProviderSettings, ScalewaySettings, build_provider,
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

/// Builds the provider the config names. The API token is read from the environment
/// variable `provider.token_env` and never logged.
pub async fn provider_from_config(config: &Config) -> Result<Arc<dyn Provider>> {
    let token = || -> Result<String> {
        let name = &config.provider.token_env;
        match std::env::var(name) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            _ => bail!(
                "the provider's API token is not set: export {name}=… (see provider.token_env in dayshift.toml)"
            ),
        }
    };
    let settings = match config.provider.kind {
        ProviderKind::Local => {
            // The local provider's one server type, `local`, may be declared with a `gpu`:
            // then its nodes run the CUDA build.
            let binary = match config.provider.node_binary_for("local").path {
                Some(p) => p,
                None => node_binary(config)?,
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
            ProviderSettings::Scaleway(s)
        }
    };
    build_provider(settings)
        .await
        .map_err(|e| anyhow::anyhow!("starting the {:?} provider: {e}", config.provider.kind))
}
