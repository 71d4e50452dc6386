//! `dayshift status [--json]`: the cluster at a glance from the config, the schedule and
//! the store (no running server needed): today's schedule per pool, nodes by state, the
//! next window, the month's cost so far and the budget left; per pool its scaling (the
//! node range it may use now, its active nodes, the gateway's load over the last minute
//! and the scheduler's last scale decision with its reason).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use clap::Args;
use dayshift_config::billing::to_cents;
use dayshift_config::schedule::describe::{self, Day, PoolWindows};
use dayshift_config::schedule::{Interval, NodeRange, resolve};
use dayshift_config::{Config, Schedule, calendar};
use dayshift_scheduler::budget::{Budget, Forecast};
use rust_decimal::Decimal;
use serde_json::json;

use super::output;
use super::stored::{self, Failure};
use crate::elastic_view::{self, PoolScaling};
use crate::store::NodeRow;

/// Arguments of `dayshift status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// dayshift.toml of the cluster (names the store and the schedule).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Evaluate the schedule and the month's cost at this instant (RFC 3339) instead of
    /// now, e.g. to see what tomorrow morning looks like. Nodes are always as stored.
    #[arg(long)]
    pub at: Option<String>,
}

/// Runs `dayshift status`.
pub fn run(args: StatusArgs) -> ExitCode {
    match status(args) {
        Ok(code) => code,
        Err(f) => stored::report(f),
    }
}

/// Nodes the scheduler wants now: its last decision's target when that was taken for
/// the range in force, else the range's floor (a fixed window: its count).
fn wanted_now(scaling: Option<&PoolScaling>, range: NodeRange) -> u32 {
    scaling
        .and_then(|s| s.decision.as_ref())
        .filter(|d| d.range == range)
        .map(|d| d.target)
        .unwrap_or(range.min)
}

/// One pool's line of the status.
#[derive(Debug, Clone)]
struct PoolStatus {
    pool: String,
    model: Option<String>,
    wanted_now: u32,
    today: Vec<Interval>,
    nodes: BTreeMap<String, usize>,
    open_until: Option<DateTime<Utc>>,
    next_window: Option<Interval>,
    /// Today and now/next in words (shared with the status page).
    day: Day,
    windows: PoolWindows,
    /// Range now, active nodes, load and last scale decision.
    scaling: PoolScaling,
}

/// The month's money at an instant: the scheduler's own budget forecast, so `status`
/// shows the figures the budget stop acts on.
#[derive(Debug, Clone)]
struct Month {
    /// "YYYY-MM".
    name: String,
    figures: Forecast,
    budget: Option<Decimal>,
}

impl Month {
    fn spent(&self) -> Decimal {
        to_cents(self.figures.spent)
    }
    fn committed(&self) -> Decimal {
        to_cents(self.figures.committed)
    }
    fn forecast(&self) -> Decimal {
        to_cents(self.figures.total())
    }
    fn left(&self) -> Option<Decimal> {
        self.budget.map(|b| b - self.spent())
    }
    /// The budget stop's verdict (`None` without a budget).
    fn over(&self) -> Option<bool> {
        self.budget.map(|_| self.figures.over())
    }
}

