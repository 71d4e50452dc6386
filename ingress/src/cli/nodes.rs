//! `dayshift nodes [--all] [--json]`: the cluster's nodes as the store has them (no
//! running server needed): id, pool, state, age, address, model, requests in flight.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use dayshift_config::Config;
use serde_json::json;

use super::output;
use super::stored::{self, Failure};
use crate::store::{NodeRow, NodeState};

/// Arguments of `dayshift nodes`.
#[derive(Args, Debug)]
pub struct NodesArgs {
    /// dayshift.toml of the cluster (names the store; pools give each node's model).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also list nodes that are `deleted` or `failed`.
    #[arg(long)]
    pub all: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `dayshift nodes`.
pub fn run(args: NodesArgs) -> ExitCode {
    match nodes(args) {
        Ok(code) => code,
        Err(f) => stored::report(f),
    }
}

/// Reads the nodes from the config's store (`include_final`: `deleted`/`failed` too).
pub async fn read_nodes(config: &Config, include_final: bool) -> Result<Vec<NodeRow>, Failure> {
    let store = stored::open_store(config).await?;
    let nodes = store
        .list_nodes(include_final)
        .await
        .map_err(|e| Failure::runtime(format!("cannot read the nodes: {e}")));
    store.close().await;
    nodes
}

fn nodes(args: NodesArgs) -> Result<ExitCode, Failure> {
    let config = stored::load_config(args.config.as_deref())?;
    let list = stored::block_on(read_nodes(&config, args.all))?;
    let now = Utc::now();
    if args.json {
        let items: Vec<serde_json::Value> =
            list.iter().map(|n| node_json(n, &config, now)).collect();
        return Ok(output::print_json(&json!({
            "at": now.to_rfc3339(),
            "nodes": items,
        })));
    }
    let mut t = output::table(&[
        "id",
        "pool",
        "state",
        "age",
        "address",
        "model",
        "in flight",
    ]);
    for n in &list {
        t.add_row(vec![
            n.id.clone(),
            n.pool.clone(),
            n.state.as_str().to_string(),
            age(now, born_at(n)),
            address(n).unwrap_or("-").to_string(),
            model(&config, &n.pool).unwrap_or("-").to_string(),
            in_flight(n)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    if list.is_empty() {
        println!(
            "No {}nodes in the store.",
            if args.all { "" } else { "live " }
        );
        if !args.all {
            println!("(`--all` lists deleted and failed ones too.)");
        }
    } else {
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The model a pool serves, from the config.
pub fn model<'a>(config: &'a Config, pool: &str) -> Option<&'a str> {
    config.pools.get(pool).map(|p| p.model.as_str())
}

/// Where a node's age is counted from (unix ms): its server's creation, else its row's.
fn born_at(n: &NodeRow) -> i64 {
    n.server_created_at.unwrap_or(n.created_at)
}

/// Where the node is reached: the server's address from the provider, else the API
/// URL it registered.
fn address(n: &NodeRow) -> Option<&str> {
    n.address.as_deref().or(n.api_url.as_deref())
}

/// Requests in flight on the node at its last heartbeat (only a `ready` or `draining`
/// node serves any).
fn in_flight(n: &NodeRow) -> Option<i64> {
    matches!(n.state, NodeState::Ready | NodeState::Draining).then_some(n.in_flight)
}

/// "3d 4h", "2h 05m", "7m 12s", "40s".
pub fn age(now: DateTime<Utc>, since_ms: i64) -> String {
    let secs = (now.timestamp_millis() - since_ms).max(0) / 1000;
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// One node as JSON: the stored row (never the join token hash) plus its model, the
/// address shown (`address`, else `api_url`) and its age in seconds.
pub fn node_json(n: &NodeRow, config: &Config, now: DateTime<Utc>) -> serde_json::Value {
    let mut v = serde_json::to_value(n).unwrap_or_else(|_| json!({ "id": n.id }));
    if let Some(o) = v.as_object_mut() {
        o.insert("model".into(), json!(model(config, &n.pool)));
        o.insert("address".into(), json!(address(n)));
        o.insert(
            "age_secs".into(),
            json!((now.timestamp_millis() - born_at(n)).max(0) / 1000),
        );
    }
    v
}
