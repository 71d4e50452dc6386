//! Preparing one node: its host key, user data and server spec, ready to create and
//! bootstrap.

use std::net::IpAddr;

use crate::bootstrap::BootstrapTarget;
use crate::cloud_init::{CloudInit, WriteFile};
use crate::keys::{KeyError, SshKeyPair};
use crate::labels::dayshift_labels;
use crate::provider::{Placement, Server, ServerSpec};

/// What the scheduler knows about a node it wants.
#[derive(Debug, Clone)]
pub struct NodeRequest<'a> {
    /// Cluster name (label `dayshift-cluster`).
    pub cluster: &'a str,
    /// Node id (label `dayshift-node`).
    pub node_id: &'a str,
    /// Pool (label `dayshift-pool`).
    pub pool: &'a str,
    /// Server name at the provider.
    pub name: String,
    /// Preferred placement.
    pub placement: Placement,
    /// Further placements tried on `Capacity`.
    pub fallbacks: Vec<Placement>,
    /// System image.
    pub image: &'a str,
    /// The operator key the bootstrap logs in with.
    pub operator_key: &'a SshKeyPair,
    /// Provider-registered SSH key names (e.g. from `HetznerProvider::ensure_ssh_key`).
    pub provider_ssh_keys: Vec<String>,
    /// Extra non-secret files for cloud-init.
    pub files: Vec<WriteFile>,
}

/// A node ready to be created: keep `host_key` (its public half) to verify the bootstrap.
#[derive(Debug, Clone)]
pub struct PreparedNode {
    /// The spec to pass to `Provider::create`.
    pub spec: ServerSpec,
    /// The host key installed through the user data.
    pub host_key: SshKeyPair,
}

/// Generates the node's host key and builds its labelled spec with user data that installs
/// the host key and authorizes the operator key.
pub fn prepare_node(req: NodeRequest<'_>) -> Result<PreparedNode, KeyError> {
    let host_key = SshKeyPair::generate(&format!("dayshift-node-{}", req.node_id))?;
    let user_data = CloudInit {
        host_key: &host_key,
        authorized_keys: vec![req.operator_key.public_openssh()],
        write_files: req.files,
    }
    .render()?;
    let spec = ServerSpec {
        name: req.name,
        server_type: req.placement.server_type,
        image: req.image.to_string(),
        location: req.placement.location,
        labels: dayshift_labels(req.cluster, req.node_id, req.pool),
        ssh_keys: req.provider_ssh_keys,
        user_data: Some(user_data),
        fallbacks: req.fallbacks,
    };
    Ok(PreparedNode { spec, host_key })
}

impl PreparedNode {
    /// Where to bootstrap the created server; `None` until it has an IPv4.
    pub fn bootstrap_target(&self, server: &Server) -> Option<BootstrapTarget> {
        Some(BootstrapTarget {
            host: IpAddr::V4(server.ipv4?),
            expected_host_key: self.host_key.public_key().clone(),
        })
    }
}
