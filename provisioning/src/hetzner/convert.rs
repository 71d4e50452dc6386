//! Converts `hcloud` models into dayshift's provider types.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use hcloud::models;
use rust_decimal::Decimal;

use crate::provider::{LocationPrice, Server, ServerStatus, ServerType};

/// A Hetzner server as a dayshift `Server`.
pub(crate) fn server(s: &models::Server) -> Server {
    let status = match s.status {
        models::server::Status::Initializing => ServerStatus::Initializing,
        models::server::Status::Starting => ServerStatus::Starting,
        models::server::Status::Running => ServerStatus::Running,
        models::server::Status::Stopping => ServerStatus::Stopping,
        models::server::Status::Off => ServerStatus::Off,
        models::server::Status::Deleting => ServerStatus::Deleting,
        _ => ServerStatus::Unknown,
    };
    let ipv4 = s.public_net.ipv4.as_ref().and_then(|v| v.ip.parse().ok());
    let created = DateTime::parse_from_rfc3339(&s.created)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|e| {
            tracing::warn!(id = s.id, created = %s.created, error = %e, "unreadable creation time");
            Utc::now()
        });
    Server {
        id: s.id.to_string(),
        name: s.name.clone(),
        status,
        ipv4,
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        server_type: s.server_type.name.clone(),
        location: Some(s.location.name.clone()),
        created,
        port: None,
    }
}

fn money(text: &str) -> Decimal {
    Decimal::from_str(text.trim()).unwrap_or_else(|e| {
        tracing::warn!(price = text, error = %e, "unreadable price; counting it as 0");
        Decimal::ZERO
    })
}

/// A Hetzner server type as a dayshift `ServerType` (net prices).
pub(crate) fn server_type(t: &models::ServerType) -> ServerType {
    ServerType {
        name: t.name.clone(),
        description: t.description.clone(),
        cores: t.cores.max(0) as u32,
        memory_gb: t.memory,
        disk_gb: t.disk,
        prices: t
            .prices
            .iter()
            .map(|p| LocationPrice {
                location: p.location.clone(),
                hourly: money(&p.price_hourly.net),
                monthly: money(&p.price_monthly.net),
            })
            .collect(),
    }
}
