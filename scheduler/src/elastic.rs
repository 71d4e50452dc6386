//! Elastic windows: how many nodes a pool wants inside its node range, from the
//! gateway's load (requests in flight and queued, sampled by every ingress replica and
//! kept in the store) and from requests that wake a pool with no node. A pure function
//! of (last decision, range, samples, wake request, time): no clock, no store.

use chrono::{DateTime, Duration, Utc};
use dayshift_config::billing::BillingRule;
use dayshift_config::schedule::NodeRange;

/// One load sample of a pool from one ingress replica's gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadSample {
    /// Pool.
    pub pool: String,
    /// Which ingress replica took it (samples of one instant from several replicas add up).
    pub replica: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Requests the replica's gateway had in flight on the pool's nodes.
    pub in_flight: u32,
    /// Requests waiting for a node of the pool.
    pub queued: u32,
    /// Routable nodes of the pool the replica saw.
    pub nodes: u32,
}

/// Why a pool's target changed (or did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleCause {
    /// The range changed (a window opened, closed or changed): the target starts at
    /// its floor.
    Range,
    /// Load stayed above the target for `scale_up_after`.
    LoadUp,
    /// Load stayed below the target for `scale_down_after`.
    LoadDown,
    /// A request found no node and woke the pool.
    Wake,
}

impl ScaleCause {
    /// Stable text (store, metrics, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleCause::Range => "range",
            ScaleCause::LoadUp => "load_up",
            ScaleCause::LoadDown => "load_down",
            ScaleCause::Wake => "wake",
        }
    }

    /// Reads [`ScaleCause::as_str`] back.
    pub fn parse(s: &str) -> Option<ScaleCause> {
        [
            ScaleCause::Range,
            ScaleCause::LoadUp,
            ScaleCause::LoadDown,
            ScaleCause::Wake,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// A pool's scale state: the node count it wants now and the last decision that set it.
/// Kept in the store, so a restarted or follower replica sees the same.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScaleState {
    /// Pool.
    pub pool: String,
    /// Nodes wanted now (within `range`).
    pub target: u32,
    /// The pool's range when this was decided.
    pub range: NodeRange,
    /// When the last decision was taken.
    pub decided_at: DateTime<Utc>,
    /// What caused it.
    pub cause: ScaleCause,
    /// For operators: the decision and its reason.
    pub reason: String,
    /// Load (requests in flight + queued, averaged) the decision looked at.
    pub load: f64,
    /// A woken pool keeps at least one node until then.
    pub woken_until: Option<DateTime<Utc>>,
    /// Why the scheduler could not act on the target (the budget refused a new node),
    /// if it could not; requests waiting for a woken node are answered with it.
    pub refused: Option<String>,
}

// `load` is an average of counts: never NaN, so equality is total.
impl Eq for ScaleState {}

/// A pool's elastic settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElasticPolicy {
    /// The pool's floor inside windows (`min_nodes`), if set.
    pub min_nodes: Option<u32>,
    /// Outside windows a request may wake a node.
    pub wake_on_demand: bool,
    /// Requests in flight (and queued) per node the pool aims for.
    pub target_in_flight: u32,
    /// Load above the target this long adds nodes.
    pub scale_up_after: Duration,
    /// Load below the target this long removes nodes.
    pub scale_down_after: Duration,
    /// A woken pool keeps a node at least this long.
    pub min_wake: Duration,
    /// How often each gateway samples its load (samples are grouped by this period).
    pub sample_every: Duration,
    /// The provider's billing rule and the drain margin before a paid unit's end: a
    /// woken node's `min_wake` that would end in that last stretch (a `min_wake` of one
    /// unit, the default, ends exactly on the boundary) ends `margin` before the unit
    /// does, so the node is drained inside the unit it paid for. The reconcile loop sets
    /// it (`None`: `min_wake` as is).
    pub paid_unit: Option<(BillingRule, Duration)>,
}

