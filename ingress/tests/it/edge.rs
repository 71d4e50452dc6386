//! The edge of `dayshift serve` (the real binary) against real sockets: slow-header,
//! slow-body, half-sent-body and idle clients are closed within the configured bounds
//! (1–2 s here, asserted with generous margins; latency under attack is measured by
//! `bench/edge/run.sh`), early `401`/`413` answers keep an HTTP/1 connection in step or
//! close it, the per-address connection limit, and HTTP/2 early refusals that the
//! system curl reads every time, and SIGTERM letting a request in flight finish.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Serve {
    _proc: Proc,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `dayshift serve` with `gateway` lines added to `[gateway]`; waits until `/`
/// answers.
fn start(tls: &str, gateway: &str) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("dayshift.toml");
    std::fs::write(
        &config,
        format!(
            r#"cluster = "edge"
state_dir = "{}"
[provider]
kind = "local"
[pools.chat]
model = "tiny-chat"
[gateway]
listen = "127.0.0.1:{port}"
max_body_bytes = 65536
{gateway}
[tls]
mode = "{tls}"
"#,
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("DAYSHIFT_LOG", "info,dayshift::server::edge=debug")
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("serve.log")).unwrap(),
        ))
        .spawn()
        .expect("dayshift serve");
    let mut p = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    loop {
        if TcpStream::connect(addr).is_ok() {
            break;
        }
        if let Ok(Some(s)) = p.0.try_wait() {
            panic!(
                "dayshift serve exited ({s}): {}",
                std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no listener");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve {
        _proc: p,
        addr,
        dir,
    }
}

/// Reads until the peer closes (or `limit` passes): (bytes, time to the close).
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "no close within {limit:?} ({e}); read so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
}

/// Reads one HTTP/1 response (head + Content-Length body) without waiting for a close.
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        let n = s.read(&mut buf).expect("response");
        assert!(n > 0, "closed before a whole response: {text:?}");
        out.extend_from_slice(&buf[..n]);
    }
}

fn has_close(resp: &str) -> bool {
    resp.to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n")
}

fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_to_close(&mut s, Duration::from_secs(10)).0
}

fn counter(metrics: &str, name: &str, reason: &str) -> u64 {
    let key = format!("{name}{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

const CHAT: &str = r#"{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn edge_slow_clients_are_closed_within_bounds() {
    let s = start(
        "off",
        "header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\nidle_timeout = \"2s\"",
    );
    let addr = s.addr;
    // Generous: the bound plus scheduling slack on a loaded 2-core machine.
    let margin = Duration::from_secs(3);
    let mut clients = Vec::new();
    // Silent: connects, sends nothing.
    clients.push(std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let (got, t) = read_to_close(&mut c, Duration::from_secs(20));
        ("silent", got, t, Duration::from_secs(1))
    }));
    // Slowloris: a header line every 300 ms, never the blank line.
    clients.push(std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let t = Instant::now();
        c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut i = 0;
        while c.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).is_ok() {
            i += 1;
            std::thread::sleep(Duration::from_millis(300));
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 64];
            let closed = matches!(c.read(&mut b), Ok(0));
            c.set_nonblocking(false).unwrap();
            if closed || t.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        (
            "slow header",
            String::new(),
            t.elapsed(),
            Duration::from_secs(1),
        )
    }));
    // Half-sent body: announces 100 bytes, sends 5.
    clients.push(std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let t = Instant::now();
        c.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dsk-wrong\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mod",
        )
        .unwrap();
        let (got, _) = read_to_close(&mut c, Duration::from_secs(20));
        ("half-sent body", got, t.elapsed(), Duration::from_secs(1))
    }));
    // Slow body: 100 bytes announced, one every 200 ms (20 s in all).
    clients.push(std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let t = Instant::now();
        c.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            .unwrap();
        let mut r = c.try_clone().unwrap();
        let reader = std::thread::spawn(move || read_to_close(&mut r, Duration::from_secs(20)));
        for _ in 0..100 {
            if c.write_all(b" ").is_err() || reader.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let (got, _) = reader.join().unwrap();
        ("slow body", got, t.elapsed(), Duration::from_secs(1))
    }));
    // Idle keep-alive: one request, then nothing.
    clients.push(std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let first = read_response(&mut c);
        assert!(first.starts_with("HTTP/1.1 401"), "{first}");
        let (rest, t) = read_to_close(&mut c, Duration::from_secs(20));
        assert!(rest.is_empty(), "{rest}");
        assert!(
            t >= Duration::from_millis(1500),
            "idle connection closed after only {t:?}"
        );
        ("idle", first, t, Duration::from_secs(2))
    }));
    // Meanwhile, normal requests are answered.
    let http = reqwest12::Client::new();
    let mut normal = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = http
            .post(format!("http://{addr}/v1/chat/completions"))
            .bearer_auth("dsk-wrong")
            .header("content-type", "application/json")
            .body(CHAT)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        normal.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in clients {
        let (what, got, took, bound) = c.join().unwrap();
        eprintln!("{what}: closed after {took:?} (bound {bound:?})");
        assert!(
            took <= bound + margin,
            "{what}: closed after {took:?}, bound {bound:?}\n{}",
            s.log()
        );
        if what.ends_with("body") {
            assert!(got.starts_with("HTTP/1.1 408"), "{what}: {got}");
            assert!(has_close(&got), "{what}: {got}");
            assert!(
                got.contains("\"code\":\"request_timeout\""),
                "{what}: {got}"
            );
        }
    }
    normal.sort();
    eprintln!(
        "normal requests meanwhile: max {:?}, median {:?}",
        normal.last().unwrap(),
        normal[normal.len() / 2]
    );
    let m = metrics(addr);
    let closed = "dayshift_connections_closed_total";
    assert!(counter(&m, closed, "header_timeout") >= 2, "{m}");
    assert!(counter(&m, closed, "body_timeout") >= 2, "{m}");
    assert!(counter(&m, closed, "idle_timeout") >= 1, "{m}");
}

