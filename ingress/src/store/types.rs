//! Row types of the node tables and the node lifecycle states.

use std::fmt;
use std::str::FromStr;

/// The node lifecycle of the design: `planned → creating → booting → provisioning →
/// loading → ready → draining → deleting → deleted`, `failed` from any step before `ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Row written, nothing rented yet.
    Planned,
    /// Provider create call under way.
    Creating,
    /// Server exists, OS booting.
    Booting,
    /// SSH bootstrap under way.
    Provisioning,
    /// `dayshift-node` runs, fetching and loading the model.
    Loading,
    /// Registered and serving.
    Ready,
    /// Taking no new requests; in-flight ones finish.
    Draining,
    /// Provider delete under way.
    Deleting,
    /// Gone (final).
    Deleted,
    /// Gave up (final).
    Failed,
}

impl NodeState {
    /// Every state, in lifecycle order.
    pub const ALL: [NodeState; 10] = [
        NodeState::Planned,
        NodeState::Creating,
        NodeState::Booting,
        NodeState::Provisioning,
        NodeState::Loading,
        NodeState::Ready,
        NodeState::Draining,
        NodeState::Deleting,
        NodeState::Deleted,
        NodeState::Failed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Planned => "planned",
            NodeState::Creating => "creating",
            NodeState::Booting => "booting",
            NodeState::Provisioning => "provisioning",
            NodeState::Loading => "loading",
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
            NodeState::Deleting => "deleting",
            NodeState::Deleted => "deleted",
            NodeState::Failed => "failed",
        }
    }

    /// True for `deleted` and `failed`.
    pub fn is_final(self) -> bool {
        matches!(self, NodeState::Deleted | NodeState::Failed)
    }

    /// True for the states in which a node may still become (or be) ready:
    /// a pool with such a node has "a node on its way".
    pub fn is_on_its_way(self) -> bool {
        matches!(
            self,
            NodeState::Planned
                | NodeState::Creating
                | NodeState::Booting
                | NodeState::Provisioning
                | NodeState::Loading
        )
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown node state {s:?}"))
    }
}

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
