//! `.../security_groups`: list, create, get, update (`PATCH`, `PUT`), delete. Rules are in
//! `sg_rules`. Every zone has the project's default group, made on first use; a server
//! created without `security_group` gets it.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::error::{ScwError, body_object};
use super::paging::{paged, query_tags, query_value};
use super::servers::zone_ok;
use super::sg_rules::group_index;
use super::state::{SecurityGroupRec, SgRuleRec};
use super::{Shared, json as j};

type Q = Query<Vec<(String, String)>>;

fn text(v: &Value, field: &str) -> Result<Option<String>, ScwError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ScwError::invalid(field, "must be a string")),
    }
}

fn flag(v: &Value, field: &str) -> Result<Option<bool>, ScwError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ScwError::invalid(field, "must be true or false")),
    }
}

fn policy(v: &Value, field: &str) -> Result<Option<String>, ScwError> {
    match text(v, field)?.map(|p| p.to_ascii_lowercase()) {
        None => Ok(None),
        Some(p) if p == "accept" || p == "drop" => Ok(Some(p)),
        Some(_) => Err(ScwError::invalid(field, "must be accept or drop")),
    }
}

fn tags(v: &Value) -> Result<Option<Vec<String>>, ScwError> {
    match v.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(t) => {
            let list: Vec<String> = serde_json::from_value(t.clone())
                .map_err(|_| ScwError::invalid("tags", "must be an array of strings"))?;
            if list.len() > 50 || list.iter().any(|t| t.is_empty() || t.len() > 128) {
                return Err(ScwError::invalid(
                    "tags",
                    "at most 50 tags of 1 to 128 characters",
                ));
            }
            Ok(Some(list))
        }
    }
}

fn check_name(name: &str) -> Result<(), ScwError> {
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ScwError::invalid("name", "must be 1 to 255 characters"));
    }
    Ok(())
}

/// `GET .../security_groups` with `name` (contains), `project`, `tags` (all must match),
/// `project_default`, `page`, `per_page` (`organization` is accepted: one per project here).
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Path(zone): Path<String>,
    Query(q): Q,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let get = |k: &str| query_value(&q, k);
    let wanted_tags = query_tags(&q);
    let name = get("name");
    let project = get("project");
    let default = match get("project_default").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ScwError::invalid(
                "project_default",
                "must be true or false",
            ));
        }
    };
    let mut p = shared.lock();
    p.default_security_group(&zone);
    let list: Vec<Value> = p
        .security_groups
        .values()
        .filter(|g| g.zone == zone)
        .filter(|g| name.as_ref().is_none_or(|n| g.name.contains(n.as_str())))
        .filter(|g| project.as_ref().is_none_or(|pr| g.project == *pr))
        .filter(|g| wanted_tags.iter().all(|t| g.tags.contains(t)))
        .filter(|g| default.is_none_or(|d| g.project_default == d))
        .map(|g| j::security_group(&p, g))
        .collect();
    paged("security_groups", list, &q)
}

