//! `/__admin`: fault injection and inspection (the same calls as fake-hcloud's).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use crate::fake_hcloud::Fault;

#[derive(Debug, Deserialize)]
struct OutOfStock {
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
        .route("/__admin/unavailable", post(add_out_of_stock))
        .route("/__admin/calls", get(calls))
        .route("/__admin/hosts", get(hosts))
        .route("/__admin/resources", get(resources))
}

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

/// `POST /__admin/unavailable` `{"server_type","location"}`: out of stock in that zone.
async fn add_out_of_stock(
    State(shared): State<Arc<Shared>>,
    Json(c): Json<OutOfStock>,
) -> StatusCode {
    shared.lock().out_of_stock.push((c.server_type, c.location));
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

/// Counts of servers, volumes and IPs (all zones).
async fn resources(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let p = shared.lock();
    Json(json!({ "servers": p.servers.len(), "volumes": p.volumes.len(), "ips": p.ips.len() }))
}
