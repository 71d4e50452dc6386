//! `/__admin`: fault injection and inspection, for tests and operators of the fake.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use super::state::Fault;

#[derive(Debug, Deserialize)]
struct Capacity {
    server_type: String,
    location: String,
}

/// Routes under `/__admin`.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/__admin/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/__admin/unavailable", post(add_unavailable))
        .route("/__admin/rate_limit", post(set_rate_limit))
        .route("/__admin/calls", get(calls))
        .route("/__admin/hosts", get(hosts))
}

/// `POST /__admin/faults` with a `Fault` (or a list of them).
async fn add_fault(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<Value>,
) -> Result<StatusCode, (StatusCode, String)> {
    let faults: Vec<Fault> = if body.is_array() {
        serde_json::from_value(body)
    } else {
        serde_json::from_value(body).map(|f| vec![f])
    }
    .map_err(|e| (StatusCode::BAD_REQUEST, format!("not a fault: {e}")))?;
    shared.lock().faults.extend(faults);
    Ok(StatusCode::NO_CONTENT)
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "faults": shared.lock().faults }))
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn add_unavailable(State(shared): State<Arc<Shared>>, Json(c): Json<Capacity>) -> StatusCode {
    shared.lock().unavailable.push((c.server_type, c.location));
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct RateLimit {
    limit: u32,
    per_second: f64,
}

/// `POST /__admin/rate_limit` `{"limit": N, "per_second": R}`: a new, full budget.
async fn set_rate_limit(State(shared): State<Arc<Shared>>, Json(r): Json<RateLimit>) -> StatusCode {
    shared.lock().budget = super::state::Budget::new(r.limit, r.per_second);
    StatusCode::NO_CONTENT
}

async fn calls(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "calls": shared.lock().calls }))
}

async fn hosts(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let list = shared
        .hosts
        .as_ref()
        .map(|h| h.describe())
        .unwrap_or_default();
    Json(json!({ "hosts": list }))
}
