//! `dayshift cost estimate`'s load-aware view: the gateway's load history from the
//! config's store (the hourly roll-ups kept for good, plus the raw samples of every
//! replica not rolled up yet), averaged per pool, local weekday and local hour, turned
//! into nodes at the pool's `target_in_flight` and handed to
//! `dayshift_config::estimate_load`, which costs the month both ways.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use dayshift_config::billing::{BillingRule, Price, to_cents};
use dayshift_config::estimate_load::{LoadAware, load_aware_month};
use dayshift_config::schedule::NodeRange;
use dayshift_config::{Config, Schedule};
use dayshift_scheduler::LoadSample;
use dayshift_scheduler::elastic::{ElasticPolicy, HourLoad, hour_loads, nodes_for};
use rust_decimal::Decimal;
use serde_json::json;

use super::output;
use super::stored;

/// Average load (in flight + queued, replicas added per sampling period) per local
/// weekday (days from Monday) and hour.
pub type Profile = BTreeMap<(u32, u32), f64>;

/// A pool's stored load history, averaged per local weekday and hour.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Per pool.
    pub pools: BTreeMap<String, Profile>,
    /// Raw samples read.
    pub samples: usize,
    /// Rolled-up hours read.
    pub rolled_up_hours: usize,
    /// The oldest and newest sample.
    pub span: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// The average load of each local (weekday, hour) in `tz` over `hours` (UTC hours,
/// each placed at its first instant's local weekday and hour): the periods' loads of
/// all weeks summed, over the number of periods.
pub fn profile(hours: &[HourLoad], tz: Tz) -> Profile {
    let mut groups: BTreeMap<(u32, u32), (f64, u64)> = BTreeMap::new();
    for h in hours {
        let local = h.hour.with_timezone(&tz);
        let g = groups
            .entry((local.weekday().num_days_from_monday(), local.hour()))
            .or_default();
        g.0 += h.load_sum;
        g.1 += u64::from(h.periods);
    }
    groups
        .into_iter()
        .filter(|(_, (_, periods))| *periods > 0)
        .map(|(k, (sum, periods))| (k, sum / periods as f64))
        .collect()
}

/// Reads the load history of `pools` from the store `config` names; `Err` says in a few
/// words why there is none to use (no config, no store yet, no samples yet, or the
/// store's error).
pub fn read_history(config: Option<&Config>, pools: &[String], tz: Tz) -> Result<History, String> {
    let Some(config) = config else {
        return Err("no --config naming a store".into());
    };
    if let Some(file) = stored::sqlite_file(&config.database_url)
        && !file.exists()
    {
        return Err(format!("no store at {} yet", file.display()));
    }
    let read = stored::block_on(async {
        let store = stored::open_store(config).await?;
        let mut out = History::default();
        let mut failed = None;
        let every = ElasticPolicy::default().sample_every;
        for pool in pools {
            let (mut hours, samples) = match read_pool(&store, pool).await {
                Ok(h) => h,
                Err(e) => {
                    failed = Some(format!("cannot read the load history: {e}"));
                    break;
                }
            };
            let first = hours
                .first()
                .map(|h| h.hour)
                .into_iter()
                .chain(samples.first().map(|s| s.at))
                .min();
            let last = samples
                .last()
                .map(|s| s.at)
                .into_iter()
                .chain(hours.last().map(|h| h.hour + chrono::Duration::hours(1)))
                .max();
            let (Some(first), Some(last)) = (first, last) else {
                continue;
            };
            out.samples += samples.len();
            out.rolled_up_hours += hours.len();
            out.span = Some(match out.span {
                Some((a, b)) => (a.min(first), b.max(last)),
                None => (first, last),
            });
            hours.extend(hour_loads(&samples, every));
            out.pools.insert(pool.clone(), profile(&hours, tz));
        }
        store.close().await;
        match failed {
            Some(f) => Err(stored::Failure::runtime(f)),
            None => Ok(out),
        }
    });
    match read {
        Ok(h) if h.samples + h.rolled_up_hours > 0 => Ok(h),
        Ok(_) => Err("no load samples of the schedule's pools in the store yet".into()),
        Err(f) => Err(f.message),
    }
}

/// A pool's rolled-up hours and the raw samples after the last of them.
async fn read_pool(
    store: &crate::store::Store,
    pool: &str,
) -> Result<(Vec<HourLoad>, Vec<LoadSample>), crate::store::StoreError> {
    let hours = store.hour_loads(pool).await?;
    let since = hours
        .last()
        .map(|h| h.hour + chrono::Duration::hours(1))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let samples = store.load_samples(pool, since).await?;
    Ok((hours, samples))
}

