//! Operator CLI subcommands: those that work on files alone (config, schedule, cost
//! estimate) and the read-only ones on the store (cost, nodes, status).

pub mod config;
pub mod cost;
pub mod cost_report;
pub mod nodes;
pub mod output;
pub mod schedule;
pub mod status;
pub mod stored;
