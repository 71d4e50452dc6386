//! SSH key pairs dayshift generates: per-node host keys and the operator key.

use rand::RngCore;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PublicKey};

/// Errors making or reading keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Encoding or decoding failed.
    #[error("SSH key: {0}")]
    Format(String),
    /// Reading a key file failed.
    #[error(
        "cannot read SSH key {path}: {message} (check the path and that it is an OpenSSH private key)"
    )]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// An ed25519 key pair, with its OpenSSH encodings.
#[derive(Clone)]
pub struct SshKeyPair {
    private: PrivateKey,
}

impl std::fmt::Debug for SshKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKeyPair")
            .field("public", &self.public_openssh())
            .finish_non_exhaustive()
    }
}

impl SshKeyPair {
    /// Generates a fresh ed25519 key pair with a comment.
    pub fn generate(comment: &str) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let mut private = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        seed.fill(0);
        private.set_comment(comment);
        Ok(Self { private })
    }

    /// Parses an OpenSSH private key (unencrypted).
    pub fn from_openssh(pem: &str) -> Result<Self, KeyError> {
        let private = PrivateKey::from_openssh(pem).map_err(|e| KeyError::Format(e.to_string()))?;
        Ok(Self { private })
    }

    /// Reads an OpenSSH private key file (unencrypted).
    pub fn load(path: &std::path::Path) -> Result<Self, KeyError> {
        let private = russh::keys::load_secret_key(path, None).map_err(|e| KeyError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self { private })
    }

    /// The private key in OpenSSH PEM form (secret: only for the node and the operator).
    pub fn private_openssh(&self) -> Result<String, KeyError> {
        self.private
            .to_openssh(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| KeyError::Format(e.to_string()))
    }

    /// The public key as an `authorized_keys` / `known_hosts` line (`ssh-ed25519 AAAA… comment`).
    pub fn public_openssh(&self) -> String {
        self.private
            .public_key()
            .to_openssh()
            .unwrap_or_else(|e| format!("<unencodable key: {e}>"))
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        self.private.public_key()
    }

    /// The private key (for russh).
    pub fn private_key(&self) -> &PrivateKey {
        &self.private
    }

    /// `SHA256:…` fingerprint of the public key.
    pub fn fingerprint(&self) -> String {
        self.public_key().fingerprint(HashAlg::Sha256).to_string()
    }
}

/// Parses an OpenSSH public key line.
pub fn parse_public_key(line: &str) -> Result<PublicKey, KeyError> {
    PublicKey::from_openssh(line.trim()).map_err(|e| KeyError::Format(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_differ() {
        let a = SshKeyPair::generate("node-1").unwrap();
        let b = SshKeyPair::generate("node-2").unwrap();
        assert_ne!(a.public_openssh(), b.public_openssh());
        assert!(a.public_openssh().starts_with("ssh-ed25519 "));
        let pem = a.private_openssh().unwrap();
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let again = SshKeyPair::from_openssh(&pem).unwrap();
        assert_eq!(again.public_key().key_data(), a.public_key().key_data());
        let parsed = parse_public_key(&a.public_openssh()).unwrap();
        assert_eq!(parsed.key_data(), a.public_key().key_data());
        assert!(a.fingerprint().starts_with("SHA256:"));
    }
}
