//! The gateway's load signal for elastic windows: every `load_sample_every`, one sample
//! per pool (requests in flight on its nodes, requests queued for a node, routable
//! nodes) is written to the store under this replica's id, so the scheduler — on this
//! replica or another — averages every replica's load over its scale periods. Once an
//! hour, whole hours are rolled up into hourly loads kept for good (`dayshift cost
//! estimate` learns from them), and raw samples older than [`KEEP`] are pruned.

use std::sync::Weak;

use dayshift_scheduler::LoadSample;

use super::state::AppState;

/// How long raw samples are kept (the scheduler reads minutes of them; the hourly
/// roll-up keeps the rest).
pub const KEEP: chrono::Duration = chrono::Duration::days(2);

/// Roll up and prune once every this many samples (an hour at 5 s).
const PRUNE_EVERY: u64 = 720;

/// Hours end this long before they are rolled up (a late replica's last samples).
const SETTLE: chrono::Duration = chrono::Duration::minutes(5);

/// Runs until the state is dropped.
pub async fn run(state: Weak<AppState>) {
    let replica = format!("{}-{}", hostname(), crate::store::random_hex(4));
    let period = match state.upgrade() {
        Some(s) => s.tuning.load_sample_every,
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        let samples = sample(&state, &replica);
        if let Err(e) = state.store.record_load(&samples).await {
            tracing::warn!(error = %e, "storing the gateway's load samples failed");
        }
        n += 1;
        if n.is_multiple_of(PRUNE_EVERY) {
            let now = state.clock.now();
            let pools: Vec<String> = state.config.pools.keys().cloned().collect();
            let every = chrono::Duration::from_std(period).unwrap_or(chrono::Duration::seconds(5));
            match state.store.roll_up_load(&pools, now - SETTLE, every).await {
                // Prune only what is rolled up: a failed roll-up keeps the samples.
                Ok(_) => {
                    if let Err(e) = state.store.prune_load(now - KEEP).await {
                        tracing::warn!(error = %e, "pruning old load samples failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "rolling up the load samples failed"),
            }
        }
    }
}

/// This replica's load per pool now.
pub fn sample(state: &AppState, replica: &str) -> Vec<LoadSample> {
    let at = state.clock.now();
    let stale = state.tuning.stale_after;
    state
        .registry
        .pools()
        .iter()
        .map(|p| {
            let nodes = p.nodes();
            LoadSample {
                pool: p.name.clone(),
                replica: replica.to_string(),
                at,
                in_flight: nodes.iter().map(|n| n.in_flight()).sum(),
                queued: p.queued(),
                nodes: nodes.iter().filter(|n| n.routable(stale)).count() as u32,
            }
        })
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ingress".into())
}