impl ElasticPolicy {
    /// Until when a node woken at `now` is kept (see [`ElasticPolicy::paid_unit`]).
    pub fn wake_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let until = now + self.min_wake;
        let Some((rule, margin)) = self.paid_unit else {
            return until;
        };
        let unit = Duration::seconds(i64::try_from(rule.unit_secs).unwrap_or(i64::MAX));
        if unit <= margin {
            return until;
        }
        let end = rule.paid_until(now, until) - margin;
        if until > end && end > now { end } else { until }
    }
}

impl Default for ElasticPolicy {
    fn default() -> Self {
        ElasticPolicy {
            min_nodes: None,
            wake_on_demand: false,
            target_in_flight: 4,
            scale_up_after: Duration::seconds(60),
            scale_down_after: Duration::minutes(15),
            min_wake: Duration::hours(1),
            sample_every: Duration::seconds(5),
            paid_unit: None,
        }
    }
}

/// The pool's load over a stretch, period by period (see [`load_stats`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadStats {
    /// Average of the periods' loads.
    pub average: f64,
    /// The lowest period's load: what the load stayed above throughout.
    pub low: f64,
    /// The highest period's load: what the load stayed below throughout.
    pub high: f64,
    /// Periods with samples.
    pub periods: usize,
}

/// The load (in flight + queued, all replicas added) over `[from, to]`, period by
/// period, or `None` when the samples do not cover that stretch (too young a history:
/// no decision on it). Samples are grouped into periods of `every`; in each period,
/// each replica's latest sample counts, and the replicas' figures add up. A replica
/// with no sample in a period (its sampling drifted across a period's edge) counts
/// with its latest earlier one, if that is at most two periods old; a replica silent
/// for longer (stopped) no longer counts.
pub fn load_stats(
    samples: &[LoadSample],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    every: Duration,
) -> Option<LoadStats> {
    use std::collections::BTreeMap;
    let period = every.num_milliseconds().max(1);
    let mut buckets: BTreeMap<i64, BTreeMap<&str, (DateTime<Utc>, u32)>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.at >= from && s.at <= to) {
        let b = s.at.timestamp_millis().div_euclid(period);
        let per_replica = buckets.entry(b).or_default();
        let demand = s.in_flight.saturating_add(s.queued);
        match per_replica.get(s.replica.as_str()) {
            Some((at, _)) if *at >= s.at => {}
            _ => {
                per_replica.insert(s.replica.as_str(), (s.at, demand));
            }
        }
    }
    let first = *buckets.keys().next()?;
    // Covered: the first sample is no later than one period (and a little) after `from`.
    if first * period > from.timestamp_millis() + period + period / 2 {
        return None;
    }
    let mut latest: BTreeMap<&str, (i64, u32)> = BTreeMap::new();
    let (mut sum, mut low, mut high) = (0.0, f64::INFINITY, 0.0f64);
    for (b, per_replica) in &buckets {
        for (replica, (_, demand)) in per_replica {
            latest.insert(replica, (*b, *demand));
        }
        let load: f64 = latest
            .values()
            .filter(|(seen, _)| b - seen <= 2)
            .map(|(_, d)| f64::from(*d))
            .sum();
        sum += load;
        low = low.min(load);
        high = high.max(load);
    }
    Some(LoadStats {
        average: sum / buckets.len() as f64,
        low,
        high,
        periods: buckets.len(),
    })
}

/// The average load over `[from, to]` (see [`load_stats`]).
pub fn average_load(
    samples: &[LoadSample],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    every: Duration,
) -> Option<f64> {
    load_stats(samples, from, to, every).map(|s| s.average)
}

/// A pool's load over one UTC hour, period by period (as [`load_stats`]): the sum of
/// the periods' loads and how many periods had samples. The raw samples are kept for
/// days; these hourly figures for good (`dayshift cost estimate` learns from them).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HourLoad {
    /// Pool.
    pub pool: String,
    /// The hour's first instant (UTC, a whole hour).
    pub hour: DateTime<Utc>,
    /// The periods' loads (in flight + queued, replicas added), summed.
    pub load_sum: f64,
    /// Periods with samples.
    pub periods: u32,
}

