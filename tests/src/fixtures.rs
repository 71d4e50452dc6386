//! Fixtures: start the fake, make keys, find the harness binaries.

use std::time::Duration;

use crate::{FakeHcloud, FakeOptions, FakeScaleway, ScalewayOptions};

/// Starts a fake with test hosts and short actions.
pub async fn fake_with_hosts() -> FakeHcloud {
    start(true).await
}

/// Starts a fake without test hosts (API records only).
pub async fn fake_without_hosts() -> FakeHcloud {
    start(false).await
}

async fn start(hosts: bool) -> FakeHcloud {
    match FakeHcloud::start(FakeOptions {
        hosts,
        action_duration: Duration::from_millis(200),
        ..FakeOptions::default()
    })
    .await
    {
        Ok(f) => f,
        Err(e) => panic!("cannot start fake-hcloud: {e:#}"),
    }
}

/// Starts a fake Scaleway Instance API with test hosts and short boots.
pub async fn scaleway_with_hosts() -> FakeScaleway {
    start_scaleway(true).await
}

/// Starts a fake Scaleway Instance API without test hosts (API records only).
pub async fn scaleway_without_hosts() -> FakeScaleway {
    start_scaleway(false).await
}

async fn start_scaleway(hosts: bool) -> FakeScaleway {
    match FakeScaleway::start(ScalewayOptions {
        hosts,
        boot_duration: Duration::from_millis(200),
        ..ScalewayOptions::default()
    })
    .await
    {
        Ok(f) => f,
        Err(e) => panic!("cannot start fake-scaleway: {e:#}"),
    }
}

/// Installs a `tracing` subscriber for test output (once; later calls do nothing).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// Sends `GET /` to `addr` and returns the response body; retries connecting until
/// `patience` has passed (the server may still be starting).
pub async fn http_get(addr: std::net::SocketAddr, patience: Duration) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = std::time::Instant::now() + patience;
    let mut stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() >= deadline => {
                anyhow::bail!("nothing answers on {addr}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    };
    stream
        .write_all(b"GET / HTTP/1.0\r\nhost: test\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(body)
}

/// True when a TCP connection to `addr` is refused right now.
pub async fn refuses(addr: std::net::SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

/// Path of a binary built from this package (`tiny-responder`, `fake-hcloud`), for tests
/// of other crates that cannot use `CARGO_BIN_EXE_*`.
pub fn harness_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// A fake provider binary (`fake-hcloud`, `fake-scaleway`) running as its own process
/// on a free loopback port, without test hosts; killed when dropped.
pub struct FakeProcess {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
}

impl FakeProcess {
    /// Starts `binary --listen 127.0.0.1:PORT --no-hosts EXTRA...` and waits (up to 10 s)
    /// until the port accepts connections.
    pub fn start(binary: &std::path::Path, extra: &[&str]) -> anyhow::Result<FakeProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(binary)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--no-hosts"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        let fake = FakeProcess { child, port };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("{} did not listen on {addr} within 10 s", binary.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(fake)
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills, when dropped, every local-provider child whose work directory lies under the
/// given state directory, so a failing test leaks no process.
pub struct KillLocalChildren(pub std::path::PathBuf);

impl Drop for KillLocalChildren {
    fn drop(&mut self) {
        let root = self.0.canonicalize().unwrap_or_else(|_| self.0.clone());
        let needle = format!("DAYSHIFT_LOCAL_SERVER={}/", root.display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                // SAFETY: signalling a process this test's provider started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// A random fault on the server calls the scheduler makes (create, delete, list): 5xx,
/// 429 with `Retry-After`, capacity (`resource_unavailable`), slow answers, lost answers.
pub fn random_fault(rng: &mut impl rand::Rng) -> crate::Fault {
    use crate::FaultKind;
    let (method, path) = match rng.random_range(0..4) {
        0 | 1 => ("POST", "/v1/servers"),
        2 => ("DELETE", "/v1/servers/{id}"),
        _ => ("GET", "/v1/servers"),
    };
    let fault = match rng.random_range(0..6) {
        0 => FaultKind::ServerError { status: 503 },
        1 => FaultKind::ServerError { status: 500 },
        2 => FaultKind::RateLimit {
            reset_after_secs: 1,
            retry_after_secs: Some(0),
        },
        3 if method == "POST" => FaultKind::ResourceUnavailable,
        4 => FaultKind::Delay { ms: 300 },
        _ => FaultKind::LoseResponse,
    };
    crate::Fault {
        method: method.into(),
        path: path.into(),
        count: rng.random_range(1..3),
        fault,
    }
}
