//! The Instance API's JSON, as far as dayshift reads and writes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `POST /instance/v1/zones/{zone}/servers`.
#[derive(Debug, Serialize)]
pub struct CreateServer<'a> {
    /// Server name (Scaleway does not require names to be unique).
    pub name: &'a str,
    /// Commercial type, e.g. `L4-1-24G`.
    pub commercial_type: &'a str,
    /// Image id or label, e.g. `ubuntu_noble`.
    pub image: &'a str,
    /// Tags; dayshift writes its labels as `key=value`.
    pub tags: Vec<String>,
    /// Ask for a dynamic public IPv4, released with the server.
    pub dynamic_ip_required: bool,
    /// Project to create in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<&'a str>,
    /// Security group (UUID) the server is put in; `None`: the zone's default one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_group: Option<&'a str>,
}

/// Answer holding one server.
#[derive(Debug, Deserialize)]
pub struct ServerEnvelope {
    /// The server.
    pub server: ScwServer,
}

/// Answer of `GET .../servers`.
#[derive(Debug, Deserialize)]
pub struct ServerList {
    /// Servers of this page.
    pub servers: Vec<ScwServer>,
}

/// A server as the Instance API describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct ScwServer {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Commercial type.
    pub commercial_type: String,
    /// `stopped`, `starting`, `running`, `stopping`, `stopped in place`, `locked`.
    pub state: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The main public IP, if any.
    #[serde(default)]
    pub public_ip: Option<ScwIp>,
    /// All public IPs.
    #[serde(default)]
    pub public_ips: Vec<ScwIp>,
    /// Volumes by slot (`"0"` is the root volume).
    #[serde(default)]
    pub volumes: BTreeMap<String, ScwVolume>,
    /// RFC 3339 creation time.
    pub creation_date: Option<String>,
    /// Zone, e.g. `fr-par-2`.
    pub zone: Option<String>,
}

/// A public IP as embedded in a server.
#[derive(Debug, Clone, Deserialize)]
pub struct ScwIp {
    /// UUID of the IP object.
    pub id: String,
    /// The address.
    pub address: String,
    /// `inet` or `inet6`.
    #[serde(default)]
    pub family: Option<String>,
}

/// A volume as embedded in a server.
#[derive(Debug, Clone, Deserialize)]
pub struct ScwVolume {
    /// UUID.
    pub id: String,
}

/// Answer of `POST .../servers/{id}/action`.
#[derive(Debug, Deserialize)]
pub struct TaskEnvelope {
    /// The task the action started.
    pub task: Task,
}

/// An asynchronous task.
#[derive(Debug, Clone, Deserialize)]
pub struct Task {
    /// UUID.
    pub id: String,
    /// `pending`, `started`, `success`, `failure`, `retry`.
    pub status: String,
}

/// Answer of `GET .../products/servers`.
#[derive(Debug, Deserialize)]
pub struct Products {
    /// Offers by commercial type.
    pub servers: BTreeMap<String, Product>,
}

/// One commercial type's offer.
#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    /// Price per hour, EUR.
    pub hourly_price: f64,
    /// Price per month, EUR.
    #[serde(default)]
    pub monthly_price: f64,
    /// vCPUs.
    #[serde(default)]
    pub ncpus: u32,
    /// Memory in bytes.
    #[serde(default)]
    pub ram: u64,
    /// Number of GPUs.
    #[serde(default)]
    pub gpu: Option<u32>,
    /// GPU facts.
    #[serde(default)]
    pub gpu_info: Option<GpuInfo>,
    /// Volume size limits.
    #[serde(default)]
    pub volumes_constraint: Option<VolumesConstraint>,
}

/// GPU facts of a commercial type.
#[derive(Debug, Clone, Deserialize)]
pub struct GpuInfo {
    /// e.g. `NVIDIA`.
    #[serde(default)]
    pub gpu_manufacturer: String,
    /// e.g. `L4`.
    #[serde(default)]
    pub gpu_name: String,
    /// Memory per GPU, bytes.
    #[serde(default)]
    pub gpu_memory: u64,
}

/// Volume size limits of a commercial type, bytes.
#[derive(Debug, Clone, Deserialize)]
pub struct VolumesConstraint {
    /// Largest total.
    #[serde(default)]
    pub max_size: u64,
}

/// Error body: `{"type": "...", "message": "...", ...}`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    /// e.g. `not_found`, `invalid_arguments`, `out_of_stock`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Human message.
    #[serde(default)]
    pub message: String,
}

/// Answer of `GET .../security_groups`.
#[derive(Debug, Deserialize)]
pub struct SecurityGroupList {
    /// Security groups of this page.
    pub security_groups: Vec<ScwSecurityGroup>,
}

/// Answer holding one security group.
#[derive(Debug, Deserialize)]
pub struct SecurityGroupEnvelope {
    /// The security group.
    pub security_group: ScwSecurityGroup,
}

/// A security group as the Instance API describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct ScwSecurityGroup {
    /// UUID.
    pub id: String,
    /// Name (not unique at Scaleway).
    pub name: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `accept` or `drop`.
    #[serde(default)]
    pub inbound_default_policy: String,
    /// `accept` or `drop`.
    #[serde(default)]
    pub outbound_default_policy: String,
    /// Whether answers to allowed traffic pass back.
    #[serde(default)]
    pub stateful: bool,
}

/// Answer of `GET` or `PUT .../security_groups/{id}/rules`.
#[derive(Debug, Deserialize)]
pub struct RuleList {
    /// The rules.
    pub rules: Vec<ScwRule>,
}

/// A security group rule, as read and as written by `PUT .../rules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScwRule {
    /// `TCP`, `UDP`, `ICMP` or `ANY`.
    pub protocol: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// `accept` or `drop`.
    pub action: String,
    /// Network the rule matches, e.g. `203.0.113.7/32`.
    pub ip_range: String,
    /// First port.
    #[serde(default)]
    pub dest_port_from: Option<u32>,
    /// Last port; `None` for one port.
    #[serde(default)]
    pub dest_port_to: Option<u32>,
    /// Order of evaluation, from 1.
    #[serde(default)]
    pub position: u32,
    /// False for the rules Scaleway adds itself (default security).
    #[serde(default = "yes")]
    pub editable: bool,
}

fn yes() -> bool {
    true
}
