//! Schedule hot reload: on a file change (polled) or SIGHUP the schedule file is read
//! again; a file with problems is rejected with every problem logged, and the last good
//! schedule stays in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dayshift_config::{Problems, Schedule};
use tracing::{error, info};

/// What a reload attempt did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    /// The file's text is the same as the schedule in force.
    Unchanged,
    /// A new schedule is in force.
    Reloaded,
    /// The file has problems (or cannot be read); the last good schedule stays.
    Rejected(Problems),
}

/// A schedule file and the schedule in force, shared with the reconcile loop.
pub struct ScheduleSource {
    path: PathBuf,
    pools: Option<BTreeMap<String, u32>>,
    current: Arc<RwLock<Schedule>>,
    text: String,
}

impl ScheduleSource {
    /// Loads the file; `pools` are the pools its windows may name, with each one's
    /// `max_nodes` (see [`Schedule::parse_for_pools`]).
    pub fn load(path: &Path, pools: Option<BTreeMap<String, u32>>) -> Result<Self, Problems> {
        let text = dayshift_config::read_source(path)?;
        let schedule = parse(&path.display().to_string(), &text, pools.as_ref())?;
        Ok(ScheduleSource {
            path: path.to_path_buf(),
            pools,
            current: Arc::new(RwLock::new(schedule)),
            text,
        })
    }

    /// The schedule in force (give it to the reconcile loop).
    pub fn handle(&self) -> Arc<RwLock<Schedule>> {
        self.current.clone()
    }

    /// Reads the file again and puts it in force if it is valid and changed.
    pub fn reload(&mut self) -> ReloadOutcome {
        let text = match dayshift_config::read_source(&self.path) {
            Ok(t) => t,
            Err(p) => {
                log_rejected(&self.path, &p);
                return ReloadOutcome::Rejected(p);
            }
        };
        if text == self.text {
            return ReloadOutcome::Unchanged;
        }
        match parse(&self.path.display().to_string(), &text, self.pools.as_ref()) {
            Ok(s) => {
                match self.current.write() {
                    Ok(mut g) => *g = s,
                    Err(p) => *p.into_inner() = s,
                }
                self.text = text;
                info!(file = %self.path.display(), "schedule reloaded");
                ReloadOutcome::Reloaded
            }
            Err(p) => {
                // Remember the bad text so the same problems are logged once, not per poll.
                self.text = text;
                log_rejected(&self.path, &p);
                ReloadOutcome::Rejected(p)
            }
        }
    }

    /// Watches the file: polls it every `every` and reloads at once on SIGHUP. Calls
    /// `on_change` after each successful reload (e.g. to wake the reconcile loop).
    pub fn spawn_watch(
        mut self,
        every: Duration,
        on_change: impl Fn() + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            loop {
                #[cfg(unix)]
                {
                    let hup_recv = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = hup_recv => info!("SIGHUP: reloading the schedule"),
                    }
                }
                #[cfg(not(unix))]
                tick.tick().await;
                if self.reload() == ReloadOutcome::Reloaded {
                    on_change();
                }
            }
        })
    }
}

fn parse(
    file: &str,
    text: &str,
    pools: Option<&BTreeMap<String, u32>>,
) -> Result<Schedule, Problems> {
    match pools {
        Some(p) => Schedule::parse_for_pools(file, text, p),
        None => Schedule::parse(file, text, None),
    }
}

fn log_rejected(path: &Path, p: &Problems) {
    for line in &p.0 {
        error!(file = %path.display(), "schedule rejected, the last good one stays in force: {line}");
    }
}
