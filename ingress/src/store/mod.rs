//! The store: SQLite (default, one WAL file in the state directory) or PostgreSQL (by
//! URL), reached through sqlx's `Any` driver so every query is the same text on both.
//! Migrations are embedded (`migrations.rs`, checked against the folders), one folder per backend.
//!
//! Times are unix milliseconds; money is decimal text. Rows are converted to the
//! scheduler's types ([`NodeRecord`], [`NodeEvent`]) here; the scheduler reaches the
//! store only through its own `NodeStore` trait, implemented by the adapter in
//! `control/node_store.rs`.

#![warn(missing_docs)]

mod elastic;
mod in_flight;
mod keys;
mod ledger;
mod lifecycle;
pub mod migrations;
mod nodes;
mod types;
mod usage;

pub use keys::{ApiKey, KeyLimits, NewKey, hash_secret, random_hex};
pub use ledger::{LedgerInterval, NewInterval};
pub use lifecycle::LifecycleWrite;
pub use types::{NewNode, NodeEvent, NodeRecord, NodeRow, NodeState};
pub use usage::{KeyUsage, UsageRow};

use sqlx::any::AnyPoolOptions;

/// A pool of the `Any` driver.
pub type AnyPool = sqlx::Pool<sqlx::Any>;
use std::path::Path;
use std::time::Duration;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (file or memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no supported database.
    #[error("unsupported database URL (expected sqlite: or postgres://): {0}")]
    BadUrl(String),
    /// A stored value could not be read back.
    #[error("bad stored value: {0}")]
    Corrupt(String),
    /// A write would move a node along a transition the lifecycle does not allow;
    /// nothing was written.
    #[error("node {node} cannot go from {from} to {to}; nothing was written")]
    IllegalTransition {
        /// Node id.
        node: String,
        /// Its stored state.
        from: NodeState,
        /// The state asked for.
        to: NodeState,
    },
    /// Creating the state directory failed.
    #[error("cannot create {path}: {err}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        err: std::io::Error,
    },
}

impl From<StoreError> for dayshift_scheduler::StoreError {
    fn from(e: StoreError) -> Self {
        use dayshift_scheduler::StoreError as S;
        match e {
            StoreError::IllegalTransition { node, from, to } => {
                S::IllegalTransition { node, from, to }
            }
            StoreError::Corrupt(what) => S::Corrupt(what),
            other => S::unavailable(other),
        }
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store handle: cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and runs the migrations.
    /// `sqlite://PATH` creates the file and its folder and turns on WAL;
    /// `sqlite::memory:` is a private in-memory database (tests).
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let (url, max) = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => (url.to_string(), 10),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(15))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite && !url.contains(":memory:") {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        match backend {
            Backend::Sqlite => migrations::sqlite().run(&pool).await?,
            Backend::Postgres => migrations::postgres().run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    /// A fresh private in-memory SQLite store (tests of the scheduler and gateway).
    pub async fn open_in_memory() -> Result<Store> {
        Store::open("sqlite::memory:").await
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool (for queries this module does not offer yet).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that will write: on SQLite `BEGIN IMMEDIATE`, so it takes
    /// the write lock up front (waiting under `busy_timeout`) instead of failing with
    /// `SQLITE_BUSY_SNAPSHOT` when it upgrades a read after another writer committed.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Normalises a SQLite URL: creates the file's folder, adds `mode=rwc`; memory
/// databases get one connection (each connection would be its own database).
fn sqlite_url(url: &str) -> Result<(String, u32)> {
    if url.contains(":memory:") {
        return Ok(("sqlite::memory:".to_string(), 1));
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path_part = rest.split('?').next().unwrap_or(rest);
    if let Some(parent) = Path::new(path_part).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|err| StoreError::Io {
            path: parent.display().to_string(),
            err,
        })?;
    }
    let url = if rest.contains('?') {
        format!("sqlite://{rest}")
    } else {
        format!("sqlite://{rest}?mode=rwc")
    };
    Ok((url, 8))
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