#[tokio::test]
async fn edge_early_refusals_keep_http1_in_step_or_close() {
    let s = start("off", "");
    let addr = s.addr;
    // 401 with the whole body sent: drained, so the next request on the connection works.
    let mut c = TcpStream::connect(addr).unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dsk-wrong\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    c.write_all(req.as_bytes()).unwrap();
    let first = read_response(&mut c);
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    assert!(first.contains("invalid_api_key"), "{first}");
    c.write_all(req.as_bytes()).unwrap();
    let second = read_response(&mut c);
    assert!(second.starts_with("HTTP/1.1 401"), "{second}");
    // Same for a 404 on an unknown /v1 path.
    c.write_all(req.replace("/v1/chat/completions", "/v1/nope").as_bytes())
        .unwrap();
    let third = read_response(&mut c);
    assert!(third.starts_with("HTTP/1.1 404"), "{third}");
    c.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut c).starts_with("HTTP/1.1 401"));

    // 413 for an announced body over max_body_bytes: answered before the body, closing.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dsk-wrong\r\n\
          Content-Length: 10000000\r\n\r\n",
    )
    .unwrap();
    let (got, t) = read_to_close(&mut c, Duration::from_secs(10));
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(has_close(&got), "{got}");
    assert!(got.contains("request_too_large"), "{got}");
    assert!(t < Duration::from_secs(5), "{t:?}");

    // A chunked body growing past the limit: 413 and closed.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"POST /admin/keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 40000, "a".repeat(40000));
    let _ = c.write_all(chunk.as_bytes());
    let _ = c.write_all(chunk.as_bytes());
    let (got, _) = read_to_close(&mut c, Duration::from_secs(10));
    assert!(
        got.starts_with("HTTP/1.1 413") || got.starts_with("HTTP/1.1 401"),
        "{got}"
    );
    assert!(has_close(&got), "{got}");

    // Expect: 100-continue and a wrong key: 401 at once, no body asked for, closing.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dsk-wrong\r\n\
          Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let (got, _) = read_to_close(&mut c, Duration::from_secs(10));
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");
    assert!(has_close(&got), "{got}");

    let m = metrics(addr);
    assert!(
        counter(&m, "dayshift_connections_closed_total", "body_too_large") >= 1,
        "{m}"
    );
}

#[tokio::test]
async fn edge_limits_connections_per_client_address() {
    let s = start(
        "off",
        "max_connections_per_address = 3\nheader_read_timeout = \"20s\"",
    );
    let addr = s.addr;
    // Let the server see the end of start()'s probe connection first.
    std::thread::sleep(Duration::from_millis(300));
    let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Let the server account for the three before the fourth arrives.
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = TcpStream::connect(addr).unwrap();
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (got, t) = read_to_close(&mut fourth, Duration::from_secs(5));
    assert!(
        got.is_empty(),
        "the fourth connection was served: {got}\n{}",
        s.log()
    );
    assert!(t < Duration::from_secs(2), "{t:?}");
    // Another address (127.0.0.2, also loopback) is not affected.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let other = other.connect(addr).await.unwrap().into_std().unwrap();
    other.set_nonblocking(false).unwrap();
    let mut other = other;
    other
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (m, _) = read_to_close(&mut other, Duration::from_secs(10));
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert_eq!(
        counter(
            &m,
            "dayshift_connections_refused_total",
            "per_address_limit"
        ),
        1,
        "{m}"
    );
    // A freed place is taken again.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(300));
    let mut again = TcpStream::connect(addr).unwrap();
    again
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (m, _) = read_to_close(&mut again, Duration::from_secs(10));
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
}

