//! The Instance API's JSON for servers, IPs, volumes, tasks, images and security groups.

use chrono::Utc;
use serde_json::{Value, json};

use super::catalog;
use super::state::{IpRec, Project, SecurityGroupRec, ServerRec, SgRuleRec, TaskRec, VolumeRec};

/// The fake's organisation and project id.
pub const PROJECT: &str = "00000000-0000-4000-8000-0000000da75f";

/// `{"id", "name"}` of a server (a server being created is not in the project yet: its
/// name is given).
fn server_summary(p: &Project, id: &str, name: Option<&str>) -> Value {
    let name = name
        .map(String::from)
        .or_else(|| p.servers.get(id).map(|s| s.name.clone()))
        .unwrap_or_default();
    json!({"id": id, "name": name})
}

/// An IP object.
pub fn ip(p: &Project, ip: &IpRec) -> Value {
    json!({
        "id": ip.id,
        "address": ip.address.to_string(),
        "prefix": format!("{}/32", ip.address),
        "reverse": null,
        "server": ip.server.as_ref().map(|s| server_summary(p, s, None)),
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
pub fn volume(p: &Project, v: &VolumeRec) -> Value {
    volume_of(p, v, None)
}

fn volume_of(p: &Project, v: &VolumeRec, server_name: Option<&str>) -> Value {
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
        "server": v.server.as_ref().map(|s| server_summary(p, s, server_name)),
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
            let mut vj = volume_of(p, v, Some(&s.name));
            vj["boot"] = json!(slot == "0");
            volumes.insert(slot.clone(), vj);
        }
    }
    let sg = p.security_groups.get(&s.security_group);
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
        "image": image(&s.image, &s.zone),
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
        "security_group": sg.map(|g| json!({"id": g.id, "name": g.name})),
        "maintenances": [],
        "state_detail": if state == "running" { "booted" } else { "" },
        "arch": "x86_64",
        "placement_group": null,
        "private_nics": [],
        "zone": s.zone,
        "admin_password_encryption_ssh_key_id": null,
        "admin_password_encrypted_value": null,
        "dns": format!("{}.pub.instances.scw.cloud", s.id),
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

/// An image object (a public marketplace image of the fake's catalogue), by label or id.
pub fn image(label_or_id: &str, zone: &str) -> Value {
    let Some((_, name, id)) = catalog::image(label_or_id) else {
        return Value::Null;
    };
    json!({
        "id": id,
        "name": name,
        "arch": "x86_64",
        "creation_date": "2025-04-01T00:00:00+00:00",
        "modification_date": "2025-04-01T00:00:00+00:00",
        "default_bootscript": null,
        "extra_volumes": {},
        "from_server": "",
        "organization": catalog::IMAGE_OWNER,
        "project": catalog::IMAGE_OWNER,
        "public": true,
        "root_volume": {"id": format!("{}5a{}", &id[..24], &id[26..]), "name": name, "size": 10_000_000_000u64, "volume_type": "sbs_snapshot"},
        "state": "available",
        "tags": [],
        "zone": zone,
    })
}

/// A security group rule object.
pub fn rule(r: &SgRuleRec, position: usize, zone: &str, editable: bool) -> Value {
    json!({
        "id": r.id,
        "protocol": r.protocol,
        "direction": r.direction,
        "action": r.action,
        "ip_range": r.ip_range,
        "dest_port_from": r.dest_port_from,
        "dest_port_to": r.dest_port_to,
        "position": position,
        "editable": editable,
        "zone": zone,
    })
}

/// A security group's rules, positions from 1.
pub fn rules(g: &SecurityGroupRec) -> Vec<Value> {
    g.rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, i + 1, &g.zone, true))
        .collect()
}

/// A security group object, with the servers that use it.
pub fn security_group(p: &Project, g: &SecurityGroupRec) -> Value {
    let servers: Vec<Value> = p
        .servers
        .values()
        .filter(|s| s.security_group == g.id)
        .map(|s| json!({"id": s.id, "name": s.name}))
        .collect();
    json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "enable_default_security": g.enable_default_security,
        "inbound_default_policy": g.inbound_default_policy,
        "outbound_default_policy": g.outbound_default_policy,
        "organization": g.project,
        "project": g.project,
        "tags": g.tags,
        "project_default": g.project_default,
        "organization_default": false,
        "servers": servers,
        "stateful": g.stateful,
        "state": "available",
        "zone": g.zone,
        "creation_date": g.created.to_rfc3339(),
        "modification_date": g.modified.to_rfc3339(),
    })
}
