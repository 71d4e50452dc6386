//! The actions on a firewall: `set_rules`, `apply_to_resources`, `remove_from_resources`
//! (also used by create's `apply_to`), and the firewall action lists.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dayshift_provisioning::LabelSelector;
use serde_json::{Value, json};

use super::Shared;
use super::actions::{concerns, page_of};
use super::api_error::ApiError;
use super::firewall_rules::parse_rules;
use super::firewalls::{int_id, json_body, unprocessable};
use super::state::{Account, selector_matches};

type Q = Query<Vec<(String, String)>>;

/// One resource of `apply_to` / `remove_from`.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Server(i64),
    Selector(String),
}

pub fn parse_targets(v: Option<&Value>, field: &'static str) -> Result<Vec<Target>, ApiError> {
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
pub fn apply(account: &mut Account, fw: i64, targets: Vec<Target>) -> Result<Vec<i64>, ApiError> {
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

pub fn actions_json(account: &mut Account, ids: &[i64]) -> Vec<Value> {
    ids.iter()
        .filter_map(|id| account.action_json(*id))
        .collect()
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

/// The non-empty resource list under `field` of an apply/remove request body.
fn required_targets(body: &Bytes, field: &'static str) -> Result<Vec<Target>, ApiError> {
    let req = json_body(body)?;
    let targets = parse_targets(req.get(field), field)?;
    if targets.is_empty() {
        return Err(ApiError::invalid_field(
            field,
            "Missing data for required field.",
        ));
    }
    Ok(targets)
}

/// `POST /v1/firewalls/{id}/actions/apply_to_resources` `{apply_to}`: `201 {actions}`.
pub async fn apply_to_resources(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = int_id(&id)?;
    let targets = required_targets(&body, "apply_to")?;
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
    let targets = required_targets(&body, "remove_from")?;
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
