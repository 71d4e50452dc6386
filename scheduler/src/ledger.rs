//! The cost ledger: each node's billing interval (server created → deleted) with the
//! server type's price at the time, turned into money under the provider's billing rule,
//! and reported per node, pool, day and API key beside 24/7 renting.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use dayshift_config::billing::{BillingRule, Price};
use rust_decimal::Decimal;

/// One node's billing interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingInterval {
    /// Node id.
    pub node_id: String,
    /// Pool.
    pub pool: String,
    /// Server type rented.
    pub server_type: String,
    /// Price of that type when it was rented.
    pub price: Price,
    /// Server created (billing starts).
    pub start: DateTime<Utc>,
    /// Server deleted (billing ends); `None` while it runs.
    pub end: Option<DateTime<Utc>>,
}

/// What one node cost within a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCost {
    /// Node id.
    pub node_id: String,
    /// Pool.
    pub pool: String,
    /// Server type.
    pub server_type: String,
    /// Billed start within the period.
    pub start: DateTime<Utc>,
    /// Billed end within the period (now for a running server).
    pub end: DateTime<Utc>,
    /// Billed hours.
    pub billed_hours: Decimal,
    /// Money, exact.
    pub cost: Decimal,
}

/// Costs of every interval that overlaps `[from, to)`, each cut to it (`now` ends running
/// servers). One server is charged on its own under `rule` (e.g. capped per month).
pub fn node_costs(
    intervals: &[BillingInterval],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    rule: BillingRule,
) -> Vec<NodeCost> {
    intervals
        .iter()
        .filter_map(|i| {
            let end = i.end.unwrap_or(now).min(to);
            let start = i.start.max(from);
            (end > start).then(|| {
                let c = rule.charge((end - start).num_seconds(), &i.price);
                NodeCost {
                    node_id: i.node_id.clone(),
                    pool: i.pool.clone(),
                    server_type: i.server_type.clone(),
                    start,
                    end,
                    billed_hours: c.billed_hours,
                    cost: c.cost,
                }
            })
        })
        .collect()
}

/// Per pool: the most servers that ran at once in the period, and what renting that many
/// of the pool's (most expensive seen) type all period would cost.
pub fn always_on_by_pool(
    intervals: &[BillingInterval],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    rule: BillingRule,
) -> BTreeMap<String, Decimal> {
    let mut by_pool: BTreeMap<String, Vec<&BillingInterval>> = BTreeMap::new();
    for i in intervals {
        by_pool.entry(i.pool.clone()).or_default().push(i);
    }
    let period = (to - from).num_seconds();
    by_pool
        .into_iter()
        .map(|(pool, items)| {
            // Peak concurrency by a sweep over starts and ends.
            let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
            for i in &items {
                let (s, e) = (i.start.max(from), i.end.unwrap_or(now).min(to));
                if e > s {
                    edges.push((s, 1));
                    edges.push((e, -1));
                }
            }
            edges.sort_by_key(|&(t, d)| (t, d));
            let (mut cur, mut peak) = (0i32, 0i32);
            for (_, d) in edges {
                cur += d;
                peak = peak.max(cur);
            }
            let per_server = items
                .iter()
                .map(|i| rule.charge(period, &i.price).cost)
                .max()
                .unwrap_or(Decimal::ZERO);
            (pool, per_server * Decimal::from(peak))
        })
        .collect()
}

/// Sums node costs per key (pool, or the local day the server's billed life began in `tz`).
pub fn sum_by<K: Ord>(
    costs: &[NodeCost],
    key: impl Fn(&NodeCost) -> K,
) -> BTreeMap<K, (Decimal, Decimal)> {
    let mut out: BTreeMap<K, (Decimal, Decimal)> = BTreeMap::new();
    for c in costs {
        let e = out.entry(key(c)).or_insert((Decimal::ZERO, Decimal::ZERO));
        e.0 += c.billed_hours;
        e.1 += c.cost;
    }
    out
}

/// The local day a cost belongs to: the day its billed life began in `tz`.
pub fn local_day(c: &NodeCost, tz: Tz) -> NaiveDate {
    c.start.with_timezone(&tz).date_naive()
}

/// Tokens one API key used on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// API key id (its visible prefix, never the secret).
    pub key: String,
    /// Node id.
    pub node_id: String,
    /// Tokens the node computed for the key: prompt tokens not taken from its prefix
    /// cache, plus completion tokens.
    pub tokens: u64,
}

/// A key's share of the GPU cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCost {
    /// Key id.
    pub key: String,
    /// Tokens the nodes computed for the key (see [`KeyUsage::tokens`]).
    pub tokens: u64,
    /// Cost share, exact.
    pub cost: Decimal,
    /// Cost per million tokens, exact (`None` with no tokens).
    pub per_million: Option<Decimal>,
}

/// Spreads each node's cost over the keys in proportion to the tokens it computed for each.
/// A node that served no tokens is reported under the key `(idle)`.
pub fn by_key(costs: &[NodeCost], usage: &[KeyUsage]) -> Vec<KeyCost> {
    let mut node_cost: BTreeMap<&str, Decimal> = BTreeMap::new();
    for c in costs {
        *node_cost.entry(c.node_id.as_str()).or_insert(Decimal::ZERO) += c.cost;
    }
    let mut node_tokens: BTreeMap<&str, u64> = BTreeMap::new();
    for u in usage {
        *node_tokens.entry(u.node_id.as_str()).or_insert(0) += u.tokens;
    }
    let mut keys: BTreeMap<String, (u64, Decimal)> = BTreeMap::new();
    for u in usage {
        let (Some(cost), Some(total)) = (
            node_cost.get(u.node_id.as_str()),
            node_tokens.get(u.node_id.as_str()),
        ) else {
            continue;
        };
        if *total == 0 {
            continue;
        }
        let e = keys.entry(u.key.clone()).or_insert((0, Decimal::ZERO));
        e.0 += u.tokens;
        e.1 += *cost * Decimal::from(u.tokens) / Decimal::from(*total);
    }
    for (node, cost) in &node_cost {
        if node_tokens.get(node).copied().unwrap_or(0) == 0 {
            keys.entry("(idle)".into()).or_insert((0, Decimal::ZERO)).1 += *cost;
        }
    }
    keys.into_iter()
        .map(|(key, (tokens, cost))| KeyCost {
            per_million: (tokens > 0)
                .then(|| cost * Decimal::from(1_000_000u32) / Decimal::from(tokens)),
            key,
            tokens,
            cost,
        })
        .collect()
}
