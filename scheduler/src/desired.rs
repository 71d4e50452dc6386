//! A pool's expected cold start (the p90 of its recent boots): how early the loop
//! starts a window's nodes (`Reconciler::lead`) and how long a woken request is told to
//! wait. What each pool wants is `Reconciler::wanted`, over `elastic::decide`.

use chrono::Duration;

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

/// How many of a pool's most recent boots its expected cold start is measured over.
pub const COLD_START_SAMPLES: usize = 10;

/// A pool's expected cold start: the p90 of its recent boots (`samples`, seconds), or
/// `default` (its configured `cold_start`) before any was measured. The pre-warm lead
/// and a woken request's expected wait.
pub fn expected_cold_start(samples: &[i64], default: Duration) -> Duration {
    p90(samples).map(Duration::seconds).unwrap_or(default)
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
