//! The scheduler inside `dayshift serve`: the provider built from the config, the
//! scheduler's store adapter over the ingress store and routing, the launcher (server
//! spec and SSH bootstrap), leadership (one scheduler per store), and the loop. It sees
//! the rest of the server only through [`ControlContext`] and its [`Routing`] handle.

pub mod handle;
pub mod launcher;
pub mod leader;
pub mod node_store;
pub mod provider;
pub mod run;

pub use handle::{ControlContext, NodeNotice, Routing, ScaleView};
pub use launcher::{NodeLauncher, ingress_for_nodes};
pub use node_store::SchedulerStore;
pub use provider::{ProviderStartError, firewall_policy, node_binary, provider_from_config};
pub use run::{Control, ControlTuning, start};

use std::sync::Arc;

use dayshift_config::settings::ProviderKind;
use dayshift_provisioning::{LabelSelector, Provider, SshKeyPair};
use dayshift_scheduler::{NodeRecord, NodeState};

/// The scheduler as `dayshift serve` runs it, with what it needs at shutdown.
pub struct ServeControl {
    control: Control,
    provider: Arc<dyn Provider>,
    ctx: ControlContext,
}

/// Starts the scheduler for `dayshift serve` when the config names a schedule.
pub async fn start_for_serve(ctx: ControlContext) -> anyhow::Result<Option<ServeControl>> {
    if ctx.config.schedule.is_none() {
        tracing::warn!(
            "no schedule in dayshift.toml: the scheduler is off and no node is started or stopped"
        );
        return Ok(None);
    }
    let config = &ctx.config;
    let provider = provider_from_config(config).await?;
    let operator_key = match &config.provider.ssh_key {
        Some(p) => Some(Arc::new(SshKeyPair::load(p).map_err(|e| {
            anyhow::anyhow!("reading the operator SSH key {}: {e}", p.display())
        })?)),
        None => None,
    };
    let (url, ca) = ingress_for_nodes(config)?;
    let binary = match config.provider.kind {
        ProviderKind::Local => std::path::PathBuf::new(),
        _ => node_binary(config)?,
    };
    let launcher = Arc::new(NodeLauncher::new(
        ctx.clone(),
        binary,
        operator_key,
        url,
        ca,
    ));
    let tuning = tuning_from_env();
    let Some(control) = start(ctx.clone(), provider.clone(), launcher, tuning).await? else {
        return Ok(None);
    };
    Ok(Some(ServeControl {
        control,
        provider,
        ctx,
    }))
}

/// How often each gateway samples its load: 5 s, or `DAYSHIFT_TICK_MS` (at least
/// 100 ms) as the end-to-end tests set it.
pub fn load_sample_every_from_env() -> std::time::Duration {
    match std::env::var("DAYSHIFT_TICK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(ms) => std::time::Duration::from_millis(ms.max(100)),
        None => std::time::Duration::from_secs(5),
    }
}

/// Loop tunables; `DAYSHIFT_TICK_MS` shortens the busy tick (used by the end-to-end tests
/// to keep them short).
fn tuning_from_env() -> ControlTuning {
    let mut t = ControlTuning::default();
    if let Some(ms) = std::env::var("DAYSHIFT_TICK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let busy = std::time::Duration::from_millis(ms.max(50));
        t.limits.busy_every = chrono::Duration::milliseconds(ms.max(50) as i64);
        t.limits.idle_every = t.limits.busy_every.max(chrono::Duration::seconds(1));
        t.limits.min_gap = t.limits.busy_every.min(chrono::Duration::milliseconds(200));
        t.lead_retry = busy;
        t.schedule_poll = busy.max(std::time::Duration::from_millis(500));
    }
    if let Some(s) = std::env::var("DAYSHIFT_HEARTBEAT_GRACE_SECS")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    {
        t.limits.heartbeat_grace = chrono::Duration::seconds(s.max(1));
    }
    t
}

impl ServeControl {
    /// Stops the loop. With the `local` provider the nodes are this machine's own
    /// processes: they are stopped and their rows closed, so Ctrl-C leaves nothing
    /// running. Cloud servers stay (a restarted ingress adopts them; the schedule
    /// deletes them at window end).
    pub async fn shutdown(self) {
        let ctx = &self.ctx;
        self.control.stop().await;
        if ctx.config.provider.kind != ProviderKind::Local {
            tracing::info!(
                "scheduler stopped; cloud servers keep running and are adopted at the next start"
            );
            return;
        }
        let servers = self
            .provider
            .list(&LabelSelector::cluster(&ctx.config.cluster))
            .await
            .unwrap_or_default();
        for s in &servers {
            if let Err(e) = self.provider.delete(&s.id).await {
                tracing::warn!(server = %s.id, error = %e, "stopping a local node");
            }
        }
        let now = ctx.clock.now();
        let rows = ctx.store.list_nodes(false).await.unwrap_or_default();
        for row in rows {
            ctx.routing.remove_node(&row.id);
            let node = row.lifecycle(0);
            if let Err(e) = close_stopped_node(ctx, node, now).await {
                tracing::warn!(node = %row.id, error = %e, "closing a node row at shutdown");
            }
        }
        tracing::info!(nodes = servers.len(), "local nodes stopped");
    }
}

/// Records a node whose process was stopped with the ingress as deleted, along the
/// lifecycle's own steps (draining → deleting → deleted; a failed node only gets its
/// deletion time), so its billing interval closes.
async fn close_stopped_node(
    ctx: &ControlContext,
    mut node: NodeRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), crate::store::StoreError> {
    let at = now.timestamp_millis();
    let path: &[NodeState] = match node.state {
        NodeState::Deleted => &[],
        NodeState::Failed => &[NodeState::Failed],
        NodeState::Deleting => &[NodeState::Deleted],
        NodeState::Draining => &[NodeState::Deleting, NodeState::Deleted],
        _ => &[NodeState::Draining, NodeState::Deleting, NodeState::Deleted],
    };
    for &next in path {
        let from = node.state;
        node.state = next;
        node.drain_started_at = node.drain_started_at.or(Some(now));
        if matches!(next, NodeState::Deleted | NodeState::Failed) {
            node.deleted_at = Some(now);
            node.retry_at = None;
        }
        let message = if next == NodeState::Deleted || next == NodeState::Failed {
            "stopped with the ingress"
        } else {
            "the ingress is stopping"
        };
        ctx.store
            .update_lifecycle(&node, from, at, message, None)
            .await?;
    }
    Ok(())
}
