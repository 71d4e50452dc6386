//! `fake-scaleway --listen 127.0.0.1:PORT [--no-hosts]`: the fake Scaleway Instance API
//! (under `http://ADDR/instance/v1/zones/{zone}`), any non-empty `X-Auth-Token`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dayshift_tests::{FakeScaleway, ScalewayOptions};

/// Command line of `fake-scaleway`.
#[derive(Debug, Parser)]
#[command(name = "fake-scaleway", about = "A fake Scaleway Instance API")]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:8490")]
    listen: SocketAddr,
    /// Keep servers as records only: no sshd test host per server.
    #[arg(long)]
    no_hosts: bool,
    /// How long booting takes after poweron, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    boot_ms: u64,
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
    let fake = FakeScaleway::start(ScalewayOptions {
        listen: args.listen,
        hosts: !args.no_hosts,
        boot_duration: Duration::from_millis(args.boot_ms),
    })
    .await?;
    println!(
        "fake-scaleway: Instance API at {}/instance/v1/zones/{{zone}} (any X-Auth-Token)",
        fake.endpoint()
    );
    tokio::signal::ctrl_c().await?;
    drop(fake);
    Ok(())
}
