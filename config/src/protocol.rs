//! Messages between `dayshift-node` and the ingress (registration, heartbeat, goodbye,
//! model mirror manifest).
//!
//! All bodies are JSON. Flow:
//! 1. The node `POST`s a [`RegisterRequest`] to [`REGISTER_PATH`] carrying its one-time
//!    join token; the ingress answers [`RegisterResponse`] with a session token.
//! 2. Every [`RegisterResponse::heartbeat_interval_secs`] the node `POST`s a
//!    [`HeartbeatRequest`] to [`HEARTBEAT_PATH`] with `Authorization: Bearer <session token>`.
//!    The ingress answers [`HeartbeatResponse`]; `401` or `404` (or
//!    [`HeartbeatAction::Reregister`]) means "I do not know you" (e.g. the ingress lost
//!    its in-memory sessions): the node registers again with the same node id and join token.
//! 3. On shutdown the node `POST`s a [`GoodbyeRequest`] to [`GOODBYE_PATH`] (same bearer).
//! 4. A node that cannot start (no GPU or driver, the model does not fit, the model does
//!    not load) `POST`s a [`StartFailure`] to [`FAIL_PATH`] with its join token as bearer
//!    (it never registered) and exits; the ingress marks it `failed` with the reason.
//!
//! 5. The node's own API (everything but a minimal `GET /health`) answers only the
//!    ingress: the node draws a fresh random [`RegisterRequest::api_token`] when its
//!    process starts, keeps it in memory only, and sends it in its registration (over the
//!    TLS connection that verified the ingress's certificate); the ingress keeps it in
//!    memory with the node's routing handle and sends `Authorization: Bearer <api_token>`
//!    on every request it proxies. Anything else gets `401`. The token changes with every
//!    node process and survives nothing but it (see [`NODE_API_TOKEN_MIN_LEN`]).
//!
//! The join token is bound to one node id: the ingress accepts it again only for
//! re-registration of that same node (idempotent), never for another id. Tokens are
//! wrapped in [`Secret`], whose `Debug` never prints the value, so they do not leak
//! into logs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `POST`: a node registers (body [`RegisterRequest`], answer [`RegisterResponse`]).
pub const REGISTER_PATH: &str = "/internal/nodes/register";
/// `POST`: a registered node reports that it is alive, with load figures.
pub const HEARTBEAT_PATH: &str = "/internal/nodes/heartbeat";
/// `POST`: a node says it is going away (after draining).
pub const GOODBYE_PATH: &str = "/internal/nodes/goodbye";
/// `POST`: a node that cannot start says why (body [`StartFailure`], bearer: join token).
pub const FAIL_PATH: &str = "/internal/nodes/fail";
/// `GET {MODEL_MIRROR_PATH}/{model}/manifest` gives a [`ModelManifest`];
/// `GET {MODEL_MIRROR_PATH}/{model}/files/{path}` gives one file (supports `Range`).
/// Both carry `Authorization: Bearer <join token>` (the node has no session yet).
pub const MODEL_MIRROR_PATH: &str = "/internal/models";
/// Version of this protocol; the ingress may refuse a node with another major version.
pub const PROTOCOL_VERSION: u32 = 2;
/// Header the ingress adds to every request it forwards to a node: the API key's id (and
/// the request's end user, `user`, where it names one). A node reuses KV-cached prompt
/// prefixes only between requests with the same value.
pub const CACHE_SCOPE_HEADER: &str = "x-dayshift-cache-scope";
/// Shortest [`RegisterRequest::api_token`] the ingress accepts (the node sends 64 hex
/// digits: 256 random bits).
pub const NODE_API_TOKEN_MIN_LEN: usize = 32;
/// Default seconds between heartbeats when the ingress does not say otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 5;

/// A secret string (join token, session token). Serialized as a plain string;
/// `Debug` and `Display` print `***` so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value itself: use only to send or compare it, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a served model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Text generation: `/v1/chat/completions` and `/v1/completions`.
    Generation,
    /// Sentence embeddings: `/v1/embeddings`.
    Embedding,
}

/// One model a node serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedModel {
    /// The name clients put in the request's `model` field.
    pub id: String,
    /// Generation or embedding.
    pub kind: ModelKind,
    /// Architecture as read from `config.json` (e.g. `llama`, `qwen2`, `bert`).
    pub architecture: String,
    /// Maximum tokens of prompt + completion (or input, for embeddings).
    pub context_length: u32,
    /// dtype the weights run in (`f32`, `bf16`, `f16`).
    pub dtype: String,
}

/// Facts about one accelerator (or the CPU when the node has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuFacts {
    /// Device index (`0` for the CPU).
    pub index: u32,
    /// `cuda` or `cpu`.
    pub backend: String,
    /// Device name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total device memory in bytes (host memory for the CPU).
    pub memory_total_bytes: u64,
    /// Free device memory in bytes when measured.
    pub memory_free_bytes: u64,
    /// Compute capability `major.minor`, e.g. `9.0`; `None` for the CPU.
    pub compute_capability: Option<String>,
}

/// What the node can take on at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Most sequences decoded together in one batched step.
    pub max_running_sequences: u32,
    /// Tokens the KV cache can hold across all running sequences.
    pub kv_cache_tokens: u64,
    /// Requests the node queues before it answers `503`.
    pub max_queued_requests: u32,
}

