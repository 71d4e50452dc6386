//! Security group rules: parsing as the Instance API validates them, and the
//! `.../security_groups/{id}/rules` routes (list, create, set all, get, update, delete) and
//! `.../security_groups/default/rules`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::error::{ScwError, body_object};
use super::paging::paged;
use super::servers::zone_ok;
use super::state::{Project, SgRuleRec};
use super::{Shared, json as j};

/// Most rules one security group holds.
const MAX_RULES: usize = 100;

/// A field of an enum, matched case-insensitively (older clients send `TCP`), stored in
/// lower case as the API answers.
fn choice(r: &Value, field: &str, allowed: &[&str]) -> Result<Option<String>, ScwError> {
    match r.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) => {
            let v = v.to_ascii_lowercase();
            if allowed.contains(&v.as_str()) {
                Ok(Some(v))
            } else {
                Err(ScwError::invalid(
                    field,
                    format!("must be one of {}", allowed.join(", ")),
                ))
            }
        }
        Some(_) => Err(ScwError::invalid(field, "must be a string")),
    }
}

/// `0` and `null` both mean "no port" (the SDKs send `0` for ICMP rules).
fn port(r: &Value, field: &str) -> Result<Option<u16>, ScwError> {
    match r.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(0) => Ok(None),
            Some(n) if n <= 65535 => Ok(Some(n as u16)),
            _ => Err(ScwError::invalid(
                field,
                "must be a port between 1 and 65535",
            )),
        },
    }
}

/// An IP or CIDR (`203.0.113.7`, `10.0.0.0/8`, `::/0`), as a CIDR with its prefix length.
pub fn ip_range(text: &str) -> Option<String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then(|| format!("{ip}/{len}"))
}

/// A rule from a create / set / update body; `base` gives the values of fields left out
/// (an update), `id` the rule's UUID.
pub fn parse_rule(r: &Value, base: Option<&SgRuleRec>, id: String) -> Result<SgRuleRec, ScwError> {
    let protocol = choice(r, "protocol", &["tcp", "udp", "icmp", "any"])?
        .or_else(|| base.map(|b| b.protocol.clone()))
        .ok_or_else(|| ScwError::invalid("protocol", "required"))?;
    let direction = choice(r, "direction", &["inbound", "outbound"])?
        .or_else(|| base.map(|b| b.direction.clone()))
        .ok_or_else(|| ScwError::invalid("direction", "required"))?;
    let action = choice(r, "action", &["accept", "drop"])?
        .or_else(|| base.map(|b| b.action.clone()))
        .ok_or_else(|| ScwError::invalid("action", "required"))?;
    let ip_range = match r.get("ip_range") {
        None | Some(Value::Null) => base
            .map(|b| b.ip_range.clone())
            .ok_or_else(|| ScwError::invalid("ip_range", "required"))?,
        Some(v) => v.as_str().and_then(ip_range).ok_or_else(|| {
            ScwError::invalid(
                "ip_range",
                "must be an IP or CIDR, e.g. 203.0.113.7/32 or 0.0.0.0/0",
            )
        })?,
    };
    let keep = |f: &str, b: Option<u16>| if r.get(f).is_none() { b } else { None };
    let from =
        port(r, "dest_port_from")?.or(keep("dest_port_from", base.and_then(|b| b.dest_port_from)));
    let to = port(r, "dest_port_to")?.or(keep("dest_port_to", base.and_then(|b| b.dest_port_to)));
    let ported = protocol == "tcp" || protocol == "udp";
    if !ported && (from.is_some() || to.is_some()) {
        return Err(ScwError::invalid(
            "dest_port_from",
            format!("ports only apply to tcp and udp, not {protocol}"),
        ));
    }
    match (from, to) {
        (None, Some(_)) => {
            return Err(ScwError::invalid("dest_port_to", "needs dest_port_from"));
        }
        (Some(f), Some(t)) if t < f => {
            return Err(ScwError::invalid(
                "dest_port_to",
                "must not be lower than dest_port_from",
            ));
        }
        _ => {}
    }
    Ok(SgRuleRec {
        id,
        protocol,
        direction,
        action,
        ip_range,
        dest_port_from: from,
        dest_port_to: to,
    })
}

/// The group in this zone, or `404 instance_security_group`.
pub fn group_index(p: &Project, zone: &str, id: &str) -> Result<(), ScwError> {
    if p.security_groups.get(id).is_some_and(|g| g.zone == zone) {
        Ok(())
    } else {
        Err(ScwError::not_found("instance_security_group", id))
    }
}

fn touch(p: &mut Project, group: &str) {
    if let Some(g) = p.security_groups.get_mut(group) {
        g.modified = Utc::now();
    }
}

type Q = Query<Vec<(String, String)>>;

/// `GET .../security_groups/{id}/rules` (paged, position order).
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
    Query(q): Q,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    group_index(&p, &zone, &id)?;
    let rules = p.security_groups.get(&id).map(j::rules).unwrap_or_default();
    paged("rules", rules, &q)
}

/// `GET .../security_groups/default/rules`: the rules every group with
/// `enable_default_security` gets (outbound SMTP dropped), not editable.
pub async fn default_rules(Path(zone): Path<String>) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let mut rules = Vec::new();
    for (i, (port, range)) in [25u16, 465, 587]
        .iter()
        .flat_map(|p| ["0.0.0.0/0", "::/0"].map(|r| (*p, r)))
        .enumerate()
    {
        let r = SgRuleRec {
            id: format!("de1a0170-0000-4000-8000-{:012x}", i + 1),
            protocol: "tcp".into(),
            direction: "outbound".into(),
            action: "drop".into(),
            ip_range: range.into(),
            dest_port_from: Some(port),
            dest_port_to: None,
        };
        rules.push(j::rule(&r, i + 1, &zone, false));
    }
    Ok(Json(json!({ "rules": rules, "total_count": rules.len() })))
}

