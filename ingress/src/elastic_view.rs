//! Each pool's elastic scaling for people: the node range it may use now (schedule +
//! pool settings), its active nodes, the gateway's recent load and the scheduler's last
//! scale decision. `dayshift status`, the status page and `/metrics` all read it here,
//! from the store (so every replica, and the CLI, shows the same).

use chrono::{DateTime, Duration, Utc};
use dayshift_config::schedule::NodeRange;
use dayshift_config::{Config, Schedule};
use dayshift_scheduler::elastic::{ElasticPolicy, average_load};
use dayshift_scheduler::{LoadSample, ScaleState};
use serde_json::json;

use crate::store::{NodeRow, Store, StoreError};

/// How far back the shown load signal looks.
pub const LOAD_WINDOW_SECS: i64 = 60;

/// One pool's scaling at an instant.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolScaling {
    /// Pool.
    pub pool: String,
    /// The range the pool may use now: the schedule's, through the pool's `min_nodes`,
    /// `max_nodes` and `wake_on_demand`.
    pub range: NodeRange,
    /// Nodes of the pool in an active state (on their way or ready) in the store.
    pub nodes: u32,
    /// Load (requests in flight + queued, all replicas added) averaged over the last
    /// minute; `None` when no sample was taken in that minute.
    pub load: Option<f64>,
    /// The scheduler's last scale decision, if it took one.
    pub decision: Option<ScaleState>,
}

/// The range `pool` may use at `now`: the schedule's range at that instant through the
/// pool's settings (a pool the config does not know keeps the schedule's range).
pub fn range_now(
    config: &Config,
    schedule: Option<&Schedule>,
    pool: &str,
    now: DateTime<Utc>,
) -> NodeRange {
    let window = schedule.map(|s| s.range_at(pool, now)).unwrap_or_default();
    match config.pools.get(pool) {
        Some(p) => p.range_rule().range(window),
        None => window,
    }
}

/// The average load of the samples taken in the minute up to `now` (in flight + queued,
/// replicas added per sampling period), `None` without any.
pub fn recent_load(samples: &[LoadSample], now: DateTime<Utc>) -> Option<f64> {
    let from = now - Duration::seconds(LOAD_WINDOW_SECS);
    let first = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= now)
        .map(|s| s.at)
        .min()?;
    average_load(samples, first, now, ElasticPolicy::default().sample_every)
}

/// Each of `pools`' scaling at `now`, from the store's load samples and scale states;
/// `nodes` are the store's live nodes (their active ones are counted).
pub async fn read(
    store: &Store,
    config: &Config,
    schedule: Option<&Schedule>,
    pools: &[String],
    nodes: &[NodeRow],
    now: DateTime<Utc>,
) -> Result<Vec<PoolScaling>, StoreError> {
    let decisions = store.scale_states().await?;
    let mut out = Vec::with_capacity(pools.len());
    for pool in pools {
        let samples = store
            .load_samples(pool, now - Duration::seconds(LOAD_WINDOW_SECS))
            .await?;
        let active = nodes
            .iter()
            .filter(|n| &n.pool == pool && n.state.is_active())
            .count();
        out.push(PoolScaling {
            pool: pool.clone(),
            range: range_now(config, schedule, pool, now),
            nodes: u32::try_from(active).unwrap_or(u32::MAX),
            load: recent_load(&samples, now),
            decision: decisions.iter().find(|d| &d.pool == pool).cloned(),
        });
    }
    Ok(out)
}

/// A load figure for people: one decimal, or `-` without a recent sample.
pub fn load_text(load: Option<f64>) -> String {
    load.map(|l| format!("{l:.1}"))
        .unwrap_or_else(|| "-".into())
}

/// The last decision in words: `load_up at 10:02 (target 3): <reason>; refused: …`,
/// times in `tz`; `none yet` without one.
pub fn decision_text(d: Option<&ScaleState>, tz: chrono_tz::Tz) -> String {
    let Some(d) = d else {
        return "none yet".into();
    };
    let mut s = format!(
        "{} at {} (target {}): {}",
        d.cause.as_str(),
        d.decided_at.with_timezone(&tz).format("%a %H:%M"),
        d.target,
        d.reason
    );
    if let Some(r) = &d.refused {
        s.push_str(&format!("; not acted on: {r}"));
    }
    s
}

/// The JSON object of one pool's scaling (`dayshift status --json`).
pub fn scaling_json(p: &PoolScaling) -> serde_json::Value {
    json!({
        "range": { "min": p.range.min, "max": p.range.max },
        "active_nodes": p.nodes,
        "load": p.load.map(round3),
        "load_window_secs": LOAD_WINDOW_SECS,
        "last_decision": p.decision.as_ref().map(|d| json!({
            "at": d.decided_at.to_rfc3339(),
            "cause": d.cause.as_str(),
            "reason": d.reason,
            "target": d.target,
            "range": { "min": d.range.min, "max": d.range.max },
            "load": round3(d.load),
            "woken_until": d.woken_until.map(|t| t.to_rfc3339()),
            "refused": d.refused,
        })),
    })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
