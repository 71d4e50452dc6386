//! The node API: registration with a one-time join token bound to the node id,
//! certificate pinning, heartbeats and goodbye.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dayshift_config::protocol::{
    GoodbyeRequest, HeartbeatAction, HeartbeatRequest, HeartbeatResponse, NODE_API_TOKEN_MIN_LEN,
    NodeState as WireState, PROTOCOL_VERSION, RegisterRequest, RegisterResponse, Secret,
    StartFailure,
};

use super::auth::bearer;
use super::errors::ApiError;
use super::registry::NodeHandle;
use super::state::{NodeNotice, SharedState};
use super::upstream::node_client;
use crate::store::{NodeRow, NodeState, hash_secret, random_hex};

fn refuse(state: &SharedState, reason: &'static str, message: String) -> ApiError {
    state.metrics.registration_refused(reason);
    tracing::warn!(reason, "node registration refused: {message}");
    ApiError::forbidden(message).with_code(reason)
}

/// Checks a registration against the node's row; `Ok` when it may proceed.
fn check_registration(
    state: &SharedState,
    req: &RegisterRequest,
    node: Option<&NodeRow>,
) -> Result<(), ApiError> {
    let Some(node) = node else {
        return Err(refuse(
            state,
            "unknown_node",
            format!("no node `{}` is expected", req.node_id),
        ));
    };
    if node.state.is_final() || matches!(node.state, NodeState::Deleting) {
        return Err(refuse(
            state,
            "node_gone",
            format!("node `{}` is {}; it may not register", node.id, node.state),
        ));
    }
    let token_ok = node
        .join_token_hash
        .as_deref()
        .is_some_and(|h| constant_eq(h, &hash_secret(req.join_token.expose())));
    if !token_ok {
        return Err(refuse(
            state,
            "bad_join_token",
            format!("the join token is not valid for node `{}`", node.id),
        ));
    }
    if node.registered_at.is_none() {
        let now = state.clock.now().timestamp_millis();
        if node.join_token_expires_at.is_some_and(|exp| now > exp) {
            return Err(refuse(
                state,
                "join_token_expired",
                format!("the join token of node `{}` has expired", node.id),
            ));
        }
    } else {
        // The token was used already: only the same node (same pinned certificate and
        // address) may register again, e.g. after an ingress restart.
        if node.tls_cert_sha256.as_deref() != req.tls_cert_sha256.as_deref()
            || node.api_url.as_deref() != Some(req.api_url.as_str())
        {
            return Err(refuse(
                state,
                "join_token_replayed",
                format!(
                    "node `{}` registered before with another certificate or address; \
                     the join token is used up",
                    node.id
                ),
            ));
        }
    }
    Ok(())
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `POST /internal/nodes/register`.
pub async fn register(State(state): State<SharedState>, body: axum::body::Bytes) -> Response {
    match register_inner(&state, &body).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn register_inner(state: &SharedState, body: &[u8]) -> Result<RegisterResponse, ApiError> {
    let req: RegisterRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad registration body: {e}")))?;
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(ApiError::bad_request(format!(
            "protocol version {} not supported (this ingress speaks {PROTOCOL_VERSION})",
            req.protocol_version
        ))
        .with_param("protocol_version"));
    }
    let node = state.store.get_node(&req.node_id).await?;
    check_registration(state, &req, node.as_ref())?;
    let Some(node) = node else {
        return Err(ApiError::internal());
    };
    let url = req.api_url.trim();
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        return Err(ApiError::bad_request("api_url must be an http(s) URL").with_param("api_url"));
    }
    if https && req.tls_cert_sha256.is_none() {
        return Err(ApiError::bad_request(
            "an https api_url needs tls_cert_sha256 (the certificate is pinned)",
        )
        .with_param("tls_cert_sha256"));
    }
    if req.api_token.expose().len() < NODE_API_TOKEN_MIN_LEN
        || !req.api_token.expose().bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(format!(
            "api_token must be at least {NODE_API_TOKEN_MIN_LEN} printable characters \
             (the node's random API credential); update dayshift-node"
        ))
        .with_param("api_token"));
    }
    let fingerprint = if https {
        req.tls_cert_sha256
            .as_deref()
            .map(|s| s.to_ascii_lowercase())
    } else {
        None
    };
    let Some(pool) = state.config.pools.get(&node.pool) else {
        return Err(refuse(
            state,
            "unknown_pool",
            format!(
                "node `{}` belongs to pool `{}`, which is not configured",
                node.id, node.pool
            ),
        ));
    };
    if !req.models.iter().any(|m| m.id == pool.model) {
        return Err(ApiError::bad_request(format!(
            "node `{}` does not serve `{}`, the model of pool `{}`",
            node.id, pool.model, node.pool
        ))
        .with_param("models"));
    }
    let client = node_client(fingerprint.as_deref())
        .map_err(|e| ApiError::bad_request(e).with_param("tls_cert_sha256"))?;
    state
        .store
        .record_registration(&node.id, url, req.tls_cert_sha256.as_deref())
        .await?;
    let session = Secret::new(format!("dss-{}", random_hex(24)));
    let handle = Arc::new(NodeHandle::new(
        node.id.clone(),
        node.pool.clone(),
        url.to_string(),
        fingerprint,
        client,
        hash_secret(session.expose()),
        req.api_token.clone(),
    ));
    state.registry.add_node(handle);
    tracing::info!(node = %node.id, pool = %node.pool, api_url = %url, "node registered");
    let _ = state.notices.send(NodeNotice::Registered {
        node_id: node.id.clone(),
        pool: node.pool.clone(),
    });
    Ok(RegisterResponse {
        node_id: node.id,
        session_token: session,
        heartbeat_interval_secs: state.tuning.heartbeat_interval.as_secs().max(1),
    })
}

