//! The monthly budget: when spend so far plus the committed rest of the month's schedule
//! would cross the cap, no new node starts, and the reason is reported.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use dayshift_config::Schedule;
use dayshift_config::billing::{BillingRule, Price};
use dayshift_config::estimate::{month_bounds, server_lives};
use rust_decimal::Decimal;

use crate::ledger::{BillingInterval, node_costs};
use crate::lifecycle::NodeRecord;

/// A cluster's monthly cap with the prices it is checked against.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Cap in EUR per calendar month (in the schedule's time zone).
    pub monthly_cap: Decimal,
    /// The provider's billing rule.
    pub rule: BillingRule,
    /// Price of each pool's server type.
    pub prices: BTreeMap<String, Price>,
}

/// The month's forecast at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forecast {
    /// Spent this month so far (servers created → deleted, or → now while running).
    pub spent: Decimal,
    /// What the rest of the month's schedule commits to.
    pub committed: Decimal,
    /// The cap.
    pub cap: Decimal,
}

impl Forecast {
    /// True when spent + committed crosses the cap.
    pub fn over(&self) -> bool {
        self.spent + self.committed > self.cap
    }
}

impl Budget {
    /// The forecast for the month containing `now`.
    pub fn forecast(
        &self,
        schedule: &Schedule,
        nodes: &[NodeRecord],
        now: DateTime<Utc>,
    ) -> Option<Forecast> {
        let local = now.with_timezone(&schedule.timezone).date_naive();
        let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1)?;
        let (month_start, month_end) = month_bounds(schedule, first)?;
        let intervals: Vec<BillingInterval> = nodes
            .iter()
            .filter_map(|n| {
                Some(BillingInterval {
                    node_id: n.id.clone(),
                    pool: n.pool.clone(),
                    server_type: n.server_type.clone().unwrap_or_default(),
                    price: self.prices.get(&n.pool)?.clone(),
                    start: n.server_created_at?,
                    end: n.deleted_at,
                })
            })
            .collect();
        let spent: Decimal = node_costs(&intervals, month_start, month_end, now, self.rule)
            .iter()
            .map(|c| c.cost)
            .sum();
        let plan = schedule.plan(now, month_end);
        let mut committed = Decimal::ZERO;
        for (pool, price) in &self.prices {
            let mine: Vec<_> = plan.iter().filter(|i| &i.pool == pool).cloned().collect();
            for (s, e) in server_lives(&mine) {
                committed += self.rule.charge((e - s).num_seconds(), price).cost;
            }
        }
        Some(Forecast {
            spent,
            committed,
            cap: self.monthly_cap,
        })
    }
}
