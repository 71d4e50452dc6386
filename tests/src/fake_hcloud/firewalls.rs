//! `/v1/firewalls`: list, create, get, update, delete (the actions on a firewall are in
//! `firewall_actions`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use dayshift_provisioning::LabelSelector;
use serde_json::{Value, json};

use super::Shared;
use super::api_error::ApiError;
use super::firewall_actions::{Target, actions_json, apply, parse_targets};
use super::firewall_rules::parse_rules;
use super::json::{self, Page};
use super::state::{Account, FirewallRec};

type Q = Query<Vec<(String, String)>>;

/// `422` with a call-specific code (`resource_in_use`, `firewall_already_applied`, …).
pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

pub fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "json_error",
            format!("invalid JSON: {e}"),
        )
    })?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "json_error",
            "the body must be a JSON object",
        ))
    }
}

pub fn int_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::invalid_field("id", "id must be an integer"))
}

fn labels_of(v: Option<&Value>) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|_| ApiError::invalid_field("labels", "labels must map strings to strings")),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(ApiError::invalid_field(
            "name",
            "name must be 1 to 128 characters",
        ));
    }
    Ok(())
}

/// The firewall's JSON with the servers its label selectors match now.
pub fn render(account: &Account, f: &FirewallRec) -> Value {
    let selected: Vec<Vec<i64>> = f
        .selectors
        .iter()
        .map(|s| account.servers_matching(s))
        .collect();
    json::firewall(f, &selected)
}

/// `GET /v1/firewalls` with `name`, `label_selector`, `page`, `per_page` (`sort` accepted).
pub async fn list(State(shared): State<Arc<Shared>>, Query(q): Q) -> Result<Json<Value>, ApiError> {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let selector = match get("label_selector") {
        Some(s) => LabelSelector::parse(&s)
            .map_err(|e| ApiError::invalid_field("label_selector", e.to_string()))?,
        None => LabelSelector::all(),
    };
    let name = get("name");
    let account = shared.lock();
    let items: Vec<Value> = account
        .firewalls
        .values()
        .filter(|f| selector.matches(&f.labels))
        .filter(|f| name.as_ref().is_none_or(|n| *n == f.name))
        .map(|f| render(&account, f))
        .collect();
    let (page, meta) = Page::from_query(&q).apply(items);
    Ok(Json(json!({ "firewalls": page, "meta": meta })))
}

/// `POST /v1/firewalls` `{name, labels?, rules?, apply_to?}`: `201 {firewall, actions}`.
pub async fn create(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let req = json_body(&body)?;
    let name = req["name"]
        .as_str()
        .ok_or_else(|| ApiError::invalid_field("name", "Missing data for required field."))?
        .to_string();
    check_name(&name)?;
    let labels = labels_of(req.get("labels"))?.unwrap_or_default();
    let rules = parse_rules(req.get("rules"))?;
    let targets = parse_targets(req.get("apply_to"), "apply_to")?;
    let mut account = shared.lock();
    if account.firewalls.values().any(|f| f.name == name) {
        return Err(ApiError::uniqueness("name"));
    }
    if let Some(id) = targets.iter().find_map(|t| match t {
        Target::Server(id) if !account.servers.contains_key(id) => Some(*id),
        _ => None,
    }) {
        return Err(unprocessable(
            "firewall_resource_not_found",
            format!("server {id} not found"),
        ));
    }
    let id = account.id();
    account.firewalls.insert(
        id,
        FirewallRec {
            id,
            name,
            labels,
            created: Utc::now(),
            rules,
            servers: Vec::new(),
            selectors: Vec::new(),
        },
    );
    let action_ids = apply(&mut account, id, targets)?;
    let actions = actions_json(&mut account, &action_ids);
    let fw = account.firewalls.get(&id).map(|f| render(&account, f));
    Ok((
        StatusCode::CREATED,
        Json(json!({ "firewall": fw, "actions": actions })),
    )
        .into_response())
}

/// `GET /v1/firewalls/{id}`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = int_id(&id)?;
    let account = shared.lock();
    let f = account
        .firewalls
        .get(&id)
        .ok_or_else(|| ApiError::not_found("firewall"))?;
    Ok(Json(json!({ "firewall": render(&account, f) })))
}

/// `PUT /v1/firewalls/{id}` `{name?, labels?}` (labels are replaced as a whole).
pub async fn update(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = int_id(&id)?;
    let req = json_body(&body)?;
    let name = match req.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(ApiError::invalid_field("name", "name must be a string")),
    };
    if let Some(n) = &name {
        check_name(n)?;
    }
    let labels = labels_of(req.get("labels"))?;
    let mut account = shared.lock();
    if !account.firewalls.contains_key(&id) {
        return Err(ApiError::not_found("firewall"));
    }
    if let Some(n) = &name
        && account
            .firewalls
            .values()
            .any(|f| f.name == *n && f.id != id)
    {
        return Err(ApiError::uniqueness("name"));
    }
    if let Some(f) = account.firewalls.get_mut(&id) {
        if let Some(n) = name {
            f.name = n;
        }
        if let Some(l) = labels {
            f.labels = l;
        }
    }
    let fw = account.firewalls.get(&id).map(|f| render(&account, f));
    Ok(Json(json!({ "firewall": fw })))
}

/// `DELETE /v1/firewalls/{id}`: `204`; `422 resource_in_use` while applied to anything.
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = int_id(&id)?;
    let mut account = shared.lock();
    let f = account
        .firewalls
        .get(&id)
        .ok_or_else(|| ApiError::not_found("firewall"))?;
    if !f.servers.is_empty() || !f.selectors.is_empty() {
        return Err(unprocessable(
            "resource_in_use",
            "firewall must not be in use to be deleted",
        ));
    }
    account.firewalls.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// The rules in effect on a server: those of every firewall applied to it, in firewall
/// id order (for `/__admin` and tests).
pub fn effective_rules(account: &Account, server: i64) -> Option<Value> {
    let s = account.servers.get(&server)?;
    let ids = account.firewalls_of(s);
    let rules: Vec<Value> = ids
        .iter()
        .filter_map(|id| account.firewalls.get(id))
        .flat_map(|f| f.rules.iter().map(json::rule))
        .collect();
    let names: Vec<&str> = ids
        .iter()
        .filter_map(|id| account.firewalls.get(id))
        .map(|f| f.name.as_str())
        .collect();
    Some(json!({ "server": server, "firewalls": ids, "firewall_names": names, "rules": rules }))
}
