//! Child processes of the local provider: start, find by marker, stop.

use std::path::Path;
use std::time::{Duration, Instant};

/// Environment variable naming the work directory a child belongs to.
pub const MARKER_VAR: &str = "DAYSHIFT_LOCAL_SERVER";

fn marker(dir: &Path) -> String {
    format!("{MARKER_VAR}={}\0", dir.display())
}

fn environ(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// True while `pid` exists and is not a zombie (whatever program it runs).
pub fn exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

/// True when `pid` is alive and is the child of work directory `dir` (not a reused pid).
pub fn alive(pid: i32, dir: &Path) -> bool {
    let needle = marker(dir);
    environ(pid).is_some_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        && !is_zombie(pid)
}

/// Pids and work directories of live children whose directory lies under `root`.
pub fn children_under(root: &Path) -> Vec<(i32, std::path::PathBuf)> {
    let prefix = format!("{MARKER_VAR}={}/", root.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let Some(env) = environ(pid) else { continue };
        for var in env.split(|b| *b == 0) {
            let rest = std::str::from_utf8(var)
                .ok()
                .and_then(|v| v.strip_prefix(&prefix));
            if let Some(rest) = rest.filter(|_| !is_zombie(pid)) {
                out.push((pid, root.join(rest)));
            }
        }
    }
    out
}

fn signal_group(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; the group is the child's own
    // (it was started with process_group(0)), and the pid was just checked by marker.
    unsafe {
        libc::kill(-pid, sig);
        libc::kill(pid, sig);
    }
}

/// Stops the child of `dir`: SIGTERM to its process group, SIGKILL after `timeout`.
pub async fn stop(pid: i32, dir: &Path, timeout: Duration) {
    if !alive(pid, dir) {
        return;
    }
    signal_group(pid, libc::SIGTERM);
    let deadline = Instant::now() + timeout;
    while alive(pid, dir) {
        if Instant::now() >= deadline {
            tracing::warn!(pid, dir = %dir.display(), "child ignored SIGTERM; killing it");
            signal_group(pid, libc::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An exiting process loses its environment (and so its marker) before it closes its
    // files: wait until it is gone or a zombie, so its listening socket is closed when
    // this returns. (The pid was ours a moment ago; its reuse within these seconds is
    // not a concern.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while (alive(pid, dir) || exists(pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
