//! Test harness: the ingress in-process (TLS off) and stand-in nodes — small axum
//! servers speaking the OpenAI shapes and the registration protocol — because
//! `dayshift-node` is being built in parallel.
#![allow(dead_code)]

pub mod pebble;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use dayshift::server::{Built, Tuning, build};
use dayshift_config::Config;
use dayshift_config::clock::{Clock, SystemClock};
use dayshift_config::protocol::{
    Capacity, ModelKind, PROTOCOL_VERSION, RegisterRequest, RegisterResponse, Secret, ServedModel,
};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

pub use reqwest12 as reqwest;

/// A running in-process ingress.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The built server (state with the scheduler hooks).
    pub built: Option<Built>,
    /// The admin token.
    pub admin: String,
    /// Temp folder with state and schedule.
    pub dir: tempfile::TempDir,
    /// HTTP client.
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// The text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        let url = format!("{}/metrics", self.url);
        self.get(&url, None).await.text().await.unwrap()
    }
    /// `POST url` with a JSON body and, where given, a bearer token.
    pub async fn post_json(
        &self,
        url: &str,
        token: Option<&str>,
        body: &impl serde::Serialize,
    ) -> reqwest::Response {
        let mut req = self.http.post(url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
    /// `GET url` with, where given, a bearer token.
    pub async fn get(&self, url: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
    /// The shared state.
    pub fn state(&self) -> &dayshift::server::SharedState {
        &self.built.as_ref().expect("built").state
    }
    /// Stops the server, flushing usage.
    pub async fn stop(mut self) {
        self.server.abort();
        if let Some(b) = self.built.take() {
            b.shutdown().await;
        }
    }
}

/// Default schedule: Mon–Fri 08:00–18:00 Berlin for both pools.
pub const OFFICE_SCHEDULE: &str = r#"
timezone = "Europe/Berlin"
[[window]]
pool = "chat"
days = "mon-fri"
start = "08:00"
end = "18:00"
nodes = 1
[[window]]
pool = "embed"
days = "mon-fri"
start = "08:00"
end = "18:00"
nodes = 1
"#;

/// The config text for a test gateway in `dir`.
pub fn config_text(
    dir: &std::path::Path,
    database_url: Option<&str>,
    queue_timeout: &str,
) -> String {
    let db = database_url
        .map(|u| format!("database_url = \"{u}\"\n"))
        .unwrap_or_default();
    format!(
        r#"cluster = "test"
state_dir = "{state}"
{db}schedule = "{dir}/schedule.toml"
[provider]
kind = "local"
[pools.chat]
model = "tiny-chat"
queue_timeout = "{queue_timeout}"
[pools.embed]
model = "tiny-embed"
queue_timeout = "{queue_timeout}"
[gateway]
listen = "127.0.0.1:0"
max_body_bytes = 65536
[tls]
mode = "off"
"#,
        state = dir.join("state").display(),
        dir = dir.display(),
    )
}

/// Starts an ingress with `clock` (wall clock by default) and short tunables.
pub async fn gateway_with(clock: Option<Arc<dyn Clock>>, queue_timeout: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("schedule.toml"), OFFICE_SCHEDULE).expect("schedule");
    let text = config_text(dir.path(), None, queue_timeout);
    let config = Config::parse("dayshift.toml", &text, dir.path()).expect("config");
    let tuning = Tuning {
        key_cache_ttl: Duration::from_millis(200),
        usage_flush: Duration::from_millis(50),
        ..Tuning::default()
    };
    let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
    let built = build(config, clock, tuning).await.expect("build");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = built.router.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let admin = std::fs::read_to_string(dir.path().join("state/admin-token")).expect("admin token");
    Gateway {
        url: format!("http://{addr}"),
        built: Some(built),
        admin,
        dir,
        http: reqwest::Client::new(),
        server,
    }
}

/// Starts an ingress on the wall clock.
pub async fn gateway() -> Gateway {
    gateway_with(None, "3s").await
}

/// A stand-in node.
pub struct StandIn {
    /// Node id it answers with (header `x-stand-in-node`).
    pub id: String,
    /// Base URL (`https://127.0.0.1:PORT` or `http://…`).
    pub url: String,
    /// sha256 hex of its certificate (TLS only).
    pub fingerprint: Option<String>,
    /// Streams stop after their first chunk until a permit is added here.
    pub gate: Arc<Semaphore>,
    handle: axum_server::Handle<SocketAddr>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

#[derive(Clone)]
struct NodeCtx {
    id: String,
    gate: Arc<Semaphore>,
    hold: bool,
}

fn sse(v: serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

async fn chat(State(ctx): State<NodeCtx>, body: Bytes) -> Response {
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = req["model"].as_str().unwrap_or("?").to_string();
    let stream = req["stream"].as_bool().unwrap_or(false);
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let mut resp = if !stream {
        axum::Json(serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                         "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9,
                      "prompt_tokens_details": {"cached_tokens": 3}}
        }))
        .into_response()
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let ctx2 = ctx.clone();
        tokio::spawn(async move {
            let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
                sse(serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                }))
            };
            let _ = tx
                .send(chunk(
                    serde_json::json!({"role": "assistant", "content": "Par"}),
                    serde_json::Value::Null,
                ))
                .await;
            if ctx2.hold
                && let Ok(p) = ctx2.gate.acquire().await
            {
                p.forget();
            }
            let _ = tx
                .send(chunk(
                    serde_json::json!({"content": "is."}),
                    serde_json::Value::Null,
                ))
                .await;
            let _ = tx
                .send(chunk(serde_json::json!({}), serde_json::json!("stop")))
                .await;
            if include_usage {
                let _ = tx
                    .send(sse(serde_json::json!({
                        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                        "model": model, "choices": [],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9,
                      "prompt_tokens_details": {"cached_tokens": 3}}
                    })))
                    .await;
            }
            let _ = tx.send(Bytes::from("data: [DONE]\n\n")).await;
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        r
    };
    if let Ok(v) = HeaderValue::from_str(&ctx.id) {
        resp.headers_mut().insert("x-stand-in-node", v);
    }
    resp
}

