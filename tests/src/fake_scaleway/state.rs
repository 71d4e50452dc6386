//! The fake's in-memory project: servers, IPs, volumes, tasks and stock.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Where a server is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Power {
    /// Created, or powered off.
    Stopped,
    /// Powered on at `since`; `running` once `duration` has passed and the host is up.
    Starting {
        /// When poweron was asked.
        since: Instant,
        /// How long booting takes at least.
        duration: Duration,
        /// The test host (if any) is up.
        ready: bool,
        /// Booting failed (test host could not start).
        failed: bool,
    },
}

/// A server record.
#[derive(Debug, Clone)]
pub struct ServerRec {
    /// UUID.
    pub id: String,
    /// Number used for the test host.
    pub num: i64,
    /// Name.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// Commercial type.
    pub commercial_type: String,
    /// Image label.
    pub image: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Power state.
    pub power: Power,
    /// Attached IP (UUID), if any.
    pub ip: Option<String>,
    /// Attached volumes by slot.
    pub volumes: BTreeMap<String, String>,
    /// User data by key (`cloud-init`).
    pub user_data: BTreeMap<String, String>,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Its test host must present its own host key (fault `wrong_host_key`).
    pub wrong_key: bool,
    /// Boot duration from a `slow_action` fault.
    pub slow: Option<Duration>,
    /// Its security group (UUID).
    pub security_group: String,
}

/// A flexible or dynamic IP.
#[derive(Debug, Clone)]
pub struct IpRec {
    /// UUID.
    pub id: String,
    /// Address.
    pub address: Ipv4Addr,
    /// Zone.
    pub zone: String,
    /// Released with its server.
    pub dynamic: bool,
    /// Server it is attached to.
    pub server: Option<String>,
}

/// A volume.
#[derive(Debug, Clone)]
pub struct VolumeRec {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// `l_ssd` (deleted with its server by `terminate`) or `sbs_volume` (kept).
    pub volume_type: String,
    /// Bytes.
    pub size: u64,
    /// Zone.
    pub zone: String,
    /// Server it is attached to.
    pub server: Option<String>,
    /// Creation time.
    pub created: DateTime<Utc>,
}

/// A task (answer of a server action).
#[derive(Debug, Clone)]
pub struct TaskRec {
    /// UUID.
    pub id: String,
    /// e.g. `server_batch_poweron`.
    pub description: String,
    /// Server it concerns.
    pub server: String,
    /// Zone.
    pub zone: String,
    /// Started.
    pub started: DateTime<Utc>,
}

/// One rule of a security group; its position is its index + 1.
#[derive(Debug, Clone, PartialEq)]
pub struct SgRuleRec {
    /// UUID.
    pub id: String,
    /// `tcp`, `udp`, `icmp` or `any`.
    pub protocol: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// `accept` or `drop`.
    pub action: String,
    /// CIDR, e.g. `203.0.113.7/32` or `0.0.0.0/0`.
    pub ip_range: String,
    /// First port (tcp/udp only; none: all ports).
    pub dest_port_from: Option<u16>,
    /// Last port of a range.
    pub dest_port_to: Option<u16>,
}

/// A security group (one zone).
#[derive(Debug, Clone)]
pub struct SecurityGroupRec {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Zone.
    pub zone: String,
    /// Project it belongs to.
    pub project: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The project's default group in its zone (servers created without one get it).
    pub project_default: bool,
    /// Stateful (replies to allowed traffic pass).
    pub stateful: bool,
    /// `accept` or `drop`.
    pub inbound_default_policy: String,
    /// `accept` or `drop`.
    pub outbound_default_policy: String,
    /// Block SMTP outbound (the default rules).
    pub enable_default_security: bool,
    /// Rules in position order.
    pub rules: Vec<SgRuleRec>,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub modified: DateTime<Utc>,
}

/// The mutable state behind the fake.
#[derive(Debug, Default)]
pub struct Project {
    /// Counter for UUIDs and host numbers.
    pub next: i64,
    /// Servers by UUID.
    pub servers: BTreeMap<String, ServerRec>,
    /// IPs by UUID.
    pub ips: BTreeMap<String, IpRec>,
    /// Volumes by UUID.
    pub volumes: BTreeMap<String, VolumeRec>,
    /// Tasks by UUID.
    pub tasks: BTreeMap<String, TaskRec>,
    /// Security groups by UUID.
    pub security_groups: BTreeMap<String, SecurityGroupRec>,
    /// (commercial type, zone) pairs out of stock.
    pub out_of_stock: Vec<(String, String)>,
    /// Default boot duration.
    pub boot_duration: Duration,
}

impl Project {
    /// A fresh UUID-shaped id and its number.
    pub fn uuid(&mut self) -> (String, i64) {
        self.next += 1;
        let n = self.next;
        (format!("5ca1e0a7-{:04x}-4000-8000-{:012x}", n >> 48, n), n)
    }

    /// The project's default security group in a zone, created on first use as the real
    /// API does ("Default security group": stateful, inbound and outbound accept).
    pub fn default_security_group(&mut self, zone: &str) -> String {
        if let Some(sg) = self
            .security_groups
            .values()
            .find(|g| g.zone == zone && g.project_default)
        {
            return sg.id.clone();
        }
        let (id, _) = self.uuid();
        let now = Utc::now();
        self.security_groups.insert(
            id.clone(),
            SecurityGroupRec {
                id: id.clone(),
                name: "Default security group".into(),
                description: "Auto generated security group.".into(),
                zone: zone.to_string(),
                project: super::json::PROJECT.to_string(),
                tags: Vec::new(),
                project_default: true,
                stateful: true,
                inbound_default_policy: "accept".into(),
                outbound_default_policy: "accept".into(),
                enable_default_security: true,
                rules: Vec::new(),
                created: now,
                modified: now,
            },
        );
        id
    }

    /// The state string a server reports now.
    pub fn state_of(s: &ServerRec) -> &'static str {
        match &s.power {
            Power::Stopped => "stopped",
            Power::Starting { failed: true, .. } => "stopped",
            Power::Starting {
                since,
                duration,
                ready,
                ..
            } => {
                if *ready && since.elapsed() >= *duration {
                    "running"
                } else {
                    "starting"
                }
            }
        }
    }
}
