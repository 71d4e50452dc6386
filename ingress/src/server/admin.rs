//! The admin API (`/admin/*`), behind the admin token (`Authorization: Bearer`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::admin as check;
use super::errors::ApiError;
use super::state::SharedState;
use crate::store::KeyLimits;

macro_rules! guard {
    ($state:expr, $headers:expr) => {
        if let Err(e) = check(&$state, &$headers) {
            return e.into_response();
        }
    };
}

/// `GET /admin/nodes`: stored nodes with live routing facts.
pub async fn nodes(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    guard!(state, headers);
    let rows = match state.store.list_nodes(true).await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let stale = state.tuning.stale_after;
    let out: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|n| {
            let live = state.registry.node(&n.id);
            serde_json::json!({
                "node": n,
                "routable": live.as_ref().is_some_and(|h| h.routable(stale)),
                "in_flight": live.as_ref().map(|h| h.in_flight()),
                "load": live.as_ref().map(|h| h.load()),
            })
        })
        .collect();
    Json(out).into_response()
}

/// Body of `POST /admin/nodes`.
#[derive(Deserialize)]
pub struct CreateNode {
    /// Node id.
    pub id: String,
    /// Pool.
    pub pool: String,
}

/// `POST /admin/nodes`: expects a node (manual or on-premise nodes): writes its row and
/// answers its one-time join token.
pub async fn create_node(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    guard!(state, headers);
    let req: CreateNode = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(format!("bad body: {e}")).into_response(),
    };
    if !state.config.pools.contains_key(&req.pool) {
        return ApiError::bad_request(format!("unknown pool `{}`", req.pool)).into_response();
    }
    match state.create_node(&req.id, &req.pool).await {
        Ok(token) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"node_id": req.id, "join_token": token.expose()})),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Body of `POST /admin/pools/{pool}/on-the-way`.
#[derive(Deserialize)]
pub struct OnTheWay {
    /// Nodes on their way.
    pub count: u32,
}

/// `POST /admin/pools/{pool}/on-the-way`: what the scheduler's hook does, over HTTP.
pub async fn on_the_way(
    State(state): State<SharedState>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    guard!(state, headers);
    let req: OnTheWay = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(format!("bad body: {e}")).into_response(),
    };
    if state.set_nodes_on_the_way(&pool, req.count) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::not_found(format!("unknown pool `{pool}`")).into_response()
    }
}

/// `GET /admin/keys`.
pub async fn keys(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    guard!(state, headers);
    match state.store.list_api_keys().await {
        Ok(k) => Json(k).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Body of `POST /admin/keys`.
#[derive(Deserialize)]
pub struct CreateKey {
    /// Name.
    pub name: String,
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<i64>,
    /// Tokens per day.
    #[serde(default)]
    pub tokens_per_day: Option<i64>,
}

/// `POST /admin/keys`: the secret is in the answer, once.
pub async fn create_key(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    guard!(state, headers);
    let req: CreateKey = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(format!("bad body: {e}")).into_response(),
    };
    let limits = KeyLimits {
        requests_per_minute: req.requests_per_minute,
        tokens_per_day: req.tokens_per_day,
    };
    match state.store.create_api_key(&req.name, limits).await {
        Ok(k) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"key": k.key, "secret": k.secret.expose()})),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `DELETE /admin/keys/{id}`: revokes at once (the key cache is cleared).
pub async fn revoke_key(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    guard!(state, headers);
    match state.store.revoke_api_key(&id).await {
        Ok(true) => {
            state.keys.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => ApiError::not_found(format!("no live key `{id}`")).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Query of `GET /admin/usage`.
#[derive(Deserialize)]
pub struct UsageQuery {
    /// From (unix ms), default 0.
    #[serde(default)]
    pub from: i64,
    /// To (unix ms), default now.
    #[serde(default)]
    pub to: Option<i64>,
}

/// `GET /admin/usage?from=&to=`: tokens per key.
pub async fn usage(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<UsageQuery>,
) -> Response {
    guard!(state, headers);
    let to =
        q.to.unwrap_or_else(|| state.clock.now().timestamp_millis() + 1);
    match state.store.usage_by_key(q.from, to).await {
        Ok(u) => Json(u).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
