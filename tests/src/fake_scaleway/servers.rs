//! `/servers`: create, get, list, delete, actions and user data.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ScwError, decode_body};
use super::paging::{query_tags, query_value};
use super::state::{IpRec, Power, Project, ServerRec, TaskRec, VolumeRec};
use super::{Shared, catalog, json as j};
use crate::fake_base::{SlowAction, WrongHostKey};

/// Checks the zone exists.
pub fn zone_ok(zone: &str) -> Result<(), ScwError> {
    if catalog::ZONES.contains(&zone) {
        Ok(())
    } else {
        Err(ScwError::invalid(
            "zone",
            format!("unknown zone {zone}; zones are {:?}", catalog::ZONES),
        ))
    }
}

/// Body of `POST /servers` (the fields the fake reads).
#[derive(Debug, Deserialize)]
struct CreateServer {
    name: Option<String>,
    commercial_type: Option<String>,
    image: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    dynamic_ip_required: Option<bool>,
    /// Security group UUID; none: the project's default group of the zone.
    security_group: Option<String>,
}

/// `POST /instance/v1/zones/{zone}/servers`: `201` with the stopped server.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    Path(zone): Path<String>,
    slow: Option<Extension<SlowAction>>,
    wrong_key: Option<Extension<WrongHostKey>>,
    body: Bytes,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let req: CreateServer = decode_body(&body)?;
    let name = req.name.unwrap_or_else(|| "scw-random".into());
    let ctype = req
        .commercial_type
        .ok_or_else(|| ScwError::invalid("commercial_type", "required"))?;
    let offer = catalog::offer(&ctype)
        .filter(|o| o.zones.contains(&zone.as_str()))
        .ok_or_else(|| {
            ScwError::invalid("commercial_type", format!("{ctype} is not sold in {zone}"))
        })?;
    let image = req
        .image
        .ok_or_else(|| ScwError::invalid("image", "required"))?;
    let (label, _, _) =
        catalog::image(&image).ok_or_else(|| ScwError::not_found("instance_image", &image))?;
    if req.tags.len() > 50 || req.tags.iter().any(|t| t.is_empty() || t.len() > 128) {
        return Err(ScwError::invalid(
            "tags",
            "at most 50 tags of 1 to 128 characters",
        ));
    }
    let mut p = shared.lock();
    let security_group = match req.security_group.filter(|g| !g.is_empty()) {
        Some(g) => {
            if p.security_groups.get(&g).is_none_or(|sg| sg.zone != zone) {
                return Err(ScwError::not_found("instance_security_group", &g));
            }
            g
        }
        None => p.default_security_group(&zone),
    };
    let (id, num) = p.uuid();
    let now = Utc::now();
    let (vol_id, _) = p.uuid();
    let volume_type = if offer.local_storage {
        "l_ssd"
    } else {
        "sbs_volume"
    };
    p.volumes.insert(
        vol_id.clone(),
        VolumeRec {
            id: vol_id.clone(),
            name: format!("{name}-root"),
            volume_type: volume_type.into(),
            size: 20_000_000_000,
            zone: zone.clone(),
            server: Some(id.clone()),
            created: now,
        },
    );
    let ip = if req.dynamic_ip_required.unwrap_or(true) {
        let (ip_id, _) = p.uuid();
        let address = shared.base.allocate_ip();
        p.ips.insert(
            ip_id.clone(),
            IpRec {
                id: ip_id.clone(),
                address,
                zone: zone.clone(),
                dynamic: true,
                server: Some(id.clone()),
            },
        );
        Some(ip_id)
    } else {
        None
    };
    let rec = ServerRec {
        id: id.clone(),
        num,
        name,
        zone: zone.clone(),
        commercial_type: ctype,
        image: label.to_string(),
        tags: req.tags,
        power: Power::Stopped,
        ip,
        volumes: BTreeMap::from([("0".to_string(), vol_id)]),
        user_data: BTreeMap::new(),
        created: now,
        wrong_key: wrong_key.is_some(),
        slow: slow.map(|Extension(SlowAction(d))| d),
        security_group,
    };
    let body = j::server(&p, &rec);
    p.servers.insert(id, rec);
    Ok((StatusCode::CREATED, Json(json!({ "server": body }))).into_response())
}

