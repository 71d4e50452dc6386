//! The HTTP routes of `dayshift serve`.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use dayshift_config::protocol::{FAIL_PATH, GOODBYE_PATH, HEARTBEAT_PATH, REGISTER_PATH};

use super::errors::ApiError;
use super::state::SharedState;
use super::{admin, edge, gateway, mirror, node_api, status_page};

async fn not_found() -> Response {
    ApiError::not_found("no such endpoint")
        .with_code("unknown_url")
        .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method not allowed for this endpoint",
    )
    .into_response()
}

/// A handler that panicked answers `500` with an OpenAI-style body (and the connection
/// lives on); the panic itself is logged.
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "a request handler panicked");
    ApiError::internal().into_response()
}

/// Every route, with the state.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(status_page::page))
        .route("/metrics", get(status_page::metrics))
        .route("/v1/models", get(gateway::models))
        .route("/v1/chat/completions", post(gateway::proxy))
        .route("/v1/completions", post(gateway::proxy))
        .route("/v1/embeddings", post(gateway::proxy))
        .route("/v1/{*rest}", any(gateway::unknown))
        .route(REGISTER_PATH, post(node_api::register))
        .route(HEARTBEAT_PATH, post(node_api::heartbeat))
        .route(GOODBYE_PATH, post(node_api::goodbye))
        .route(FAIL_PATH, post(node_api::start_failed))
        .route("/internal/models/{model}/manifest", get(mirror::manifest))
        .route("/internal/models/{model}/files/{*path}", get(mirror::file))
        .route("/admin/nodes", get(admin::nodes).post(admin::create_node))
        .route("/admin/pools/{pool}/on-the-way", post(admin::on_the_way))
        .route("/admin/keys", get(admin::keys).post(admin::create_key))
        .route("/admin/keys/{id}", delete(admin::revoke_key))
        .route("/admin/usage", get(admin::usage))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge::body::guard,
        ))
        .with_state(state)
}
