//! Operator CLI subcommands that work on files alone (config, schedule, cost estimate).

pub mod config;
pub mod cost;
pub mod output;
pub mod schedule;
