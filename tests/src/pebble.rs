//! Pebble (Let's Encrypt's ACME test server) with its challenge test server, for tests
//! of any crate: every name resolves to 127.0.0.1 for Pebble, and the issuing root of the
//! run is fetched so clients can trust only it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest12 as reqwest;

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
