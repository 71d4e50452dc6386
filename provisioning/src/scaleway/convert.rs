//! Between the Instance API's shapes and dayshift's `Server`, labels and server types.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::model::{Product, ScwServer};
use crate::labels::Labels;
use crate::provider::{LocationPrice, Server, ServerStatus, ServerType};

/// dayshift's id of a Scaleway server: `zone/uuid` (every call needs the zone).
pub(crate) fn server_id(zone: &str, uuid: &str) -> String {
    format!("{zone}/{uuid}")
}

/// Splits `zone/uuid`; `None` for anything else.
pub(crate) fn split_id(id: &str) -> Option<(&str, &str)> {
    let (zone, uuid) = id.split_once('/')?;
    (!zone.is_empty() && !uuid.is_empty() && !uuid.contains('/')).then_some((zone, uuid))
}

/// Labels as tags: `key=value`.
pub(crate) fn labels_to_tags(labels: &Labels) -> Vec<String> {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Tags of the form `key=value` as labels; other tags are ignored.
pub(crate) fn tags_to_labels(tags: &[String]) -> Labels {
    tags.iter()
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The server's public IPv4, if it has one.
pub(crate) fn public_ipv4(s: &ScwServer) -> Option<Ipv4Addr> {
    s.public_ip
        .iter()
        .chain(s.public_ips.iter())
        .filter(|ip| ip.family.as_deref().is_none_or(|f| f == "inet"))
        .find_map(|ip| ip.address.parse().ok())
}

/// The dayshift view of a server.
pub(crate) fn to_server(zone: &str, s: &ScwServer) -> Server {
    let status = match s.state.as_str() {
        "running" => ServerStatus::Running,
        "starting" => ServerStatus::Starting,
        "stopping" => ServerStatus::Stopping,
        "stopped" | "stopped in place" => ServerStatus::Off,
        "locked" => ServerStatus::Unknown,
        _ => ServerStatus::Unknown,
    };
    let created = s
        .creation_date
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(Utc::now);
    Server {
        id: server_id(zone, &s.id),
        name: s.name.clone(),
        status,
        ipv4: public_ipv4(s),
        labels: tags_to_labels(&s.tags),
        server_type: s.commercial_type.clone(),
        location: Some(s.zone.clone().unwrap_or_else(|| zone.to_string())),
        created,
        port: None,
    }
}

fn decimal(v: f64) -> Decimal {
    Decimal::from_f64_retain(v)
        .map(|d| d.round_dp(6).normalize())
        .unwrap_or_default()
}

/// A commercial type with its price in one zone; GPU facts go into the description.
pub(crate) fn to_server_type(name: &str, zone: &str, p: &Product) -> ServerType {
    let gib = 1024.0 * 1024.0 * 1024.0;
    let mut description = format!("{} vCPU, {:.0} GiB RAM", p.ncpus, p.ram as f64 / gib);
    if let (Some(n), Some(g)) = (p.gpu.filter(|n| *n > 0), &p.gpu_info) {
        description.push_str(&format!(
            ", {n}x {} {} {:.0} GiB",
            g.gpu_manufacturer,
            g.gpu_name,
            g.gpu_memory as f64 / gib
        ));
    }
    let hourly = decimal(p.hourly_price);
    let monthly = if p.monthly_price > 0.0 {
        decimal(p.monthly_price)
    } else {
        // Scaleway quotes monthly prices as 730 hours.
        hourly * Decimal::from(730)
    };
    ServerType {
        name: name.to_string(),
        description,
        cores: p.ncpus,
        memory_gb: p.ram as f64 / gib,
        disk_gb: p
            .volumes_constraint
            .as_ref()
            .map(|v| v.max_size as f64 / 1e9)
            .unwrap_or(0.0),
        prices: vec![LocationPrice {
            location: zone.to_string(),
            hourly,
            monthly,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tags_round_trip() {
        assert_eq!(
            split_id(&server_id("fr-par-2", "u-1")),
            Some(("fr-par-2", "u-1"))
        );
        assert_eq!(split_id("987654"), None);
        let labels = crate::dayshift_labels("c", "n", "p");
        assert_eq!(tags_to_labels(&labels_to_tags(&labels)), labels);
    }
}
