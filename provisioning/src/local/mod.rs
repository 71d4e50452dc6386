//! The local provider: each "server" is a child process (normally `dayshift-node`) on this
//! machine with its own port and work directory. State lives on disk, so a restarted
//! ingress finds its children by pid file and kills orphans.

mod process;
mod record;
mod settings;
mod spawn;
mod supervisor;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use rust_decimal::Decimal;
use tokio::sync::Mutex;

pub use settings::LocalSettings;

use crate::ProviderError;
use crate::labels::{LABEL_CLUSTER, LABEL_NODE, LabelSelector};
use crate::provider::{
    BillingRule, LocationPrice, Provider, Server, ServerSpec, ServerStatus, ServerType,
};
use record::Record;

/// The only server type of the local provider.
pub const LOCAL_SERVER_TYPE: &str = "local";
/// The only location of the local provider.
pub const LOCAL_LOCATION: &str = "local";

/// Runs servers as supervised child processes.
pub struct LocalProvider {
    settings: LocalSettings,
    servers_dir: PathBuf,
    /// Held while creating, deleting or restarting a child, so they never interleave.
    ops_lock: Arc<Mutex<()>>,
    _supervisor: Option<supervisor::Supervisor>,
}

fn write_owner_only(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> ProviderError {
    ProviderError::Transient(format!("{what} {}: {e}", path.display()))
}

impl LocalProvider {
    /// Opens the state directory, adopts live children and kills orphans.
    pub async fn new(settings: LocalSettings) -> Result<Self, ProviderError> {
        let servers_dir = settings.state_dir.join("servers");
        std::fs::create_dir_all(&servers_dir).map_err(|e| io("creating", &servers_dir, e))?;
        let servers_dir = servers_dir
            .canonicalize()
            .map_err(|e| io("resolving", &servers_dir, e))?;
        let ops_lock = Arc::new(Mutex::new(()));
        let mut me = Self {
            settings,
            servers_dir,
            ops_lock,
            _supervisor: None,
        };
        me.recover().await;
        if me.settings.restart_on_exit {
            me._supervisor = Some(supervisor::Supervisor::start(
                me.settings.clone(),
                me.servers_dir.clone(),
                me.ops_lock.clone(),
            ));
        }
        Ok(me)
    }

    /// The directory holding one work directory per server.
    pub fn servers_dir(&self) -> &Path {
        &self.servers_dir
    }

    /// Work directory of a server id.
    pub fn work_dir(&self, id: &str) -> PathBuf {
        self.servers_dir.join(id)
    }

    /// Kills children without a record, and finishes deletions a crash interrupted.
    async fn recover(&self) {
        for (pid, dir) in process::children_under(&self.servers_dir) {
            let orphan = match record::read(&dir) {
                None => true,
                Some(r) => r.deleting || record::read_pid(&dir) != Some(pid),
            };
            if orphan {
                tracing::warn!(pid, dir = %dir.display(), "killing orphaned local node");
                process::stop(pid, &dir, self.settings.stop_timeout).await;
            }
        }
        let Ok(entries) = std::fs::read_dir(&self.servers_dir) else {
            return;
        };
        for dir in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            match record::read(&dir) {
                Some(r) if !r.deleting => {
                    let live = record::read_pid(&dir).is_some_and(|p| process::alive(p, &dir));
                    tracing::info!(id = %r.id, live, "adopted local server");
                }
                _ => {
                    tracing::info!(dir = %dir.display(), "removing leftover local server directory");
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove leftover directory");
                    }
                }
            }
        }
    }

    fn records(&self) -> Vec<(PathBuf, Record)> {
        let Ok(entries) = std::fs::read_dir(&self.servers_dir) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, Record)> = entries
            .flatten()
            .map(|e| e.path())
            .filter_map(|d| record::read(&d).filter(|r| !r.deleting).map(|r| (d, r)))
            .collect();
        out.sort_by(|a, b| a.1.created.cmp(&b.1.created).then(a.1.id.cmp(&b.1.id)));
        out
    }

    fn to_server(&self, dir: &Path, r: &Record) -> Server {
        let live = record::read_pid(dir).is_some_and(|p| process::alive(p, dir));
        Server {
            id: r.id.clone(),
            name: r.name.clone(),
            status: if live {
                ServerStatus::Running
            } else {
                ServerStatus::Off
            },
            ipv4: Some(self.settings.host),
            labels: r.labels.clone(),
            server_type: r.server_type.clone(),
            location: Some(LOCAL_LOCATION.to_string()),
            created: r.created,
            port: Some(r.port),
        }
    }

    fn next_id(&self) -> String {
        let max = std::fs::read_dir(&self.servers_dir)
            .map(|es| {
                es.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_prefix("node-")?
                            .parse::<u64>()
                            .ok()
                    })
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        format!("node-{}", max + 1)
    }

    fn free_port(&self) -> Result<u16, ProviderError> {
        let l = TcpListener::bind((self.settings.host, 0)).map_err(|e| {
            ProviderError::Transient(format!("no free port on {}: {e}", self.settings.host))
        })?;
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| ProviderError::Transient(format!("no free port: {e}")))
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn create(&self, spec: &ServerSpec) -> Result<Server, ProviderError> {
        spec.validate()?;
        let placement = spec
            .placements()
            .into_iter()
            .find(|p| p.server_type == LOCAL_SERVER_TYPE && p.location.as_deref().is_none_or(|l| l == LOCAL_LOCATION))
            .ok_or_else(|| {
                ProviderError::Invalid(format!(
                    "the local provider has one server type `{LOCAL_SERVER_TYPE}` in location `{LOCAL_LOCATION}`; got {}",
                    spec.server_type
                ))
            })?;
        let _guard = self.ops_lock.lock().await;
        if let Some((dir, r)) = self
            .records()
            .into_iter()
            .find(|(_, r)| r.name == spec.name)
        {
            let same = [LABEL_CLUSTER, LABEL_NODE]
                .iter()
                .all(|k| r.labels.contains_key(*k) && r.labels.get(*k) == spec.labels.get(*k));
            if same {
                tracing::info!(id = %r.id, name = %spec.name, "create repeated for an existing node; returning it");
                return Ok(self.to_server(&dir, &r));
            }
            return Err(ProviderError::Invalid(format!(
                "a local server named {} belongs to another node: delete it or pick another name",
                spec.name
            )));
        }
        let id = self.next_id();
        let dir = self.work_dir(&id);
        std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let rec = Record {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            server_type: placement.server_type,
            image: spec.image.clone(),
            port: self.free_port()?,
            created: Utc::now(),
            deleting: false,
            restarts: 0,
        };
        if let Some(ud) = &spec.user_data {
            // The same placeholders as in the arguments (`{port}`, `{host}`, `{dir}`,
            // `{id}`, `{name}`), so a node config can name its own port. Owner-only: it
            // may hold the node's one-time join token.
            let p = dir.join("user-data");
            let text = spawn::expand(&self.settings, ud, &rec, &dir);
            write_owner_only(&p, text.as_bytes()).map_err(|e| io("writing", &p, e))?;
        }
        // The record is written before the process starts, so a crash leaves no unknown child.
        record::write(&dir, &rec)?;
        let pid = match spawn::spawn(&self.settings, &dir, &rec).await {
            Ok(pid) => pid,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        record::write_pid(&dir, pid)?;
        tracing::info!(id = %id, name = %spec.name, pid, port = rec.port, "local server started");
        Ok(self.to_server(&dir, &rec))
    }

    async fn get(&self, id: &str) -> Result<Server, ProviderError> {
        if id.contains('/') || id.starts_with('.') {
            return Err(ProviderError::NotFound(format!("local server {id}")));
        }
        let dir = self.work_dir(id);
        match record::read(&dir) {
            Some(r) if !r.deleting => Ok(self.to_server(&dir, &r)),
            _ => Err(ProviderError::NotFound(format!("local server {id}"))),
        }
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, ProviderError> {
        Ok(self
            .records()
            .iter()
            .filter(|(_, r)| selector.matches(&r.labels))
            .map(|(d, r)| self.to_server(d, r))
            .collect())
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        if id.contains('/') || id.starts_with('.') {
            return Err(ProviderError::NotFound(format!("local server {id}")));
        }
        let dir = self.work_dir(id);
        let _guard = self.ops_lock.lock().await;
        let mut rec = match record::read(&dir) {
            Some(r) if !r.deleting => r,
            _ => return Err(ProviderError::NotFound(format!("local server {id}"))),
        };
        rec.deleting = true;
        record::write(&dir, &rec)?;
        if let Some(pid) = record::read_pid(&dir) {
            process::stop(pid, &dir, self.settings.stop_timeout).await;
        }
        std::fs::remove_dir_all(&dir).map_err(|e| io("removing", &dir, e))?;
        tracing::info!(id, "local server deleted");
        Ok(())
    }

    async fn server_types(&self) -> Result<Vec<ServerType>, ProviderError> {
        Ok(vec![ServerType {
            name: LOCAL_SERVER_TYPE.to_string(),
            description: "a process on this machine".to_string(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_gb: 0.0,
            disk_gb: 0.0,
            prices: vec![LocationPrice {
                location: LOCAL_LOCATION.to_string(),
                hourly: Decimal::ZERO,
                monthly: Decimal::ZERO,
            }],
        }])
    }

    fn billing_rule(&self) -> BillingRule {
        BillingRule::LOCAL
    }
}
