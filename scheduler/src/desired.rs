//! How many nodes each pool wants now: the schedule, started early by the pool's
//! measured cold start, capped by the pool's maximum.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use dayshift_config::Schedule;

/// The 90th percentile of cold starts in seconds (nearest rank); `None` when empty.
pub fn p90(samples: &[i64]) -> Option<i64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = (s.len() * 9).div_ceil(10).max(1);
    s.get(rank - 1).copied()
}

/// Nodes wanted by `pool` at `now`, so that they are ready when a window opens:
/// the larger of the count now and the count `lead` ahead, capped at `max_nodes`.
pub fn desired_with_prewarm(
    schedule: &Schedule,
    pool: &str,
    now: DateTime<Utc>,
    lead: Duration,
    max_nodes: u32,
) -> u32 {
    let at_now = schedule.desired_nodes(pool, now);
    let ahead = now
        .checked_add_signed(lead)
        .map(|t| schedule.desired_nodes(pool, t))
        .unwrap_or(0);
    at_now.max(ahead).min(max_nodes)
}

/// Desired nodes for every pool in `leads` (pool → lead time, max nodes).
pub fn desired_all(
    schedule: &Schedule,
    now: DateTime<Utc>,
    leads: &BTreeMap<String, (Duration, u32)>,
) -> BTreeMap<String, u32> {
    leads
        .iter()
        .map(|(pool, (lead, max))| {
            (
                pool.clone(),
                desired_with_prewarm(schedule, pool, now, *lead, *max),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p90_is_nearest_rank() {
        assert_eq!(p90(&[]), None);
        assert_eq!(p90(&[5]), Some(5));
        assert_eq!(p90(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), Some(9));
        assert_eq!(p90(&[100, 1, 2]), Some(100));
    }
}
