//! The node lifecycle: states, which transitions are allowed, and the node record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a node is in its life. Written to the store before the side effect it leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// A row exists; nothing has been asked of the provider yet.
    Planned,
    /// The provider is asked to create the server.
    Creating,
    /// The server exists and is booting.
    Booting,
    /// The server is being set up over SSH.
    Provisioning,
    /// `dayshift-node` runs and loads its model; waiting for it to register.
    Loading,
    /// Registered and serving.
    Ready,
    /// Takes no new requests; in-flight ones finish.
    Draining,
    /// The provider is asked to delete the server.
    Deleting,
    /// Gone; its billing interval is closed.
    Deleted,
    /// Something failed before `ready`, or a ready node was lost; its server is deleted.
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

    /// The state's name as stored.
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

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<NodeState> {
        NodeState::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// Final states: the node row no longer owns a server.
    pub fn is_final(self) -> bool {
        matches!(self, NodeState::Deleted | NodeState::Failed)
    }

    /// States that count towards a pool's node count (on their way or serving).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            NodeState::Planned
                | NodeState::Creating
                | NodeState::Booting
                | NodeState::Provisioning
                | NodeState::Loading
                | NodeState::Ready
        )
    }

    /// On its way to `ready` (a request may wait for it).
    pub fn is_on_its_way(self) -> bool {
        self.is_active() && self != NodeState::Ready
    }

    /// True when the lifecycle allows going from `self` to `to`.
    pub fn can_go_to(self, to: NodeState) -> bool {
        use NodeState::*;
        if self == to {
            return false;
        }
        match (self, to) {
            (Planned, Creating) => true,
            (Creating, Booting) => true,
            (Booting, Provisioning) => true,
            (Provisioning, Loading) => true,
            (Loading, Ready) => true,
            (Ready, Draining) => true,
            // A node that is not ready yet and no longer wanted is drained at once.
            (Planned | Creating | Booting | Provisioning | Loading, Draining) => true,
            (Draining, Deleting) => true,
            (Deleting, Deleted) => true,
            // `failed` is reachable from every step before `ready`; a ready node that
            // stops heartbeating fails too (it is replaced).
            (Planned | Creating | Booting | Provisioning | Loading | Ready, Failed) => true,
            // Reuse: a draining node may be taken back (billing-aware stop, wake-up).
            (Draining, Ready) => true,
            _ => false,
        }
    }
}

impl std::str::FromStr for NodeState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeState::parse(s).ok_or_else(|| format!("unknown node state {s:?}"))
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id (also the `dayshift-node` label and part of the server name).
    pub id: String,
    /// Pool it serves.
    pub pool: String,
    /// Lifecycle state.
    pub state: NodeState,
    /// When the row was written (planned).
    pub planned_at: DateTime<Utc>,
    /// The provider's server id, once created.
    pub server_id: Option<String>,
    /// The server's public address, once known.
    pub address: Option<String>,
    /// Server type that was rented.
    pub server_type: Option<String>,
    /// Location it was rented in.
    pub location: Option<String>,
    /// When the provider created the server (start of billing).
    pub server_created_at: Option<DateTime<Utc>>,
    /// When it became ready.
    pub ready_at: Option<DateTime<Utc>>,
    /// When draining began.
    pub drain_started_at: Option<DateTime<Utc>>,
    /// When the server was deleted (end of billing).
    pub deleted_at: Option<DateTime<Utc>>,
    /// Requests in flight, from the last heartbeat.
    pub in_flight: u32,
    /// The last heartbeat.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Failed attempts at the current step.
    pub attempts: u32,
    /// Do not retry the current step before this instant.
    pub retry_at: Option<DateTime<Utc>>,
    /// The last error, for operators.
    pub last_error: Option<String>,
}

impl NodeRecord {
    /// A new row in state `planned`.
    pub fn planned(id: String, pool: String, now: DateTime<Utc>) -> Self {
        NodeRecord {
            id,
            pool,
            state: NodeState::Planned,
            planned_at: now,
            server_id: None,
            address: None,
            server_type: None,
            location: None,
            server_created_at: None,
            ready_at: None,
            drain_started_at: None,
            deleted_at: None,
            in_flight: 0,
            last_heartbeat: None,
            attempts: 0,
            retry_at: None,
            last_error: None,
        }
    }

    /// Seconds from the row's creation to ready, if it got there.
    pub fn cold_start_secs(&self) -> Option<i64> {
        Some((self.ready_at? - self.planned_at).num_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_and_failures_are_allowed_only_where_designed() {
        use NodeState::*;
        let path = [
            Planned,
            Creating,
            Booting,
            Provisioning,
            Loading,
            Ready,
            Draining,
            Deleting,
            Deleted,
        ];
        for w in path.windows(2) {
            assert!(w[0].can_go_to(w[1]), "{} -> {}", w[0], w[1]);
        }
        for s in [Planned, Creating, Booting, Provisioning, Loading] {
            assert!(s.can_go_to(Failed));
        }
        assert!(!Deleted.can_go_to(Ready));
        assert!(!Failed.can_go_to(Ready));
        assert!(!Deleting.can_go_to(Failed));
        assert!(!Planned.can_go_to(Ready));
        for s in NodeState::ALL {
            assert_eq!(NodeState::parse(s.as_str()), Some(s));
        }
    }
}
