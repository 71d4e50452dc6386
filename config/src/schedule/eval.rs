//! Evaluation of a schedule: desired nodes per pool at an instant, the next change, and
//! a plan for a range. Pure functions of (schedule, time): nothing here reads a clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use super::{OverrideAction, Schedule, WallTime, resolve};

/// A stretch of time during which `pool` wants `nodes` nodes. Half-open: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Interval {
    /// Pool name.
    pub pool: String,
    /// First instant of the stretch.
    pub start: DateTime<Utc>,
    /// First instant after the stretch.
    pub end: DateTime<Utc>,
    /// Nodes wanted (a range's upper bound).
    pub nodes: u32,
    /// Fewest nodes (a range's lower bound; `nodes` for a fixed count).
    pub min_nodes: u32,
}

/// How many nodes a pool may have at an instant: the schedule's window count, or the
/// range within which the scheduler follows load (`min == max` for a fixed count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeRange {
    /// Fewest nodes.
    pub min: u32,
    /// Most nodes.
    pub max: u32,
}

impl NodeRange {
    /// True when the scheduler chooses the count by load (`min < max`).
    pub fn is_elastic(&self) -> bool {
        self.min < self.max
    }
}

impl std::fmt::Display for NodeRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.max)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// A day's window before it is turned into instants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayWindow {
    /// Pool name.
    pub pool: String,
    /// Local start time on the start day.
    pub start: WallTime,
    /// Local end time (`end <= start`: on the next day).
    pub end: WallTime,
    /// Nodes wanted (a range's upper bound).
    pub nodes: u32,
    /// Fewest nodes (a range's lower bound).
    pub min_nodes: u32,
}

impl Schedule {
    /// The windows that start on local date `date`, after overrides and holidays.
    pub fn windows_on(&self, date: NaiveDate) -> Vec<DayWindow> {
        let holiday = self.is_holiday(date);
        let mut out = Vec::new();
        for pool in self.pools() {
            let ov = self
                .overrides
                .iter()
                .find(|o| o.date == date && o.pool.as_deref() == Some(pool.as_str()))
                .or_else(|| {
                    self.overrides
                        .iter()
                        .find(|o| o.date == date && o.pool.is_none())
                });
            match ov {
                Some(o) => {
                    if let OverrideAction::Open {
                        start,
                        end,
                        nodes,
                        min_nodes,
                    } = o.action
                    {
                        out.push(DayWindow {
                            pool: pool.clone(),
                            start,
                            end,
                            nodes,
                            min_nodes,
                        });
                    }
                }
                None if holiday => {}
                None => {
                    for w in self
                        .windows
                        .iter()
                        .filter(|w| w.pool == pool && w.days.contains(date.weekday()))
                    {
                        out.push(DayWindow {
                            pool: pool.clone(),
                            start: w.start,
                            end: w.end,
                            nodes: w.nodes,
                            min_nodes: w.min_nodes,
                        });
                    }
                }
            }
        }
        out
    }

    /// The windows starting on `date` as instants (DST rules applied); empty ones dropped.
    pub fn intervals_on(&self, date: NaiveDate) -> Vec<Interval> {
        self.windows_on(date)
            .into_iter()
            .filter_map(|w| {
                let start = resolve(self.timezone, date, w.start.0)?;
                let end_secs = if w.end <= w.start {
                    w.end.0 + WallTime::DAY
                } else {
                    w.end.0
                };
                let end = resolve(self.timezone, date, end_secs)?;
                (end > start).then_some(Interval {
                    pool: w.pool,
                    start,
                    end,
                    nodes: w.nodes,
                    min_nodes: w.min_nodes,
                })
            })
            .collect()
    }

