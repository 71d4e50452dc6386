//! The store's ledger rows, costed: each row (a node's billing interval with the server
//! type's price at the time) becomes a `dayshift_scheduler::ledger::BillingInterval` and
//! is costed there under the billing rule of the row's provider. `dayshift cost` and the
//! status page's month to date read their money from here.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use dayshift_config::Config;
use dayshift_config::billing::{BillingRule, Price};
use dayshift_config::settings::ProviderKind;
use dayshift_scheduler::ledger::{self, BillingInterval, NodeCost};
use rust_decimal::Decimal;

use crate::store::LedgerInterval;

/// The billing rule for rows of `provider`: the config's own rule (with any
/// `[provider.billing]` the operator wrote) for its kind, else that provider's default.
pub fn rule_for(provider: &str, config: &Config) -> BillingRule {
    match provider.parse::<ProviderKind>() {
        Ok(kind) if kind != config.provider.kind => kind.billing_rule(),
        _ => config.provider.billing,
    }
}

fn ms_to_utc(ms: i64, what: &str, row: &LedgerInterval) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        format!(
            "ledger interval {} (node {}): {what} {ms} is not a time in unix ms; fix or remove the row",
            row.id, row.node_id
        )
    })
}

fn money(text: &str, what: &str, row: &LedgerInterval) -> Result<Decimal, String> {
    Decimal::from_str(text.trim()).map_err(|_| {
        format!(
            "ledger interval {} (node {}): {what} \"{text}\" is not a decimal amount; fix the row",
            row.id, row.node_id
        )
    })
}

/// Costs per interval, 24/7 per pool, and each node's provider kind.
pub type CostedIntervals = (
    Vec<NodeCost>,
    BTreeMap<String, Decimal>,
    BTreeMap<String, String>,
);

/// Costs the ledger's intervals that overlap `[from, to)` under each row's provider's
/// billing rule; running servers are costed up to `now`. The 24/7 figures cover the
/// whole period.
pub fn cost_intervals(
    rows: &[LedgerInterval],
    config: &Config,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<CostedIntervals, String> {
    let mut by_provider: BTreeMap<&str, Vec<BillingInterval>> = BTreeMap::new();
    let mut node_provider = BTreeMap::new();
    for row in rows {
        let interval = BillingInterval {
            node_id: row.node_id.clone(),
            pool: row.pool.clone(),
            server_type: row.server_type.clone(),
            price: Price {
                hourly: money(&row.hourly_price, "hourly price", row)?,
                monthly: row
                    .monthly_price
                    .as_deref()
                    .map(|m| money(m, "monthly price", row))
                    .transpose()?,
            },
            start: ms_to_utc(row.started_at, "start", row)?,
            end: row.ended_at.map(|e| ms_to_utc(e, "end", row)).transpose()?,
        };
        node_provider
            .entry(row.node_id.clone())
            .or_insert_with(|| row.provider.clone());
        by_provider
            .entry(row.provider.as_str())
            .or_default()
            .push(interval);
    }
    let mut costs = Vec::new();
    let mut always: BTreeMap<String, Decimal> = BTreeMap::new();
    for (provider, intervals) in &by_provider {
        let rule = rule_for(provider, config);
        costs.extend(ledger::node_costs(intervals, from, to, now, rule));
        for (pool, v) in ledger::always_on_by_pool(intervals, from, to, now, rule) {
            *always.entry(pool).or_insert(Decimal::ZERO) += v;
        }
    }
    costs.sort_by(|a, b| (a.start, &a.node_id).cmp(&(b.start, &b.node_id)));
    Ok((costs, always, node_provider))
}
