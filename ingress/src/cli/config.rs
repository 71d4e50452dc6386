//! `dayshift config check FILE`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use dayshift_config::firewall::FirewallSetting;
use dayshift_config::pool_fit::{self, Level};
use dayshift_config::settings::ProviderKind;
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

fn check(file: &Path) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(p) => return output::problems(&p),
    };
    let mut all = Problems(Vec::new());
    if let Some(schedule) = &config.schedule
        && let Err(p) = Schedule::load_for_pools(schedule, &config.pool_caps())
    {
        all.0.extend(p.0);
    }
    if !all.0.is_empty() {
        return output::problems(&all);
    }
    if let Err(code) = check_firewall(file, &config) {
        return code;
    }
    if let Err(code) = check_model_fit(file, &config) {
        return code;
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

/// Whether each pool's model fits the GPU of its server types (weights + KV cache +
/// headroom, the figure the node checks at start): the fits on stdout, warnings and
/// notes on stderr, and exit 2 when a pool fits none of its server types.
fn check_model_fit(file: &Path, config: &Config) -> Result<(), ExitCode> {
    let refused = print_model_fit(file, config);
    if refused {
        Err(ExitCode::from(output::EXIT_INVALID))
    } else {
        Ok(())
    }
}

/// Prints the model-fit findings of every pool (`file: pools.NAME: …`); `true` when one
/// is refused.
fn print_model_fit(file: &Path, config: &Config) -> bool {
    let mut refused = false;
    for f in pool_fit::check(config) {
        let line = format!("{}: pools.{}: {}", file.display(), f.pool, f.message);
        match f.level {
            Level::Refused => {
                refused = true;
                eprintln!("{line}");
            }
            Level::Warning => eprintln!(
                "{}: pools.{}: warning: {}",
                file.display(),
                f.pool,
                f.message
            ),
            Level::Note => eprintln!("{}: pools.{}: note: {}", file.display(), f.pool, f.message),
            Level::Fits => println!("{line}"),
        }
    }
    refused
}

/// What `provider.firewall` leaves open to whom: a warning without a firewall on a
/// cloud provider, the rule set of `"auto"`, or a refusal when `"auto"` cannot find the
/// ingress's addresses.
fn check_firewall(file: &Path, config: &Config) -> Result<(), ExitCode> {
    if config.provider.kind == ProviderKind::Local {
        return Ok(());
    }
    let b = &config.provider.bootstrap;
    match &config.provider.firewall {
        None => eprintln!(
            "{}: warning: provider.firewall is not set: every rented {} server is reachable \
             from the whole internet on every port it listens on: the node's API \
             (TCP {}) and SSH (TCP {}). Set provider.firewall = \"auto\" so only the \
             ingress reaches them.",
            file.display(),
            config.provider.kind,
            b.node_port,
            b.ssh_port
        ),
        Some(FirewallSetting::Named(name)) => println!(
            "{}: rented servers get the provider's firewall \"{name}\" (its own rules; \
             `dayshift serve` refuses to start when it does not exist)",
            file.display()
        ),
        Some(FirewallSetting::Auto) => match config.firewall_sources() {
            Ok((sources, origin)) => {
                let from: Vec<String> = sources.iter().map(ToString::to_string).collect();
                println!(
                    "{}: firewall \"auto\" ({}): inbound only TCP {} and {} from {} (from {origin}); nothing else inbound",
                    file.display(),
                    dayshift_provisioning::firewall::managed_name(&config.cluster),
                    b.node_port,
                    b.ssh_port,
                    from.join(", ")
                );
            }
            Err(e) => {
                eprintln!("{}: provider.firewall: {e}", file.display());
                return Err(ExitCode::from(output::EXIT_INVALID));
            }
        },
    }
    Ok(())
}
