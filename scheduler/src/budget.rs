//! The monthly budget: when spend so far plus the committed rest of the month's schedule
//! (each window at its floor) would cross the cap, no new node starts, and the reason is
//! reported. A node above an elastic window's floor, or woken outside the windows, is
//! checked when it is wanted, with what it commits to (`reconcile::budget_refusal`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dayshift_config::billing::{BillingRule, Price};
use dayshift_config::calendar::{month_bounds, month_of};
use dayshift_config::estimate::planned_cost;
use dayshift_config::schedule::NodeRange;
use dayshift_config::settings::RangeRule;
use dayshift_config::{Config, Schedule};
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
    /// Each pool's range rule: the month's committed rest counts every window at its
    /// floor (an elastic window's nodes above it are checked when the load wants them,
    /// one paid unit each); a pool without one counts the schedule's own floor.
    pub ranges: BTreeMap<String, RangeRule>,
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
    /// Spent + committed: what the month will have cost, exact.
    pub fn total(&self) -> Decimal {
        self.spent + self.committed
    }

    /// True when spent + committed crosses the cap.
    pub fn over(&self) -> bool {
        self.total() > self.cap
    }
}

impl Budget {
    /// The budget `config` sets (`[budget] monthly`), checked under the provider's billing
    /// rule against each pool's first server type's price; `None` without a cap.
    pub fn from_config(config: &Config) -> Option<Budget> {
        config
            .budget_monthly
            .map(|cap| Budget::with_cap(config, cap))
    }

    /// `config`'s rule and prices with the cap `monthly_cap` (`dayshift status` shows the
    /// month's figures also when no cap is set).
    pub fn with_cap(config: &Config, monthly_cap: Decimal) -> Budget {
        Budget {
            monthly_cap,
            rule: config.provider.billing,
            prices: config
                .pools
                .keys()
                .filter_map(|p| config.pool_price(p).map(|price| (p.clone(), price)))
                .collect(),
            ranges: config
                .pools
                .iter()
                .map(|(n, p)| (n.clone(), p.range_rule()))
                .collect(),
        }
    }

    /// The pool's floor in a window of range `window` (its range rule's, else the
    /// window's own).
    pub fn floor(&self, pool: &str, window: NodeRange) -> u32 {
        match self.ranges.get(pool) {
            Some(rule) => rule.range(window).min,
            None => window.min,
        }
    }

    /// The forecast for the month containing `now`.
    pub fn forecast(
        &self,
        schedule: &Schedule,
        nodes: &[NodeRecord],
        now: DateTime<Utc>,
    ) -> Option<Forecast> {
        let first = month_of(now, schedule.timezone)?;
        let (month_start, month_end) = month_bounds(schedule.timezone, first)?;
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
        // What the schedule commits to: each window at its floor.
        let plan = schedule
            .at_floor(|pool, r| self.floor(pool, r))
            .plan(now, month_end);
        let committed: Decimal = self
            .prices
            .iter()
            .map(|(pool, price)| planned_cost(&plan, pool, self.rule, price).1.cost)
            .sum();
        Some(Forecast {
            spent,
            committed,
            cap: self.monthly_cap,
        })
    }
}
