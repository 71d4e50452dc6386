//! The store's schema migrations, embedded in the binary (`include_str!`) and run by
//! sqlx's `Migrator`: what `sqlx::migrate!` does, without sqlx's proc-macro crate, which
//! compiled a second copy of sqlx-postgres, sqlx-sqlite and SQLite for the build host
//! (~2 min of a cold 2-core build; tests/README.md, "Suite figures").
//!
//! Versions, descriptions and checksums are the ones `sqlx::migrate!` gave the same files
//! (`<version>_<description>.sql`, `_` read as a space), so databases migrated by earlier
//! builds continue without a checksum mismatch. A test checks this list against the
//! folders (`store::embedded_migrations_match_the_folders`): a new file in `migrations/`
//! must be added here too.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL) of each migration of one backend, in order.
type Embedded = &'static [(i64, &'static str, &'static str)];

const SQLITE: Embedded = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "scheduler columns",
        include_str!("../../migrations/sqlite/0002_scheduler_columns.sql"),
    ),
    (
        3,
        "elastic",
        include_str!("../../migrations/sqlite/0003_elastic.sql"),
    ),
    (
        4,
        "load hourly",
        include_str!("../../migrations/sqlite/0004_load_hourly.sql"),
    ),
];

const POSTGRES: Embedded = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "scheduler columns",
        include_str!("../../migrations/postgres/0002_scheduler_columns.sql"),
    ),
    (
        3,
        "elastic",
        include_str!("../../migrations/postgres/0003_elastic.sql"),
    ),
    (
        4,
        "load hourly",
        include_str!("../../migrations/postgres/0004_load_hourly.sql"),
    ),
];

fn migrator(list: Embedded) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, description, sql)| {
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
