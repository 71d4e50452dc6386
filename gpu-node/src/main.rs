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
        /// Architecture: llama, qwen3, gemma3_text or mistral.
        #[arg(long, default_value = "llama")]
        arch: String,
        /// Ship a tool-capable chat template (Qwen2.5's Hermes format) instead of
        /// plain ChatML.
        #[arg(long)]
        tool_template: bool,
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
        Cmd::MakeTestModel {
            dir,
            arch,
            tool_template,
        } => match dayshift_node::testmodel::Family::parse(&arch) {
            None => Err(anyhow::anyhow!(
                "--arch {arch:?} is not one of llama, qwen3, gemma3_text, mistral"
            )),
            Some(family) => dayshift_node::testmodel::make_test_model_family(&dir, family)
                .and_then(|()| {
                    if tool_template {
                        dayshift_node::testmodel::set_chat_template(
                            &dir,
                            dayshift_node::testmodel::TOOL_CHAT_TEMPLATE,
                        )
                    } else {
                        Ok(())
                    }
                }),
        },
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
