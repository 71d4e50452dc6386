//! `/v1/actions`: get one, list (by `id`, `status`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use super::Shared;
use super::api_error::ApiError;
use super::json::Page;
use super::state::{Account, ActionRec};

/// `GET /v1/actions/{id}`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid_field("id", "id must be an integer"))?;
    let mut account = shared.lock();
    let action = account
        .action_json(id)
        .ok_or_else(|| ApiError::not_found("action"))?;
    Ok(Json(json!({ "action": action })))
}

/// `GET /v1/actions?id=..&status=..`.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let mut account = shared.lock();
    Ok(Json(page_of(&mut account, &q, |_| true)))
}

/// One page of the actions `keep` selects, filtered by the query's `id` and `status`:
/// `{"actions": [...], "meta": ...}` (for `/v1/actions` and every `.../actions` list).
pub fn page_of(
    account: &mut Account,
    q: &[(String, String)],
    keep: impl Fn(&ActionRec) -> bool,
) -> Value {
    let ids: Vec<i64> = q
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let statuses: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "status")
        .map(|(_, v)| v.as_str())
        .collect();
    let all: Vec<i64> = account
        .actions
        .values()
        .filter(|a| keep(a))
        .map(|a| a.id)
        .collect();
    let mut items = Vec::new();
    for id in all {
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        if let Some(a) = account.action_json(id) {
            let status = a["status"].as_str().unwrap_or_default().to_string();
            if statuses.is_empty() || statuses.contains(&status.as_str()) {
                items.push(a);
            }
        }
    }
    let (page, meta) = Page::from_query(q).apply(items);
    json!({ "actions": page, "meta": meta })
}

/// True when the action concerns this resource.
pub fn concerns(a: &ActionRec, id: i64, kind: &str) -> bool {
    a.resources.iter().any(|(i, k)| *i == id && *k == kind)
}
