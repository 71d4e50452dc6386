//! Row types of the node tables and the node lifecycle states.

/// The node lifecycle: one definition, the scheduler's (states, transitions, names).
pub use dayshift_scheduler::NodeState;

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

/// A node row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRecord {
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

/// One row of a node's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeEvent {
    /// Node id.
    pub node_id: String,
    /// When (unix ms).
    pub at: i64,
    /// State before (`None` for the insert).
    pub from_state: Option<String>,
    /// State after.
    pub to_state: String,
    /// Free text.
    pub detail: String,
}
