//! `dayshift cost estimate`: what a month of the schedule costs under the provider's
//! billing rule, beside renting the same servers all month.
//!
//! A pool's node count is served by stacked servers: server k lives through each
//! unbroken stretch in which the count is at least k, and each stretch is one server's
//! life, billed on its own.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::billing::{BillingRule, Charge, Price, to_cents};
use crate::calendar::month_bounds;
use crate::schedule::{Interval, Schedule};

/// One pool's estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEstimate {
    /// Pool name.
    pub pool: String,
    /// Server lives (stretches) in the month.
    pub servers: usize,
    /// Billed hours over all server lives.
    pub billed_hours: Decimal,
    /// Cost under the billing rule, exact.
    pub cost: Decimal,
    /// The pool's largest node count in the month.
    pub peak_nodes: u32,
    /// Renting `peak_nodes` servers all month, exact.
    pub always_on: Decimal,
}

/// A month's estimate over all pools; money rounded to the cent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// "YYYY-MM".
    pub month: String,
    /// First instant of the month in the schedule's time zone.
    pub start: DateTime<Utc>,
    /// First instant of the next month.
    pub end: DateTime<Utc>,
    /// Per pool, sorted by name.
    pub pools: Vec<PoolEstimate>,
    /// Sum of pool costs, rounded to the cent.
    pub total: Decimal,
    /// Sum of always-on costs, rounded to the cent.
    pub always_on: Decimal,
    /// Saving in percent, two decimals.
    pub saving_percent: Decimal,
}

/// Parses "YYYY-MM" into the first day of that month.
pub fn parse_month(text: &str) -> Result<NaiveDate, String> {
    let bad = || format!("expected a month \"YYYY-MM\", found \"{text}\"");
    let (y, m) = text.trim().split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    NaiveDate::from_ymd_opt(y, m, 1).ok_or_else(bad)
}

/// The lives of stacked servers for one pool's merged, sorted intervals:
/// `(start, end)` for each unbroken stretch where the count is at least k, for each k.
pub fn server_lives(intervals: &[Interval]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let peak = intervals.iter().map(|i| i.nodes).max().unwrap_or(0);
    let mut lives = Vec::new();
    for k in 1..=peak {
        let mut current: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
        for i in intervals.iter().filter(|i| i.nodes >= k) {
            current = match current {
                Some((s, e)) if e == i.start => Some((s, i.end)),
                Some(life) => {
                    lives.push(life);
                    Some((i.start, i.end))
                }
                None => Some((i.start, i.end)),
            };
        }
        lives.extend(current);
    }
    lives
}

/// What `pool`'s part of a plan costs under `rule` at `price`: its stacked servers'
/// lives (see [`server_lives`]), each billed on its own. Returns the number of lives and
/// their billed hours and money. The month estimate and the budget's committed rest of
/// the month are both this.
pub fn planned_cost(
    plan: &[Interval],
    pool: &str,
    rule: BillingRule,
    price: &Price,
) -> (usize, Charge) {
    let intervals: Vec<Interval> = plan.iter().filter(|i| i.pool == pool).cloned().collect();
    let lives = server_lives(&intervals);
    let mut total = Charge {
        billed_hours: Decimal::ZERO,
        cost: Decimal::ZERO,
    };
    for (s, e) in &lives {
        let c = rule.charge((*e - *s).num_seconds(), price);
        total.billed_hours += c.billed_hours;
        total.cost += c.cost;
    }
    (lives.len(), total)
}

/// `pool`'s price from `price_of`, or the error that says how to give it one.
pub fn price_for(price_of: &dyn Fn(&str) -> Option<Price>, pool: &str) -> Result<Price, String> {
    price_of(pool).ok_or_else(|| {
        format!(
            "pool \"{pool}\" has no price: give it server_types with prices in dayshift.toml, or pass --hourly"
        )
    })
}

/// Estimates the month starting on `first_day`; `price_of` gives each pool's price, or
/// `None` for a pool with no known price (an error naming the pool).
pub fn estimate_month(
    schedule: &Schedule,
    first_day: NaiveDate,
    rule: BillingRule,
    price_of: &dyn Fn(&str) -> Option<Price>,
) -> Result<Estimate, String> {
    let (start, end) =
        month_bounds(schedule.timezone, first_day).ok_or("the month is out of range")?;
    let plan = schedule.plan(start, end);
    let month_secs = (end - start).num_seconds();
    let mut pools = Vec::new();
    for pool in schedule.pools() {
        let price = price_for(price_of, &pool)?;
        let (servers, charge) = planned_cost(&plan, &pool, rule, &price);
        let peak_nodes = plan
            .iter()
            .filter(|i| i.pool == pool)
            .map(|i| i.nodes)
            .max()
            .unwrap_or(0);
        let always_on = rule.charge(month_secs, &price).cost * Decimal::from(peak_nodes);
        pools.push(PoolEstimate {
            pool,
            servers,
            billed_hours: charge.billed_hours,
            cost: charge.cost,
            peak_nodes,
            always_on,
        });
    }
    let total: Decimal = pools.iter().map(|p| p.cost).sum();
    let always_on: Decimal = pools.iter().map(|p| p.always_on).sum();
    let saving_percent = if always_on.is_zero() {
        Decimal::ZERO
    } else {
        to_cents((always_on - total) / always_on * Decimal::from(100))
    };
    Ok(Estimate {
        month: format!("{:04}-{:02}", first_day.year(), first_day.month()),
        start,
        end,
        pools,
        total: to_cents(total),
        always_on: to_cents(always_on),
        saving_percent,
    })
}
