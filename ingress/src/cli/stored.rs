//! What the read-only operator commands (`cost`, `nodes`, `status`) share: loading
//! `dayshift.toml` and its schedule, opening the store it names without creating one,
//! and a small async runtime.

use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use dayshift_config::{Config, Schedule};

use crate::store::Store;

/// A failure of a read-only command: the text to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong and what to do next.
    pub message: String,
    /// 2 for bad input (file, argument), 1 for everything else.
    pub code: u8,
    /// Printed as is (a file's problems, one per line) rather than after `error: `.
    pub raw: bool,
}

impl Failure {
    /// Bad input (exit 2).
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: super::output::EXIT_INVALID,
            raw: false,
        }
    }

    /// A file's problems, one `file:line:column: field: message` per line (exit 2).
    pub fn problems(p: &dayshift_config::Problems) -> Failure {
        Failure {
            message: p.to_string(),
            code: super::output::EXIT_INVALID,
            raw: true,
        }
    }

    /// A runtime failure (exit 1).
    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
            raw: false,
        }
    }
}

/// Loads `dayshift.toml` (every problem listed, exit 2).
pub fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    let Some(path) = path else {
        return Err(Failure::invalid(
            "give --config dayshift.toml (the file `dayshift serve` runs with: it names the store)",
        ));
    };
    Config::load(path).map_err(|p| Failure::problems(&p))
}

/// The schedule the config names, if it names one (checked against the config's pools).
pub fn load_schedule(config: &Config) -> Result<Option<Schedule>, Failure> {
    let Some(path) = config.schedule.as_deref() else {
        return Ok(None);
    };
    Schedule::load_for_pools(path, &config.pool_caps())
        .map(Some)
        .map_err(|p| Failure::problems(&p))
}

/// The time zone reports are read in: the schedule's, else UTC.
pub fn timezone(schedule: Option<&Schedule>) -> Tz {
    schedule.map(|s| s.timezone).unwrap_or(chrono_tz::UTC)
}

/// The SQLite file a `sqlite:` URL names (`None` for memory databases and other backends).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

/// Opens the config's store. A SQLite file that does not exist is an error (these
/// commands read what `dayshift serve` wrote; they never create an empty store).
pub async fn open_store(config: &Config) -> Result<Store, Failure> {
    let url = &config.database_url;
    if let Some(file) = sqlite_file(url)
        && !file.exists()
    {
        return Err(Failure::runtime(format!(
            "no store at {}: has `dayshift serve` run with this config (state_dir = {})? \
             Run this command with the same --config, as the user the service runs as \
             (e.g. `sudo -u dayshift dayshift …`)",
            file.display(),
            config.state_dir.display()
        )));
    }
    Store::open(url).await.map_err(|e| {
        Failure::runtime(format!(
            "cannot open the store {}: {e} (check database_url / state_dir and that this user may read it)",
            redact(url)
        ))
    })
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Runs `f` on a small current-thread runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(f)
}

/// Prints a failure to stderr and returns its exit code.
pub fn report(f: Failure) -> std::process::ExitCode {
    if f.raw {
        for line in f.message.lines() {
            eprintln!("{line}");
        }
    } else {
        eprintln!("error: {}", f.message);
    }
    std::process::ExitCode::from(f.code)
}
