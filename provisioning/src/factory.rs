//! Builds the configured provider behind one `Arc<dyn Provider>`.

use std::sync::Arc;

use crate::{
    HetznerProvider, HetznerSettings, LocalProvider, LocalSettings, Provider, ProviderError,
    ScalewayProvider, ScalewaySettings,
};

/// Which provider to use, with its settings (the config crate maps `dayshift.toml` here).
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    /// Hetzner Cloud (or anything speaking its API).
    Hetzner(HetznerSettings),
    /// Scaleway Instances (or anything speaking their API).
    Scaleway(ScalewaySettings),
    /// Child processes on this machine.
    Local(LocalSettings),
}

/// Builds the provider; the local one adopts its children and kills orphans on start.
pub async fn build_provider(
    settings: ProviderSettings,
) -> Result<Arc<dyn Provider>, ProviderError> {
    Ok(match settings {
        ProviderSettings::Hetzner(s) => Arc::new(HetznerProvider::new(s)?),
        ProviderSettings::Scaleway(s) => Arc::new(ScalewayProvider::new(s)?),
        ProviderSettings::Local(s) => Arc::new(LocalProvider::new(s).await?),
    })
}
