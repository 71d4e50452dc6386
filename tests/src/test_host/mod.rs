//! Real OpenSSH test hosts: one `sshd` per fake server, on the server's loopback IPv4,
//! configured from the cloud-init user data the server was created with.

mod cloud_init;
mod procs;
mod sshd;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use serde_json::{Value, json};

pub use cloud_init::{CloudConfig, WriteFile};
pub use procs::kill_marked;
pub use sshd::SSHD;

/// The port test hosts' sshd prefer: 22 as root, 2222 otherwise.
pub fn ssh_port() -> u16 {
    if procs::is_root() { 22 } else { 2222 }
}

/// The preferred port, unless something (a system sshd on `0.0.0.0:22`) holds it on
/// every loopback address; then 2222.
fn usable_ssh_port() -> u16 {
    let probe = std::net::Ipv4Addr::new(127, 253, 254, 253);
    let preferred = ssh_port();
    if std::net::TcpListener::bind((probe, preferred)).is_ok() {
        preferred
    } else {
        tracing::warn!(
            preferred,
            "port taken on all loopback addresses; test hosts use 2222"
        );
        2222
    }
}

/// The user that can log in on a test host: `root` as root, else the current user.
pub fn ssh_user() -> String {
    if procs::is_root() {
        "root".into()
    } else {
        std::env::var("USER").unwrap_or_else(|_| "root".into())
    }
}

struct Host {
    ip: Ipv4Addr,
    dir: PathBuf,
    marker: String,
    sshd: sshd::Sshd,
}

/// Starts and stops test hosts; stops them all when dropped.
pub struct HostManager {
    port: u16,
    root: tempfile::TempDir,
    instance: String,
    hosts: Mutex<BTreeMap<i64, Host>>,
}

impl HostManager {
    /// A manager keeping host files under a fresh temporary directory.
    pub fn new() -> anyhow::Result<Self> {
        sshd::check_installed()?;
        let root = tempfile::Builder::new()
            .prefix("fake-hcloud-hosts-")
            .tempdir()?;
        let instance = format!("{}-{}", std::process::id(), rand::random::<u32>());
        Ok(Self {
            port: usable_ssh_port(),
            root,
            instance,
            hosts: Mutex::new(BTreeMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Host>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The port this manager's sshd listen on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when nothing listens on `ip:port()`.
    pub fn port_free(&self, ip: Ipv4Addr) -> bool {
        std::net::TcpListener::bind((ip, self.port)).is_ok()
    }

    /// Brings a host up for server `id` and waits until its sshd accepts connections.
    /// With `ignore_host_key`, sshd generates its own host key instead of the user data's.
    pub async fn start(
        &self,
        id: i64,
        ip: Ipv4Addr,
        user_data: Option<&str>,
        provider_keys: &[String],
        ignore_host_key: bool,
    ) -> anyhow::Result<()> {
        let dir = self.root.path().join(format!("server-{id}"));
        std::fs::create_dir_all(dir.join("root"))?;
        let mut config = match user_data {
            Some(u) => {
                CloudConfig::parse(u).context("reading the server's cloud-init user data")?
            }
            None => CloudConfig::default(),
        };
        if ignore_host_key {
            // As an image without cloud-init, or a machine in the middle, would: sshd
            // presents a key of its own.
            config.ssh_keys.clear();
        }
        let mut authorized: Vec<String> = provider_keys.to_vec();
        authorized.extend(config.ssh_authorized_keys.iter().cloned());
        config.apply_files(&dir.join("root"))?;
        let marker = format!("{}-{id}", self.instance);
        let sshd = sshd::Sshd::start(&dir, ip, self.port, &config, &authorized, &marker).await?;
        tracing::info!(server = id, %ip, "test host up");
        self.lock().insert(
            id,
            Host {
                ip,
                dir,
                marker,
                sshd,
            },
        );
        Ok(())
    }

    /// Stops the host of server `id`: sshd and every process started through it.
    pub fn stop(&self, id: i64) {
        let host = self.lock().remove(&id);
        if let Some(mut h) = host {
            h.sshd.stop();
            kill_marked(&h.marker);
            tracing::info!(server = id, ip = %h.ip, "test host down");
        }
    }

    /// Stops every host.
    pub fn stop_all(&self) {
        let ids: Vec<i64> = self.lock().keys().copied().collect();
        for id in ids {
            self.stop(id);
        }
    }

    /// The directory standing for `/` on the host of server `id` (where `write_files`
    /// land); install dayshift there when bootstrapping a test host.
    pub fn files_root(&self, id: i64) -> Option<PathBuf> {
        self.lock().get(&id).map(|h| h.dir.join("root"))
    }

    /// True while a host for server `id` is up.
    pub fn is_up(&self, id: i64) -> bool {
        self.lock().contains_key(&id)
    }

    /// How many processes started on the host of `id` are alive.
    pub fn live_processes(&self, id: i64) -> usize {
        let marker = format!("{}-{id}", self.instance);
        procs::marked_pids(&marker).len()
    }

    /// JSON description of every host (for `/__admin/hosts`).
    pub fn describe(&self) -> Vec<Value> {
        self.lock()
            .iter()
            .map(|(id, h)| json!({ "server_id": id, "ip": h.ip.to_string(), "ssh_port": self.port, "dir": h.dir }))
            .collect()
    }
}

impl Drop for HostManager {
    fn drop(&mut self) {
        self.stop_all();
    }
}
