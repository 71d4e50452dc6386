//! `dayshift cost`: the month's ledger report (`cost_report`), and `dayshift cost
//! estimate`: a month of the schedule under the provider's billing rule, and, when the
//! config's store holds a load history, the same month load-aware (`cost_load`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Args, Subcommand};
use dayshift_config::billing::{BillingRule, Price};
use dayshift_config::estimate::{Estimate, estimate_month, parse_month};
use dayshift_config::{Config, Schedule};
use rust_decimal::Decimal;
use serde_json::json;

use super::output;

/// `dayshift cost [--month …] [--by …]` (the ledger) or `dayshift cost estimate …`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CostArgs {
    /// `estimate`; without one, the ledger report.
    #[command(subcommand)]
    pub command: Option<CostCommand>,
    /// The ledger report's arguments.
    #[command(flatten)]
    pub report: super::cost_report::ReportArgs,
}

/// `dayshift cost …` subcommands.
#[derive(Subcommand)]
pub enum CostCommand {
    /// Forecast a month's GPU cost from the schedule, beside renting 24/7; with a load
    /// history in the config's store, also load-aware (each window hour at the nodes its
    /// weekday and hour's average load needs, within the window's range).
    Estimate(EstimateArgs),
}

/// Arguments of `dayshift cost estimate`.
#[derive(Args)]
pub struct EstimateArgs {
    /// dayshift.toml (prices from each pool's first server type, billing rule of the
    /// provider; its store's load history gives the load-aware view).
    #[arg(long)]
    config: Option<PathBuf>,
    /// schedule.toml (default: the one dayshift.toml names).
    #[arg(long)]
    schedule: Option<PathBuf>,
    /// The month, YYYY-MM (its bounds are taken in the schedule's time zone).
    #[arg(long)]
    month: String,
    /// Hourly price in EUR for every pool (overrides the config).
    #[arg(long)]
    hourly: Option<String>,
    /// Monthly cap in EUR for every pool (overrides the config).
    #[arg(long)]
    monthly: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `dayshift cost …`.
pub fn run(args: CostArgs) -> ExitCode {
    match args.command {
        Some(CostCommand::Estimate(a)) => estimate(a),
        None => super::cost_report::run(args.report),
    }
}

fn money_arg(flag: &str, v: Option<&str>) -> Result<Option<Decimal>, String> {
    match v {
        None => Ok(None),
        Some(s) => match Decimal::from_str(s.trim()) {
            Ok(d) if d >= Decimal::ZERO => Ok(Some(d)),
            _ => Err(format!(
                "{flag}: expected a non-negative amount in EUR such as 0.49, found \"{s}\""
            )),
        },
    }
}

fn estimate(args: EstimateArgs) -> ExitCode {
    let (hourly, monthly) = match (
        money_arg("--hourly", args.hourly.as_deref()),
        money_arg("--monthly", args.monthly.as_deref()),
    ) {
        (Ok(h), Ok(m)) => (h, m),
        (Err(e), _) | (_, Err(e)) => return output::invalid(&e),
    };
    let first_day = match parse_month(&args.month) {
        Ok(d) => d,
        Err(e) => return output::invalid(&format!("--month: {e}")),
    };
    let config = match args.config.as_deref().map(Config::load) {
        Some(Ok(c)) => Some(c),
        Some(Err(p)) => return output::problems(&p),
        None => None,
    };
    if config.is_none() && hourly.is_none() {
        return output::invalid("give --config (prices from its server types) or --hourly");
    }
    let schedule_path = match (
        &args.schedule,
        config.as_ref().and_then(|c| c.schedule.clone()),
    ) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => p,
        (None, None) => {
            return output::invalid("give --schedule, or a config whose `schedule` names one");
        }
    };
    let loaded = match config.as_ref() {
        Some(c) => Schedule::load_for_pools(&schedule_path, &c.pool_caps()),
        None => Schedule::load(&schedule_path, None),
    };
    let schedule = match loaded {
        Ok(s) => s,
        Err(p) => return output::problems(&p),
    };
    let rule = config
        .as_ref()
        .map(|c| c.provider.billing)
        .unwrap_or(BillingRule::HETZNER);
    let price_of = |pool: &str| -> Option<Price> {
        let base = config.as_ref().and_then(|c| c.pool_price(pool));
        match (hourly, base) {
            (Some(h), base) => Some(Price {
                hourly: h,
                monthly: monthly.or(base.and_then(|b| b.monthly)),
            }),
            (None, Some(b)) => Some(Price {
                hourly: b.hourly,
                monthly: monthly.or(b.monthly),
            }),
            (None, None) => None,
        }
    };
    let est = match estimate_month(&schedule, first_day, rule, &price_of) {
        Ok(e) => e,
        Err(e) => return output::invalid(&e),
    };
    // Elastic windows: the table counts each at its upper bound (the most it can cost);
    // at the floors is what the schedule commits to for sure (the budget's figure).
    let at_floor = if schedule.has_ranges() {
        let rules: std::collections::BTreeMap<String, dayshift_config::settings::RangeRule> =
            config
                .iter()
                .flat_map(|c| c.pools.iter().map(|(n, p)| (n.clone(), p.range_rule())))
                .collect();
        let floors = schedule.at_floor(|pool, r| match rules.get(pool) {
            Some(rule) => rule.range(r).min,
            None => r.min,
        });
        match estimate_month(&floors, first_day, rule, &price_of) {
            Ok(e) => Some(e.total),
            Err(e) => return output::invalid(&e),
        }
    } else {
        None
    };
    let history =
        super::cost_load::read_history(config.as_ref(), &schedule.pools(), schedule.timezone);
    let load = match &history {
        Ok(h) => match super::cost_load::estimate(
            &schedule,
            config.as_ref(),
            first_day,
            rule,
            &price_of,
            h,
        ) {
            Ok(l) => Some((l, h)),
            Err(e) => return output::invalid(&e),
        },
        Err(_) => None,
    };
    if args.json {
        let mut j = estimate_json(&est);
        j["load_aware"] = load
            .as_ref()
            .map(|(l, h)| super::cost_load::to_json(l, h))
            .unwrap_or(serde_json::Value::Null);
        j["no_load_history"] = history.as_ref().err().map(|e| json!(e)).unwrap_or_default();
        if let Some(t) = at_floor {
            j["at_floor_total"] = json!(format!("{t:.2}"));
        }
        output::print_json(&j)
    } else {
        print_table(&est, &schedule);
        if let Some(t) = at_floor {
            println!(
                "Elastic windows count at their upper bound above (the most they can cost); \
                 at their floors: {t:.2} EUR (what the budget counts as committed)"
            );
        }
        match (&load, &history) {
            (Some((l, h)), _) => super::cost_load::print(l, h, schedule.timezone),
            (None, Err(why)) => {
                println!("No load history ({why}): the fixed plan above is the only view.")
            }
            (None, Ok(_)) => {}
        }
        ExitCode::SUCCESS
    }
}