/// Body of `POST` [`REGISTER_PATH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Protocol version the node speaks ([`PROTOCOL_VERSION`]).
    pub protocol_version: u32,
    /// The node id the ingress gave this node in its config.
    pub node_id: String,
    /// The join token from the node config; bound to `node_id`.
    pub join_token: Secret,
    /// Base URL of the node's OpenAI API, e.g. `https://203.0.113.7:8443`.
    pub api_url: String,
    /// Lowercase hex sha256 of the DER of the node's TLS certificate; the ingress pins it.
    /// `None` when the node serves plain HTTP (tests, loopback only).
    pub tls_cert_sha256: Option<String>,
    /// Models this node serves.
    pub models: Vec<ServedModel>,
    /// Accelerators found (one `cpu` entry when there is none).
    pub gpus: Vec<GpuFacts>,
    /// Capacity figures for routing.
    pub capacity: Capacity,
    /// `dayshift-node` version (`CARGO_PKG_VERSION`).
    pub node_version: String,
    /// The credential the ingress must send (`Authorization: Bearer …`) on every request
    /// to the node's API: drawn at random by the node at start, never stored on disk.
    pub api_token: Secret,
}

/// Answer to a successful registration (`200`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The node id, echoed.
    pub node_id: String,
    /// Token for heartbeats and goodbye: `Authorization: Bearer <session_token>`.
    pub session_token: Secret,
    /// Seconds between heartbeats the ingress wants.
    pub heartbeat_interval_secs: u64,
}

/// The node's own view of its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Model files are being fetched or loaded.
    Loading,
    /// Serving requests.
    Ready,
    /// Finishing running requests, taking no new ones.
    Draining,
}

/// Load figures sent with each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LoadFigures {
    /// Sequences in the running batch now.
    pub running_sequences: u32,
    /// Requests waiting for admission.
    pub queued_requests: u32,
    /// KV-cache tokens in use.
    pub kv_cache_used_tokens: u64,
    /// KV-cache tokens in total.
    pub kv_cache_total_tokens: u64,
    /// Generated tokens per second over the last interval.
    pub generation_tokens_per_second: f64,
    /// HTTP requests in flight (all endpoints).
    pub requests_in_flight: u32,
}

/// Body of `POST` [`HEARTBEAT_PATH`] (with the bearer session token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The node id.
    pub node_id: String,
    /// Current state.
    pub state: NodeState,
    /// Current load.
    pub load: LoadFigures,
}

/// What the ingress wants the node to do after a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatAction {
    /// Nothing: carry on.
    #[default]
    Continue,
    /// The ingress does not know this session: register again.
    Reregister,
    /// Stop taking new requests, finish running ones, say goodbye, exit.
    Drain,
}

/// Answer to a heartbeat (`200`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HeartbeatResponse {
    /// What to do next.
    #[serde(default)]
    pub action: HeartbeatAction,
}

/// Body of `POST` [`GOODBYE_PATH`] (with the bearer session token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoodbyeRequest {
    /// The node id.
    pub node_id: String,
    /// Why the node leaves (e.g. `SIGTERM`).
    pub reason: String,
}

/// Why a node could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFailureKind {
    /// The configured device is not there: no NVIDIA driver, no GPU, or a build without CUDA.
    NoDevice,
    /// The model's weights do not fit the device's memory.
    DoesNotFit,
    /// The model could not be fetched or loaded.
    Model,
    /// Anything else before the node was ready (TLS, listen address, ...).
    Other,
}

impl StartFailureKind {
    /// The name used on the wire and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            StartFailureKind::NoDevice => "no_device",
            StartFailureKind::DoesNotFit => "does_not_fit",
            StartFailureKind::Model => "model",
            StartFailureKind::Other => "other",
        }
    }
}

/// Body of `POST` [`FAIL_PATH`]: the node gives up before it was ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartFailure {
    /// Protocol version the node speaks ([`PROTOCOL_VERSION`]).
    pub protocol_version: u32,
    /// The node id from the node config.
    pub node_id: String,
    /// What kind of failure.
    pub kind: StartFailureKind,
    /// What went wrong and what to change, for the operator.
    pub reason: String,
    /// Devices found (empty when none could be read).
    #[serde(default)]
    pub gpus: Vec<GpuFacts>,
}

/// One file of a model in the ingress's mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the model directory, `/`-separated, no `..`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
}

/// Answer to `GET {MODEL_MIRROR_PATH}/{model}/manifest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelManifest {
    /// Model name.
    pub model: String,
    /// Every file of the model directory.
    pub files: Vec<ManifestFile>,
}

/// Error body the ingress answers on a failed registration or heartbeat
/// (same shape as the OpenAI error body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What went wrong and what to do next.
    pub message: String,
    /// Error class, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Offending field, if any.
    pub param: Option<String>,
    /// Machine-readable code, if any.
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_not_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2\"");
    }

    #[test]
    fn register_roundtrip() {
        let r = RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            node_id: "n1".into(),
            join_token: Secret::new("tok"),
            api_url: "https://127.0.0.1:8443".into(),
            tls_cert_sha256: Some("ab".repeat(32)),
            models: vec![ServedModel {
                id: "tiny".into(),
                kind: ModelKind::Generation,
                architecture: "llama".into(),
                context_length: 256,
                dtype: "f32".into(),
            }],
            gpus: vec![],
            capacity: Capacity {
                max_running_sequences: 32,
                kv_cache_tokens: 4096,
                max_queued_requests: 256,
            },
            node_version: "0.1.0".into(),
            api_token: Secret::new("a".repeat(64)),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert!(!format!("{r:?}").contains("tok\""));
        let back: RegisterRequest = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
        let hb: HeartbeatResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(hb.action, HeartbeatAction::Continue);
    }
}
