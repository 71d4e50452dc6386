//! Subcommands that work with a running or stored cluster: `serve`, `keys`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use dayshift_config::Config;
use dayshift_config::pool_fit::{self, Level};

use crate::store::{KeyLimits, Store};

/// Subcommands owned by the ingress server side.
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Run the ingress: gateway, node API, model mirror, admin API, status page.
    Serve {
        /// Path of dayshift.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage API keys (stored hashed; the secret is shown once, at creation).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// `dayshift keys …`.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (once).
    Create {
        /// Path of dayshift.toml.
        #[arg(long)]
        config: PathBuf,
        /// A name for the key (who or what uses it).
        #[arg(long)]
        name: String,
        /// Requests per minute allowed (default: unlimited).
        #[arg(long)]
        rpm: Option<i64>,
        /// Prompt + completion tokens per UTC day allowed (default: unlimited).
        #[arg(long)]
        tokens_per_day: Option<i64>,
        /// Print JSON (`{"key":…, "secret":…}`).
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Path of dayshift.toml.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id or visible prefix.
    Revoke {
        /// Path of dayshift.toml.
        #[arg(long)]
        config: PathBuf,
        /// Key id (`key_…`) or its visible prefix (`dsk-…`).
        key: String,
    },
}

/// Runs a server-side subcommand.
pub fn run(command: ServerCommand) -> ExitCode {
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match command {
            ServerCommand::Serve { config } => {
                let cfg = load(&config)?;
                // A pool whose model no server type's GPU can hold would only rent
                // servers whose nodes refuse to start: refused here, with the figures.
                model_fit(&config, &cfg)?;
                crate::server::serve(cfg).await
            }
            ServerCommand::Keys { command } => keys(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DAYSHIFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The model-fit check of `dayshift config check` at start: findings logged, and a pool
/// that fits none of its server types refused (the error names them all) before
/// anything is rented. dayshift.toml is read once per start (only the schedule file is
/// reloaded), so this is its only run.
fn model_fit(path: &Path, cfg: &Config) -> anyhow::Result<()> {
    let mut refused = Vec::new();
    for f in pool_fit::check(cfg) {
        match f.level {
            Level::Refused => refused.push(format!(
                "{}: pools.{}: {}",
                path.display(),
                f.pool,
                f.message
            )),
            Level::Warning => tracing::warn!(pool = %f.pool, "{}", f.message),
            Level::Note | Level::Fits => tracing::info!(pool = %f.pool, "{}", f.message),
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", refused.join("\n"))
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|p| anyhow::anyhow!("{p}"))
}

async fn open_store(config: &Path) -> anyhow::Result<Store> {
    let cfg = load(config)?;
    Ok(Store::open(&cfg.database_url).await?)
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            config,
            name,
            rpm,
            tokens_per_day,
            json,
        } => {
            let store = open_store(&config).await?;
            let limits = KeyLimits {
                requests_per_minute: rpm,
                tokens_per_day,
            };
            let k = store.create_api_key(&name, limits).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"key": k.key, "secret": k.secret.expose()})
                );
            } else {
                println!(
                    "Created API key {} ({}) named {:?}.",
                    k.key.id, k.key.prefix, k.key.name
                );
                println!("Secret (shown only now; store it safely):");
                println!("{}", k.secret.expose());
            }
            store.close().await;
        }
        KeysCommand::List { config, json } => {
            let store = open_store(&config).await?;
            let keys = store.list_api_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!(
                    "{:<14} {:<14} {:<20} {:>6} {:>11}  {:<20} status",
                    "id", "prefix", "name", "rpm", "tokens/day", "created"
                );
                for k in keys {
                    let lim =
                        |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<14} {:<14} {:<20} {:>6} {:>11}  {:<20} {}",
                        k.id,
                        k.prefix,
                        k.name,
                        lim(k.limits.requests_per_minute),
                        lim(k.limits.tokens_per_day),
                        when(k.created_at),
                        k.revoked_at
                            .map(|r| format!("revoked {}", when(r)))
                            .unwrap_or_else(|| "active".into())
                    );
                }
            }
            store.close().await;
        }
        KeysCommand::Revoke { config, key } => {
            let store = open_store(&config).await?;
            let done = store.revoke_api_key(&key).await?;
            store.close().await;
            if !done {
                anyhow::bail!("no active key with id or prefix {key:?} (see `dayshift keys list`)");
            }
            println!("Revoked {key}. Running servers refuse it within seconds.");
        }
    }
    Ok(())
}
