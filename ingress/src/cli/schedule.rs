//! `dayshift schedule check|plan`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Duration, Utc};
use clap::Subcommand;
use dayshift_config::schedule::NodeRange;
use dayshift_config::{Config, Schedule};
use serde_json::json;

use super::output;

/// The longest range `schedule plan` accepts.
const MAX_PLAN_DAYS: i64 = 3700;

/// `dayshift schedule …`
#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Validate a schedule file; one line per problem, exit 2.
    Check {
        /// Path of schedule.toml.
        file: PathBuf,
        /// dayshift.toml whose pools the schedule may name.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the intervals of a range, merged per pool.
    Plan {
        /// Path of schedule.toml.
        #[arg(long)]
        schedule: PathBuf,
        /// Start of the range (RFC 3339, e.g. 2026-11-23T00:00:00Z).
        #[arg(long)]
        from: String,
        /// End of the range (RFC 3339).
        #[arg(long)]
        to: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `dayshift schedule …`.
pub fn run(command: ScheduleCommand) -> ExitCode {
    match command {
        ScheduleCommand::Check { file, config } => check(&file, config.as_deref()),
        ScheduleCommand::Plan {
            schedule,
            from,
            to,
            json,
        } => plan(&schedule, &from, &to, json),
    }
}

fn check(file: &Path, config: Option<&Path>) -> ExitCode {
    let loaded = match config.map(Config::load) {
        Some(Ok(c)) => Schedule::load_for_pools(file, &c.pool_caps()),
        Some(Err(p)) => return output::problems(&p),
        None => Schedule::load(file, None),
    };
    match loaded {
        Ok(s) => {
            println!(
                "{}: ok ({} window(s), {} holiday rule(s), {} override(s), time zone {})",
                file.display(),
                s.windows.len(),
                s.holidays.len(),
                s.overrides.len(),
                s.timezone
            );
            ExitCode::SUCCESS
        }
        Err(p) => output::problems(&p),
    }
}

/// Parses an RFC 3339 instant given on the command line.
pub fn parse_instant(flag: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{flag}: expected an RFC 3339 time such as 2026-11-23T08:00:00Z, found \"{text}\" ({e})"))
}

fn plan(file: &Path, from: &str, to: &str, json: bool) -> ExitCode {
    let (from, to) = match (parse_instant("--from", from), parse_instant("--to", to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return output::invalid(&e),
    };
    if to <= from {
        return output::invalid("--to must be after --from");
    }
    if to - from > Duration::days(MAX_PLAN_DAYS) {
        return output::invalid(&format!("the range may span at most {MAX_PLAN_DAYS} days"));
    }
    let schedule = match Schedule::load(file, None) {
        Ok(s) => s,
        Err(p) => return output::problems(&p),
    };
    let intervals = schedule.plan(from, to);
    if json {
        let items: Vec<_> = intervals
            .iter()
            .map(|i| {
                json!({
                    "pool": i.pool,
                    "start": i.start.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    "end": i.end.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    "nodes": i.nodes,
                    "min_nodes": i.min_nodes,
                })
            })
            .collect();
        return output::print_json(&json!({
            "timezone": schedule.timezone.name(),
            "intervals": items,
        }));
    }
    let tz = schedule.timezone;
    let mut t = output::table(&["pool", "start", "end", "hours", "nodes"]);
    for i in &intervals {
        let hours = (i.end - i.start).num_minutes() as f64 / 60.0;
        t.add_row(vec![
            i.pool.clone(),
            i.start
                .with_timezone(&tz)
                .format("%a %Y-%m-%d %H:%M %Z")
                .to_string(),
            i.end
                .with_timezone(&tz)
                .format("%a %Y-%m-%d %H:%M %Z")
                .to_string(),
            format!("{hours:.2}"),
            NodeRange {
                min: i.min_nodes,
                max: i.nodes,
            }
            .to_string(),
        ]);
    }
    println!(
        "Schedule {} in {} ({} interval(s))",
        file.display(),
        tz,
        intervals.len()
    );
    println!("{t}");
    ExitCode::SUCCESS
}