    /// Every window (unmerged, unclipped) that overlaps `[from, to)`.
    pub fn raw_intervals(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Interval> {
        let mut out = Vec::new();
        if to <= from {
            return out;
        }
        let first = from.with_timezone(&self.timezone).date_naive();
        let last = to.with_timezone(&self.timezone).date_naive();
        // A window lasts at most about two days, so starting two days early covers all.
        let mut day = first - Duration::days(2);
        while day <= last {
            out.extend(
                self.intervals_on(day)
                    .into_iter()
                    .filter(|i| i.start < to && i.end > from),
            );
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        out
    }

    /// Nodes wanted per pool at instant `t` (every pool of the schedule, 0 when closed).
    /// Overlapping windows of one pool take the larger count.
    pub fn desired_at(&self, t: DateTime<Utc>) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = self.pools().into_iter().map(|p| (p, 0)).collect();
        for i in self.raw_intervals(t, t + Duration::seconds(1)) {
            if i.start <= t && t < i.end {
                let e = out.entry(i.pool).or_insert(0);
                *e = (*e).max(i.nodes);
            }
        }
        out
    }

    /// Nodes wanted by `pool` at instant `t` (a range's upper bound: what a fixed plan
    /// rents).
    pub fn desired_nodes(&self, pool: &str, t: DateTime<Utc>) -> u32 {
        self.desired_at(t).get(pool).copied().unwrap_or(0)
    }

    /// The node range of `pool` at instant `t` (`0-0` when closed). Overlapping windows
    /// take the larger bound of each.
    pub fn range_at(&self, pool: &str, t: DateTime<Utc>) -> NodeRange {
        let mut r = NodeRange::default();
        for i in self.raw_intervals(t, t + Duration::seconds(1)) {
            if i.pool == pool && i.start <= t && t < i.end {
                r.max = r.max.max(i.nodes);
                r.min = r.min.max(i.min_nodes);
            }
        }
        r
    }

    /// The intervals in `[from, to)`, merged per pool (touching or overlapping stretches
    /// with the same count become one; overlaps take the larger count), cut at `from`
    /// and `to`, sorted by start then pool.
    pub fn plan(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Interval> {
        let mut by_pool: BTreeMap<String, Vec<Interval>> = BTreeMap::new();
        for i in self.raw_intervals(from, to) {
            by_pool.entry(i.pool.clone()).or_default().push(i);
        }
        let mut out = Vec::new();
        for (pool, intervals) in by_pool {
            out.extend(sweep(&pool, &intervals, from, to));
        }
        out.sort_by(|a, b| (a.start, &a.pool).cmp(&(b.start, &b.pool)));
        out
    }

    /// The first instant after `t` at which any pool's desired count changes, looking
    /// up to about two years ahead; `None` when nothing changes in that time.
    pub fn next_change(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        for days in [8, 64, 800] {
            let horizon = t.checked_add_signed(Duration::days(days))?;
            let plan = self.plan(t, horizon);
            let mut best: Option<DateTime<Utc>> = None;
            for i in &plan {
                for edge in [i.start, i.end] {
                    if edge > t && edge < horizon {
                        best = Some(best.map_or(edge, |b| b.min(edge)));
                    }
                }
            }
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

/// Turns one pool's overlapping intervals into a step function of the max count (and
/// lower bound),
/// then merges equal neighbours, clipped to `[from, to)`.
fn sweep(
    pool: &str,
    intervals: &[Interval],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Interval> {
    // Events: +nodes at start, -nodes at end; a multiset of active counts gives the max.
    let mut points: Vec<DateTime<Utc>> = intervals
        .iter()
        .flat_map(|i| [i.start.max(from), i.end.min(to)])
        .collect();
    points.sort();
    points.dedup();
    let mut out: Vec<Interval> = Vec::new();
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let active = || intervals.iter().filter(|i| i.start <= a && i.end >= b);
        let nodes = active().map(|i| i.nodes).max().unwrap_or(0);
        let min_nodes = active().map(|i| i.min_nodes).max().unwrap_or(0);
        if nodes == 0 {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end == a && last.nodes == nodes && last.min_nodes == min_nodes => {
                last.end = b
            }
            _ => out.push(Interval {
                pool: pool.to_string(),
                start: a,
                end: b,
                nodes,
                min_nodes,
            }),
        }
    }
    out
}
