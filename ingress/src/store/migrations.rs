//! The store's schema migrations, embedded in the binary (`include_str!`) and run by
//! sqlx's `Migrator`: what `sqlx::migrate!` does, without sqlx's proc-macro crate, which
//! compiled a second copy of sqlx-postgres, sqlx-sqlite and SQLite for the build host
//! (~90 CPU-s of a cold 2-core build; tests/README.md, "Suite figures").
//!
//! Versions, descriptions and checksums come from the file names and contents as
//! `sqlx::migrate!` read them (`<version>_<description>.sql`, `_` as a space), so
//! databases migrated by earlier builds continue without a checksum mismatch. A test
//! checks this list against the folders (`store::embedded_migrations_match_the_folders`):
//! a new file in `migrations/` must be added here too.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (file name, SQL) of each migration of one backend, in order.
type Embedded = &'static [(&'static str, &'static str)];

/// `(file name, its SQL)` of `migrations/<backend>/<file>`.
macro_rules! embedded {
    ($backend:literal, $($file:literal),+ $(,)?) => {
        &[$(($file, include_str!(concat!("../../migrations/", $backend, "/", $file)))),+]
    };
}

const SQLITE: Embedded = embedded!(
    "sqlite",
    "0001_initial.sql",
    "0002_scheduler_columns.sql",
    "0003_elastic.sql",
    "0004_load_hourly.sql",
    "0005_usage_cached_tokens.sql",
);

const POSTGRES: Embedded = embedded!(
    "postgres",
    "0001_initial.sql",
    "0002_scheduler_columns.sql",
    "0003_elastic.sql",
    "0004_load_hourly.sql",
    "0005_usage_cached_tokens.sql",
);

/// Version and description from `<version>_<description>.sql`, as sqlx reads a folder.
fn version_and_description(file: &str) -> (i64, String) {
    let stem = file.trim_end_matches(".sql");
    let (version, description) = stem.split_once('_').unwrap_or((stem, ""));
    (version.parse().unwrap_or(0), description.replace('_', " "))
}

fn migrator(list: Embedded) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(file, sql)| {
                let (version, description) = version_and_description(file);
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

/// The SQLite schema's migrations.
pub fn sqlite() -> Migrator {
    migrator(SQLITE)
}

/// The PostgreSQL schema's migrations.
pub fn postgres() -> Migrator {
    migrator(POSTGRES)
}
