//! The ingress's certificate: ACME (TLS-ALPN-01, certificates cached in the state
//! directory and renewed by rustls-acme before expiry), self-signed, or none.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use dayshift_config::settings::TlsConfig;
use futures_util::StreamExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_acme::AcmeConfig;
use rustls_acme::caches::DirCache;

/// The process-wide rustls crypto provider (ring); call once before any TLS.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use crate::state_files::self_signed_paths;

/// Loads the self-signed certificate from the state directory, making it on first use
/// (for `localhost`, `127.0.0.1` and the configured domains). Returns PEM (cert, key).
pub fn self_signed(state_dir: &Path, domains: &[String]) -> Result<(Vec<u8>, Vec<u8>)> {
    let (crt, key) = self_signed_paths(state_dir);
    if crt.is_file() && key.is_file() {
        return Ok((std::fs::read(&crt)?, std::fs::read(&key)?));
    }
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    names.extend(domains.iter().cloned());
    let ck =
        rcgen::generate_simple_self_signed(names).context("making a self-signed certificate")?;
    let dir = crt.parent().context("state dir")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert_pem = ck.cert.pem();
    let key_pem = ck.signing_key.serialize_pem();
    std::fs::write(&crt, &cert_pem)?;
    write_private(&key, key_pem.as_bytes())?;
    Ok((cert_pem.into_bytes(), key_pem.into_bytes()))
}

/// A TLS server config for a PEM certificate chain and key, offering HTTP/2 and
/// HTTP/1.1 (ALPN).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificate PEM")?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem)
        .context("reading the private key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate does not match its key")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

/// A client config trusting only the PEM CA file `ca` (for a test ACME directory).
fn directory_client(ca: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading the ACME directory CA {}", ca.display()))?
    {
        roots.add(cert.context("a certificate in the ACME directory CA file")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Starts ACME: returns the acceptor for the HTTPS listener; a background task orders
/// and renews the certificate and logs each step.
pub fn acme_acceptor(tls: &TlsConfig, state_dir: &Path) -> Result<rustls_acme::axum::AxumAcceptor> {
    let cache = state_dir.join("acme");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let mut cfg = AcmeConfig::new(tls.domains.clone())
        .contact(tls.contact.clone())
        .directory(&tls.directory);
    if let Some(ca) = &tls.directory_ca {
        cfg = cfg.client_tls_config(directory_client(ca)?);
    }
    let mut state = cfg.cache(DirCache::new(cache)).state();
    let mut server = (*state.default_rustls_config()).clone();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = state.axum_acceptor(Arc::new(server));
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(event = ?ok, "acme"),
                Err(err) => tracing::warn!(error = ?err, "acme"),
            }
        }
    });
    Ok(acceptor)
}
