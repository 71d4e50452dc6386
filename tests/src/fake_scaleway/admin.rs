//! `/__admin`: fault injection and inspection (the same calls as fake-hcloud's).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use crate::fake_base::admin_routes;

#[derive(Debug, Deserialize)]
struct OutOfStock {
    server_type: String,
    location: String,
}

/// Routes under `/__admin`.
pub fn router() -> Router<Arc<Shared>> {
    admin_routes::<super::state::Project>()
        .route("/__admin/unavailable", post(add_out_of_stock))
        .route("/__admin/resources", get(resources))
        .route(
            "/__admin/servers/{id}/security_group",
            get(server_security_group),
        )
}

/// `POST /__admin/unavailable` `{"server_type","location"}`: out of stock in that zone.
async fn add_out_of_stock(
    State(shared): State<Arc<Shared>>,
    Json(c): Json<OutOfStock>,
) -> StatusCode {
    shared.lock().out_of_stock.push((c.server_type, c.location));
    StatusCode::NO_CONTENT
}

/// Counts of servers, volumes, IPs and security groups (all zones).
async fn resources(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let p = shared.lock();
    Json(
        json!({ "servers": p.servers.len(), "volumes": p.volumes.len(), "ips": p.ips.len(), "security_groups": p.security_groups.len() }),
    )
}

/// `GET /__admin/servers/{id}/security_group`: the server's group and the rules in effect
/// on it (`404` for an unknown server).
async fn server_security_group(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    super::security_groups::effective(&shared.lock(), &id)
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}
