//! `dayshift cost [--month YYYY-MM] [--by node|pool|day|key] [--json|--csv]`: what the
//! servers of a month cost, read from the store's ledger (each node's billing intervals
//! with the server type's price at the time) under the provider's billing rule, beside
//! what renting the same servers 24/7 would have cost, and the node-hours saved against
//! the fixed window plan (`cost_saved`).
//!
//! The arithmetic is the scheduler's (`dayshift_scheduler::ledger`); this module reads
//! the store, picks the billing rule and prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use clap::{Args, ValueEnum};
use dayshift_config::billing::{BillingRule, to_cents};
use dayshift_config::estimate::parse_month;
use dayshift_config::{Config, calendar};
use dayshift_scheduler::ledger::{self, KeyCost, KeyUsage, NodeCost};
use rust_decimal::Decimal;
use serde_json::json;

use super::output;
use super::stored::{self, Failure};
use crate::costing;
use crate::store::Store;

/// What one row of the report stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// One row per node (its server's billed life in the month).
    Node,
    /// One row per pool, with its 24/7 figure.
    #[default]
    Pool,
    /// One row per local day (the day a server's billed life began).
    Day,
    /// One row per API key: each node's cost spread over the tokens it computed for each
    /// key (prompt tokens not served from its prefix cache, plus completion tokens).
    Key,
}

impl By {
    fn name(self) -> &'static str {
        match self {
            By::Node => "node",
            By::Pool => "pool",
            By::Day => "day",
            By::Key => "key",
        }
    }
}

/// Arguments of `dayshift cost` (the ledger report).
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// dayshift.toml of the cluster: its store holds the ledger, its provider gives the
    /// billing rule, its schedule the time zone.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The month, YYYY-MM, taken in the schedule's time zone (default: the current month).
    #[arg(long)]
    pub month: Option<String>,
    /// One row per node, pool, local day or API key.
    #[arg(long, value_enum, default_value_t = By::Pool)]
    pub by: By,
    /// Print one JSON object instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV (a header line, then one line per row; no total line).
    #[arg(long)]
    pub csv: bool,
}

/// A month's ledger, costed.
#[derive(Debug, Clone)]
pub struct Costed {
    /// "YYYY-MM".
    pub month: String,
    /// Time zone of the month's bounds and of `--by day`.
    pub tz: Tz,
    /// First instant of the month.
    pub from: DateTime<Utc>,
    /// First instant of the next month.
    pub to: DateTime<Utc>,
    /// The instant running servers are costed up to.
    pub now: DateTime<Utc>,
    /// The config's provider kind and its billing rule.
    pub provider: String,
    /// The config's billing rule (rows of another provider use that provider's rule).
    pub rule: BillingRule,
    /// Per billing interval, cut to the month, in order of start.
    pub costs: Vec<NodeCost>,
    /// Node id → provider kind of its interval.
    pub node_provider: BTreeMap<String, String>,
    /// Node id → the hourly and monthly price of its (first) interval, as stored.
    pub node_price: BTreeMap<String, (String, Option<String>)>,
    /// Nodes whose interval is still open.
    pub running: BTreeSet<String>,
    /// Per pool: its most servers at once in the month, rented all month.
    pub always_on: BTreeMap<String, Decimal>,
}

impl Costed {
    /// Exact sum of the costs.
    pub fn total(&self) -> Decimal {
        self.costs.iter().map(|c| c.cost).sum()
    }

    /// Exact sum of the billed hours.
    pub fn hours(&self) -> Decimal {
        self.costs.iter().map(|c| c.billed_hours).sum()
    }

    /// Exact sum of the 24/7 figures.
    pub fn always_on_total(&self) -> Decimal {
        self.always_on.values().copied().sum()
    }

    /// Saving against 24/7 in percent, two decimals (0 when nothing would be rented).
    pub fn saving_percent(&self) -> Decimal {
        let always = self.always_on_total();
        if always.is_zero() {
            Decimal::ZERO
        } else {
            to_cents((always - self.total()) / always * Decimal::from(100))
        }
    }
}