fn status(args: StatusArgs) -> Result<ExitCode, Failure> {
    let config = stored::load_config(args.config.as_deref())?;
    let schedule = stored::load_schedule(&config)?;
    let tz = stored::timezone(schedule.as_ref());
    let now = match &args.at {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                Failure::invalid(format!(
                    "--at: expected an RFC 3339 instant such as 2026-11-23T08:00:00+01:00 ({e})"
                ))
            })?,
        None => Utc::now(),
    };
    let first_day = calendar::month_of(now, tz)
        .ok_or_else(|| Failure::invalid("--at: the month is out of range"))?;
    let (all_nodes, nodes, scaling) = stored::block_on(async {
        let store = stored::open_store(&config).await?;
        let all = store.list_nodes(true).await;
        let live = store.list_nodes(false).await;
        let read = |e| Failure::runtime(format!("cannot read the nodes: {e}"));
        let (all, live) = match (all, live) {
            (Ok(a), Ok(l)) => (a, l),
            (Err(e), _) | (_, Err(e)) => {
                store.close().await;
                return Err(read(e));
            }
        };
        let names = pool_names(&config, schedule.as_ref(), &live);
        let scaling =
            elastic_view::read(&store, &config, schedule.as_ref(), &names, &live, now).await;
        store.close().await;
        let scaling = scaling.map_err(|e| {
            Failure::runtime(format!(
                "cannot read the pools' load and scale decisions: {e}"
            ))
        })?;
        Ok((all, live, scaling))
    })?;
    let month = Month {
        name: first_day.format("%Y-%m").to_string(),
        figures: forecast(&config, schedule.as_ref(), tz, &all_nodes, now)?,
        budget: config.budget_monthly,
    };
    let pools = pool_status(&config, schedule.as_ref(), &nodes, now, tz, scaling);
    let next_change = schedule.as_ref().and_then(|s| s.next_change(now));
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for n in &nodes {
        *by_state.entry(n.state.as_str().to_string()).or_insert(0) += 1;
    }
    if args.json {
        return Ok(output::print_json(&status_json(
            &config,
            schedule.is_some(),
            tz,
            now,
            &pools,
            &by_state,
            next_change,
            &month,
        )));
    }
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M").to_string();
    println!(
        "Cluster \"{}\" ({}), {} {}",
        config.cluster,
        config.provider.kind,
        local(now),
        tz
    );
    if schedule.is_none() {
        println!("No schedule: dayshift.toml names none, so no window opens.");
    }
    let mut t = output::table(&[
        "pool",
        "model",
        "wanted now",
        "today",
        "nodes",
        "next window",
    ]);
    for p in &pools {
        let today = describe::describe_day(&p.day, tz);
        let nodes = if p.nodes.is_empty() {
            "none".to_string()
        } else {
            counts(&p.nodes)
        };
        let next = describe::describe_windows(&p.windows, tz);
        t.add_row(vec![
            p.pool.clone(),
            p.model.clone().unwrap_or_else(|| "-".into()),
            p.wanted_now.to_string(),
            today,
            nodes,
            next,
        ]);
    }
    println!("{t}");
    let mut t = output::table(&[
        "pool",
        "range now",
        "active nodes",
        "load (1 min)",
        "last scale decision",
    ]);
    for p in &pools {
        t.add_row(vec![
            p.pool.clone(),
            p.scaling.range.to_string(),
            p.scaling.nodes.to_string(),
            elastic_view::load_text(p.scaling.load),
            elastic_view::decision_text(p.scaling.decision.as_ref(), tz),
        ]);
    }
    println!("Scaling (load: requests in flight + queued, all ingress replicas)");
    println!("{t}");
    let live: usize = by_state.values().sum();
    if live == 0 {
        println!("Nodes: none live");
    } else {
        println!("Nodes: {} ({live} live)", counts(&by_state));
    }
    match next_change {
        Some(c) => println!("Next schedule change: {} {tz}", local(c)),
        None => println!("Next schedule change: none in the next two years"),
    }
    let mut money = format!(
        "Month {} to date: {:.2} EUR spent; the rest of the schedule commits {:.2} EUR (forecast {:.2} EUR)",
        month.name,
        month.spent(),
        month.committed(),
        month.forecast()
    );
    match (month.budget, month.left()) {
        (Some(b), Some(left)) => {
            money.push_str(&format!("; budget {b:.2} EUR, {left:.2} EUR left"));
            if month.over() == Some(true) {
                money.push_str(" (the forecast crosses the budget: windows will be skipped)");
            }
        }
        _ => money.push_str("; no monthly budget set"),
    }
    println!("{money}");
    Ok(ExitCode::SUCCESS)
}

