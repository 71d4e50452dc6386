//! `/v1/firewalls`: list, create, get, update, delete, the `set_rules`,
//! `apply_to_resources` and `remove_from_resources` actions, and firewall actions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use dayshift_provisioning::LabelSelector;
use serde_json::{Value, json};

use super::Shared;
use super::actions::{concerns, page_of};
use super::api_error::ApiError;
use super::firewall_rules::parse_rules;
use super::json::{self, Page};
use super::state::{Account, FirewallRec, selector_matches};

type Q = Query<Vec<(String, String)>>;

/// `422` with a call-specific code (`resource_in_use`, `firewall_already_applied`, …).
fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
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

fn int_id(id: &str) -> Result<i64, ApiError> {
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

/// One resource of `apply_to` / `remove_from`.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Server(i64),
    Selector(String),
}

fn parse_targets(v: Option<&Value>, field: &'static str) -> Result<Vec<Target>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ApiError::invalid_field(
                field,
                format!("{field} must be an array"),
            ));
        }
    };
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let t = match r["type"].as_str() {
            Some("server") => r["server"]["id"].as_i64().map(Target::Server),
            Some("label_selector") => r["label_selector"]["selector"]
                .as_str()
                .filter(|s| LabelSelector::parse(s).is_ok())
                .map(|s| Target::Selector(s.to_string())),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!(
                    "{field}[{i}]: expected {{\"type\":\"server\",\"server\":{{\"id\":ID}}}} or {{\"type\":\"label_selector\",\"label_selector\":{{\"selector\":\"k=v\"}}}}"
                ),
            )
        })?;
        if out.contains(&t) {
            return Err(unprocessable(
                "server_already_added",
                format!("{field}[{i}] is given more than once"),
            ));
        }
        out.push(t);
    }
    Ok(out)
}

/// Applies targets to a firewall (already known to exist); one `apply_firewall` action each.
fn apply(account: &mut Account, fw: i64, targets: Vec<Target>) -> Result<Vec<i64>, ApiError> {
    for t in &targets {
        if let Target::Server(id) = t
            && !account.servers.contains_key(id)
        {
            return Err(unprocessable(
                "firewall_resource_not_found",
                format!("server {id} not found"),
            ));
        }
        let f = account
            .firewalls
            .get(&fw)
            .ok_or_else(|| ApiError::not_found("firewall"))?;
        let already = match t {
            Target::Server(id) => f.servers.contains(id),
            Target::Selector(s) => f.selectors.contains(s),
        };
        if already {
            return Err(unprocessable(
                "firewall_already_applied",
                "firewall was already applied on resource",
            ));
        }
    }
    let mut actions = Vec::new();
    for t in targets {
        let resources = match &t {
            Target::Server(id) => vec![(fw, "firewall"), (*id, "server")],
            Target::Selector(_) => vec![(fw, "firewall")],
        };
        if let Some(f) = account.firewalls.get_mut(&fw) {
            match t {
                Target::Server(id) => f.servers.push(id),
                Target::Selector(s) => f.selectors.push(s),
            }
        }
        actions.push(account.start_action_on("apply_firewall", resources, Duration::ZERO, true));
    }
    Ok(actions)
}

fn actions_json(account: &mut Account, ids: &[i64]) -> Vec<Value> {
    ids.iter()
        .filter_map(|id| account.action_json(*id))
        .collect()
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

/// `POST /v1/firewalls/{id}/actions/set_rules` `{rules}`: `201 {actions}` — one
/// `set_firewall_rules` and one `apply_firewall` per server it is applied to.
pub async fn set_rules(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = int_id(&id)?;
    let req = json_body(&body)?;
    if req.get("rules").is_none_or(Value::is_null) {
        return Err(ApiError::invalid_field(
            "rules",
            "Missing data for required field.",
        ));
    }
    let rules = parse_rules(req.get("rules"))?;
    let mut account = shared.lock();
    let servers: Vec<i64> = {
        let f = account
            .firewalls
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found("firewall"))?;
        f.rules = rules;
        f.servers.clone()
    };
    let mut ids = vec![account.start_action_on(
        "set_firewall_rules",
        vec![(id, "firewall")],
        Duration::ZERO,
        true,
    )];
    let selected: Vec<i64> = account
        .servers
        .values()
        .filter(|s| account.firewalls_of(s).contains(&id))
        .map(|s| s.id)
        .filter(|s| !servers.contains(s))
        .collect();
    for s in servers.into_iter().chain(selected) {
        ids.push(account.start_action_on(
            "apply_firewall",
            vec![(id, "firewall"), (s, "server")],
            Duration::ZERO,
            true,
        ));
    }
    let actions = actions_json(&mut account, &ids);
    Ok((StatusCode::CREATED, Json(json!({ "actions": actions }))).into_response())
}