async fn completions(State(ctx): State<NodeCtx>, body: Bytes) -> Response {
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut r = axum::Json(serde_json::json!({
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": req["model"],
        "choices": [{"text": " Paris", "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    }))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&ctx.id) {
        r.headers_mut().insert("x-stand-in-node", v);
    }
    r
}

async fn embeddings(body: Bytes) -> Response {
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let inputs = match &req["input"] {
        serde_json::Value::Array(a) => a.len(),
        _ => 1,
    };
    let vector = [0.25f32, -0.5, 1.0];
    let b64 = req["encoding_format"].as_str() == Some("base64");
    let data: Vec<serde_json::Value> = (0..inputs)
        .map(|i| {
            let emb = if b64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                serde_json::json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(vector)
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    axum::Json(serde_json::json!({
        "object": "list", "data": data, "model": req["model"],
        "usage": {"prompt_tokens": 3, "total_tokens": 3}
    }))
    .into_response()
}

/// The API credential a stand-in node `node_id` registers with (fixed per id, so
/// [`register_body`] can send it); stand-ins refuse requests without it, as real nodes do.
pub fn stand_in_api_token(node_id: &str) -> Secret {
    Secret::new(format!("stand-in-api-token-{node_id}-0123456789abcdef"))
}

async fn require_api_token(
    State(ctx): State<NodeCtx>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let want = format!("Bearer {}", stand_in_api_token(&ctx.id).expose());
    let got = req.headers().get(axum::http::header::AUTHORIZATION);
    if got.and_then(|v| v.to_str().ok()) == Some(want.as_str()) {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, "stand-in: no node credential").into_response()
    }
}

fn node_router(ctx: NodeCtx) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            require_api_token,
        ))
        .with_state(ctx)
}

/// A self-signed certificate: (cert PEM, key PEM, sha256 hex of the DER).
pub fn cert() -> (String, String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("cert");
    let fp = hex::encode(Sha256::digest(ck.cert.der().as_ref()));
    (ck.cert.pem(), ck.signing_key.serialize_pem(), fp)
}

/// Starts a stand-in node; `tls` gives it a self-signed certificate; `hold` stops
/// streams after their first chunk until [`StandIn::gate`] gets a permit.
pub async fn stand_in(id: &str, tls: bool, hold: bool) -> StandIn {
    stand_in_with_cert(id, tls, hold, None).await
}

/// Like [`stand_in`], serving the given (cert, key) PEM instead of a fresh one.
pub async fn stand_in_with_cert(
    id: &str,
    tls: bool,
    hold: bool,
    cert_key: Option<(String, String)>,
) -> StandIn {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let gate = Arc::new(Semaphore::new(0));
    let ctx = NodeCtx {
        id: id.to_string(),
        gate: gate.clone(),
        hold,
    };
    let app = node_router(ctx);
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let addr: SocketAddr = std_listener.local_addr().expect("addr");
    let handle = axum_server::Handle::new();
    let (url, fingerprint) = if tls {
        let (c, k, _) = cert();
        let (c, k) = cert_key.unwrap_or((c, k));
        let der = rustls::pki_types::CertificateDer::from_pem_slice(c.as_bytes()).expect("der");
        let fp = hex::encode(Sha256::digest(der.as_ref()));
        let cfg = axum_server::tls_rustls::RustlsConfig::from_pem(c.into_bytes(), k.into_bytes())
            .await
            .expect("rustls");
        let h = handle.clone();
        tokio::spawn(async move {
            let _ = axum_server::from_tcp_rustls(std_listener, cfg)
                .expect("from_tcp")
                .handle(h)
                .serve(app.into_make_service())
                .await;
        });
        (format!("https://{addr}"), Some(fp))
    } else {
        let h = handle.clone();
        tokio::spawn(async move {
            let _ = axum_server::from_tcp(std_listener)
                .expect("from_tcp")
                .handle(h)
                .serve(app.into_make_service())
                .await;
        });
        (format!("http://{addr}"), None)
    };
    StandIn {
        id: id.to_string(),
        url,
        fingerprint,
        gate,
        handle,
    }
}

use rustls::pki_types::pem::PemObject;

/// A "node" that accepts connections and closes them without a byte (dies before
/// answering). Returns its URL.
pub async fn dead_node() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            drop(sock);
        }
    });
    format!("http://{addr}")
}

