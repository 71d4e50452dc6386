//! `fake-hcloud --listen 127.0.0.1:PORT [--no-hosts]`: the fake Hetzner Cloud API,
//! under `http://ADDR/v1`, for trying dayshift or any Hetzner client without an account.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dayshift_tests::{FakeHcloud, FakeOptions};

/// Command line of `fake-hcloud`.
#[derive(Debug, Parser)]
#[command(
    name = "fake-hcloud",
    about = "A fake Hetzner Cloud API (API under http://ADDR/v1)"
)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:8480")]
    listen: SocketAddr,
    /// Keep servers as records only: no sshd test host per server.
    #[arg(long)]
    no_hosts: bool,
    /// How long create actions run, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    action_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen must be a loopback address (127.0.0.0/8), got {}",
            args.listen
        );
    }
    let fake = FakeHcloud::start(FakeOptions {
        listen: args.listen,
        hosts: !args.no_hosts,
        action_duration: Duration::from_millis(args.action_ms),
    })
    .await?;
    println!(
        "fake-hcloud: API at {} (any non-empty bearer token)",
        fake.endpoint()
    );
    tokio::signal::ctrl_c().await?;
    drop(fake);
    Ok(())
}
