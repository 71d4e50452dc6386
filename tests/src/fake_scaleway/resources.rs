//! `/ips`, `/volumes`, `/tasks`, `/products/servers`, `/images`: the objects beside servers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ScwError;
use super::paging::{page_params, paged};
use super::servers::zone_ok;
use super::{Shared, catalog, json as j};

type Q = Query<Vec<(String, String)>>;

/// `GET .../ips` (paged).
pub async fn ips(
    State(shared): State<Arc<Shared>>,
    Path(zone): Path<String>,
    Query(q): Q,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let list: Vec<Value> = p
        .ips
        .values()
        .filter(|i| i.zone == zone)
        .map(|i| j::ip(&p, i))
        .collect();
    paged("ips", list, &q)
}

/// `GET .../ips/{id}`.
pub async fn ip(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let ip = p
        .ips
        .get(&id)
        .filter(|i| i.zone == zone)
        .ok_or_else(|| ScwError::not_found("instance_ip", &id))?;
    Ok(Json(json!({ "ip": j::ip(&p, ip) })))
}

/// `DELETE .../ips/{id}`: `204`.
pub async fn delete_ip(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<StatusCode, ScwError> {
    zone_ok(&zone)?;
    let mut p = shared.lock();
    if p.ips.get(&id).is_none_or(|i| i.zone != zone) {
        return Err(ScwError::not_found("instance_ip", &id));
    }
    p.ips.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET .../volumes` (paged).
pub async fn volumes(
    State(shared): State<Arc<Shared>>,
    Path(zone): Path<String>,
    Query(q): Q,
) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let list: Vec<Value> = p
        .volumes
        .values()
        .filter(|v| v.zone == zone)
        .map(|v| j::volume(&p, v))
        .collect();
    paged("volumes", list, &q)
}

/// `GET .../volumes/{id}`.
pub async fn volume(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let v = p
        .volumes
        .get(&id)
        .filter(|v| v.zone == zone)
        .ok_or_else(|| ScwError::not_found("instance_volume", &id))?;
    Ok(Json(json!({ "volume": j::volume(&p, v) })))
}

/// `DELETE .../volumes/{id}`: `204`; a volume still attached is refused.
pub async fn delete_volume(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<StatusCode, ScwError> {
    zone_ok(&zone)?;
    let mut p = shared.lock();
    let v = p
        .volumes
        .get(&id)
        .filter(|v| v.zone == zone)
        .ok_or_else(|| ScwError::not_found("instance_volume", &id))?;
    if v.server.is_some() {
        return Err(ScwError::bad_request(
            "volume is attached to a server; detach it first",
        ));
    }
    p.volumes.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET .../tasks/{id}`: tasks finish at once in the fake (the server's state tells the rest).
pub async fn task(
    State(shared): State<Arc<Shared>>,
    Path((zone, id)): Path<(String, String)>,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let t = p
        .tasks
        .get(&id)
        .filter(|t| t.zone == zone)
        .ok_or_else(|| ScwError::not_found("instance_task", &id))?;
    Ok(Json(json!({ "task": j::task(t, "success") })))
}

/// `GET .../products/servers`: a map by commercial type (sorted by name), paged, with
/// `total_count`.
pub async fn products(Path(zone): Path<String>, Query(q): Q) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let (page, per_page) = page_params(&q)?;
    let all = catalog::products(&zone);
    let total = all.len();
    let servers: serde_json::Map<String, Value> = all
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        headers.insert("X-Total-Count", v);
    }
    Ok((
        headers,
        Json(json!({ "servers": servers, "total_count": total })),
    )
        .into_response())
}

/// `GET .../products/servers/availability`.
pub async fn availability(
    State(shared): State<Arc<Shared>>,
    Path(zone): Path<String>,
) -> Result<Json<Value>, ScwError> {
    zone_ok(&zone)?;
    let p = shared.lock();
    let mut servers = serde_json::Map::new();
    for o in catalog::OFFERS
        .iter()
        .filter(|o| o.zones.contains(&zone.as_str()))
    {
        let out = p
            .out_of_stock
            .iter()
            .any(|(t, z)| t == o.name && *z == zone);
        servers.insert(
            o.name.into(),
            json!({ "availability": if out { "shortage" } else { "available" } }),
        );
    }
    let total = servers.len();
    Ok(Json(json!({ "servers": servers, "total_count": total })))
}

/// `GET .../images` with `name` (contains), `arch`, `public` (paged).
pub async fn images(Path(zone): Path<String>, Query(q): Q) -> Result<Response, ScwError> {
    zone_ok(&zone)?;
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let list: Vec<Value> = catalog::IMAGES
        .iter()
        .map(|(_, _, id)| j::image(id, &zone))
        .filter(|i| get("name").is_none_or(|n| i["name"].as_str().is_some_and(|x| x.contains(n))))
        .filter(|i| get("arch").is_none_or(|a| i["arch"] == a))
        .filter(|_| get("public").is_none_or(|p| p == "true"))
        .collect();
    paged("images", list, &q)
}
