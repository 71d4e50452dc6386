//! `dayshift cost estimate`'s load-aware view: a month of the schedule where each window
//! hour rents the nodes the load history says it needs (within the window's node range)
//! instead of the window's upper bound, beside the fixed plan, both under the provider's
//! billing rule.
//!
//! The history comes in as a function (pool, local weekday, local hour) → nodes needed
//! (the caller averages the stored load of that weekday and hour and divides by the
//! pool's `target_in_flight`); this module slices the month's windows into local hours,
//! clamps the need into each hour's range and costs both plans as stacked server lives
//! (see [`crate::estimate::planned_cost`]).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc, Weekday};
use rust_decimal::Decimal;

use crate::billing::{BillingRule, Charge, Price};
use crate::calendar::month_bounds;
use crate::estimate::planned_cost;
use crate::schedule::{Interval, NodeRange, Schedule};

/// One pool's fixed and load-aware month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLoadAware {
    /// Pool name.
    pub pool: String,
    /// Hours (wall time) inside the pool's windows.
    pub window_hours: Decimal,
    /// Of those, hours whose weekday and hour have load history.
    pub hours_with_history: Decimal,
    /// Node-hours of the fixed plan (each hour at its range's upper bound).
    pub fixed_node_hours: Decimal,
    /// Node-hours of the load-aware plan (hours without history at the upper bound).
    pub load_node_hours: Decimal,
    /// The fixed plan under the billing rule.
    pub fixed: Charge,
    /// The load-aware plan under the billing rule.
    pub load_aware: Charge,
}

/// The load-aware month over all pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadAware {
    /// First instant of the month in the schedule's time zone.
    pub start: DateTime<Utc>,
    /// First instant of the next month.
    pub end: DateTime<Utc>,
    /// Per pool, sorted by name.
    pub pools: Vec<PoolLoadAware>,
}

/// The start of the local hour after `t` in `tz` (offsets are whole minutes).
fn next_local_hour(t: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let local = t.with_timezone(&tz);
    let into = i64::from(local.minute()) * 60 + i64::from(local.second());
    t - Duration::seconds(into) - Duration::nanoseconds(i64::from(local.nanosecond()))
        + Duration::hours(1)
}

fn hours(secs: i64) -> Decimal {
    Decimal::from(secs) / Decimal::from(3600)
}

/// The month starting on `first_day`, fixed and load-aware.
///
/// - `range_of(pool, window)` turns a window's range into the pool's (its `min_nodes`
///   floor and `max_nodes` cap); the fixed plan rents its upper bound.
/// - `needed(pool, weekday, hour)` is the nodes the history says that local weekday and
///   hour needs, `None` without history (the hour stays at the upper bound).
/// - `price_of(pool)` as for [`crate::estimate::estimate_month`].
pub fn load_aware_month(
    schedule: &Schedule,
    first_day: NaiveDate,
    rule: BillingRule,
    price_of: &dyn Fn(&str) -> Option<Price>,
    range_of: &dyn Fn(&str, NodeRange) -> NodeRange,
    needed: &dyn Fn(&str, Weekday, u32) -> Option<u32>,
) -> Result<LoadAware, String> {
    let tz = schedule.timezone;
    let (start, end) = month_bounds(tz, first_day).ok_or("the month is out of range")?;
    let plan = schedule.plan(start, end);
    let mut pools = Vec::new();
    for pool in schedule.pools() {
        let price = crate::estimate::price_for(price_of, &pool)?;
        let (mut fixed, mut load) = (Vec::new(), Vec::new());
        let (mut window_secs, mut known_secs) = (0i64, 0i64);
        let (mut fixed_secs, mut load_secs) = (0i64, 0i64);
        for i in plan.iter().filter(|i| i.pool == pool) {
            let mut t = i.start;
            while t < i.end {
                let next = next_local_hour(t, tz).min(i.end);
                let secs = (next - t).num_seconds();
                let range = range_of(
                    &pool,
                    NodeRange {
                        min: i.min_nodes,
                        max: i.nodes,
                    },
                );
                let local = t.with_timezone(&tz);
                let need = needed(&pool, local.weekday(), local.hour());
                let nodes = need.map_or(range.max, |n| n.clamp(range.min, range.max));
                window_secs += secs;
                known_secs += if need.is_some() { secs } else { 0 };
                fixed_secs += secs * i64::from(range.max);
                load_secs += secs * i64::from(nodes);
                let slice = |nodes: u32| Interval {
                    pool: pool.clone(),
                    start: t,
                    end: next,
                    nodes,
                    min_nodes: range.min,
                };
                fixed.push(slice(range.max));
                load.push(slice(nodes));
                t = next;
            }
        }
        pools.push(PoolLoadAware {
            fixed: planned_cost(&fixed, &pool, rule, &price).1,
            load_aware: planned_cost(&load, &pool, rule, &price).1,
            window_hours: hours(window_secs),
            hours_with_history: hours(known_secs),
            fixed_node_hours: hours(fixed_secs),
            load_node_hours: hours(load_secs),
            pool,
        });
    }
    Ok(LoadAware { start, end, pools })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hours_follow_the_zone() {
        let t = DateTime::parse_from_rfc3339("2026-02-02T09:20:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let utc = next_local_hour(t, chrono_tz::UTC);
        assert_eq!(utc.to_rfc3339(), "2026-02-02T10:00:00+00:00");
        // Kolkata is UTC+05:30: its hours start at :30 UTC.
        let kolkata = next_local_hour(t, chrono_tz::Asia::Kolkata);
        assert_eq!(kolkata.to_rfc3339(), "2026-02-02T09:30:00+00:00");
    }
}
