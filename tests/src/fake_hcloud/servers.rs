//! `/v1/servers`: create, get, list, delete, and a server's actions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use dayshift_provisioning::{LabelSelector, Labels};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api_error::ApiError;
use super::json::{self, Page};
use super::state::ServerRec;
use super::{FailAction, Shared, SlowAction, WrongHostKey, catalog};

/// Body of `POST /v1/servers` (the fields the fake reads).
#[derive(Debug, Deserialize)]
struct CreateServer {
    name: Option<String>,
    server_type: Option<IdOrName>,
    image: Option<IdOrName>,
    location: Option<IdOrName>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    ssh_keys: Vec<Value>,
    user_data: Option<String>,
    /// `[{"firewall": ID}]` (`null`: none).
    #[serde(default)]
    firewalls: Option<Vec<Value>>,
}

/// The API takes most references as an id or a name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdOrName {
    Id(i64),
    Name(String),
}

impl IdOrName {
    /// The name, looking ids up with `by_id` (unknown ids become `#ID`, which no name matches).
    fn name(self, by_id: impl Fn(i64) -> Option<Value>) -> String {
        match self {
            IdOrName::Name(n) => n,
            IdOrName::Id(id) => by_id(id)
                .and_then(|v| v["name"].as_str().map(String::from))
                .unwrap_or_else(|| format!("#{id}")),
        }
    }
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn valid_label(k: &str, v: &str) -> bool {
    let ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    !k.is_empty() && k.len() <= 253 && ok(k) && v.len() <= 63 && ok(v)
}

/// `POST /v1/servers`.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    slow: Option<Extension<SlowAction>>,
    fail: Option<Extension<FailAction>>,
    wrong_key: Option<Extension<WrongHostKey>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateServer = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "json_error",
            format!("invalid JSON: {e}"),
        )
    })?;
    let name = req
        .name
        .ok_or_else(|| ApiError::invalid_field("name", "Missing data for required field."))?;
    if !valid_hostname(&name) {
        return Err(ApiError::invalid_field(
            "name",
            "Name must be a valid hostname.",
        ));
    }
    let server_type = req
        .server_type
        .ok_or_else(|| ApiError::invalid_field("server_type", "Missing data for required field."))?
        .name(catalog::server_type_by_id);
    if catalog::server_type(&server_type).is_none() {
        return Err(ApiError::invalid_field(
            "server_type",
            format!("server type {server_type} not found"),
        ));
    }
    let image = req
        .image
        .ok_or_else(|| ApiError::invalid_field("image", "Missing data for required field."))?
        .name(|id| catalog::image(&id.to_string()));
    if catalog::image(&image).is_none() {
        return Err(ApiError::invalid_field(
            "image",
            format!("image {image} not found"),
        ));
    }
    // `datacenter` was removed from the API (2026-07-01); only `location` places a server.
    let location = match req.location {
        Some(l) => l.name(catalog::location_by_id),
        None => catalog::first_location_of(&server_type)
            .unwrap_or("fsn1")
            .to_string(),
    };
    if catalog::location(&location).is_none() {
        return Err(ApiError::invalid_field(
            "location",
            format!("location {location} not found"),
        ));
    }
    if !catalog::type_sold_in(&server_type, &location) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "resource_unavailable",
            format!("server type {server_type} is not available in location {location}"),
        ));
    }
    for (k, v) in &req.labels {
        if !valid_label(k, v) {
            return Err(ApiError::invalid_field(
                "labels",
                format!("label {k}={v} is not valid"),
            ));
        }
    }
    if req.user_data.as_ref().is_some_and(|u| u.len() > 32 * 1024) {
        return Err(ApiError::invalid_field(
            "user_data",
            "user_data must be at most 32 KiB",
        ));
    }
    let mut account = shared.lock();
    if account
        .unavailable
        .iter()
        .any(|(t, l)| *t == server_type && *l == location)
    {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "resource_unavailable",
            format!(
                "error during placement: {server_type} is not available in {location} right now"
            ),
        ));
    }
    if account.servers.values().any(|s| s.name == name) {
        return Err(ApiError::uniqueness("name"));
    }
    let mut authorized = Vec::new();
    for key in &req.ssh_keys {
        let found = account.ssh_keys.values().find(|k| match key {
            Value::String(s) => k.name == *s || k.id.to_string() == *s,
            Value::Number(n) => n.as_i64() == Some(k.id),
            _ => false,
        });
        match found {
            Some(k) => authorized.push(k.public_key.clone()),
            None => {
                return Err(ApiError::invalid_field(
                    "ssh_keys",
                    format!("SSH key {key} not found"),
                ));
            }
        }
    }
    let mut firewalls: Vec<i64> = Vec::new();
    for (i, f) in req.firewalls.iter().flatten().enumerate() {
        let fw = f["firewall"].as_i64().ok_or_else(|| {
            ApiError::invalid_field(
                "firewalls",
                format!("firewalls[{i}] must be {{\"firewall\": ID}}"),
            )
        })?;
        if !account.firewalls.contains_key(&fw) {
            return Err(ApiError::invalid_field(
                "firewalls",
                format!("firewall {fw} not found"),
            ));
        }
        if !firewalls.contains(&fw) {
            firewalls.push(fw);
        }
    }
    let id = account.id();
    let ipv4 = shared.base.allocate_ip();
    let duration = slow
        .map(|Extension(SlowAction(d))| d)
        .unwrap_or(account.action_duration);
    let fail = fail.map(|Extension(FailAction(code))| code);
    let wrong_key = wrong_key.is_some();
    let with_host = shared.base.hosts.is_some() && fail.is_none();
    let action_id = account.start_action("create_server", id, duration, !with_host);
    if let (Some(code), Some(a)) = (&fail, account.actions.get_mut(&action_id)) {
        a.error = Some((code.clone(), "error during placement".into()));
    }
    let start_id = account.start_action("start_server", id, Duration::ZERO, true);
    let rec = ServerRec {
        id,
        name,
        server_type,
        location,
        image,
        labels: req.labels,
        ipv4,
        created: Utc::now(),
        create_action: action_id,
        user_data: req.user_data.clone(),
    };
    let mut next_ids = vec![start_id];
    for fw in &firewalls {
        if let Some(f) = account.firewalls.get_mut(fw) {
            f.servers.push(id);
        }
        next_ids.push(account.start_action_on(
            "apply_firewall",
            vec![(*fw, "firewall"), (id, "server")],
            Duration::ZERO,
            true,
        ));
    }
    let applied = account.firewalls_of(&rec);
    let server_json = json::server(&rec, "initializing", &applied);
    account.servers.insert(id, rec);
    let action = account.action_json(action_id);
    let next: Vec<Value> = next_ids
        .into_iter()
        .filter_map(|a| account.action_json(a))
        .collect();
    drop(account);
    if let Some(hosts) = shared.base.hosts.clone().filter(|_| with_host) {
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = hosts
                .start(id, ipv4, req.user_data.as_deref(), &authorized, wrong_key)
                .await;
            let mut account = shared.lock();
            if let Some(a) = account.actions.get_mut(&action_id) {
                match result {
                    Ok(()) => a.ready = true,
                    Err(e) => {
                        tracing::error!(server = id, error = %format!("{e:#}"), "test host failed to start");
                        a.error = Some((
                            "server_create_failed".into(),
                            format!("test host failed: {e:#}"),
                        ));
                    }
                }
            }
        });
    }
    let body = json!({
        "server": server_json,
        "action": action,
        "next_actions": next,
        "root_password": null,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The status a server reports now.
fn status_of(account: &super::state::Account, s: &ServerRec) -> &'static str {
    match account.actions.get(&s.create_action).map(|a| a.status().0) {
        Some("success") => "running",
        Some("error") => "off",
        _ => "initializing",
    }
}

/// `GET /v1/servers/{id}`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid_field("id", "id must be an integer"))?;
    let account = shared.lock();
    let s = account
        .servers
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("server"))?;
    let status = status_of(&account, &s);
    let firewalls = account.firewalls_of(&s);
    Ok(Json(
        json!({ "server": json::server(&s, status, &firewalls) }),
    ))
}

