//! `dayshift serve` (the real binary) with `tls.mode = "self-signed"`: HTTPS with the
//! certificate it made in the state directory (kept across restarts), the plain-HTTP
//! port redirecting to HTTPS, JSON errors, and a clean stop on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(config: &std::path::Path, log: &std::path::Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_dayshift"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .expect("dayshift serve"),
    )
}

async fn wait_https(client: &reqwest12::Client, url: &str, p: &mut Proc, log: &std::path::Path) {
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(s)) = p.0.try_wait() {
            panic!(
                "dayshift serve exited ({s}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no HTTPS answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn self_signed_https_and_http_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http_port) = (free_port(), free_port());
    let state = dir.path().join("state");
    let config = dir.path().join("dayshift.toml");
    std::fs::write(
        &config,
        format!(
            r#"cluster = "quick"
state_dir = "{}"
[provider]
kind = "local"
[pools.chat]
model = "tiny-chat"
[gateway]
listen = "127.0.0.1:{port}"
http_listen = "127.0.0.1:{http_port}"
[tls]
mode = "self-signed"
"#,
            state.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("ingress.log");
    let mut p = start(&config, &log);
    let cert_path = state.join("tls/self-signed.crt");
    let started = Instant::now();
    while !cert_path.is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no self-signed certificate written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pem = std::fs::read(&cert_path).unwrap();
    let client = reqwest12::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest12::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest12::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    wait_https(&client, &format!("{base}/"), &mut p, &log).await;
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let m = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("# TYPE dayshift_requests_total counter"), "{m}");

    let r = client
        .get(format!("http://localhost:{http_port}/v1/models?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://localhost:{port}/v1/models?x=1").as_str()
    );

    // SIGTERM stops it cleanly; a restart reuses the same certificate.
    sigterm(&p.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
    let mut p = start(&config, &log);
    wait_https(&client, &format!("{base}/"), &mut p, &log).await;
    assert_eq!(std::fs::read(&cert_path).unwrap(), pem);
}

/// Sends SIGTERM to our own child (no `kill` binary needed).
fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: plain kill(2) on the pid of a child this test spawned and still owns.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}