fn find<'a>(p: &'a Project, zone: &str, id: &str) -> Result<&'a ServerRec, ScwError> {
    p.servers
        .get(id)
        .filter(|s| s.zone == zone)
        .ok_or_else(|| ScwError::not_found("instance_server", id))
}

/// `GET .../servers/{id}`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let s = find(&p, &zone, &id)?;
    Ok(Json(json!({ "server": j::server(&p, s) })))
}

/// `GET .../servers` with `tags` (all must match exactly), `name` (contains), `state`,
/// `commercial_type`, `page`, `per_page` (`total_count`, `X-Total-Count`).
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Path(zone): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let get = |k: &str| query_value(&q, k);
    let tags = query_tags(&q);
    let name = get("name");
    let state = get("state");
    let ctype = get("commercial_type");
    let p = shared.lock();
    let all: Vec<Value> = p
        .servers
        .values()
        .filter(|s| s.zone == zone)
        .filter(|s| tags.iter().all(|t| s.tags.contains(t)))
        .filter(|s| name.as_ref().is_none_or(|n| s.name.contains(n.as_str())))
        .filter(|s| state.as_ref().is_none_or(|st| Project::state_of(s) == st))
        .filter(|s| ctype.as_ref().is_none_or(|c| s.commercial_type == *c))
        .map(|s| j::server(&p, s))
        .collect();
    super::paging::paged("servers", all, &q)
}

/// Removes a server and what goes with it: local volumes and dynamic IPs. Block volumes
/// and flexible IPs stay (and keep billing) until deleted on their own.
fn remove_server(shared: &Shared, p: &mut Project, id: &str, with_local_volumes: bool) {
    let Some(s) = p.servers.remove(id) else {
        return;
    };
    for vol in s.volumes.values() {
        let local = p.volumes.get(vol).is_some_and(|v| v.volume_type == "l_ssd");
        if local && with_local_volumes {
            p.volumes.remove(vol);
        } else if let Some(v) = p.volumes.get_mut(vol) {
            v.server = None;
        }
    }
    if let Some(ip) = &s.ip {
        if p.ips.get(ip).is_some_and(|i| i.dynamic) {
            p.ips.remove(ip);
        } else if let Some(i) = p.ips.get_mut(ip) {
            i.server = None;
        }
    }
    if let Some(h) = &shared.base.hosts {
        h.stop(s.num);
    }
}