/// "ready 1, booting 2".
fn counts(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The month's figures at `now` from the scheduler's budget code, with the inputs the
/// scheduler gives it: `config`'s budget rule and prices, the schedule, every stored node
/// (final ones too). Without a schedule the month is taken in `tz` and nothing is committed.
fn forecast(
    config: &Config,
    schedule: Option<&Schedule>,
    tz: Tz,
    nodes: &[NodeRow],
    now: DateTime<Utc>,
) -> Result<Forecast, Failure> {
    let none = Schedule {
        timezone: tz,
        windows: Vec::new(),
        holidays: Vec::new(),
        overrides: Vec::new(),
    };
    let budget = Budget::with_cap(config, config.budget_monthly.unwrap_or_default());
    let nodes: Vec<_> = nodes.iter().map(|r| r.lifecycle(0)).collect();
    budget
        .forecast(schedule.unwrap_or(&none), &nodes, now)
        .ok_or_else(|| Failure::invalid("--at: the month is out of range"))
}

/// The pools to show: the config's, then any other the schedule or a node names.
fn pool_names(config: &Config, schedule: Option<&Schedule>, nodes: &[NodeRow]) -> Vec<String> {
    let mut names: Vec<String> = config.pool_names();
    if let Some(s) = schedule {
        for p in s.pools() {
            if !names.contains(&p) {
                names.push(p);
            }
        }
    }
    for n in nodes {
        if !names.contains(&n.pool) {
            names.push(n.pool.clone());
        }
    }
    names
}

fn pool_status(
    config: &Config,
    schedule: Option<&Schedule>,
    nodes: &[NodeRow],
    now: DateTime<Utc>,
    tz: Tz,
    scaling: Vec<PoolScaling>,
) -> Vec<PoolStatus> {
    let names = pool_names(config, schedule, nodes);
    let today = now.with_timezone(&tz).date_naive();
    let (day_start, day_end) = match (
        resolve(tz, today, 0),
        today.succ_opt().and_then(|d| resolve(tz, d, 0)),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => (now, now),
    };
    let today_plan = schedule
        .map(|s| s.plan(day_start, day_end))
        .unwrap_or_default();
    let ahead = schedule
        .map(|s| s.plan(now, now + Duration::days(64)))
        .unwrap_or_default();
    names
        .into_iter()
        .map(|pool| {
            let mut by_state = BTreeMap::new();
            for n in nodes.iter().filter(|n| n.pool == pool) {
                *by_state.entry(n.state.as_str().to_string()).or_insert(0) += 1;
            }
            let mine = || ahead.iter().filter(|i| i.pool == pool);
            let windows = schedule
                .map(|s| s.pool_windows(&pool, now))
                .unwrap_or(PoolWindows {
                    current: None,
                    next: None,
                });
            PoolStatus {
                day: schedule
                    .map(|s| s.pool_day(&pool, today))
                    .unwrap_or(Day::Closed),
                model: super::nodes::model(config, &pool).map(str::to_string),
                wanted_now: wanted_now(
                    scaling.iter().find(|s| s.pool == pool),
                    elastic_view::range_now(config, schedule, &pool, now),
                ),
                today: today_plan
                    .iter()
                    .filter(|i| i.pool == pool)
                    .cloned()
                    .collect(),
                nodes: by_state,
                open_until: windows.current.as_ref().and_then(|c| c.end),
                windows,
                next_window: mine().find(|i| i.start > now).cloned(),
                scaling: scaling
                    .iter()
                    .find(|s| s.pool == pool)
                    .cloned()
                    .unwrap_or_else(|| PoolScaling {
                        pool: pool.clone(),
                        range: elastic_view::range_now(config, schedule, &pool, now),
                        nodes: 0,
                        load: None,
                        decision: None,
                    }),
                pool,
            }
        })
        .collect()
}

fn interval_json(i: &Interval) -> serde_json::Value {
    json!({
        "start": i.start.to_rfc3339(),
        "end": i.end.to_rfc3339(),
        "nodes": i.nodes,
        "min_nodes": i.min_nodes,
    })
}

#[allow(clippy::too_many_arguments)]
fn status_json(
    config: &Config,
    has_schedule: bool,
    tz: Tz,
    now: DateTime<Utc>,
    pools: &[PoolStatus],
    by_state: &BTreeMap<String, usize>,
    next_change: Option<DateTime<Utc>>,
    month: &Month,
) -> serde_json::Value {
    let pools: Vec<serde_json::Value> = pools
        .iter()
        .map(|p| {
            json!({
                "pool": p.pool,
                "model": p.model,
                "wanted_now": p.wanted_now,
                "today": p.today.iter().map(interval_json).collect::<Vec<_>>(),
                "nodes": p.nodes,
                "open_until": p.open_until.map(|t| t.to_rfc3339()),
                "next_window": p.next_window.as_ref().map(interval_json),
                "scaling": elastic_view::scaling_json(&p.scaling),
            })
        })
        .collect();
    let cents = |d: Decimal| format!("{:.2}", to_cents(d));
    json!({
        "cluster": config.cluster,
        "provider": config.provider.kind.as_str(),
        "at": now.to_rfc3339(),
        "timezone": tz.name(),
        "schedule": has_schedule,
        "pools": pools,
        "nodes_by_state": by_state,
        "next_change": next_change.map(|t| t.to_rfc3339()),
        "month": {
            "month": month.name,
            "spent": cents(month.spent()),
            "committed": cents(month.committed()),
            "forecast": cents(month.forecast()),
            "budget": month.budget.map(cents),
            "budget_left": month.left().map(cents),
            "over_budget": month.over(),
        },
    })
}