/// `curl` with `args`: (exit status, stdout).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(args)
        .output()
        .expect("curl (the system's; the Debian image has 7.88)");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn edge_http2_early_refusals_reach_curl() {
    let (rc, version) = curl(&["--version"]);
    assert_eq!(rc, 0, "{version}");
    eprintln!("{}", version.lines().next().unwrap_or_default());
    assert!(
        version.contains("HTTP2"),
        "this curl has no HTTP/2: {version}"
    );
    let s = start("self-signed", "");
    let base = format!("https://127.0.0.1:{}", s.addr.port());
    // A body like the README's example, and a larger one (several DATA frames).
    let big = format!(
        r#"{{"model":"tiny-chat","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(40_000)
    );
    for i in 0..20 {
        let body = if i % 2 == 0 { CHAT } else { big.as_str() };
        for (path, want) in [
            ("/v1/chat/completions", "invalid_api_key"),
            ("/v1/nope", "unknown_url"),
        ] {
            let url = format!("{base}{path}");
            let (rc, out) = curl(&[
                "--http2",
                "-k",
                "-sS",
                "-w",
                "\nHTTP/%{http_version} %{http_code}\n",
                "-H",
                "Authorization: Bearer dsk-mistyped",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                &url,
            ]);
            assert_eq!(rc, 0, "try {i} {path}: curl failed: {out}");
            assert!(out.contains(want), "try {i} {path}: {out}");
            assert!(out.contains("HTTP/2 40"), "try {i} {path}: {out}");
        }
    }
    // And over HTTP/1.1 on TLS.
    let url = format!("{base}/v1/chat/completions");
    let (rc, out) = curl(&[
        "--http1.1",
        "-k",
        "-sS",
        "-H",
        "Authorization: Bearer dsk-mistyped",
        "-d",
        &big,
        &url,
    ]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("invalid_api_key"), "{out}");
}

#[tokio::test]
async fn edge_sigterm_lets_a_request_in_flight_finish() {
    let s = start("off", "body_read_timeout = \"20s\"");
    let addr = s.addr;
    // A request whose body is still arriving is in flight.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dsk-wrong\r\n\
          Content-Type: application/json\r\nContent-Length: 21\r\n\r\n{\"model\":",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = i32::try_from(s._proc.0.id()).unwrap();
    // SAFETY: plain kill(2) on the pid of a child this test spawned and still owns.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    // The listener closes at once…
    let started = Instant::now();
    while TcpStream::connect(addr).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // …and the request in flight still gets its answer.
    c.write_all(b"\"tiny-chat\"}").unwrap();
    let (got, _) = read_to_close(&mut c, Duration::from_secs(10));
    assert!(got.starts_with("HTTP/1.1 401"), "{got}\n{}", s.log());
    let mut p = s._proc;
    let started = Instant::now();
    loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            assert!(
                st.success(),
                "exit status {st}\n{}",
                std::fs::read_to_string(s.dir.path().join("serve.log")).unwrap_or_default()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn edge_tls_handshake_is_bounded() {
    let s = start("self-signed", "header_read_timeout = \"1s\"");
    // Connects to the HTTPS port and never says hello.
    let mut c = TcpStream::connect(s.addr).unwrap();
    let (got, t) = read_to_close(&mut c, Duration::from_secs(20));
    assert!(got.is_empty(), "{got}");
    assert!(t <= Duration::from_secs(4), "closed after {t:?}, bound 1 s");
    // Half a hello: the same.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let (_, t) = read_to_close(&mut c, Duration::from_secs(20));
    assert!(t <= Duration::from_secs(4), "closed after {t:?}, bound 1 s");
    let http = reqwest12::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let m = http
        .get(format!("https://127.0.0.1:{}/metrics", s.addr.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        counter(
            &m,
            "dayshift_connections_closed_total",
            "tls_handshake_timeout"
        ),
        2,
        "{m}"
    );
}
