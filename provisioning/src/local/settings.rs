//! Settings of the local provider.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// How the local provider starts its "servers" (child processes).
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// Program to run per server, normally the `dayshift-node` binary.
    pub command: PathBuf,
    /// Its arguments; `{port}`, `{host}`, `{dir}`, `{id}` and `{name}` are replaced.
    pub args: Vec<String>,
    /// Extra environment variables for the child.
    pub env: Vec<(String, String)>,
    /// Directory holding one work directory per server; survives restarts.
    pub state_dir: PathBuf,
    /// Address the children listen on, reported as the server's IPv4.
    pub host: Ipv4Addr,
    /// How long a child gets after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// Restart a child that exited (it stays `off` once `max_restarts` is reached).
    pub restart_on_exit: bool,
    /// Restarts allowed per server.
    pub max_restarts: u32,
    /// How often children are checked.
    pub supervise_interval: Duration,
}

impl LocalSettings {
    /// Settings running `command` with `args`, keeping state under `state_dir`.
    pub fn new(
        command: impl Into<PathBuf>,
        args: Vec<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            command: command.into(),
            args,
            env: Vec::new(),
            state_dir: state_dir.into(),
            host: Ipv4Addr::LOCALHOST,
            stop_timeout: Duration::from_secs(10),
            restart_on_exit: true,
            max_restarts: 5,
            supervise_interval: Duration::from_secs(2),
        }
    }
}