/// `GET /v1/servers` with `name`, `label_selector`, `status`, `page`, `per_page`.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let selector = match q.iter().find(|(k, _)| k == "label_selector") {
        Some((_, s)) => LabelSelector::parse(s)
            .map_err(|e| ApiError::invalid_field("label_selector", e.to_string()))?,
        None => LabelSelector::all(),
    };
    let name = q.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone());
    let statuses: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "status")
        .map(|(_, v)| v.as_str())
        .collect();
    let account = shared.lock();
    let servers: Vec<ServerRec> = account.servers.values().cloned().collect();
    let mut items = Vec::new();
    for s in &servers {
        let labels: Labels = s.labels.clone();
        if !selector.matches(&labels) || name.as_ref().is_some_and(|n| *n != s.name) {
            continue;
        }
        let status = status_of(&account, s);
        if !statuses.is_empty() && !statuses.contains(&status) {
            continue;
        }
        items.push(json::server(s, status, &account.firewalls_of(s)));
    }
    let (page, meta) = Page::from_query(&q).apply(items);
    Ok(Json(json!({ "servers": page, "meta": meta })))
}

/// `DELETE /v1/servers/{id}`.
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    slow: Option<Extension<SlowAction>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid_field("id", "id must be an integer"))?;
    let mut account = shared.lock();
    if account.servers.remove(&id).is_none() {
        return Err(ApiError::not_found("server"));
    }
    for f in account.firewalls.values_mut() {
        f.servers.retain(|s| *s != id);
    }
    let duration = slow
        .map(|Extension(SlowAction(d))| d)
        .unwrap_or(Duration::ZERO);
    let action_id = account.start_action("delete_server", id, duration, true);
    let action = account.action_json(action_id);
    drop(account);
    if let Some(hosts) = &shared.base.hosts {
        hosts.stop(id);
    }
    Ok(Json(json!({ "action": action })))
}

/// `GET /v1/servers/{id}/actions`.
pub async fn actions(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid_field("id", "id must be an integer"))?;
    let mut account = shared.lock();
    if !account.servers.contains_key(&id) {
        return Err(ApiError::not_found("server"));
    }
    Ok(Json(super::actions::page_of(&mut account, &q, |a| {
        super::actions::concerns(a, id, "server")
    })))
}