/// `POST /v1/firewalls/{id}/actions/apply_to_resources` `{apply_to}`: `201 {actions}`.
pub async fn apply_to_resources(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = int_id(&id)?;
    let req = json_body(&body)?;
    let targets = parse_targets(req.get("apply_to"), "apply_to")?;
    if targets.is_empty() {
        return Err(ApiError::invalid_field(
            "apply_to",
            "Missing data for required field.",
        ));
    }
    let mut account = shared.lock();
    if !account.firewalls.contains_key(&id) {
        return Err(ApiError::not_found("firewall"));
    }
    let ids = apply(&mut account, id, targets)?;
    let actions = actions_json(&mut account, &ids);
    Ok((StatusCode::CREATED, Json(json!({ "actions": actions }))).into_response())
}

/// `POST /v1/firewalls/{id}/actions/remove_from_resources` `{remove_from}`: `201 {actions}`.
pub async fn remove_from_resources(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = int_id(&id)?;
    let req = json_body(&body)?;
    let targets = parse_targets(req.get("remove_from"), "remove_from")?;
    if targets.is_empty() {
        return Err(ApiError::invalid_field(
            "remove_from",
            "Missing data for required field.",
        ));
    }
    let mut account = shared.lock();
    let f = account
        .firewalls
        .get(&id)
        .ok_or_else(|| ApiError::not_found("firewall"))?
        .clone();
    for t in &targets {
        match t {
            Target::Server(s) if !account.servers.contains_key(s) => {
                return Err(unprocessable(
                    "firewall_resource_not_found",
                    format!("server {s} not found"),
                ));
            }
            Target::Server(s) if !f.servers.contains(s) => {
                let via_selector = account.servers.get(s).is_some_and(|rec| {
                    f.selectors
                        .iter()
                        .any(|sel| selector_matches(sel, &rec.labels))
                });
                return Err(if via_selector {
                    unprocessable(
                        "firewall_managed_by_label_selector",
                        "firewall is applied via a label selector and cannot be removed manually",
                    )
                } else {
                    unprocessable(
                        "firewall_already_removed",
                        "firewall was already removed from the resource",
                    )
                });
            }
            Target::Selector(sel) if !f.selectors.contains(sel) => {
                return Err(unprocessable(
                    "firewall_already_removed",
                    "firewall was already removed from the resource",
                ));
            }
            _ => {}
        }
    }
    let mut ids = Vec::new();
    for t in targets {
        let resources = match &t {
            Target::Server(s) => vec![(id, "firewall"), (*s, "server")],
            Target::Selector(_) => vec![(id, "firewall")],
        };
        if let Some(f) = account.firewalls.get_mut(&id) {
            match t {
                Target::Server(s) => f.servers.retain(|x| *x != s),
                Target::Selector(sel) => f.selectors.retain(|x| *x != sel),
            }
        }
        ids.push(account.start_action_on("remove_firewall", resources, Duration::ZERO, true));
    }
    let actions = actions_json(&mut account, &ids);
    Ok((StatusCode::CREATED, Json(json!({ "actions": actions }))).into_response())
}

/// `GET /v1/firewalls/{id}/actions`.
pub async fn actions(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let id = int_id(&id)?;
    let mut account = shared.lock();
    if !account.firewalls.contains_key(&id) {
        return Err(ApiError::not_found("firewall"));
    }
    Ok(Json(page_of(&mut account, &q, |a| {
        concerns(a, id, "firewall")
    })))
}

/// `GET /v1/firewalls/{id}/actions/{action_id}`.
pub async fn action(
    State(shared): State<Arc<Shared>>,
    Path((id, action_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (id, action_id) = (int_id(&id)?, int_id(&action_id)?);
    let mut account = shared.lock();
    if !account
        .actions
        .get(&action_id)
        .is_some_and(|a| concerns(a, id, "firewall"))
    {
        return Err(ApiError::not_found("action"));
    }
    let a = account.action_json(action_id);
    Ok(Json(json!({ "action": a })))
}

/// `GET /v1/firewalls/actions`: the actions of all firewalls.
pub async fn all_actions(State(shared): State<Arc<Shared>>, Query(q): Q) -> Json<Value> {
    let mut account = shared.lock();
    Json(page_of(&mut account, &q, |a| {
        a.resources.iter().any(|(_, k)| *k == "firewall")
    }))
}

/// `GET /v1/firewalls/actions/{id}`.
pub async fn any_action(
    State(shared): State<Arc<Shared>>,
    Path(action_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let action_id = int_id(&action_id)?;
    let mut account = shared.lock();
    if !account
        .actions
        .get(&action_id)
        .is_some_and(|a| a.resources.iter().any(|(_, k)| *k == "firewall"))
    {
        return Err(ApiError::not_found("action"));
    }
    let a = account.action_json(action_id);
    Ok(Json(json!({ "action": a })))
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
