//! `dayshift-node`: the inference server that runs on a rented GPU server.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// dayshift-node: OpenAI-compatible inference server that registers with the dayshift ingress.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the models of a node config file until SIGTERM.
    Serve {
        /// The node config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write the deterministic tiny test Llama (HF layout) into DIR.
    MakeTestModel {
        /// Target directory (created if needed).
        dir: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::MakeTestModel { dir } => dayshift_node::testmodel::make_test_model(&dir),
        Cmd::Serve { config } => run_serve(config),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dayshift-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_serve(path: PathBuf) -> anyhow::Result<()> {
    let cfg = dayshift_config::node::NodeConfig::load(&path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(dayshift_node::server::serve(cfg))
}
