//! The on-disk record of one local server: `server.json` and `pid` in its work directory.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ProviderError;
use crate::labels::Labels;

/// What is known about a local server, stored as `server.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Id (also the work directory's name).
    pub id: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Server type (always `local`).
    pub server_type: String,
    /// Image as requested (informational).
    pub image: String,
    /// Port the child was told to listen on.
    pub port: u16,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Set when deletion began; a restart finishes it.
    #[serde(default)]
    pub deleting: bool,
    /// How often the supervisor restarted the child.
    #[serde(default)]
    pub restarts: u32,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> ProviderError {
    ProviderError::Transient(format!(
        "{what} {}: {e} (check the local provider's state_dir)",
        path.display()
    ))
}

/// Path of the record file in a work directory.
pub fn record_path(dir: &Path) -> PathBuf {
    dir.join("server.json")
}

/// Path of the pid file in a work directory.
pub fn pid_path(dir: &Path) -> PathBuf {
    dir.join("pid")
}

/// Writes the record atomically.
pub fn write(dir: &Path, rec: &Record) -> Result<(), ProviderError> {
    let tmp = dir.join("server.json.tmp");
    let text = serde_json::to_vec_pretty(rec)
        .map_err(|e| ProviderError::Invalid(format!("cannot encode server record: {e}")))?;
    std::fs::write(&tmp, text).map_err(|e| io("writing", &tmp, e))?;
    std::fs::rename(&tmp, record_path(dir)).map_err(|e| io("renaming", &tmp, e))
}

/// Reads the record; `None` when missing or unreadable.
pub fn read(dir: &Path) -> Option<Record> {
    let text = std::fs::read(record_path(dir)).ok()?;
    match serde_json::from_slice(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "unreadable server.json; treating the server as an orphan");
            None
        }
    }
}

/// Reads the pid file.
pub fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_path(dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes the pid file.
pub fn write_pid(dir: &Path, pid: u32) -> Result<(), ProviderError> {
    let p = pid_path(dir);
    std::fs::write(&p, pid.to_string()).map_err(|e| io("writing", &p, e))
}