/// Each UTC hour's load in `samples` (all of one pool), period by period as
/// [`load_stats`] groups them, oldest hour first.
pub fn hour_loads(samples: &[LoadSample], every: Duration) -> Vec<HourLoad> {
    use std::collections::BTreeMap;
    let mut by_hour: BTreeMap<i64, Vec<LoadSample>> = BTreeMap::new();
    for s in samples {
        by_hour
            .entry(s.at.timestamp().div_euclid(3600))
            .or_default()
            .push(s.clone());
    }
    by_hour
        .into_iter()
        .filter_map(|(h, group)| {
            let from = group.iter().map(|s| s.at).min()?;
            let to = group.iter().map(|s| s.at).max()?;
            let stats = load_stats(&group, from, to, every)?;
            Some(HourLoad {
                pool: group.first()?.pool.clone(),
                hour: DateTime::from_timestamp(h * 3600, 0)?,
                load_sum: stats.average * stats.periods as f64,
                periods: u32::try_from(stats.periods).unwrap_or(u32::MAX),
            })
        })
        .collect()
}

/// Nodes needed for `load` at `target_in_flight` each (0 for no load).
pub fn nodes_for(load: f64, target_in_flight: u32) -> u32 {
    if load <= 0.0 {
        return 0;
    }
    let n = (load / f64::from(target_in_flight.max(1))).ceil();
    if n >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        n as u32
    }
}

/// The pool's next scale state at `now`.
///
/// - A new range (window opened, closed or changed) brings the target within it: a
///   window that opens starts at its floor, one that closes ends at 0 (or at the
///   waking range's cap), and a busy pool moving into an overlapping window keeps
///   the nodes its load called for (a pool woken within `min_wake` keeps one node if
///   the range allows).
/// - A wake request after the last decision, with no node wanted and a range that
///   allows one, wants one at once and keeps it until `min_wake` has passed.
/// - Load that needed more nodes than the target in every sample period of the last
///   `scale_up_after` (sustained, not one burst) raises it to what the lowest period
///   needed (capped), at most once per `scale_up_after`.
/// - Load that needed fewer in every period of the last `scale_down_after` (low
///   throughout, not on average) lowers it to what the busiest period needed (not
///   below the floor, nor below one while woken), at most once per `scale_down_after`.
///
/// Returns `None` when nothing changes (the previous state stands).
pub fn decide(
    prev: Option<&ScaleState>,
    pool: &str,
    range: NodeRange,
    samples: &[LoadSample],
    wake: Option<DateTime<Utc>>,
    policy: &ElasticPolicy,
    now: DateTime<Utc>,
) -> Option<ScaleState> {
    let state = |target: u32, cause: ScaleCause, reason: String, load: f64, woken: bool| {
        let woken_until = if woken {
            Some(policy.wake_until(now))
        } else {
            prev.and_then(|p| p.woken_until).filter(|t| *t > now)
        };
        ScaleState {
            pool: pool.to_string(),
            target,
            range,
            decided_at: now,
            cause,
            reason,
            load,
            woken_until,
            refused: None,
        }
    };
    let woken_floor = |p: Option<&ScaleState>| -> u32 {
        u32::from(p.and_then(|p| p.woken_until).is_some_and(|t| t > now) && range.max >= 1)
    };
    let last_load = samples
        .iter()
        .filter(|s| s.at <= now)
        .map(|s| s.at)
        .max()
        .and_then(|t| average_load(samples, t, t, policy.sample_every))
        .unwrap_or(0.0);
    let Some(p) = prev.filter(|p| p.range == range) else {
        // A new range: the target brought within it (one node if woken recently and
        // the range allows it). Not reset to the floor: a busy pool whose window
        // changes would drain nodes its load needs and rent them again minutes later.
        let before = prev.map(|p| p.target).unwrap_or(0);
        let target = before
            .clamp(range.min, range.max.max(range.min))
            .max(woken_floor(prev));
        let was = prev
            .map(|p| format!(" (was {} with {before} node(s))", p.range))
            .unwrap_or_default();
        return Some(state(
            target,
            ScaleCause::Range,
            format!("range {range}{was}: {target} node(s)"),
            last_load,
            false,
        ));
    };
    let tif = policy.target_in_flight.max(1);
    // Wake: a request found no node.
    if p.target == 0 && range.max >= 1 && wake.is_some_and(|w| w > p.decided_at && w <= now) {
        let at = wake.map(|w| w.format("%H:%M:%S UTC").to_string());
        return Some(state(
            1,
            ScaleCause::Wake,
            format!(
                "woken by a request at {}; kept at least until {}",
                at.unwrap_or_default(),
                policy.wake_until(now).format("%H:%M:%S UTC")
            ),
            last_load,
            true,
        ));
    }
    let since = now - p.decided_at;
    if since >= policy.scale_up_after
        && let Some(stats) = load_stats(
            samples,
            now - policy.scale_up_after,
            now,
            policy.sample_every,
        )
    {
        // Sustained: the load needed more nodes in every period of the stretch.
        let load = stats.low;
        let need = nodes_for(load, tif).min(range.max);
        if need > p.target {
            return Some(state(
                need,
                ScaleCause::LoadUp,
                format!(
                    "load (in flight + queued) stayed at {load:.1} or more over the last {}: needs {need} node(s) at {tif} each; was {}",
                    span(policy.scale_up_after),
                    p.target
                ),
                load,
                false,
            ));
        }
    }
    if since >= policy.scale_down_after
        && let Some(stats) = load_stats(
            samples,
            now - policy.scale_down_after,
            now,
            policy.sample_every,
        )
    {
        // Low throughout: even the busiest period of the stretch needed fewer nodes.
        let load = stats.high;
        let need = nodes_for(load, tif)
            .max(range.min)
            .max(woken_floor(Some(p)));
        if need < p.target {
            return Some(state(
                need,
                ScaleCause::LoadDown,
                format!(
                    "load (in flight + queued) stayed at {load:.1} or less over the last {}: needs {need} node(s) at {tif} each; was {}",
                    span(policy.scale_down_after),
                    p.target
                ),
                load,
                false,
            ));
        }
    }
    None
}

