//! `dayshift cost`'s comparison with the fixed window plan: the node-hours the schedule's
//! windows would rent at their upper bound (`nodes = "1-3"` counts 3, as a fixed window
//! would rent them) from the month's start up to now, beside the node-hours the ledger
//! shows the pools' servers really ran; the difference is what elastic windows (scaling
//! with load, going to zero when idle) saved, priced at each pool's hourly price.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use dayshift_config::billing::to_cents;
use dayshift_config::{Config, Schedule};
use dayshift_scheduler::ledger::NodeCost;
use rust_decimal::Decimal;
use serde_json::json;

use super::output;

/// One pool's plan against what it rented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSaved {
    /// Pool.
    pub pool: String,
    /// Node-hours of the fixed plan: each window's upper bound (capped at the pool's
    /// `max_nodes`) × its length.
    pub plan_hours: Decimal,
    /// Node-hours the pool's servers ran (the ledger's lives, not billed units).
    pub rented_hours: Decimal,
    /// The pool's hourly price, if the config knows it.
    pub hourly: Option<Decimal>,
}

impl PoolSaved {
    /// Plan − rented (negative: more was rented than the plan, e.g. woken outside windows).
    pub fn saved_hours(&self) -> Decimal {
        self.plan_hours - self.rented_hours
    }
    /// The saved hours at the pool's hourly price.
    pub fn saved_money(&self) -> Option<Decimal> {
        self.hourly.map(|h| self.saved_hours() * h)
    }
}

/// The comparison over `[from, until)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// First instant compared (the month's start).
    pub from: DateTime<Utc>,
    /// First instant not compared: now, or the month's end when it is over.
    pub until: DateTime<Utc>,
    /// Per pool, by name.
    pub pools: Vec<PoolSaved>,
}

fn hours(secs: i64) -> Decimal {
    Decimal::from(secs) / Decimal::from(3600)
}

/// Compares the fixed plan of `schedule` with the ledger's `costs` (cut to the month,
/// running servers to `now`) over `[from, min(to, now))`.
pub fn compare(
    config: &Config,
    schedule: &Schedule,
    costs: &[NodeCost],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Saved {
    let until = now.clamp(from, to);
    let plan = schedule.plan(from, until);
    let names: BTreeSet<&str> = plan
        .iter()
        .map(|i| i.pool.as_str())
        .chain(costs.iter().map(|c| c.pool.as_str()))
        .collect();
    let pools = names
        .into_iter()
        .map(|pool| {
            let cap = config
                .pools
                .get(pool)
                .map(|p| p.max_nodes)
                .unwrap_or(u32::MAX);
            let plan_secs: i64 = plan
                .iter()
                .filter(|i| i.pool == pool)
                .map(|i| i64::from(i.nodes.min(cap)) * (i.end - i.start).num_seconds())
                .sum();
            let rented_secs: i64 = costs
                .iter()
                .filter(|c| c.pool == pool)
                .map(|c| (c.end.min(until) - c.start).num_seconds().max(0))
                .sum();
            PoolSaved {
                pool: pool.to_string(),
                plan_hours: hours(plan_secs),
                rented_hours: hours(rented_secs),
                hourly: config.pool_price(pool).map(|p| p.hourly),
            }
        })
        .collect();
    Saved { from, until, pools }
}

impl Saved {
    fn sum(&self, f: impl Fn(&PoolSaved) -> Decimal) -> Decimal {
        self.pools.iter().map(f).sum()
    }

    /// The money saved over all pools (pools without a price count nothing).
    pub fn saved_money(&self) -> Decimal {
        self.pools.iter().filter_map(PoolSaved::saved_money).sum()
    }

    /// The `fixed_plan` object of `dayshift cost --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let h = |d: Decimal| output::hours_json(d.round_dp(2).normalize());
        let m = |d: Decimal| format!("{:.2}", to_cents(d));
        let pools: Vec<_> = self
            .pools
            .iter()
            .map(|p| {
                json!({
                    "pool": p.pool,
                    "plan_hours": h(p.plan_hours),
                    "rented_hours": h(p.rented_hours),
                    "saved_hours": h(p.saved_hours()),
                    "saved": p.saved_money().map(m),
                })
            })
            .collect();
        json!({
            "from": self.from.to_rfc3339(),
            "until": self.until.to_rfc3339(),
            "pools": pools,
            "total": {
                "plan_hours": h(self.sum(|p| p.plan_hours)),
                "rented_hours": h(self.sum(|p| p.rented_hours)),
                "saved_hours": h(self.sum(PoolSaved::saved_hours)),
                "saved": m(self.saved_money()),
            },
        })
    }

    /// The table and its heading for people; times in `tz`.
    pub fn print(&self, tz: chrono_tz::Tz) {
        let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
        println!(
            "Against the fixed window plan (each window's upper bound for its whole length), {} to {}:",
            local(self.from),
            local(self.until)
        );
        let mut t = output::table(&[
            "pool",
            "plan node-hours",
            "rented node-hours",
            "saved node-hours",
            "saved EUR",
        ]);
        let h = |d: Decimal| d.round_dp(2).normalize().to_string();
        let m = |d: Option<Decimal>| {
            d.map(|d| format!("{:.2}", to_cents(d)))
                .unwrap_or_else(|| "-".into())
        };
        for p in &self.pools {
            t.add_row(vec![
                p.pool.clone(),
                h(p.plan_hours),
                h(p.rented_hours),
                h(p.saved_hours()),
                m(p.saved_money()),
            ]);
        }
        t.add_row(vec![
            "total".into(),
            h(self.sum(|p| p.plan_hours)),
            h(self.sum(|p| p.rented_hours)),
            h(self.sum(PoolSaved::saved_hours)),
            m(Some(self.saved_money())),
        ]);
        println!("{t}");
        if self.pools.iter().any(|p| p.saved_hours() < Decimal::ZERO) {
            println!(
                "A negative saving: the pool's servers ran longer than its windows' plan \
                 (woken outside a window, kept past a window's end, or no window at all)."
            );
        }
    }
}