/// A registration body for `node_id` serving `model`.
pub fn register_body(
    node_id: &str,
    token: &Secret,
    url: &str,
    fp: Option<&str>,
    model: &str,
) -> RegisterRequest {
    RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        node_id: node_id.into(),
        join_token: token.clone(),
        api_url: url.into(),
        tls_cert_sha256: fp.map(str::to_string),
        models: vec![ServedModel {
            id: model.into(),
            kind: ModelKind::Generation,
            architecture: "llama".into(),
            context_length: 2048,
            dtype: "f32".into(),
        }],
        gpus: vec![],
        capacity: Capacity {
            max_running_sequences: 8,
            kv_cache_tokens: 4096,
            max_queued_requests: 64,
        },
        node_version: "stand-in".into(),
        api_token: stand_in_api_token(node_id),
    }
}

/// POSTs a registration; returns (status, body).
pub async fn post_register(
    gw: &Gateway,
    body: &RegisterRequest,
) -> (StatusCode, serde_json::Value) {
    let r = gw
        .http
        .post(format!("{}/internal/nodes/register", gw.url))
        .json(body)
        .send()
        .await
        .expect("register request");
    let status = StatusCode::from_u16(r.status().as_u16()).expect("status");
    (status, r.json().await.unwrap_or_default())
}