/// `DELETE .../servers/{id}`: only a stopped server; `204`. Its volumes stay.
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<StatusCode, ScwError> {
    zone_ok(&zone)?;
    let mut p = shared.lock();
    let s = find(&p, &zone, &id)?;
    if Project::state_of(s) != "stopped" {
        return Err(ScwError::bad_request(
            "instance must be stopped to be deleted; use the terminate action",
        ));
    }
    remove_server(&shared, &mut p, &id, false);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ActionBody {
    action: String,
}

/// `POST .../servers/{id}/action` `{"action": "poweron" | "poweroff" | "terminate" | …}`:
/// `202` with a task.
pub async fn action(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
    slow: Option<Extension<SlowAction>>,
    body: Bytes,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let req: ActionBody = decode_body(&body)?;
    let mut p = shared.lock();
    let s = find(&p, &zone, &id)?.clone();
    let state = Project::state_of(&s);
    match (req.action.as_str(), state) {
        ("poweron", "stopped") => {
            if p.out_of_stock
                .iter()
                .any(|(t, z)| *t == s.commercial_type && *z == zone)
            {
                return Err(ScwError::out_of_stock(&s.commercial_type));
            }
            let duration = slow
                .map(|Extension(SlowAction(d))| d)
                .or(s.slow)
                .unwrap_or(p.boot_duration);
            let with_host = shared.base.hosts.is_some();
            if let Some(rec) = p.servers.get_mut(&id) {
                rec.power = Power::Starting {
                    since: std::time::Instant::now(),
                    duration,
                    ready: !with_host,
                    failed: false,
                };
            }
            let ip = s.ip.as_ref().and_then(|i| p.ips.get(i)).map(|i| i.address);
            if let (Some(hosts), Some(ip)) = (shared.base.hosts.clone(), ip) {
                let shared2 = Arc::clone(&shared);
                let user_data = s.user_data.get("cloud-init").cloned();
                let (num, uuid, wrong) = (s.num, id.clone(), s.wrong_key);
                tokio::spawn(async move {
                    let result = hosts.start(num, ip, user_data.as_deref(), &[], wrong).await;
                    let mut p = shared2.lock();
                    if let Some(Power::Starting { ready, failed, .. }) =
                        p.servers.get_mut(&uuid).map(|s| &mut s.power)
                    {
                        match result {
                            Ok(()) => *ready = true,
                            Err(e) => {
                                tracing::error!(server = %uuid, error = %format!("{e:#}"), "test host failed to start");
                                *failed = true;
                            }
                        }
                    }
                });
            }
        }
        ("poweroff", "running") => {
            if let Some(rec) = p.servers.get_mut(&id) {
                rec.power = Power::Stopped;
            }
            if let Some(h) = &shared.base.hosts {
                h.stop(s.num);
            }
        }
        ("terminate", "running") => remove_server(&shared, &mut p, &id, true),
        (a @ ("poweron" | "poweroff" | "terminate" | "reboot"), st) => {
            return Err(ScwError::bad_request(format!(
                "action {a} is not allowed while the instance is {st}"
            )));
        }
        (a, _) => return Err(ScwError::invalid("action", format!("unknown action {a}"))),
    }
    let (task_id, _) = p.uuid();
    let task = TaskRec {
        id: task_id.clone(),
        description: format!("server_batch_{}", req.action),
        server: id,
        zone,
        started: Utc::now(),
    };
    let body = j::task(&task, "pending");
    p.tasks.insert(task_id, task);
    Ok((StatusCode::ACCEPTED, Json(json!({ "task": body }))).into_response())
}

/// `GET .../servers/{id}/user_data`: the keys.
pub async fn user_data_keys(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let s = find(&p, &zone, &id)?;
    Ok(Json(
        json!({ "user_data": s.user_data.keys().collect::<Vec<_>>() }),
    ))
}

/// `GET .../servers/{id}/user_data/{key}`: the value, `text/plain`.
pub async fn user_data_get(
    State(shared): State<Arc<Shared>>,
    Path((zone, id, key)): Path<(String, String, String)>,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let s = find(&p, &zone, &id)?;
    let v = s
        .user_data
        .get(&key)
        .cloned()
        .ok_or_else(|| ScwError::not_found("instance_user_data", &key))?;
    Ok(([("content-type", "text/plain")], v).into_response())
}

/// `PATCH` (or `PUT`) `.../servers/{id}/user_data/{key}` with a `text/plain` body: `204`.
pub async fn user_data_set(
    State(shared): State<Arc<Shared>>,
    Path((zone, id, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ScwError> {
    zone_ok(&zone)?;
    let plain = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !plain {
        return Err(ScwError::bad_request(
            "user data must be sent as text/plain",
        ));
    }
    if body.len() > 1024 * 1024 {
        return Err(ScwError::invalid("user_data", "at most 1 MB"));
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ScwError::invalid("user_data", "must be UTF-8 text"))?;
    let mut p = shared.lock();
    find(&p, &zone, &id)?;
    if let Some(s) = p.servers.get_mut(&id) {
        s.user_data.insert(key, text);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE .../servers/{id}/user_data/{key}`: `204`.
pub async fn user_data_delete(
    State(shared): State<Arc<Shared>>,
    Path((zone, id, key)): Path<(String, String, String)>,
) -> Result<StatusCode, ScwError> {
    zone_ok(&zone)?;
    let mut p = shared.lock();
    find(&p, &zone, &id)?;
    if let Some(s) = p.servers.get_mut(&id) {
        s.user_data.remove(&key);
    }
    Ok(StatusCode::NO_CONTENT)
}