/// Reads and costs the month starting on `first_day` from `store` (running servers up
/// to `now`).
pub async fn cost_month(
    store: &Store,
    config: &Config,
    tz: Tz,
    first_day: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Costed, Failure> {
    let (from, to) = calendar::month_bounds(tz, first_day)
        .ok_or_else(|| Failure::invalid("--month: the month is out of range"))?;
    let rows = store
        .intervals(from.timestamp_millis(), to.timestamp_millis())
        .await
        .map_err(|e| Failure::runtime(format!("cannot read the ledger: {e}")))?;
    let mut node_price = BTreeMap::new();
    for r in &rows {
        node_price
            .entry(r.node_id.clone())
            .or_insert_with(|| (r.hourly_price.clone(), r.monthly_price.clone()));
    }
    let running = rows
        .iter()
        .filter(|r| r.ended_at.is_none())
        .map(|r| r.node_id.clone())
        .collect();
    let (costs, always_on, node_provider) =
        costing::cost_intervals(&rows, config, from, to, now).map_err(Failure::runtime)?;
    Ok(Costed {
        month: format!("{:04}-{:02}", first_day.year(), first_day.month()),
        tz,
        from,
        to,
        now,
        provider: config.provider.kind.to_string(),
        rule: config.provider.billing,
        costs,
        node_provider,
        node_price,
        running,
        always_on,
    })
}

/// Runs `dayshift cost` (the ledger report).
pub fn run(args: ReportArgs) -> ExitCode {
    match report(args) {
        Ok(code) => code,
        Err(f) => stored::report(f),
    }
}

fn report(args: ReportArgs) -> Result<ExitCode, Failure> {
    let config = stored::load_config(args.config.as_deref())?;
    let schedule = stored::load_schedule(&config)?;
    let tz = stored::timezone(schedule.as_ref());
    let now = Utc::now();
    let first_day = match &args.month {
        Some(m) => parse_month(m).map_err(|e| Failure::invalid(format!("--month: {e}")))?,
        None => calendar::month_of(now, tz)
            .ok_or_else(|| Failure::runtime("the clock is out of range"))?,
    };
    let (costed, keys, names) = stored::block_on(async {
        let store = stored::open_store(&config).await?;
        let costed = cost_month(&store, &config, tz, first_day, now).await?;
        let (keys, names) = if args.by == By::Key {
            let usage = store
                .tokens_by_key_and_node(
                    costed.from.timestamp_millis(),
                    costed.to.timestamp_millis(),
                )
                .await
                .map_err(|e| Failure::runtime(format!("cannot read usage: {e}")))?;
            let usage: Vec<KeyUsage> = usage
                .into_iter()
                .map(|u| KeyUsage {
                    key: u.key_id,
                    node_id: u.node_id,
                    tokens: u64::try_from(u.tokens).unwrap_or(0),
                })
                .collect();
            let names: BTreeMap<String, String> = store
                .list_api_keys()
                .await
                .map_err(|e| Failure::runtime(format!("cannot read API keys: {e}")))?
                .into_iter()
                .map(|k| (k.id, k.name))
                .collect();
            (ledger::by_key(&costed.costs, &usage), names)
        } else {
            (Vec::new(), BTreeMap::new())
        };
        store.close().await;
        Ok((costed, keys, names))
    })?;
    let rows = rows(&costed, args.by, &keys, &names);
    let saved = schedule.as_ref().map(|s| {
        super::cost_saved::compare(&config, s, &costed.costs, costed.from, costed.to, now)
    });
    if args.json {
        let mut j = report_json(&costed, args.by, &rows);
        j["fixed_plan"] = saved
            .as_ref()
            .map(|s| s.to_json())
            .unwrap_or(serde_json::Value::Null);
        Ok(output::print_json(&j))
    } else if args.csv {
        print!("{}", to_csv(&rows));
        Ok(ExitCode::SUCCESS)
    } else {
        print_table(&costed, args.by, &rows, &config.cluster);
        match &saved {
            Some(s) => s.print(tz),
            None => println!("No schedule: no fixed window plan to compare with."),
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// One report row: named columns, each with its JSON value and its table/CSV text.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<(&'static str, serde_json::Value, String)>);

fn money_cell(name: &'static str, v: Decimal) -> (&'static str, serde_json::Value, String) {
    let s = format!("{:.2}", to_cents(v));
    (name, json!(s), s)
}

fn hours_cell(v: Decimal) -> (&'static str, serde_json::Value, String) {
    let h = v.round_dp(2).normalize();
    ("billed_hours", output::hours_json(h), h.to_string())
}

fn text_cell(name: &'static str, v: &str) -> (&'static str, serde_json::Value, String) {
    (name, json!(v), v.to_string())
}

fn count_cell(name: &'static str, v: u64) -> (&'static str, serde_json::Value, String) {
    (name, json!(v), v.to_string())
}

/// The report's rows for `by`.
pub fn rows(c: &Costed, by: By, keys: &[KeyCost], names: &BTreeMap<String, String>) -> Vec<Row> {
    match by {
        By::Pool => {
            let sums = ledger::sum_by(&c.costs, |x| x.pool.clone());
            let pools: BTreeSet<&String> = sums.keys().chain(c.always_on.keys()).collect();
            pools
                .into_iter()
                .map(|pool| {
                    let (hours, cost) = sums
                        .get(pool)
                        .copied()
                        .unwrap_or((Decimal::ZERO, Decimal::ZERO));
                    let servers: BTreeSet<&str> = c
                        .costs
                        .iter()
                        .filter(|x| &x.pool == pool)
                        .map(|x| x.node_id.as_str())
                        .collect();
                    Row(vec![
                        text_cell("pool", pool),
                        count_cell("servers", servers.len() as u64),
                        hours_cell(hours),
                        money_cell("cost", cost),
                        money_cell(
                            "always_on",
                            c.always_on.get(pool).copied().unwrap_or(Decimal::ZERO),
                        ),
                    ])
                })
                .collect()
        }
        By::Node => {
            let sums = ledger::sum_by(&c.costs, |x| x.node_id.clone());
            let mut seen = BTreeSet::new();
            c.costs
                .iter()
                .filter(|x| seen.insert(x.node_id.clone()))
                .map(|first| {
                    let mine = c.costs.iter().filter(|x| x.node_id == first.node_id);
                    let end = mine.map(|x| x.end).max().unwrap_or(first.end);
                    let (hours, cost) = sums
                        .get(&first.node_id)
                        .copied()
                        .unwrap_or((Decimal::ZERO, Decimal::ZERO));
                    let running = c.running.contains(&first.node_id) && end < c.to;
                    let local = |t: DateTime<Utc>| {
                        t.with_timezone(&c.tz).format("%Y-%m-%d %H:%M").to_string()
                    };
                    Row(vec![
                        text_cell("node", &first.node_id),
                        text_cell("pool", &first.pool),
                        text_cell(
                            "provider",
                            c.node_provider
                                .get(&first.node_id)
                                .map(String::as_str)
                                .unwrap_or(""),
                        ),
                        text_cell("server_type", &first.server_type),
                        {
                            let hourly = c
                                .node_price
                                .get(&first.node_id)
                                .map(|p| p.0.clone())
                                .unwrap_or_default();
                            ("hourly_price", json!(hourly), hourly)
                        },
                        {
                            let monthly =
                                c.node_price.get(&first.node_id).and_then(|p| p.1.clone());
                            let text = monthly.clone().unwrap_or_default();
                            ("monthly_price", json!(monthly), text)
                        },
                        ("start", json!(first.start.to_rfc3339()), local(first.start)),
                        (
                            "end",
                            json!(end.to_rfc3339()),
                            if running {
                                "running".to_string()
                            } else {
                                local(end)
                            },
                        ),
                        ("running", json!(running), running.to_string()),
                        hours_cell(hours),
                        money_cell("cost", cost),
                    ])
                })
                .collect()
        }
        By::Day => {
            let sums = ledger::sum_by(&c.costs, |x| ledger::local_day(x, c.tz));
            sums.into_iter()
                .map(|(day, (hours, cost))| {
                    let servers: BTreeSet<&str> = c
                        .costs
                        .iter()
                        .filter(|x| ledger::local_day(x, c.tz) == day)
                        .map(|x| x.node_id.as_str())
                        .collect();
                    Row(vec![
                        text_cell("day", &day.format("%Y-%m-%d").to_string()),
                        count_cell("servers", servers.len() as u64),
                        hours_cell(hours),
                        money_cell("cost", cost),
                    ])
                })
                .collect()
        }
        By::Key => keys
            .iter()
            .map(|k| {
                let per = k
                    .per_million
                    .map(|p| format!("{:.2}", to_cents(p)))
                    .unwrap_or_default();
                Row(vec![
                    text_cell("key", &k.key),
                    text_cell("name", names.get(&k.key).map(String::as_str).unwrap_or("")),
                    count_cell("tokens", k.tokens),
                    money_cell("cost", k.cost),
                    (
                        "per_million_tokens",
                        if per.is_empty() {
                            serde_json::Value::Null
                        } else {
                            json!(per)
                        },
                        per,
                    ),
                ])
            })
            .collect(),
    }
}

/// Describes a billing rule in words, e.g. "every started hour, capped at the monthly price".
pub fn describe_rule(rule: BillingRule) -> String {
    let unit = match rule.unit_secs {
        3600 => "hour".to_string(),
        60 => "minute".to_string(),
        1 => "second".to_string(),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    };
    let mut out = format!("every started {unit}");
    if rule.minimum_secs > 0 {
        out.push_str(&format!(", at least {} s per server", rule.minimum_secs));
    }
    if rule.monthly_cap {
        out.push_str(", one server never more than its type's monthly price");
    } else {
        out.push_str(", no monthly cap");
    }
    out
}

/// The `--json` object of a report.
pub fn report_json(c: &Costed, by: By, rows: &[Row]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::Value::Object(
                r.0.iter()
                    .map(|(k, v, _)| ((*k).to_string(), v.clone()))
                    .collect(),
            )
        })
        .collect();
    let always: serde_json::Map<String, serde_json::Value> = c
        .always_on
        .iter()
        .map(|(p, v)| (p.clone(), json!(format!("{:.2}", to_cents(*v)))))
        .collect();
    json!({
        "month": c.month,
        "timezone": c.tz.name(),
        "from": c.from.to_rfc3339(),
        "to": c.to.to_rfc3339(),
        "provider": c.provider,
        "billing": {
            "unit_secs": c.rule.unit_secs,
            "minimum_secs": c.rule.minimum_secs,
            "monthly_cap": c.rule.monthly_cap,
        },
        "by": by.name(),
        "rows": rows,
        "total": {
            "servers": c.node_provider.len(),
            "billed_hours": output::hours_json(c.hours().round_dp(2).normalize()),
            "cost": format!("{:.2}", to_cents(c.total())),
        },
        "always_on": format!("{:.2}", to_cents(c.always_on_total())),
        "always_on_by_pool": always,
        "saving_percent": format!("{:.2}", c.saving_percent()),
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV text: a header line from the column names, then one line per row.
pub fn to_csv(rows: &[Row]) -> String {
    let header: Vec<&str> = match rows.first() {
        Some(r) => r.0.iter().map(|(k, _, _)| *k).collect(),
        None => return String::new(),
    };
    let mut out = header.join(",");
    out.push('\n');
    for r in rows {
        let line: Vec<String> =
            r.0.iter()
                .map(|(k, v, text)| match (*k, v) {
                    // Machine-readable times in CSV, as in JSON.
                    ("start" | "end", serde_json::Value::String(s)) => csv_field(s),
                    _ => csv_field(text),
                })
                .collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn header_names(by: By) -> Vec<&'static str> {
    match by {
        By::Pool => vec!["pool", "servers", "billed hours", "cost EUR", "24/7 EUR"],
        By::Node => vec![
            "node",
            "pool",
            "provider",
            "server type",
            "EUR/h",
            "EUR/month",
            "start",
            "end",
            "billed hours",
            "cost EUR",
        ],
        By::Day => vec!["day", "servers", "billed hours", "cost EUR"],
        By::Key => vec!["key", "name", "tokens", "cost EUR", "EUR per 1M tokens"],
    }
}

fn print_table(c: &Costed, by: By, rows: &[Row], cluster: &str) {
    println!(
        "Cost of cluster \"{cluster}\" for {} ({} to {}, {}), from the store's ledger",
        c.month,
        c.from.with_timezone(&c.tz).format("%Y-%m-%d %H:%M"),
        c.to.with_timezone(&c.tz).format("%Y-%m-%d %H:%M"),
        c.tz
    );
    println!("Billing rule ({}): {}", c.provider, describe_rule(c.rule));
    let header = header_names(by);
    let mut t = output::table(&header);
    for r in rows {
        let cells: Vec<String> =
            r.0.iter()
                .filter(|(k, _, _)| *k != "running")
                .map(|(_, _, text)| text.clone())
                .collect();
        t.add_row(cells);
    }
    let total = format!("{:.2}", to_cents(c.total()));
    let hours = c.hours().round_dp(2).normalize().to_string();
    let servers = c.node_provider.len().to_string();
    let total_row: Vec<String> = match by {
        By::Pool => vec![
            "total".into(),
            servers,
            hours,
            total,
            format!("{:.2}", to_cents(c.always_on_total())),
        ],
        By::Node => vec![
            "total".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            hours,
            total,
        ],
        By::Day => vec!["total".into(), servers, hours, total],
        By::Key => vec![
            "total".into(),
            String::new(),
            rows_tokens(rows),
            total,
            String::new(),
        ],
    };
    t.add_row(total_row);
    println!("{t}");
    if c.costs.is_empty() {
        println!("No server was billed in {}.", c.month);
    }
    println!(
        "24/7 renting of the same servers (per pool: its most servers at once, all month): {:.2} EUR",
        to_cents(c.always_on_total())
    );
    println!("Saving against 24/7: {:.2} %", c.saving_percent());
}

fn rows_tokens(rows: &[Row]) -> String {
    rows.iter()
        .flat_map(|r| r.0.iter())
        .filter(|(k, _, _)| *k == "tokens")
        .filter_map(|(_, v, _)| v.as_u64())
        .sum::<u64>()
        .to_string()
}