/// The `--json` object of an estimate.
pub fn estimate_json(e: &Estimate) -> serde_json::Value {
    use dayshift_config::billing::to_cents;
    let pools: Vec<_> = e
        .pools
        .iter()
        .map(|p| {
            json!({
                "pool": p.pool,
                "billed_hours": output::hours_json(p.billed_hours),
                "servers": p.servers,
                "peak_nodes": p.peak_nodes,
                "cost": format!("{:.2}", to_cents(p.cost)),
                "always_on": format!("{:.2}", to_cents(p.always_on)),
            })
        })
        .collect();
    json!({
        "month": e.month,
        "pools": pools,
        "total": format!("{:.2}", e.total),
        "always_on": format!("{:.2}", e.always_on),
        "saving_percent": format!("{:.2}", e.saving_percent),
    })
}

fn print_table(e: &Estimate, schedule: &Schedule) {
    use dayshift_config::billing::to_cents;
    let tz = schedule.timezone;
    println!(
        "Cost estimate for {} ({} to {}, {})",
        e.month,
        e.start.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
        e.end.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
        tz
    );
    let mut t = output::table(&["pool", "servers", "billed hours", "cost EUR", "24/7 EUR"]);
    for p in &e.pools {
        t.add_row(vec![
            p.pool.clone(),
            p.servers.to_string(),
            p.billed_hours.normalize().to_string(),
            format!("{:.2}", to_cents(p.cost)),
            format!("{:.2}", to_cents(p.always_on)),
        ]);
    }
    t.add_row(vec![
        "total".to_string(),
        String::new(),
        String::new(),
        format!("{:.2}", e.total),
        format!("{:.2}", e.always_on),
    ]);
    println!("{t}");
    println!("Saving against 24/7: {:.2} %", e.saving_percent);
}
