//! The node agent against a stand-in ingress (axum, in the test): registration with
//! the TLS fingerprint the node really serves, heartbeats, re-registration after the
//! ingress forgets the node, and SIGTERM during 8 streams: all finish, goodbye, exit 0.
//! A node with an ingress answers only requests bearing the API token it registered
//! (everything but `/health` is `401` without it, and counted).

use crate::common;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dayshift_config::protocol::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    registers: Vec<RegisterRequest>,
    heartbeats: usize,
    goodbyes: Vec<GoodbyeRequest>,
    forget_next_heartbeat: bool,
    drain_on_heartbeat: bool,
    bad_auth: usize,
}

type S = Arc<Mutex<Seen>>;

async fn register(
    State(s): State<S>,
    Json(r): Json<RegisterRequest>,
) -> Result<Json<RegisterResponse>, StatusCode> {
    if r.join_token.expose() != "join-secret-123" {
        return Err(StatusCode::UNAUTHORIZED);
    }
    s.lock().unwrap().registers.push(r.clone());
    Ok(Json(RegisterResponse {
        node_id: r.node_id,
        session_token: Secret::new("session-1"),
        heartbeat_interval_secs: 1,
    }))
}

fn authed(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer session-1")
}

async fn heartbeat(
    State(s): State<S>,
    h: HeaderMap,
    Json(_b): Json<HeartbeatRequest>,
) -> (StatusCode, Json<Value>) {
    let mut g = s.lock().unwrap();
    if !authed(&h) {
        g.bad_auth += 1;
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    g.heartbeats += 1;
    if g.forget_next_heartbeat {
        g.forget_next_heartbeat = false;
        return (StatusCode::NOT_FOUND, Json(json!({})));
    }
    let action = if g.drain_on_heartbeat {
        "drain"
    } else {
        "continue"
    };
    (StatusCode::OK, Json(json!({ "action": action })))
}

async fn goodbye(State(s): State<S>, h: HeaderMap, Json(b): Json<GoodbyeRequest>) -> StatusCode {
    if !authed(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    s.lock().unwrap().goodbyes.push(b);
    StatusCode::OK
}

fn start_ingress(seen: S) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route(REGISTER_PATH, post(register))
                .route(HEARTBEAT_PATH, post(heartbeat))
                .route(GOODBYE_PATH, post(goodbye))
                .with_state(seen);
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn registers_heartbeats_reregisters_and_drains_on_sigterm() {
    let seen: S = Arc::default();
    let ingress = start_ingress(seen.clone());
    let tiny = common::tiny_model();
    let cfg = format!(
        "node_id = \"node-7\"\ningress_url = \"{ingress}\"\njoin_token = \"join-secret-123\"\nlisten = \"127.0.0.1:0\"\ndrain_grace_secs = 120\n[tls]\nmode = \"self_signed\"\n[engine]\ndevice = \"cpu\"\n[[models]]\nname = \"tiny\"\nsource = {{ type = \"local\", path = {:?} }}\n",
        tiny.path().display().to_string()
    );
    let mut node = common::Node::start(&cfg);
    wait_for("registration", || {
        !seen.lock().unwrap().registers.is_empty()
    });
    let reg = seen.lock().unwrap().registers[0].clone();
    assert_eq!(reg.node_id, "node-7");
    assert_eq!(reg.models[0].id, "tiny");
    assert_eq!(reg.gpus[0].backend, "cpu");
    assert!(reg.capacity.kv_cache_tokens > 0);
    assert!(
        reg.api_url.starts_with("https://127.0.0.1:"),
        "{}",
        reg.api_url
    );
    // The fingerprint is the certificate the node really serves.
    let c = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .unwrap();
    let r = c.get(node.url("/health")).send().unwrap();
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    let der = info.peer_certificate().unwrap();
    assert_eq!(
        Some(dayshift_node::tls::fingerprint(der)),
        reg.tls_cert_sha256
    );
    // The API answers only the registered credential; /health answers anyone.
    let token = reg.api_token.expose().to_string();
    assert_eq!(token.len(), 64, "256 random bits in hex");
    let bearer = format!("Bearer {token}");
    let c = common::client();
    for path in ["/v1/models", "/metrics", "/v1/nonexistent"] {
        let r = c.get(node.url(path)).send().unwrap();
        assert_eq!(r.status(), 401, "{path} without the credential");
        let r = c
            .get(node.url(path))
            .header("authorization", "Bearer wrong")
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong credential");
    }
    let r = c
        .post(node.url("/v1/chat/completions"))
        .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "node_credential_required", "{v}");
    assert_eq!(c.get(node.url("/health")).send().unwrap().status(), 200);
    let r = c
        .get(node.url("/v1/models"))
        .header("authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = c
        .get(node.url("/metrics"))
        .header("authorization", &bearer)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains("dayshift_node_unauthorized_requests_total 7"),
        "the 7 refusals are counted: {m}"
    );
    // Heartbeats; then the ingress "forgets" the node and it registers again, with the
    // same credential (it lives as long as the node process).
    wait_for("heartbeats", || seen.lock().unwrap().heartbeats >= 2);
    seen.lock().unwrap().forget_next_heartbeat = true;
    wait_for("re-registration", || {
        seen.lock().unwrap().registers.len() >= 2
    });
    assert_eq!(seen.lock().unwrap().registers[1].api_token, reg.api_token);
    // Neither the join token nor the API credential reaches the log.
    assert!(
        !node
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("join-secret-123") || l.contains(&token))
    );

    // 8 streams, SIGTERM once all have started.
    let url = node.url("/v1/completions");
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            let bearer = bearer.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let c = common::client();
                let mut resp = c
                    .post(&url)
                    .header("authorization", &bearer)
                    .json(&json!({"model": "tiny", "prompt": format!("stream {i}"), "max_tokens": 150, "temperature": 0, "stream": true}))
                    .send()
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let mut first = [0u8; 16];
                resp.read_exact(&mut first).unwrap();
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut rest = String::new();
                resp.read_to_string(&mut rest).unwrap();
                rest
            })
        })
        .collect();
    wait_for("8 streams to start", || {
        started.load(std::sync::atomic::Ordering::SeqCst) == 8
    });
    node.term();
    // New requests are refused while draining.
    std::thread::sleep(Duration::from_millis(100));
    let r = common::client()
        .post(node.url("/v1/completions"))
        .header("authorization", &bearer)
        .json(&json!({"model": "tiny", "prompt": "late"}))
        .send();
    if let Ok(r) = r {
        assert_eq!(r.status(), 503);
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], "node_draining");
    }
    for h in handles {
        let rest = h.join().unwrap();
        assert!(
            rest.contains("\"finish_reason\":\"length\"")
                || rest.contains("\"finish_reason\":\"stop\""),
            "a stream was cut: {rest}"
        );
        assert!(
            rest.trim_end().ends_with("data: [DONE]"),
            "a stream did not end with [DONE]"
        );
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "node did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let g = seen.lock().unwrap();
    assert_eq!(g.goodbyes.len(), 1);
    assert_eq!(g.goodbyes[0].node_id, "node-7");
    assert_eq!(g.bad_auth, 0);
}

#[test]
fn drains_and_exits_when_the_ingress_says_so() {
    let seen: S = Arc::default();
    seen.lock().unwrap().drain_on_heartbeat = true;
    let ingress = start_ingress(seen.clone());
    let tiny = common::tiny_model();
    let cfg = format!(
        "node_id = \"node-8\"\ningress_url = \"{ingress}\"\njoin_token = \"join-secret-123\"\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n[engine]\ndevice = \"cpu\"\n[[models]]\nname = \"tiny\"\nsource = {{ type = \"local\", path = {:?} }}\n",
        tiny.path().display().to_string()
    );
    let mut node = common::Node::start(&cfg);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "node did not drain on the ingress's order"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let g = seen.lock().unwrap();
    assert_eq!(g.goodbyes.len(), 1);
    assert!(
        g.goodbyes[0].reason.contains("ingress"),
        "{:?}",
        g.goodbyes[0]
    );
}
