//! Row types of the node tables and the node lifecycle states.

use chrono::{DateTime, Utc};

/// The node lifecycle: one definition, the scheduler's (states, transitions, names), and
/// its record and event types.
pub use dayshift_scheduler::{NodeEvent, NodeRecord, NodeState};

/// A node to insert (state `planned` unless told otherwise).
#[derive(Debug, Clone)]
pub struct NewNode {
    /// Node id (also the provider label `dayshift-node`).
    pub id: String,
    /// Pool it serves.
    pub pool: String,
    /// Initial state.
    pub state: NodeState,
    /// sha256 hex of the one-time join token (never the token).
    pub join_token_hash: Option<String>,
    /// When the join token stops being accepted for a first registration (unix ms).
    pub join_token_expires_at: Option<i64>,
}

/// A node row as the ingress stores it: the scheduler's lifecycle fields (see
/// [`NodeRow::lifecycle`]) plus what the node API owns (registration, pinned
/// certificate, join token, heartbeats).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRow {
    /// Node id.
    pub id: String,
    /// Pool.
    pub pool: String,
    /// Lifecycle state.
    pub state: NodeState,
    /// Provider's server id.
    pub provider_id: Option<String>,
    /// Server type.
    pub server_type: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// API base URL the node registered.
    pub api_url: Option<String>,
    /// Pinned sha256 (hex) of the node's TLS certificate.
    pub tls_cert_sha256: Option<String>,
    /// sha256 hex of the join token.
    #[serde(skip)]
    pub join_token_hash: Option<String>,
    /// Join token expiry (unix ms).
    pub join_token_expires_at: Option<i64>,
    /// First registration (unix ms).
    pub registered_at: Option<i64>,
    /// Last heartbeat (unix ms).
    pub last_heartbeat_at: Option<i64>,
    /// Last error, for `failed`.
    pub error: Option<String>,
    /// Address of the server (`ip` or `ip:port`), from the provider.
    pub address: Option<String>,
    /// When the provider created the server (unix ms): its billing starts here.
    pub server_created_at: Option<i64>,
    /// When draining began (unix ms).
    pub drain_started_at: Option<i64>,
    /// When the server was deleted (unix ms).
    pub deleted_at: Option<i64>,
    /// Failed create attempts since the last success.
    pub attempts: i64,
    /// No new create attempt before this time (unix ms).
    pub retry_at: Option<i64>,
    /// Requests in flight on the node at its last heartbeat (as the gateway counts them).
    pub in_flight: i64,
    /// The node's SSH host public key (OpenSSH format), checked by the bootstrap.
    pub host_key: Option<String>,
    /// Row creation (unix ms).
    pub created_at: i64,
    /// Last change (unix ms).
    pub updated_at: i64,
}

impl NodeRow {
    /// The scheduler's view of this row; `in_flight` is the gateway's live count (the
    /// stored one is the last heartbeat's, and the scheduler drains by the live one).
    pub fn lifecycle(&self, in_flight: u32) -> NodeRecord {
        NodeRecord {
            id: self.id.clone(),
            pool: self.pool.clone(),
            state: self.state,
            planned_at: from_ms(self.created_at).unwrap_or_default(),
            server_id: self.provider_id.clone(),
            address: self.address.clone(),
            server_type: self.server_type.clone(),
            location: self.location.clone(),
            server_created_at: self.server_created_at.and_then(from_ms),
            ready_at: self.registered_at.and_then(from_ms),
            drain_started_at: self.drain_started_at.and_then(from_ms),
            deleted_at: self.deleted_at.and_then(from_ms),
            in_flight,
            last_heartbeat: self.last_heartbeat_at.and_then(from_ms),
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            retry_at: self.retry_at.and_then(from_ms),
            last_error: self.error.clone(),
        }
    }
}

/// A stored unix-milliseconds time as an instant.
pub(super) fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}
