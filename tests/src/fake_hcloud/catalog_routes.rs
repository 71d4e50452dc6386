//! Read-only catalog endpoints: server types, locations, images, pricing (and the
//! removed datacenters).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Shared;
use super::api_error::ApiError;
use super::catalog;
use super::json::Page;

type Q = Query<Vec<(String, String)>>;

fn filter_by_name(items: Vec<Value>, q: &[(String, String)]) -> Vec<Value> {
    match q.iter().find(|(k, _)| k == "name") {
        Some((_, n)) => items.into_iter().filter(|i| i["name"] == *n).collect(),
        None => items,
    }
}

fn paged(key: &str, items: Vec<Value>, q: &[(String, String)]) -> Json<Value> {
    let (page, meta) = Page::from_query(q).apply(filter_by_name(items, q));
    Json(json!({ key: page, "meta": meta }))
}

fn int_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::invalid_field("id", "id must be an integer"))
}

/// `GET /v1/server_types`: per location, `available` and `recommended` are false where
/// the type is out of capacity (`/__admin/unavailable`).
pub async fn server_types(State(shared): State<Arc<Shared>>, Query(q): Q) -> Json<Value> {
    let mut types = catalog::server_types();
    let account = shared.lock();
    for t in &mut types {
        mark_capacity(t, &account.unavailable);
    }
    drop(account);
    paged("server_types", types, &q)
}

fn mark_capacity(t: &mut Value, unavailable: &[(String, String)]) {
    let name = t["name"].as_str().unwrap_or_default().to_string();
    if let Some(locs) = t["locations"].as_array_mut() {
        for l in locs {
            let out = unavailable
                .iter()
                .any(|(ty, loc)| *ty == name && l["name"] == loc.as_str());
            l["available"] = json!(!out);
            l["recommended"] = json!(!out);
        }
    }
}

/// `GET /v1/server_types/{id}`.
pub async fn server_type(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut t = catalog::server_type_by_id(int_id(&id)?)
        .ok_or_else(|| ApiError::not_found("server_type"))?;
    mark_capacity(&mut t, &shared.lock().unavailable);
    Ok(Json(json!({ "server_type": t })))
}

/// `GET /v1/locations`.
pub async fn locations(Query(q): Q) -> Json<Value> {
    paged("locations", catalog::locations(), &q)
}

/// `GET /v1/locations/{id}`.
pub async fn location(Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let l = catalog::location_by_id(int_id(&id)?).ok_or_else(|| ApiError::not_found("location"))?;
    Ok(Json(json!({ "location": l })))
}

/// `GET /v1/datacenters` and `/v1/datacenters/{id}`: removed from the API after
/// 1 Oct 2026 (<https://docs.hetzner.cloud/changelog#2026-06-02-datacenters-deprecated>),
/// answered `410 deprecated_api_endpoint` as the real API does now.
pub async fn datacenters_gone() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::GONE,
        "deprecated_api_endpoint",
        "API functionality was removed",
    );
    e.details = json!({ "announcement": "https://docs.hetzner.cloud/changelog#2026-06-02-datacenters-deprecated" });
    e
}

/// `GET /v1/images` with `name`, `type`, `architecture`.
pub async fn images(Query(q): Q) -> Json<Value> {
    let mut items = catalog::images();
    for key in ["type", "architecture"] {
        let wanted: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        if !wanted.is_empty() {
            items.retain(|i| wanted.iter().any(|w| i[key] == *w));
        }
    }
    paged("images", items, &q)
}

/// `GET /v1/images/{id}`.
pub async fn image(Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    int_id(&id)?;
    let i = catalog::image(&id).ok_or_else(|| ApiError::not_found("image"))?;
    Ok(Json(json!({ "image": i })))
}

/// `GET /v1/pricing`.
pub async fn pricing() -> Json<Value> {
    Json(json!({ "pricing": catalog::pricing() }))
}