/// The month both ways from `history` (see [`load_aware_month`]).
pub fn estimate(
    schedule: &Schedule,
    config: Option<&Config>,
    first_day: NaiveDate,
    rule: BillingRule,
    price_of: &dyn Fn(&str) -> Option<Price>,
    history: &History,
) -> Result<LoadAware, String> {
    let range_of = |pool: &str, window: NodeRange| match config.and_then(|c| c.pools.get(pool)) {
        Some(p) => p.range_rule().range(window),
        None => window,
    };
    let target = |pool: &str| {
        config
            .and_then(|c| c.pools.get(pool))
            .map(|p| p.target_in_flight)
            .unwrap_or(ElasticPolicy::default().target_in_flight)
    };
    let needed = |pool: &str, day: Weekday, hour: u32| {
        history
            .pools
            .get(pool)
            .and_then(|p| p.get(&(day.num_days_from_monday(), hour)))
            .map(|load| nodes_for(*load, target(pool)))
    };
    load_aware_month(schedule, first_day, rule, price_of, &range_of, &needed)
}

fn hours(d: Decimal) -> serde_json::Value {
    output::hours_json(d.round_dp(2).normalize())
}

fn cents(d: Decimal) -> String {
    format!("{:.2}", to_cents(d))
}

/// The `load_aware` object of `dayshift cost estimate --json`.
pub fn to_json(l: &LoadAware, h: &History) -> serde_json::Value {
    let pools: Vec<_> = l
        .pools
        .iter()
        .map(|p| {
            json!({
                "pool": p.pool,
                "window_hours": hours(p.window_hours),
                "hours_with_history": hours(p.hours_with_history),
                "fixed_node_hours": hours(p.fixed_node_hours),
                "load_aware_node_hours": hours(p.load_node_hours),
                "fixed_billed_hours": hours(p.fixed.billed_hours),
                "load_aware_billed_hours": hours(p.load_aware.billed_hours),
                "fixed_cost": cents(p.fixed.cost),
                "load_aware_cost": cents(p.load_aware.cost),
            })
        })
        .collect();
    let fixed: Decimal = l.pools.iter().map(|p| to_cents(p.fixed.cost)).sum();
    let load: Decimal = l.pools.iter().map(|p| to_cents(p.load_aware.cost)).sum();
    json!({
        "history": {
            "samples": h.samples,
            "rolled_up_hours": h.rolled_up_hours,
            "first": h.span.map(|s| s.0.to_rfc3339()),
            "last": h.span.map(|s| s.1.to_rfc3339()),
        },
        "pools": pools,
        "fixed_total": cents(fixed),
        "load_aware_total": cents(load),
        "saved": cents(fixed - load),
    })
}

/// The load-aware table for people.
pub fn print(l: &LoadAware, h: &History, tz: Tz) {
    let day = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d").to_string();
    let span = h
        .span
        .map(|(a, b)| format!(", {} to {}", day(a), day(b)))
        .unwrap_or_default();
    let rolled = match h.rolled_up_hours {
        0 => String::new(),
        n => format!(" and {n} rolled-up hours"),
    };
    println!(
        "Load-aware ({} load samples{rolled}{span}): each window hour rents the nodes the average \
         load of the same weekday and hour needs at the pool's target_in_flight, within the \
         window's range; hours without history stay at the upper bound.",
        h.samples
    );
    let mut t = output::table(&[
        "pool",
        "window hours",
        "with history",
        "fixed node-hours",
        "load-aware node-hours",
        "fixed EUR",
        "load-aware EUR",
    ]);
    let hr = |d: Decimal| d.round_dp(2).normalize().to_string();
    for p in &l.pools {
        t.add_row(vec![
            p.pool.clone(),
            hr(p.window_hours),
            hr(p.hours_with_history),
            hr(p.fixed_node_hours),
            hr(p.load_node_hours),
            cents(p.fixed.cost),
            cents(p.load_aware.cost),
        ]);
    }
    let fixed: Decimal = l.pools.iter().map(|p| to_cents(p.fixed.cost)).sum();
    let load: Decimal = l.pools.iter().map(|p| to_cents(p.load_aware.cost)).sum();
    println!("{t}");
    println!(
        "Load-aware saving against the fixed plan: {} EUR",
        cents(fixed - load)
    );
}
