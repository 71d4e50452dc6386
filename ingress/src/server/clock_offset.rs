//! `DAYSHIFT_CLOCK_OFFSET_FILE=PATH`: `dayshift serve` runs on the wall clock shifted by
//! the number of milliseconds in that file (one signed integer), re-read every
//! [`POLL`], so a rehearsal or an end-to-end test can start "just before 08:00" and jump
//! to a window's end instead of waiting for it. Everything the schedule decides (windows,
//! pre-warm, Retry-After, status page) follows the shifted clock; store timestamps stay
//! on the wall clock. Unset (the normal case): the plain system clock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, Result};
use dayshift_config::clock::{Clock, OffsetClock, SystemClock};

/// The environment variable naming the offset file.
pub const ENV: &str = "DAYSHIFT_CLOCK_OFFSET_FILE";

/// How often the file is read again.
pub const POLL: Duration = Duration::from_millis(200);

fn read_offset(path: &Path) -> Result<chrono::Duration> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{ENV}: cannot read {}", path.display()))?;
    let ms: i64 = text.trim().parse().with_context(|| {
        format!(
            "{ENV}: {} must hold one integer (milliseconds to add to the clock), not {:?}",
            path.display(),
            text.trim()
        )
    })?;
    Ok(chrono::Duration::milliseconds(ms))
}

/// The clock `dayshift serve` runs on (must be called inside the runtime: it starts the
/// task that follows the file).
pub fn clock_from_env() -> Result<Arc<dyn Clock>> {
    let Some(path) = std::env::var_os(ENV).map(PathBuf::from) else {
        return Ok(Arc::new(SystemClock));
    };
    let clock = Arc::new(OffsetClock::new(read_offset(&path)?));
    tracing::warn!(
        file = %path.display(),
        offset_ms = clock.offset().num_milliseconds(),
        "the clock is shifted ({ENV}): for rehearsals and tests only"
    );
    tokio::spawn(follow(path, Arc::downgrade(&clock)));
    Ok(clock)
}

async fn follow(path: PathBuf, clock: Weak<OffsetClock>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(clock) = clock.upgrade() else {
            return;
        };
        match read_offset(&path) {
            Ok(o) if o != clock.offset() => {
                tracing::warn!(offset_ms = o.num_milliseconds(), "the clock jumps ({ENV})");
                clock.set_offset(o);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "keeping the clock's offset"),
        }
    }
}
