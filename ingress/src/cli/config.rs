//! `dayshift config check FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use dayshift_config::{Config, Problems, Schedule};

use super::output;

/// `dayshift config …`
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate dayshift.toml and the schedule file it names; one line per problem, exit 2.
    Check {
        /// Path of dayshift.toml.
        file: PathBuf,
    },
}

/// Runs `dayshift config …`.
pub fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Check { file } => check(&file),
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(p) => return output::problems(&p),
    };
    let mut all = Problems(Vec::new());
    if let Some(schedule) = &config.schedule
        && let Err(p) = Schedule::load(schedule, Some(&config.pool_names()))
    {
        all.0.extend(p.0);
    }
    if !all.0.is_empty() {
        return output::problems(&all);
    }
    println!(
        "{}: ok (cluster \"{}\", {} pool(s), provider {:?})",
        file.display(),
        config.cluster,
        config.pools.len(),
        config.provider.kind
    );
    ExitCode::SUCCESS
}
