//! cloud-init user data for a rented server.
//!
//! Written as `#cloud-config` followed by JSON (JSON is valid YAML, so cloud-init reads
//! it). It installs the host key dayshift generated for the node (so the first SSH
//! connection is verified, no trust on first use) and the operator's authorized key.
//! Secrets the node gets later (join token, node config) travel over the verified SSH
//! connection, never in user data, which the provider stores and shows in its console.

use serde::Serialize;
use serde_json::json;

use crate::keys::{KeyError, SshKeyPair};

/// A file cloud-init writes on first boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteFile {
    /// Absolute path.
    pub path: String,
    /// Content (plain text).
    pub content: String,
    /// Octal mode, e.g. `0644`.
    pub permissions: String,
}

/// What goes into a node's user data.
#[derive(Debug, Clone)]
pub struct CloudInit<'a> {
    /// The host key pair dayshift generated for this node.
    pub host_key: &'a SshKeyPair,
    /// Public keys (OpenSSH lines) allowed to log in as root.
    pub authorized_keys: Vec<String>,
    /// Extra files (no secrets: user data is visible in the provider console).
    pub write_files: Vec<WriteFile>,
}

impl CloudInit<'_> {
    /// Renders the user data.
    pub fn render(&self) -> Result<String, KeyError> {
        let doc = json!({
            "ssh_deletekeys": true,
            "ssh_genkeytypes": [],
            "ssh_keys": {
                "ed25519_private": self.host_key.private_openssh()?,
                "ed25519_public": self.host_key.public_openssh(),
            },
            "disable_root": false,
            "ssh_pwauth": false,
            "ssh_authorized_keys": self.authorized_keys,
            "write_files": self.write_files,
        });
        let body = serde_json::to_string_pretty(&doc)
            .map_err(|e| KeyError::Format(format!("cannot render cloud-config: {e}")))?;
        Ok(format!("#cloud-config\n{body}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_host_key_authorized_keys_and_files() {
        let host = SshKeyPair::generate("node").unwrap();
        let op = SshKeyPair::generate("operator").unwrap();
        let ci = CloudInit {
            host_key: &host,
            authorized_keys: vec![op.public_openssh()],
            write_files: vec![WriteFile {
                path: "/etc/dayshift/node-id".into(),
                content: "n1\n".into(),
                permissions: "0644".into(),
            }],
        };
        let text = ci.render().unwrap();
        assert!(text.starts_with("#cloud-config\n"));
        let doc: serde_json::Value =
            serde_json::from_str(&text["#cloud-config\n".len()..]).unwrap();
        assert_eq!(doc["ssh_keys"]["ed25519_public"], host.public_openssh());
        assert_eq!(doc["ssh_authorized_keys"][0], op.public_openssh());
        assert_eq!(doc["write_files"][0]["path"], "/etc/dayshift/node-id");
        assert!(!text.contains(&op.private_openssh().unwrap()));
    }
}
