//! Firewall rules as the API validates them: direction, protocol, port (tcp/udp only),
//! CIDR lists (`source_ips` for `in`, `destination_ips` for `out`, at most 100, networks
//! with empty host bits or single hosts; IPv6 in RFC 5952 form), at most 50 rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use super::api_error::ApiError;
use super::state::RuleRec;

/// Most rules one firewall holds.
pub const MAX_RULES: usize = 50;
/// Most CIDR blocks in one rule.
const MAX_CIDRS: usize = 100;

/// Reads the `rules` array of a create or `set_rules` body.
pub fn parse_rules(v: Option<&Value>) -> Result<Vec<RuleRec>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::invalid_field("rules", "rules must be an array")),
    };
    if list.len() > MAX_RULES {
        return Err(ApiError::invalid_field(
            "rules",
            format!("at most {MAX_RULES} rules per firewall"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            parse_rule(r).map_err(|m| ApiError::invalid_field("rules", format!("rules[{i}]: {m}")))
        })
        .collect()
}

fn parse_rule(r: &Value) -> Result<RuleRec, String> {
    let text = |k: &str| -> Result<Option<String>, String> {
        match r.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{k} must be a string")),
        }
    };
    let direction = text("direction")?.ok_or("direction is required")?;
    if direction != "in" && direction != "out" {
        return Err(format!(
            "direction must be one of in, out (got {direction:?})"
        ));
    }
    let protocol = text("protocol")?.ok_or("protocol is required")?;
    if !["tcp", "udp", "icmp", "esp", "gre"].contains(&protocol.as_str()) {
        return Err(format!(
            "protocol must be one of tcp, udp, icmp, esp, gre (got {protocol:?})"
        ));
    }
    let port = text("port")?;
    match (protocol.as_str(), &port) {
        ("tcp" | "udp", None) => return Err(format!("port is required for protocol {protocol}")),
        ("tcp" | "udp", Some(p)) => check_port(p)?,
        (_, Some(_)) => return Err(format!("port is not allowed for protocol {protocol}")),
        _ => {}
    }
    let source_ips = cidrs(r.get("source_ips"), "source_ips")?;
    let destination_ips = cidrs(r.get("destination_ips"), "destination_ips")?;
    match direction.as_str() {
        "in" if source_ips.is_empty() => {
            return Err("source_ips is required for direction in".into());
        }
        "in" if !destination_ips.is_empty() => {
            return Err("destination_ips is not allowed for direction in".into());
        }
        "out" if destination_ips.is_empty() => {
            return Err("destination_ips is required for direction out".into());
        }
        "out" if !source_ips.is_empty() => {
            return Err("source_ips is not allowed for direction out".into());
        }
        _ => {}
    }
    let description = text("description")?;
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 255)
    {
        return Err("description must be at most 255 characters".into());
    }
    Ok(RuleRec {
        direction,
        protocol,
        port,
        source_ips,
        destination_ips,
        description,
    })
}

/// `80`, `1024-5000` (lower ≤ upper) or `any`.
fn check_port(p: &str) -> Result<(), String> {
    if p == "any" {
        return Ok(());
    }
    let num = |s: &str| s.parse::<u16>().ok().filter(|n| *n >= 1);
    let ok = match p.split_once('-') {
        Some((a, b)) => matches!((num(a), num(b)), (Some(a), Some(b)) if a <= b),
        None => num(p).is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "port {p:?} is not a port (1-65535), a range like 1024-5000, or any"
        ))
    }
}

fn cidrs(v: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(format!("{field} must be an array of CIDR strings")),
    };
    if list.len() > MAX_CIDRS {
        return Err(format!("{field} holds at most {MAX_CIDRS} CIDR blocks"));
    }
    list.iter()
        .map(|c| {
            c.as_str().and_then(canonical_cidr).ok_or_else(|| {
                format!("{field}: {c} is not a CIDR block (e.g. 10.0.1.0/24, 10.0.1.1/32, ::/0)")
            })
        })
        .collect()
}

/// The CIDR in canonical form, or `None` when it is not a network with empty host bits
/// nor a single host.
pub fn canonical_cidr(text: &str) -> Option<String> {
    let (addr, len) = text.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    let ip: IpAddr = addr.parse().ok()?;
    let (bits, max) = match ip {
        IpAddr::V4(v4) => (u32::from(v4) as u128, 32u8),
        IpAddr::V6(v6) => (u128::from(v6), 128u8),
    };
    if len > max {
        return None;
    }
    let host_bits = u32::from(max - len);
    let host_mask: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    if bits & host_mask != 0 {
        return None;
    }
    let shown = match ip {
        IpAddr::V4(_) => Ipv4Addr::from(bits as u32).to_string(),
        IpAddr::V6(_) => Ipv6Addr::from(bits).to_string(),
    };
    Some(format!("{shown}/{len}"))
}
