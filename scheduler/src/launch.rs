//! The seam between the reconcile loop and whatever turns a node into a running server:
//! the [`Launcher`] trait and its typed error, which says whether trying again can help.
//! The loop decides from that policy (like kube-rs' `error_policy`): a transient SSH
//! timeout is retried with backoff, a wrong host key or a missing setting fails the node.

use async_trait::async_trait;
use dayshift_provisioning::{Server, ServerSpec};

use crate::lifecycle::NodeRecord;

/// What the reconcile loop should do after a failed launch step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Transient (network, timeout, a store hiccup): try the same step again after a
    /// backoff, up to the loop's attempt limit.
    Retry,
    /// Trying again cannot help (configuration, a host key that does not match): the
    /// node fails and its server is deleted.
    GiveUp,
}

/// A failed launch step: what happened (for operators) and whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LaunchError {
    /// Retry or give up.
    pub policy: ErrorPolicy,
    /// What happened and what to do next.
    pub message: String,
}

impl LaunchError {
    /// A transient failure: the loop tries again after a backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        LaunchError {
            policy: ErrorPolicy::Retry,
            message: message.into(),
        }
    }

    /// A failure that retrying cannot fix: the node fails.
    pub fn give_up(message: impl Into<String>) -> Self {
        LaunchError {
            policy: ErrorPolicy::GiveUp,
            message: message.into(),
        }
    }

    /// True when the loop should try again.
    pub fn is_retryable(&self) -> bool {
        self.policy == ErrorPolicy::Retry
    }

    /// The same error with `context` in front of its message.
    pub fn context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// Turns a node into a server spec and sets the created server up. The ingress provides
/// the real one (cloud-init with a per-node host key, SSH bootstrap); the `local`
/// provider needs no bootstrap.
#[async_trait]
pub trait Launcher: Send + Sync {
    /// The server to create for `node` (name, type, image, labels, user data, fallbacks).
    async fn spec(&self, node: &NodeRecord) -> Result<ServerSpec, LaunchError>;
    /// Sets the created server up so `dayshift-node` starts on it.
    async fn bootstrap(&self, node: &NodeRecord, server: &Server) -> Result<(), LaunchError>;
}
