//! Settings of the SSH bootstrap.

use std::time::Duration;

/// How the uploaded node binary is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartCommand {
    /// Install a systemd unit with this name and `systemctl enable --now` it.
    Systemd {
        /// Unit name without `.service`, e.g. `dayshift-node`.
        unit: String,
    },
    /// Run this shell command; `{binary}`, `{config}` and `{dir}` are replaced by
    /// quoted paths. For test hosts without systemd, e.g.
    /// `nohup {binary} --config {config} >{dir}/node.log 2>&1 </dev/null &`.
    Shell(String),
}

impl Default for StartCommand {
    fn default() -> Self {
        StartCommand::Systemd {
            unit: "dayshift-node".into(),
        }
    }
}

/// Where and how to bootstrap a node over SSH.
#[derive(Debug, Clone)]
pub struct BootstrapSettings {
    /// SSH port of the server.
    pub port: u16,
    /// User to log in as.
    pub user: String,
    /// Directory on the server receiving the binary and its config.
    pub install_dir: String,
    /// File name of the binary there.
    pub binary_name: String,
    /// File name of the config there.
    pub config_name: String,
    /// How to start it.
    pub start: StartCommand,
    /// How long to keep trying to reach sshd (a fresh server may still be booting).
    pub connect_patience: Duration,
    /// Timeout of each step.
    pub step_timeout: Duration,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            port: 22,
            user: "root".into(),
            install_dir: "/opt/dayshift".into(),
            binary_name: "dayshift-node".into(),
            config_name: "node.toml".into(),
            start: StartCommand::default(),
            connect_patience: Duration::from_secs(120),
            step_timeout: Duration::from_secs(120),
        }
    }
}
