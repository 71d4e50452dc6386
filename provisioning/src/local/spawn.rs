//! Starting one child process for a local server.

use std::path::Path;
use std::process::Stdio;

use super::record::Record;
use super::{LocalSettings, process};
use crate::ProviderError;

/// Replaces `{port}`, `{host}`, `{dir}`, `{id}` and `{name}` in `arg`.
pub(super) fn expand(settings: &LocalSettings, arg: &str, r: &Record, dir: &Path) -> String {
    arg.replace("{port}", &r.port.to_string())
        .replace("{host}", &settings.host.to_string())
        .replace("{dir}", &dir.display().to_string())
        .replace("{id}", &r.id)
        .replace("{name}", &r.name)
}

/// Starts the child of record `r` in work directory `dir` (its own process group, output
/// appended to `node.log`) and returns its pid once the child's marker is visible (or it
/// exited). The child outlives this process.
pub(super) async fn spawn(
    settings: &LocalSettings,
    dir: &Path,
    r: &Record,
) -> Result<u32, ProviderError> {
    let log_path = dir.join("node.log");
    let open_err = |e: std::io::Error| {
        ProviderError::Transient(format!("opening {}: {e}", log_path.display()))
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(open_err)?;
    let log2 = log.try_clone().map_err(open_err)?;
    let mut cmd = tokio::process::Command::new(&settings.command);
    cmd.args(settings.args.iter().map(|a| expand(settings, a, r, dir)))
        .envs(settings.env.iter().map(|(k, v)| (k, v)))
        .env(process::MARKER_VAR, dir)
        .env("DAYSHIFT_NODE_PORT", r.port.to_string())
        .env("DAYSHIFT_NODE_ID", &r.id)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(|e| {
        ProviderError::Invalid(format!(
            "cannot start {}: {e} (check the local provider's command)",
            settings.command.display()
        ))
    })?;
    // Dropping the handle leaves the child running; tokio reaps it when it exits.
    let pid = child
        .id()
        .ok_or_else(|| ProviderError::Transient("child exited before it got a pid".into()))?;
    wait_visible(pid as i32, dir).await;
    Ok(pid)
}

/// The kernel lets the parent go on before the new program's environment is readable in
/// `/proc`; until then the child would look dead. Waits (bounded) until it is visible or
/// has exited.
async fn wait_visible(pid: i32, dir: &Path) {
    for _ in 0..500 {
        if process::alive(pid, dir) || !process::exists(pid) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    tracing::warn!(pid, dir = %dir.display(), "child's environment never became visible");
}
