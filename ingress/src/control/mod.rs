//! The scheduler inside `dayshift serve`: the provider built from the config, the
//! scheduler's store view over the ingress store and registry, the launcher (server spec
//! and SSH bootstrap), leadership (one scheduler per store), and the loop.

pub mod launcher;
pub mod leader;
pub mod node_store;
pub mod provider;
pub mod run;

pub use launcher::{NodeLauncher, ingress_for_nodes};
pub use node_store::SchedulerStore;
pub use provider::{node_binary, provider_from_config};
pub use run::{Control, ControlTuning, start};

use std::sync::Arc;

use dayshift_config::settings::ProviderKind;
use dayshift_provisioning::{LabelSelector, Provider, SshKeyPair};
use dayshift_scheduler::NodeState;

use crate::server::state::SharedState;
use crate::store::{LifecycleUpdate, NodeStore};

/// The scheduler as `dayshift serve` runs it, with what it needs at shutdown.
pub struct ServeControl {
    control: Control,
    provider: Arc<dyn Provider>,
}

/// Starts the scheduler for `dayshift serve` when the config names a schedule.
pub async fn start_for_serve(state: SharedState) -> anyhow::Result<Option<ServeControl>> {
    if state.config.schedule.is_none() {
        tracing::warn!(
            "no schedule in dayshift.toml: the scheduler is off and no node is started or stopped"
        );
        return Ok(None);
    }
    let config = &state.config;
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
        state.clone(),
        binary,
        operator_key,
        url,
        ca,
    ));
    let tuning = tuning_from_env();
    let Some(control) = start(state.clone(), provider.clone(), launcher, tuning).await? else {
        return Ok(None);
    };
    Ok(Some(ServeControl { control, provider }))
}

/// Loop tunables; `DAYSHIFT_TICK_MS` shortens the busy tick (used by the end-to-end tests
/// to keep them short).
fn tuning_from_env() -> ControlTuning {
    let mut t = ControlTuning::default();
    if let Some(ms) = std::env::var("DAYSHIFT_TICK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        t.busy_every = std::time::Duration::from_millis(ms.max(50));
        t.idle_every = t.busy_every.max(std::time::Duration::from_secs(1));
        t.lead_retry = t.busy_every;
        t.schedule_poll = t.busy_every.max(std::time::Duration::from_millis(500));
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
    pub async fn shutdown(self, state: &SharedState) {
        self.control.stop().await;
        if state.config.provider.kind != ProviderKind::Local {
            tracing::info!(
                "scheduler stopped; cloud servers keep running and are adopted at the next start"
            );
            return;
        }
        let servers = self
            .provider
            .list(&LabelSelector::cluster(&state.config.cluster))
            .await
            .unwrap_or_default();
        for s in &servers {
            if let Err(e) = self.provider.delete(&s.id).await {
                tracing::warn!(server = %s.id, error = %e, "stopping a local node");
            }
        }
        let now = state.clock.now().timestamp_millis();
        let nodes = state.store.list_nodes(false).await.unwrap_or_default();
        for n in nodes {
            let u = LifecycleUpdate {
                id: n.id.clone(),
                state: NodeState::Deleted,
                provider_id: n.provider_id.clone(),
                server_type: n.server_type.clone(),
                location: n.location.clone(),
                address: n.address.clone(),
                server_created_at: n.server_created_at,
                drain_started_at: n.drain_started_at.or(Some(now)),
                deleted_at: Some(now),
                attempts: n.attempts,
                retry_at: None,
                error: n.error.clone(),
            };
            if let Err(e) = state
                .store
                .update_lifecycle(&u, n.state, now, "stopped with the ingress", None)
                .await
            {
                tracing::warn!(node = %n.id, error = %e, "closing a node row at shutdown");
            }
            state.forget_node(&n.id);
        }
        tracing::info!(nodes = servers.len(), "local nodes stopped");
    }
}