/// `POST .../security_groups/{id}/rules`: `201 {"rule"}`, inserted at `position`
/// (1 = first; 0 or past the end: last).
pub async fn create(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let req = body_object(&body)?;
    let mut p = shared.lock();
    group_index(&p, &zone, &id)?;
    let (rule_id, _) = p.uuid();
    let rule = parse_rule(&req, None, rule_id)?;
    let position = req["position"].as_u64().unwrap_or(0) as usize;
    let Some(g) = p.security_groups.get_mut(&id) else {
        return Err(ScwError::not_found("instance_security_group", &id));
    };
    if g.rules.len() >= MAX_RULES {
        return Err(ScwError::invalid(
            "rules",
            format!("a security group holds at most {MAX_RULES} rules"),
        ));
    }
    let at = if position == 0 || position > g.rules.len() {
        g.rules.len()
    } else {
        position - 1
    };
    g.rules.insert(at, rule.clone());
    let body = j::rule(&rule, at + 1, &g.zone, true);
    touch(&mut p, &id);
    Ok((StatusCode::CREATED, Json(json!({ "rule": body }))).into_response())
}

/// `PUT .../security_groups/{id}/rules` `{"rules": [...]}`: replaces every rule (a rule
/// with the `id` of an existing one keeps it), ordered by `position`; `200 {"rules"}`.
pub async fn set_all(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let req = body_object(&body)?;
    let list = match req.get("rules") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ScwError::invalid("rules", "must be an array")),
    };
    if list.len() > MAX_RULES {
        return Err(ScwError::invalid(
            "rules",
            format!("a security group holds at most {MAX_RULES} rules"),
        ));
    }
    let mut p = shared.lock();
    group_index(&p, &zone, &id)?;
    let old = p
        .security_groups
        .get(&id)
        .map(|g| g.rules.clone())
        .unwrap_or_default();
    let mut new: Vec<(u64, SgRuleRec)> = Vec::new();
    for r in &list {
        let rule_id = match r["id"].as_str().filter(|s| !s.is_empty()) {
            Some(existing) if old.iter().any(|o| o.id == existing) => existing.to_string(),
            Some(unknown) => {
                return Err(ScwError::not_found("instance_security_group_rule", unknown));
            }
            None => p.uuid().0,
        };
        new.push((
            r["position"].as_u64().unwrap_or(u64::MAX),
            parse_rule(r, None, rule_id)?,
        ));
    }
    new.sort_by_key(|(pos, _)| *pos);
    let Some(g) = p.security_groups.get_mut(&id) else {
        return Err(ScwError::not_found("instance_security_group", &id));
    };
    g.rules = new.into_iter().map(|(_, r)| r).collect();
    let rules = j::rules(g);
    touch(&mut p, &id);
    Ok(Json(json!({ "rules": rules })))
}

fn rule_at(p: &Project, zone: &str, id: &str, rule: &str) -> Result<usize, ScwError> {
    group_index(p, zone, id)?;
    p.security_groups
        .get(id)
        .and_then(|g| g.rules.iter().position(|r| r.id == rule))
        .ok_or_else(|| ScwError::not_found("instance_security_group_rule", rule))
}

/// `GET .../security_groups/{id}/rules/{rule_id}`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path((zone, id, rule)): Path<(String, String, String)>,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let at = rule_at(&p, &zone, &id, &rule)?;
    let g = p
        .security_groups
        .get(&id)
        .ok_or_else(|| ScwError::not_found("instance_security_group", &id))?;
    Ok(Json(
        json!({ "rule": j::rule(&g.rules[at], at + 1, &zone, true) }),
    ))
}

/// `PATCH` (or `PUT`) `.../security_groups/{id}/rules/{rule_id}`: changes the fields given;
/// `position` moves it.
pub async fn update(
    State(shared): State<Arc<Shared>>,
    Path((zone, id, rule)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let req = body_object(&body)?;
    let mut p = shared.lock();
    let at = rule_at(&p, &zone, &id, &rule)?;
    let Some(g) = p.security_groups.get_mut(&id) else {
        return Err(ScwError::not_found("instance_security_group", &id));
    };
    let changed = parse_rule(&req, Some(&g.rules[at]), rule.clone())?;
    g.rules.remove(at);
    let to = match req["position"].as_u64().map(|n| n as usize) {
        Some(n) if n >= 1 && n <= g.rules.len() + 1 => n - 1,
        Some(_) => g.rules.len(),
        None => at,
    };
    g.rules.insert(to, changed.clone());
    let body = j::rule(&changed, to + 1, &zone, true);
    touch(&mut p, &id);
    Ok(Json(json!({ "rule": body })))
}

/// `DELETE .../security_groups/{id}/rules/{rule_id}`: `204`.
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((zone, id, rule)): Path<(String, String, String)>,
) -> Result<StatusCode, ScwError> {
    zone_ok(&zone)?;
    let mut p = shared.lock();
    let at = rule_at(&p, &zone, &id, &rule)?;
    if let Some(g) = p.security_groups.get_mut(&id) {
        g.rules.remove(at);
    }
    touch(&mut p, &id);
    Ok(StatusCode::NO_CONTENT)
}
