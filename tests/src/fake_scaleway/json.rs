//! The Instance API's JSON for servers, IPs, volumes and tasks.

use chrono::Utc;
use serde_json::{Value, json};

use super::catalog;
use super::state::{IpRec, Project, ServerRec, TaskRec, VolumeRec};

/// The fake's organisation and project id.
pub const PROJECT: &str = "00000000-0000-4000-8000-0000000da75f";

/// An IP object.
pub fn ip(ip: &IpRec) -> Value {
    json!({
        "id": ip.id,
        "address": ip.address.to_string(),
        "prefix": format!("{}/32", ip.address),
        "reverse": null,
        "server": ip.server.as_ref().map(|s| json!({"id": s, "name": s})),
        "organization": PROJECT,
        "project": PROJECT,
        "zone": ip.zone,
        "type": "routed_ipv4",
        "state": if ip.server.is_some() { "attached" } else { "detached" },
        "tags": [],
        "ipam_id": ip.id,
    })
}

/// A server's embedded IP.
fn server_ip(ip: &IpRec) -> Value {
    json!({
        "id": ip.id,
        "address": ip.address.to_string(),
        "gateway": null,
        "netmask": "32",
        "family": "inet",
        "dynamic": ip.dynamic,
        "provisioning_mode": "dhcp",
        "tags": [],
        "ipam_id": ip.id,
        "state": "attached",
    })
}

/// A volume object.
pub fn volume(v: &VolumeRec) -> Value {
    json!({
        "id": v.id,
        "name": v.name,
        "export_uri": null,
        "size": v.size,
        "volume_type": v.volume_type,
        "creation_date": v.created.to_rfc3339(),
        "modification_date": v.created.to_rfc3339(),
        "organization": PROJECT,
        "project": PROJECT,
        "tags": [],
        "server": v.server.as_ref().map(|s| json!({"id": s, "name": s})),
        "state": "available",
        "zone": v.zone,
    })
}

/// A server object.
pub fn server(p: &Project, s: &ServerRec) -> Value {
    let state = Project::state_of(s);
    let ips: Vec<Value> =
        s.ip.as_ref()
            .and_then(|id| p.ips.get(id))
            .map(server_ip)
            .into_iter()
            .collect();
    let mut volumes = serde_json::Map::new();
    for (slot, id) in &s.volumes {
        if let Some(v) = p.volumes.get(id) {
            let mut vj = volume(v);
            vj["boot"] = json!(slot == "0");
            volumes.insert(slot.clone(), vj);
        }
    }
    let (label, image_name, image_id) = catalog::image(&s.image).unwrap_or(("", "", ""));
    let allowed: &[&str] = match state {
        "stopped" => &["poweron", "backup"],
        "running" => &["poweroff", "terminate", "reboot", "stop_in_place", "backup"],
        _ => &[],
    };
    json!({
        "id": s.id,
        "name": s.name,
        "organization": PROJECT,
        "project": PROJECT,
        "allowed_actions": allowed,
        "tags": s.tags,
        "commercial_type": s.commercial_type,
        "creation_date": s.created.to_rfc3339(),
        "dynamic_ip_required": s.ip.as_ref().and_then(|i| p.ips.get(i)).is_some_and(|i| i.dynamic),
        "routed_ip_enabled": true,
        "enable_ipv6": false,
        "hostname": s.name,
        "image": {"id": image_id, "name": image_name, "arch": "x86_64", "label": label, "zone": s.zone},
        "protected": false,
        "private_ip": null,
        "public_ip": ips.first().cloned(),
        "public_ips": ips,
        "mac_address": "de:00:00:00:00:01",
        "modification_date": Utc::now().to_rfc3339(),
        "state": state,
        "location": null,
        "ipv6": null,
        "boot_type": "local",
        "volumes": volumes,
        "security_group": {"id": "5ec0a11e-0000-4000-8000-000000000001", "name": "Default security group"},
        "maintenances": [],
        "state_detail": if state == "running" { "booted" } else { "" },
        "arch": "x86_64",
        "placement_group": null,
        "private_nics": [],
        "zone": s.zone,
        "admin_password_encryption_ssh_key_id": null,
        "filesystems": [],
        "end_of_service": false,
    })
}

/// A task object.
pub fn task(t: &TaskRec, status: &str) -> Value {
    json!({
        "id": t.id,
        "description": t.description,
        "progress": if status == "success" { 100 } else { 0 },
        "started_at": t.started.to_rfc3339(),
        "terminated_at": if status == "success" { Some(Utc::now().to_rfc3339()) } else { None },
        "status": status,
        "href_from": format!("/servers/{}/action", t.server),
        "href_result": format!("/servers/{}", t.server),
        "zone": t.zone,
    })
}
