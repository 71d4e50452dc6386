//! `/__admin`: fault injection and inspection, for tests and operators of the fake
//! (faults, calls and hosts as every fake has them, plus capacity, the rate limit and the
//! firewall rules in effect on a server).

use std::sync::Arc;

use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::Shared;
use crate::fake_base::admin_routes;

#[derive(Debug, Deserialize)]
struct Capacity {
    server_type: String,
    location: String,
}

/// Routes under `/__admin`.
pub fn router() -> Router<Arc<Shared>> {
    admin_routes::<super::state::Account>()
        .route("/__admin/unavailable", post(add_unavailable))
        .route("/__admin/rate_limit", post(set_rate_limit))
        .route("/__admin/servers/{id}/firewall", get(server_firewall))
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

/// `GET /__admin/servers/{id}/firewall`: the firewalls applied to a server and the rules
/// in effect on it (`404` for an unknown server).
async fn server_firewall(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, StatusCode> {
    super::firewalls::effective_rules(&shared.lock(), id)
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}
