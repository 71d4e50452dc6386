//! Renders records as the real API's JSON objects.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::catalog;
use super::state::{ActionRec, FirewallRec, RuleRec, ServerRec, SshKeyRec};

/// Hetzner's timestamp format, e.g. `2016-01-30T23:55:00+00:00`.
pub fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// An action object.
pub fn action(a: &ActionRec, status: &str, progress: i64) -> Value {
    let error = a
        .error
        .as_ref()
        .map(|(code, message)| json!({ "code": code, "message": message }));
    json!({
        "id": a.id,
        "command": a.command,
        "status": status,
        "progress": progress,
        "started": ts(&a.started),
        "finished": a.finished.as_ref().map(ts),
        "resources": a.resources.iter().map(|(id, kind)| json!({ "id": id, "type": kind })).collect::<Vec<_>>(),
        "error": error,
    })
}

/// A server object with the given status and the ids of the firewalls applied to it.
pub fn server(s: &ServerRec, status: &str, firewalls: &[i64]) -> Value {
    let o = s.ipv4.octets();
    json!({
        "id": s.id,
        "name": s.name,
        "status": status,
        "created": ts(&s.created),
        "public_net": {
            "ipv4": {
                "id": 100_000 + s.id,
                "ip": s.ipv4.to_string(),
                "blocked": false,
                "dns_ptr": format!("static.{}.{}.{}.{}.clients.your-server.de", o[3], o[2], o[1], o[0]),
            },
            "ipv6": {
                "id": 200_000 + s.id,
                "ip": format!("2001:db8:{:x}::/64", s.id),
                "blocked": false,
                "dns_ptr": [],
            },
            "floating_ips": [],
            "firewalls": firewalls.iter().map(|id| json!({ "id": id, "status": "applied" })).collect::<Vec<_>>(),
        },
        "private_net": [],
        "server_type": catalog::server_type(&s.server_type),
        "location": catalog::location(&s.location),
        "image": catalog::image(&s.image),
        "iso": null,
        "rescue_enabled": false,
        "locked": false,
        "backup_window": null,
        "outgoing_traffic": 0,
        "ingoing_traffic": 0,
        "included_traffic": 21_990_232_555_520i64,
        "protection": { "delete": false, "rebuild": false },
        "labels": s.labels,
        "volumes": [],
        "load_balancers": [],
        "primary_disk_size": catalog::disk_of(&s.server_type),
        "placement_group": null,
    })
}

/// An SSH key object.
pub fn ssh_key(k: &SshKeyRec) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "fingerprint": k.fingerprint,
        "public_key": k.public_key,
        "labels": k.labels,
        "created": ts(&k.created),
    })
}

/// A firewall rule object (`source_ips`/`destination_ips` always arrays, `port` null
/// unless tcp/udp).
pub fn rule(r: &RuleRec) -> Value {
    json!({
        "direction": r.direction,
        "source_ips": r.source_ips,
        "destination_ips": r.destination_ips,
        "protocol": r.protocol,
        "port": r.port,
        "description": r.description,
    })
}

/// A firewall object; `selected` are the servers each of its label selectors matches.
pub fn firewall(f: &FirewallRec, selected: &[Vec<i64>]) -> Value {
    let mut applied: Vec<Value> = f
        .servers
        .iter()
        .map(|id| json!({ "type": "server", "server": { "id": id } }))
        .collect();
    for (i, sel) in f.selectors.iter().enumerate() {
        let resources: Vec<Value> = selected
            .get(i)
            .into_iter()
            .flatten()
            .map(|id| json!({ "type": "server", "server": { "id": id } }))
            .collect();
        applied.push(json!({
            "type": "label_selector",
            "label_selector": { "selector": sel },
            "applied_to_resources": resources,
        }));
    }
    json!({
        "id": f.id,
        "name": f.name,
        "labels": f.labels,
        "created": ts(&f.created),
        "rules": f.rules.iter().map(rule).collect::<Vec<_>>(),
        "applied_to": applied,
    })
}

/// Page parameters as the API reads them (`page` from 1, `per_page` 1..=50, default 25).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Page number.
    pub page: usize,
    /// Items per page.
    pub per_page: usize,
}

impl Page {
    /// Reads `page` and `per_page` from query pairs.
    pub fn from_query(q: &[(String, String)]) -> Self {
        let get = |k: &str| {
            q.iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.parse::<usize>().ok())
        };
        Self {
            page: get("page").unwrap_or(1).max(1),
            per_page: get("per_page").unwrap_or(25).clamp(1, 50),
        }
    }

    /// Cuts one page out of the items and builds `meta`.
    pub fn apply(&self, items: Vec<Value>) -> (Vec<Value>, Value) {
        let total = items.len();
        let last = total.div_ceil(self.per_page).max(1);
        let start = (self.page - 1).saturating_mul(self.per_page);
        let page_items: Vec<Value> = items.into_iter().skip(start).take(self.per_page).collect();
        let meta = json!({ "pagination": {
            "page": self.page,
            "per_page": self.per_page,
            "previous_page": if self.page > 1 { Some(self.page - 1) } else { None },
            "next_page": if self.page < last { Some(self.page + 1) } else { None },
            "last_page": last,
            "total_entries": total,
        }});
        (page_items, meta)
    }
}
