//! Registering the operator's SSH key with Hetzner, so servers can be created with it.

use hcloud::models;
use reqwest12::Method;

use super::{HetznerProvider, NO_BODY};
use crate::ProviderError;

/// The key material of an OpenSSH public key line (type and base64, without comment).
fn key_material(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl HetznerProvider {
    /// Makes sure the public key is registered and returns the name to put in
    /// `ServerSpec::ssh_keys`: the existing key's name when this key is already
    /// registered (under any name), else `name` after registering it.
    pub async fn ensure_ssh_key(
        &self,
        name: &str,
        public_key: &str,
    ) -> Result<String, ProviderError> {
        let wanted = key_material(public_key);
        if let Some(found) = self.find_ssh_key(name, &wanted).await? {
            return Ok(found);
        }
        let mut req =
            models::CreateSshKeyRequest::new(name.to_string(), public_key.trim().to_string());
        req.labels = Some([("dayshift-managed".to_string(), "true".to_string())].into());
        let created: models::CreateSshKeyResponse =
            match self.call(Method::POST, "/ssh_keys", &[], Some(&req)).await {
                Ok(c) => c,
                // Another replica registered it between the look and the create.
                Err(e @ ProviderError::Invalid(_)) => {
                    return match self.find_ssh_key(name, &wanted).await? {
                        Some(found) => Ok(found),
                        None => Err(e),
                    };
                }
                Err(e) => return Err(e),
            };
        tracing::info!(name, fingerprint = %created.ssh_key.fingerprint, "registered SSH key with Hetzner");
        Ok(created.ssh_key.name)
    }

    /// The name the key (by material) is registered under; an error when `name` holds
    /// another key.
    async fn find_ssh_key(
        &self,
        name: &str,
        wanted: &str,
    ) -> Result<Option<String>, ProviderError> {
        let mut page = 1i64;
        loop {
            let query = [("page", page.to_string()), ("per_page", "50".to_string())];
            let resp: models::ListSshKeysResponse =
                self.call(Method::GET, "/ssh_keys", &query, NO_BODY).await?;
            if let Some(k) = resp
                .ssh_keys
                .iter()
                .find(|k| key_material(&k.public_key) == wanted)
            {
                return Ok(Some(k.name.clone()));
            }
            if resp.ssh_keys.iter().any(|k| k.name == name) {
                return Err(ProviderError::Invalid(format!(
                    "an SSH key named {name} with a different public key is registered at Hetzner: \
                     delete it there or configure another key name (provider.ssh_key_name)"
                )));
            }
            match resp.meta.pagination.next_page {
                Some(next) if next > page => page = next,
                _ => return Ok(None),
            }
        }
    }
}
