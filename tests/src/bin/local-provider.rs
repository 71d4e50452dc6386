//! `local-provider --state DIR --command CMD [--arg A]... create NAME|list|delete ID`:
//! drives dayshift's local provider from the shell, one process per call, so tests (and
//! people) can check that its servers outlive the process that created them.

use clap::{Parser, Subcommand};
use dayshift_provisioning::{
    LabelSelector, LocalProvider, LocalSettings, Provider, ServerSpec, dayshift_labels,
};

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "local-provider")]
struct Args {
    /// State directory of the provider.
    #[arg(long)]
    state: std::path::PathBuf,
    /// Program each server runs.
    #[arg(long)]
    command: std::path::PathBuf,
    /// Its arguments (`{port}`, `{host}`, `{dir}`, `{id}`, `{name}` are replaced).
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// What to do.
    #[command(subcommand)]
    action: Action,
}

/// Actions.
#[derive(Debug, Subcommand)]
enum Action {
    /// Create a server in cluster `cli`, pool `default`; prints it as JSON.
    Create {
        /// Server name (also its node id).
        name: String,
    },
    /// Print every server as JSON lines.
    List,
    /// Delete a server by id.
    Delete {
        /// Server id.
        id: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut settings = LocalSettings::new(a.command, a.args, a.state);
    settings.restart_on_exit = false;
    let p = LocalProvider::new(settings).await?;
    match a.action {
        Action::Create { name } => {
            let spec = ServerSpec {
                labels: dayshift_labels("cli", &name, "default"),
                name,
                server_type: "local".into(),
                image: "local".into(),
                location: None,
                ssh_keys: vec![],
                user_data: None,
                fallbacks: vec![],
            };
            println!("{}", serde_json::to_string(&p.create(&spec).await?)?);
        }
        Action::List => {
            for s in p.list(&LabelSelector::all()).await? {
                println!("{}", serde_json::to_string(&s)?);
            }
        }
        Action::Delete { id } => p.delete(&id).await?,
    }
    Ok(())
}