/// `POST .../security_groups`: `201 {"security_group"}`. `name` is required; policies
/// default to `accept`, `enable_default_security` to true, `stateful` to false.
/// `project_default: true` makes it the zone's default (the old default loses the flag).
pub async fn create(
    State(shared): State<Arc<Shared>>,
    Path(zone): Path<String>,
    body: Bytes,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let req = body_object(&body)?;
    let name = text(&req, "name")?.ok_or_else(|| ScwError::invalid("name", "required"))?;
    check_name(&name)?;
    let project = text(&req, "project")?
        .or(text(&req, "organization")?)
        .unwrap_or_else(|| j::PROJECT.to_string());
    let project_default = flag(&req, "project_default")?
        .or(flag(&req, "organization_default")?)
        .unwrap_or(false);
    let now = Utc::now();
    let mut rec = SecurityGroupRec {
        id: String::new(),
        name,
        description: text(&req, "description")?.unwrap_or_default(),
        zone: zone.clone(),
        project,
        tags: tags(&req)?.unwrap_or_default(),
        project_default,
        stateful: flag(&req, "stateful")?.unwrap_or(false),
        inbound_default_policy: policy(&req, "inbound_default_policy")?
            .unwrap_or_else(|| "accept".into()),
        outbound_default_policy: policy(&req, "outbound_default_policy")?
            .unwrap_or_else(|| "accept".into()),
        enable_default_security: flag(&req, "enable_default_security")?.unwrap_or(true),
        rules: Vec::<SgRuleRec>::new(),
        created: now,
        modified: now,
    };
    let mut p = shared.lock();
    if project_default {
        for g in p.security_groups.values_mut().filter(|g| g.zone == zone) {
            g.project_default = false;
        }
    }
    let (id, _) = p.uuid();
    rec.id = id.clone();
    p.security_groups.insert(id.clone(), rec);
    let body = p.security_groups.get(&id).map(|g| j::security_group(&p, g));
    Ok((StatusCode::CREATED, Json(json!({ "security_group": body }))).into_response())
}

/// `GET .../security_groups/{id}`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    group_index(&p, &zone, &id)?;
    let body = p.security_groups.get(&id).map(|g| j::security_group(&p, g));
    Ok(Json(json!({ "security_group": body })))
}

/// `PATCH` (or `PUT`) `.../security_groups/{id}`: changes the fields given.
pub async fn update(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let req = body_object(&body)?;
    let name = text(&req, "name")?;
    if let Some(n) = &name {
        check_name(n)?;
    }
    let description = text(&req, "description")?;
    let new_tags = tags(&req)?;
    let stateful = flag(&req, "stateful")?;
    let inbound = policy(&req, "inbound_default_policy")?;
    let outbound = policy(&req, "outbound_default_policy")?;
    let default_security = flag(&req, "enable_default_security")?;
    let project_default = flag(&req, "project_default")?;
    let mut p = shared.lock();
    group_index(&p, &zone, &id)?;
    if project_default == Some(true) {
        for g in p.security_groups.values_mut().filter(|g| g.zone == zone) {
            g.project_default = false;
        }
    }
    if let Some(g) = p.security_groups.get_mut(&id) {
        if let Some(v) = name {
            g.name = v;
        }
        if let Some(v) = description {
            g.description = v;
        }
        if let Some(v) = new_tags {
            g.tags = v;
        }
        if let Some(v) = stateful {
            g.stateful = v;
        }
        if let Some(v) = inbound {
            g.inbound_default_policy = v;
        }
        if let Some(v) = outbound {
            g.outbound_default_policy = v;
        }
        if let Some(v) = default_security {
            g.enable_default_security = v;
        }
        if let Some(v) = project_default {
            g.project_default = v;
        }
        g.modified = Utc::now();
    }
    let body = p.security_groups.get(&id).map(|g| j::security_group(&p, g));
    Ok(Json(json!({ "security_group": body })))
}

/// `DELETE .../security_groups/{id}`: `204`; a group servers still use is refused.
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<StatusCode, ScwError> {
    zone_ok(&zone)?;
    let mut p = shared.lock();
    group_index(&p, &zone, &id)?;
    if p.servers.values().any(|s| s.security_group == id) {
        return Err(ScwError::bad_request(
            "group is in use. you cannot delete it.",
        ));
    }
    p.security_groups.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// What a server's security group lets through: the group (as the API shows it) and its
/// rules in order (for `/__admin` and tests); `None` for an unknown server.
pub fn effective(p: &super::state::Project, server: &str) -> Option<Value> {
    let s = p.servers.get(server)?;
    let g = p.security_groups.get(&s.security_group)?;
    Some(json!({
        "server": s.id,
        "security_group": j::security_group(p, g),
        "rules": j::rules(g),
    }))
}