/// Expects a node and registers `node` for `pool`/`model`; returns the session.
pub async fn register(gw: &Gateway, node: &StandIn, pool: &str, model: &str) -> RegisterResponse {
    let token = gw
        .state()
        .create_node(&node.id, pool)
        .await
        .expect("create node");
    let body = register_body(
        &node.id,
        &token,
        &node.url,
        node.fingerprint.as_deref(),
        model,
    );
    let (status, v) = post_register(gw, &body).await;
    assert_eq!(status, StatusCode::OK, "registration failed: {v}");
    serde_json::from_value(v).expect("register response")
}

/// Creates an API key; returns its secret.
pub async fn api_key(gw: &Gateway) -> String {
    gw.state()
        .store
        .create_api_key("test", Default::default())
        .await
        .expect("key")
        .secret
        .expose()
        .to_string()
}

/// Creates an API key directly in the store of `state`; returns its secret.
pub async fn api_key_state(state: &dayshift::server::SharedState) -> String {
    state
        .store
        .create_api_key("test", Default::default())
        .await
        .expect("key")
        .secret
        .expose()
        .to_string()
}

/// A chat request body.
pub fn chat_body(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": stream,
    })
}

/// Asserts an OpenAI-style error body.
pub fn assert_openai_error(v: &serde_json::Value) {
    let e = &v["error"];
    assert!(e["message"].is_string(), "no error.message in {v}");
    assert!(e["type"].is_string(), "no error.type in {v}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "param/code missing in {v}"
    );
}

/// An RFC 3339 instant (tests' fixed times).
pub fn at(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// Office hours with an elastic window: `chat` scales between 1 and 3 nodes, Mon–Fri
/// 08:00–18:00 Berlin.
pub const ELASTIC_OFFICE: &str = "timezone = \"Europe/Berlin\"\n\
    [[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"08:00\"\nend = \"18:00\"\nnodes = \"1-3\"\n";

/// Writes pool `chat`'s elastic history as of `now` (a whole second), as the gateways'
/// load sampler and the scheduler would have: the last minute's load averages 8.0 — the
/// 5 s period holding `now` − 32 s has replica a's 6 in flight + 2 queued and replica
/// b's 3 (11), the one holding `now` − 2 s a's 5 — beside a 50 older than a minute
/// (`now` − 162 s); the last decision, 72 s before `now`, raised the target to 2
/// ("load 7.5 over the last 60 s needs 2 node(s) at 4 each; was 1"), not acted on for
/// `refused` when given.
pub async fn write_elastic_history(
    store: &dayshift::store::Store,
    now: chrono::DateTime<chrono::Utc>,
    refused: Option<&str>,
) {
    use dayshift_config::schedule::NodeRange;
    use dayshift_scheduler::{LoadSample, ScaleCause, ScaleState};
    let sample = |replica: &str, ago: i64, in_flight: u32, queued: u32| LoadSample {
        pool: "chat".into(),
        replica: replica.into(),
        at: now - chrono::Duration::seconds(ago),
        in_flight,
        queued,
        nodes: 1,
    };
    store
        .record_load(&[
            sample("a", 162, 50, 0),
            sample("a", 32, 6, 2),
            sample("b", 31, 3, 0),
            sample("a", 2, 5, 0),
        ])
        .await
        .unwrap();
    store
        .save_scale_state(&ScaleState {
            pool: "chat".into(),
            target: 2,
            range: NodeRange { min: 1, max: 3 },
            decided_at: now - chrono::Duration::seconds(72),
            cause: ScaleCause::LoadUp,
            reason: "load 7.5 over the last 60 s needs 2 node(s) at 4 each; was 1".into(),
            load: 7.5,
            woken_until: None,
            refused: refused.map(str::to_string),
        })
        .await
        .unwrap();
}
