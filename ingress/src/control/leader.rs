//! Who runs the scheduler: exactly one `dayshift serve` per store. With PostgreSQL the
//! holder of a session-level advisory lock leads (the lock dies with its connection, so
//! it moves within seconds when the holder dies); with SQLite an exclusive `flock` on
//! `<state_dir>/scheduler.lock` keeps a second process on the same files from scheduling.

use std::path::{Path, PathBuf};

use sqlx::Row;

use crate::store::{Backend, Store};

/// The advisory lock key: "dayshift" in ASCII, as a number.
const LOCK_KEY: i64 = 0x6461_7973_6869_6674;

/// Leadership, once won; dropping it gives it up.
pub enum Leadership {
    /// The PostgreSQL connection holding the advisory lock.
    Postgres(sqlx::AnyConnection),
    /// The locked file.
    File(std::fs::File),
}

impl Leadership {
    /// True while the lock is still held (the connection is alive).
    pub async fn still_held(&mut self) -> bool {
        match self {
            Leadership::Postgres(conn) => sqlx::query("SELECT 1 AS one")
                .fetch_one(&mut *conn)
                .await
                .is_ok(),
            Leadership::File(_) => true,
        }
    }
}

/// Tries once to become the leader for `cluster`'s scheduler.
pub async fn try_lead(
    store: &Store,
    state_dir: &Path,
    cluster: &str,
) -> anyhow::Result<Option<Leadership>> {
    match store.backend() {
        Backend::Postgres => {
            let mut conn = store.pool().acquire().await?;
            let key = LOCK_KEY ^ cluster_hash(cluster);
            let row =
                sqlx::query("SELECT CASE WHEN pg_try_advisory_lock($1) THEN 1 ELSE 0 END AS got")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
            let got: i32 = row.try_get("got")?;
            if got == 1 {
                // The connection must never go back to the pool while it holds the lock.
                Ok(Some(Leadership::Postgres(conn.detach())))
            } else {
                Ok(None)
            }
        }
        Backend::Sqlite => {
            let path: PathBuf = state_dir.join("scheduler.lock");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            match file.try_lock() {
                Ok(()) => Ok(Some(Leadership::File(file))),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
            }
        }
    }
}

fn cluster_hash(cluster: &str) -> i64 {
    // FNV-1a: stable across versions and processes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cluster.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}
