//! `/v1/ssh_keys`: create, list, get, delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use dayshift_provisioning::LabelSelector;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use super::api_error::ApiError;
use super::json::{self, Page};
use super::state::SshKeyRec;

#[derive(Debug, Deserialize)]
struct CreateKey {
    name: Option<String>,
    public_key: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// MD5 fingerprint of an OpenSSH public key line, as Hetzner shows it.
pub fn fingerprint(public_key: &str) -> Option<String> {
    russh::keys::ssh_key::PublicKey::from_openssh(public_key.trim()).ok()?;
    let raw = crate::util::base64_decode(public_key.split_whitespace().nth(1)?)?;
    let digest = md5::compute(raw);
    Some(
        digest
            .0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// `POST /v1/ssh_keys`.
pub async fn create(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "json_error",
            format!("invalid JSON: {e}"),
        )
    })?;
    let name = req
        .name
        .ok_or_else(|| ApiError::invalid_field("name", "Missing data for required field."))?;
    let public_key = req
        .public_key
        .ok_or_else(|| ApiError::invalid_field("public_key", "Missing data for required field."))?;
    let fingerprint = fingerprint(&public_key)
        .ok_or_else(|| ApiError::invalid_field("public_key", "invalid public key"))?;
    let mut account = shared.lock();
    if account.ssh_keys.values().any(|k| k.name == name) {
        return Err(ApiError::uniqueness("name"));
    }
    if account
        .ssh_keys
        .values()
        .any(|k| k.fingerprint == fingerprint)
    {
        return Err(ApiError::uniqueness("public_key"));
    }
    let id = account.id();
    let rec = SshKeyRec {
        id,
        name,
        public_key,
        fingerprint,
        labels: req.labels,
        created: Utc::now(),
    };
    let body = json!({ "ssh_key": json::ssh_key(&rec) });
    account.ssh_keys.insert(id, rec);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/ssh_keys` with `name`, `fingerprint`, `label_selector`.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let selector = match get("label_selector") {
        Some(s) => LabelSelector::parse(&s)
            .map_err(|e| ApiError::invalid_field("label_selector", e.to_string()))?,
        None => LabelSelector::all(),
    };
    let (name, fp) = (get("name"), get("fingerprint"));
    let account = shared.lock();
    let items: Vec<Value> = account
        .ssh_keys
        .values()
        .filter(|k| selector.matches(&k.labels))
        .filter(|k| name.as_ref().is_none_or(|n| *n == k.name))
        .filter(|k| fp.as_ref().is_none_or(|f| *f == k.fingerprint))
        .map(json::ssh_key)
        .collect();
    let (page, meta) = Page::from_query(&q).apply(items);
    Ok(Json(json!({ "ssh_keys": page, "meta": meta })))
}

/// `GET /v1/ssh_keys/{id}`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid_field("id", "id must be an integer"))?;
    let account = shared.lock();
    let k = account
        .ssh_keys
        .get(&id)
        .ok_or_else(|| ApiError::not_found("ssh_key"))?;
    Ok(Json(json!({ "ssh_key": json::ssh_key(k) })))
}

/// `DELETE /v1/ssh_keys/{id}`: `204 No Content`.
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid_field("id", "id must be an integer"))?;
    let mut account = shared.lock();
    account
        .ssh_keys
        .remove(&id)
        .ok_or_else(|| ApiError::not_found("ssh_key"))?;
    Ok(StatusCode::NO_CONTENT)
}
