//! Keeps each node's `in_flight` in the store equal to the gateway's live count: every
//! [`PERIOD`], a node whose count changed (or that sent a heartbeat, which stores the
//! count of its moment) since the last write gets one `UPDATE`. Idle nodes cost nothing.
//! With several ingress replicas each writes the count it routes itself.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use super::state::AppState;

/// How often the counts are compared with what was written.
pub const PERIOD: Duration = Duration::from_millis(500);

/// Runs until the state is dropped.
pub async fn run(state: Weak<AppState>) {
    // Node id → (count written, heartbeat mark when written).
    let mut written: HashMap<String, (u32, u64)> = HashMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        let mut seen = HashMap::new();
        for pool in state.registry.pools() {
            for node in pool.nodes() {
                let now = (node.in_flight(), node.heartbeat_mark());
                seen.insert(node.id.clone(), now);
                if written.get(&node.id) == Some(&now) {
                    continue;
                }
                match state.store.record_in_flight(&node.id, now.0).await {
                    Ok(()) => {
                        written.insert(node.id.clone(), now);
                    }
                    Err(e) => {
                        tracing::warn!(node = %node.id, error = %e, "storing the in-flight count failed")
                    }
                }
            }
        }
        written.retain(|id, _| seen.contains_key(id));
    }
}
