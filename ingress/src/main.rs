//! `dayshift`: the ingress daemon (`dayshift serve`) and the operator CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use dayshift::cli;

/// dayshift: a private OpenAI-compatible endpoint on GPU servers rented only during office hours.
#[derive(Parser)]
#[command(name = "dayshift", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a dayshift.toml (and the schedule it names).
    Config {
        #[command(subcommand)]
        command: cli::config::ConfigCommand,
    },
    /// Check a schedule file or print its plan for a range.
    Schedule {
        #[command(subcommand)]
        command: cli::schedule::ScheduleCommand,
    },
    /// What the GPUs cost: the month's ledger from the store (with the node-hours saved
    /// against the fixed window plan), or `estimate` from the schedule (load-aware too when
    /// the store holds a load history).
    Cost(cli::cost::CostArgs),
    /// The cluster's nodes from the store: id, pool, state, age, address, model, in flight.
    Nodes(cli::nodes::NodesArgs),
    /// Today's schedule per pool, nodes by state, next window, month-to-date cost and budget,
    /// and each pool's scaling: range now, active nodes, load, last scale decision.
    Status(cli::status::StatusArgs),
    #[command(flatten)]
    Server(cli::server::ServerCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config { command } => cli::config::run(command),
        Command::Schedule { command } => cli::schedule::run(command),
        Command::Cost(args) => cli::cost::run(args),
        Command::Nodes(args) => cli::nodes::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Server(command) => cli::server::run(command),
    }
}
