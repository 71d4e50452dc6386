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
