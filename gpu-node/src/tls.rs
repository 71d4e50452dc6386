//! TLS for the API: a self-signed certificate made at start (or PEM files), and the
//! sha256 fingerprint of the certificate that registration reports.

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use dayshift_config::node::{TlsConfig, TlsMode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Lowercase hex sha256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A ready server TLS config with its certificate's fingerprint; `None` for mode `off`.
pub async fn server_config(cfg: &TlsConfig) -> anyhow::Result<Option<(RustlsConfig, String)>> {
    install_crypto();
    match cfg.mode {
        TlsMode::Off => Ok(None),
        TlsMode::SelfSigned => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            names.extend(cfg.subject_alt_names.iter().cloned());
            let ck = rcgen::generate_simple_self_signed(names)
                .context("cannot make a self-signed certificate")?;
            let der = ck.cert.der().to_vec();
            let fp = fingerprint(&der);
            let key = ck.signing_key.serialize_der();
            let rc = RustlsConfig::from_der(vec![der], key)
                .await
                .context("cannot build the TLS config")?;
            Ok(Some((rc, fp)))
        }
        TlsMode::Files => {
            let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
                anyhow::bail!("tls mode \"files\" needs tls.cert_file and tls.key_file");
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("cannot read {}", cert.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("bad PEM in {}", cert.display()))?;
            let first = certs
                .first()
                .with_context(|| format!("no certificate in {}", cert.display()))?;
            let fp = fingerprint(first.as_ref());
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("cannot read a private key from {}", key.display()))?;
            let sc = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .context("certificate and key do not match")?;
            Ok(Some((
                RustlsConfig::from_config(std::sync::Arc::new(sc)),
                fp,
            )))
        }
    }
}
