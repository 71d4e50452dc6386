//! Read-only catalog endpoints: server types, locations, datacenters, images, pricing.

use axum::Json;
use axum::extract::{Path, Query};
use serde_json::{Value, json};

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

/// `GET /v1/server_types`.
pub async fn server_types(Query(q): Q) -> Json<Value> {
    paged("server_types", catalog::server_types(), &q)
}

/// `GET /v1/server_types/{id}`.
pub async fn server_type(Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let t = catalog::server_type_by_id(int_id(&id)?)
        .ok_or_else(|| ApiError::not_found("server_type"))?;
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

/// `GET /v1/datacenters`.
pub async fn datacenters(Query(q): Q) -> Json<Value> {
    let dcs: Vec<Value> = catalog::locations()
        .iter()
        .filter_map(|l| l["name"].as_str().and_then(catalog::datacenter))
        .collect();
    let (page, meta) = Page::from_query(&q).apply(filter_by_name(dcs, &q));
    Json(json!({ "datacenters": page, "recommendation": 1, "meta": meta }))
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
