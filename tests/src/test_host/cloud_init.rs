//! The parts of cloud-init user data a test host applies.
//!
//! dayshift writes `#cloud-config` followed by JSON (JSON is valid YAML, so real
//! cloud-init reads it too); the test host reads that form.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// A file from `write_files`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WriteFile {
    /// Absolute path on the host.
    pub path: String,
    /// Content.
    #[serde(default)]
    pub content: String,
    /// Octal mode such as `0644`.
    pub permissions: Option<String>,
    /// `b64` when the content is base64.
    pub encoding: Option<String>,
}

/// The cloud-config keys a test host applies.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CloudConfig {
    /// Host keys, e.g. `ed25519_private` / `ed25519_public`.
    #[serde(default)]
    pub ssh_keys: BTreeMap<String, String>,
    /// Public keys allowed to log in.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Files to write.
    #[serde(default)]
    pub write_files: Vec<WriteFile>,
}

impl CloudConfig {
    /// Parses `#cloud-config` + JSON user data.
    pub fn parse(user_data: &str) -> anyhow::Result<Self> {
        let body = user_data
            .strip_prefix("#cloud-config")
            .context("user data does not start with #cloud-config")?;
        let body = body.trim();
        if !body.starts_with('{') {
            bail!(
                "the test host reads cloud-config written as JSON (as dayshift writes it); got YAML"
            );
        }
        serde_json::from_str(body).context("cloud-config JSON does not parse")
    }

    /// Writes `write_files` below `root` (which stands for `/`).
    pub fn apply_files(&self, root: &Path) -> anyhow::Result<()> {
        for f in &self.write_files {
            let rel = f.path.trim_start_matches('/');
            if rel.split('/').any(|p| p == "..") {
                bail!("write_files path {} leaves the root", f.path);
            }
            let target = root.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let content = match f.encoding.as_deref() {
                Some("b64") | Some("base64") => crate::util::base64_decode(f.content.trim())
                    .with_context(|| format!("write_files {}: content is not base64", f.path))?,
                _ => f.content.clone().into_bytes(),
            };
            std::fs::write(&target, content)
                .with_context(|| format!("writing {}", target.display()))?;
            if let Some(mode) = &f.permissions {
                let mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
                    .with_context(|| format!("write_files {}: bad permissions {mode}", f.path))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(())
    }
}