fn session_node(state: &SharedState, headers: &HeaderMap) -> Result<Arc<NodeHandle>, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("missing session token").with_code("unknown_session")
    })?;
    state.registry.session(&hash_secret(token)).ok_or_else(|| {
        ApiError::unauthorized("unknown session: register again").with_code("unknown_session")
    })
}

/// `POST /internal/nodes/heartbeat`.
pub async fn heartbeat(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let node = match session_node(&state, &headers) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let req: HeartbeatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(format!("bad heartbeat body: {e}")).into_response(),
    };
    if req.node_id != node.id {
        return ApiError::forbidden("session belongs to another node").into_response();
    }
    node.heartbeat(req.load);
    node.set_loading(req.state == WireState::Loading);
    if req.state == WireState::Draining {
        node.set_draining();
    }
    let now = state.clock.now().timestamp_millis();
    let store = state.store.clone();
    let id = node.id.clone();
    let in_flight = node.in_flight();
    tokio::spawn(async move {
        if let Err(e) = store.record_heartbeat(&id, now, in_flight).await {
            tracing::warn!(node = %id, error = %e, "recording a heartbeat failed");
        }
    });
    let action = if node.drain_requested() {
        HeartbeatAction::Drain
    } else {
        HeartbeatAction::Continue
    };
    Json(HeartbeatResponse { action }).into_response()
}

/// `POST /internal/nodes/goodbye`.
pub async fn goodbye(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let node = match session_node(&state, &headers) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let req: GoodbyeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(format!("bad goodbye body: {e}")).into_response(),
    };
    state.registry.remove_node(&node.id);
    let detail = format!("goodbye: {}", req.reason);
    if let Err(e) = state
        .store
        .transition(&node.id, &[NodeState::Ready], NodeState::Draining, &detail)
        .await
    {
        tracing::warn!(node = %node.id, error = %e, "recording a goodbye failed");
    }
    tracing::info!(node = %node.id, reason = %req.reason, "node said goodbye");
    let _ = state.notices.send(NodeNotice::Goodbye {
        node_id: node.id.clone(),
        pool: node.pool.clone(),
        reason: req.reason,
    });
    StatusCode::NO_CONTENT.into_response()
}

/// The event text of a node that reported a start failure; the scheduler recognises
/// such failures by this prefix (see `dayshift_scheduler::START_FAILED`).
fn start_failed_detail(req: &StartFailure) -> String {
    format!(
        "{} ({}): {}",
        dayshift_scheduler::START_FAILED,
        req.kind.as_str(),
        req.reason.chars().take(2000).collect::<String>()
    )
}

/// `POST /internal/nodes/fail`: a node that cannot start says why, with its join token
/// (it never registered). The node becomes `failed` with the reason in its event and
/// error; the scheduler deletes its server and replaces it, or stops the pool when the
/// replacement fails the same way.
pub async fn start_failed(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match start_failed_inner(&state, &headers, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn start_failed_inner(
    state: &SharedState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let req: StartFailure = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad start failure body: {e}")))?;
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("missing join token").with_code("bad_join_token"))?;
    let node = state.store.get_node(&req.node_id).await?;
    let Some(node) = node else {
        return Err(refuse(
            state,
            "unknown_node",
            format!("no node `{}` is expected", req.node_id),
        ));
    };
    let token_ok = node
        .join_token_hash
        .as_deref()
        .is_some_and(|h| constant_eq(h, &hash_secret(token)));
    if !token_ok {
        return Err(refuse(
            state,
            "bad_join_token",
            format!("the join token is not valid for node `{}`", node.id),
        ));
    }
    let detail = start_failed_detail(&req);
    let on_its_way = [
        NodeState::Planned,
        NodeState::Creating,
        NodeState::Booting,
        NodeState::Provisioning,
        NodeState::Loading,
    ];
    let moved = state
        .store
        .transition(&node.id, &on_its_way, NodeState::Failed, &detail)
        .await?;
    if !moved {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!(
                "node `{}` is {}: a start failure is taken only from a node on its way",
                node.id, node.state
            ),
        )
        .with_code("node_not_starting"));
    }
    state.store.set_error(&node.id, &detail).await?;
    state.registry.remove_node(&node.id);
    tracing::error!(node = %node.id, pool = %node.pool, kind = req.kind.as_str(), "node could not start: {}", req.reason);
    let _ = state.notices.send(NodeNotice::StartFailed {
        node_id: node.id.clone(),
        pool: node.pool.clone(),
        reason: req.reason,
    });
    Ok(())
}

/// Watches heartbeats: a node silent for longer than the allowed time leaves routing
/// (it comes back with its next heartbeat) and the scheduler is told once.
pub async fn watch_heartbeats(state: SharedState) {
    let mut reported: std::collections::HashSet<String> = Default::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        for pool in state.registry.pools() {
            for n in pool.nodes() {
                let silent = n.silence() > state.tuning.stale_after;
                if silent && reported.insert(n.id.clone()) {
                    tracing::warn!(node = %n.id, pool = %n.pool, "node stopped heartbeating; out of routing");
                    let _ = state.notices.send(NodeNotice::HeartbeatLost {
                        node_id: n.id.clone(),
                        pool: n.pool.clone(),
                    });
                } else if !silent {
                    reported.remove(&n.id);
                }
            }
        }
    }
}
