//! Restarts local servers whose process exited (up to `max_restarts` each).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Mutex, oneshot};

use super::{LocalSettings, process, record, spawn};

/// A running supervisor; stops when dropped.
pub(super) struct Supervisor {
    _stop: oneshot::Sender<()>,
}

impl Supervisor {
    /// Starts checking the children every `settings.supervise_interval`.
    pub(super) fn start(
        settings: LocalSettings,
        servers_dir: PathBuf,
        ops_lock: Arc<Mutex<()>>,
    ) -> Self {
        let (tx, mut rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(settings.supervise_interval) => {}
                }
                let _guard = ops_lock.lock().await;
                check_once(&settings, &servers_dir).await;
            }
        });
        Self { _stop: tx }
    }
}

async fn check_once(settings: &LocalSettings, servers_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(servers_dir) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        let Some(mut rec) = record::read(&dir) else {
            continue;
        };
        if rec.deleting || record::read_pid(&dir).is_some_and(|p| process::alive(p, &dir)) {
            continue;
        }
        if rec.restarts >= settings.max_restarts {
            continue;
        }
        rec.restarts += 1;
        if let Err(e) = record::write(&dir, &rec) {
            tracing::warn!(id = %rec.id, error = %e, "cannot record a restart");
            continue;
        }
        match spawn::spawn(settings, &dir, &rec)
            .await
            .and_then(|pid| record::write_pid(&dir, pid).map(|_| pid))
        {
            Ok(pid) => {
                tracing::warn!(id = %rec.id, pid, restarts = rec.restarts, "local node exited; restarted it")
            }
            Err(e) => {
                tracing::error!(id = %rec.id, error = %e, "local node exited and cannot be restarted")
            }
        }
        if rec.restarts == settings.max_restarts {
            tracing::error!(id = %rec.id, "local node reached its restart limit; it stays off until deleted");
        }
    }
}