/// `90 s`, `15 min`, `2 h` for a reason text.
fn span(d: Duration) -> String {
    let s = d.num_seconds();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap() + Duration::seconds(secs)
    }

    fn sample(replica: &str, at: i64, in_flight: u32, queued: u32) -> LoadSample {
        LoadSample {
            pool: "chat".into(),
            replica: replica.into(),
            at: t(at),
            in_flight,
            queued,
            nodes: 1,
        }
    }

    #[test]
    fn replicas_add_up_and_the_latest_sample_of_a_period_counts() {
        let every = Duration::seconds(5);
        let s = vec![
            sample("a", 0, 2, 0),
            sample("a", 1, 4, 0), // later in the same period: replaces 2
            sample("b", 2, 1, 1),
            sample("a", 5, 0, 0),
            sample("b", 6, 0, 0),
        ];
        // periods: [0,5): a=4, b=2 → 6; [5,10): 0 → average 3
        assert_eq!(average_load(&s, t(0), t(9), every), Some(3.0));
        // not covered: the history starts 20 s after `from`
        assert_eq!(average_load(&s, t(-20), t(9), every), None);
    }

    #[test]
    fn a_silent_replica_counts_with_its_last_sample_for_two_periods() {
        let every = Duration::seconds(5);
        let s = vec![
            sample("a", 0, 4, 0),
            sample("b", 1, 4, 0),
            sample("a", 5, 4, 0), // b's sample of [5,10) slipped into the next period
            sample("a", 10, 4, 0),
            sample("b", 11, 4, 0),
            sample("a", 25, 4, 0), // b stopped at 11: gone after two periods
        ];
        let l = load_stats(&s, t(0), t(29), every).unwrap();
        assert_eq!((l.low, l.high), (4.0, 8.0));
        assert_eq!(l.average, 7.0);
    }

    #[test]
    fn one_burst_does_not_scale_up_and_one_lull_does_not_scale_down() {
        let policy = ElasticPolicy {
            scale_up_after: Duration::seconds(60),
            scale_down_after: Duration::seconds(60),
            sample_every: Duration::seconds(5),
            ..ElasticPolicy::default()
        };
        let range = NodeRange { min: 1, max: 3 };
        let prev = |target| ScaleState {
            pool: "chat".into(),
            target,
            range,
            decided_at: t(-600),
            cause: ScaleCause::Range,
            reason: String::new(),
            load: 0.0,
            woken_until: None,
            refused: None,
        };
        // 2 in flight for a minute, one 5-second burst of 40: the average (5.2) needs 2
        // nodes, but the load did not stay above one node's worth.
        let burst: Vec<_> = (0..=12)
            .map(|i| sample("a", i * 5, if i == 6 { 40 } else { 2 }, 0))
            .collect();
        assert!(average_load(&burst, t(0), t(60), policy.sample_every).unwrap() > 4.0);
        assert_eq!(
            decide(Some(&prev(1)), "chat", range, &burst, None, &policy, t(60)),
            None
        );
        // 10 (three nodes' worth) for a minute, one lull of 0: stays at 3.
        let lull: Vec<_> = (0..=12)
            .map(|i| sample("a", i * 5, if i == 6 { 0 } else { 10 }, 0))
            .collect();
        assert_eq!(
            decide(Some(&prev(3)), "chat", range, &lull, None, &policy, t(60)),
            None
        );
        // Sustained: 6 for the whole minute raises 1 to 2.
        let high: Vec<_> = (0..=12).map(|i| sample("a", i * 5, 6, 0)).collect();
        let next = decide(Some(&prev(1)), "chat", range, &high, None, &policy, t(60)).unwrap();
        assert_eq!((next.cause, next.target), (ScaleCause::LoadUp, 2));
    }

    #[test]
    fn a_new_range_brings_the_target_within_it() {
        let policy = ElasticPolicy::default();
        let prev = |target, min, max| ScaleState {
            pool: "chat".into(),
            target,
            range: NodeRange { min, max },
            decided_at: t(-600),
            cause: ScaleCause::LoadUp,
            reason: String::new(),
            load: 0.0,
            woken_until: None,
            refused: None,
        };
        let next = |p: ScaleState, min, max| {
            let r = NodeRange { min, max };
            let s = decide(Some(&p), "chat", r, &[], None, &policy, t(0)).unwrap();
            assert_eq!(s.cause, ScaleCause::Range);
            s.target
        };
        assert_eq!(next(prev(0, 0, 0), 1, 3), 1, "a window opens at its floor");
        assert_eq!(next(prev(3, 1, 3), 0, 0), 0, "a window closes");
        assert_eq!(
            next(prev(3, 1, 3), 2, 3),
            3,
            "an overlapping window keeps 3"
        );
        assert_eq!(next(prev(3, 1, 3), 1, 2), 2, "a lower cap");
        assert_eq!(
            next(prev(1, 1, 3), 0, 2),
            1,
            "a waking pool after its window"
        );
        let first = decide(
            None,
            "chat",
            NodeRange { min: 2, max: 2 },
            &[],
            None,
            &policy,
            t(0),
        );
        assert_eq!(first.map(|s| s.target), Some(2));
    }

    #[test]
    fn an_hours_load_sums_its_periods_and_hours_split_at_the_utc_hour() {
        let every = Duration::seconds(5);
        // 09:59:55 (hour 9: one period of 4), 10:00:00 a 2 + b 1, 10:00:07 a 6.
        let s = vec![
            sample("a", 3595, 4, 0),
            sample("a", 3600, 2, 0),
            sample("b", 3601, 0, 1),
            sample("a", 3607, 6, 0),
        ];
        let h = hour_loads(&s, every);
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].hour, h[0].load_sum, h[0].periods), (t(0), 4.0, 1));
        // 10:00:00-05: a 2 + b 1 = 3; 10:00:05-10: a 6 + b (carried) 1 = 7.
        assert_eq!((h[1].hour, h[1].load_sum, h[1].periods), (t(3600), 10.0, 2));
    }

    #[test]
    fn nodes_for_rounds_up_and_zero_load_needs_none() {
        assert_eq!(nodes_for(0.0, 4), 0);
        assert_eq!(nodes_for(0.1, 4), 1);
        assert_eq!(nodes_for(8.0, 4), 2);
        assert_eq!(nodes_for(8.1, 4), 3);
    }
}
