//! The node's HTTP API: OpenAI-compatible endpoints plus `/health` and `/metrics`.

pub mod access;
pub mod embeddings;
pub mod error;
pub mod generate;
pub mod tools;
pub mod types;

use crate::engine::EngineHandle;
use crate::metrics::Metrics;
use crate::model::GenerationModel;
use crate::model::bert::EmbeddingModel;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dayshift_config::protocol::{ModelKind, NodeState, ServedModel};
use error::ApiError;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// A generation model with its engine.
#[derive(Clone)]
pub struct GenService {
    /// The model (tokenizer, template, network).
    pub model: Arc<GenerationModel>,
    /// Its engine.
    pub engine: EngineHandle,
}

/// A model the node serves.
#[derive(Clone)]
pub enum Served {
    /// Text generation.
    Generation(GenService),
    /// Embeddings.
    Embedding(Arc<EmbeddingModel>),
}

/// Shared state of the API.
pub struct AppState {
    /// Figures.
    pub metrics: Arc<Metrics>,
    state: AtomicU8,
    models: RwLock<BTreeMap<String, (Served, ServedModel)>>,
    created: u64,
    /// Who may call the API (the ingress only, or anyone for a standalone node).
    pub access: access::NodeAccess,
}

/// Counts a request as in flight for as long as it lives (streams included).
pub struct InFlight(Arc<Metrics>);

impl InFlight {
    /// Starts counting.
    pub fn new(m: &Arc<Metrics>) -> Self {
        m.http_in_flight.fetch_add(1, Relaxed);
        InFlight(m.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.http_in_flight.fetch_sub(1, Relaxed);
    }
}

/// Random request id with a prefix.
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{prefix}{n:032x}")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AppState {
    /// Empty state in `loading`, serving whom `access` admits.
    pub fn new(metrics: Arc<Metrics>, access: access::NodeAccess) -> Arc<Self> {
        Arc::new(AppState {
            metrics,
            state: AtomicU8::new(0),
            models: RwLock::new(BTreeMap::new()),
            created: now_secs(),
            access,
        })
    }
    /// Adds a loaded model.
    pub fn add_model(&self, name: String, served: Served, info: ServedModel) {
        if let Ok(mut m) = self.models.write() {
            m.insert(name, (served, info));
        }
    }
    /// The models served, for registration.
    pub fn served_models(&self) -> Vec<ServedModel> {
        self.models
            .read()
            .map(|m| m.values().map(|(_, i)| i.clone()).collect())
            .unwrap_or_default()
    }
    /// Engines of the generation models.
    pub fn engines(&self) -> Vec<EngineHandle> {
        self.models
            .read()
            .map(|m| {
                m.values()
                    .filter_map(|(s, _)| match s {
                        Served::Generation(g) => Some(g.engine.clone()),
                        Served::Embedding(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Current state.
    pub fn state(&self) -> NodeState {
        match self.state.load(Relaxed) {
            0 => NodeState::Loading,
            1 => NodeState::Ready,
            _ => NodeState::Draining,
        }
    }
    /// Sets the state.
    pub fn set_state(&self, s: NodeState) {
        let v = match s {
            NodeState::Loading => 0,
            NodeState::Ready => 1,
            NodeState::Draining => 2,
        };
        self.state.store(v, Relaxed);
    }
    fn state_name(&self) -> &'static str {
        match self.state() {
            NodeState::Loading => "loading",
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
        }
    }
    fn check_open(&self) -> Result<(), ApiError> {
        match self.state() {
            NodeState::Ready => Ok(()),
            NodeState::Loading => Err(ApiError::unavailable(
                "This node is still loading its model: retry in a few seconds.",
                "node_loading",
            )),
            NodeState::Draining => Err(ApiError::unavailable(
                "This node is shutting down and takes no new requests: retry on another node.",
                "node_draining",
            )),
        }
    }
    fn lookup(&self, name: &str) -> Result<Served, ApiError> {
        self.check_open()?;
        self.models
            .read()
            .ok()
            .and_then(|m| m.get(name).map(|(s, _)| s.clone()))
            .ok_or_else(|| ApiError::unknown_model(name))
    }
    /// The generation service named `name`.
    pub fn generation(&self, name: &str) -> Result<GenService, ApiError> {
        match self.lookup(name)? {
            Served::Generation(g) => Ok(g),
            Served::Embedding(_) => Err(ApiError::invalid(
                Some("model"),
                format!("model `{name}` is an embedding model: use /v1/embeddings."),
            )),
        }
    }
    /// The embedding model named `name`.
    pub fn embedding(&self, name: &str) -> Result<Arc<EmbeddingModel>, ApiError> {
        match self.lookup(name)? {
            Served::Embedding(e) => Ok(e),
            Served::Generation(_) => Err(ApiError::invalid(
                Some("model"),
                format!(
                    "model `{name}` is a generation model: use /v1/chat/completions or /v1/completions."
                ),
            )),
        }
    }
    /// Counts an error and turns it into a response.
    pub fn fail(&self, e: ApiError) -> Response {
        self.metrics.requests_error.fetch_add(1, Relaxed);
        e.into_response()
    }
}

fn model_json(created: u64, info: &ServedModel) -> serde_json::Value {
    json!({
        "id": info.id, "object": "model", "created": created, "owned_by": "dayshift",
        "kind": match info.kind { ModelKind::Generation => "generation", ModelKind::Embedding => "embedding" },
        "context_length": info.context_length,
    })
}

async fn list_models(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<_> = app
        .served_models()
        .iter()
        .map(|i| model_json(app.created, i))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn get_model(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match app.served_models().iter().find(|m| m.id == id) {
        Some(i) => axum::Json(model_json(app.created, i)).into_response(),
        None => ApiError::unknown_model(&id).into_response(),
    }
}

async fn health(State(app): State<Arc<AppState>>) -> Response {
    let status = if app.state() == NodeState::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({"status": app.state_name()}))).into_response()
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(app.state_name()),
    )
        .into_response()
}

async fn not_found() -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "Unknown path: this node serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, /health and /metrics.".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
    }
    .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message:
            "Method not allowed on this path: generation and embeddings take POST, the others GET."
                .into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("method_not_allowed"),
    }
    .into_response()
}

/// The router over `app`.
pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(generate::chat))
        .route("/v1/completions", post(generate::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route(access::HEALTH_PATH, get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            access::require_ingress,
        ))
        .with_state(app)
}
