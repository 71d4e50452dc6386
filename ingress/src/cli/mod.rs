//! Operator CLI subcommands: those that work on files alone (config, schedule, cost
//! estimate), the read-only ones on the store (cost, nodes, status), and those of the
//! server side (`serve`, `keys`: `server`).

pub mod config;
pub mod cost;
pub mod cost_load;
pub mod cost_report;
pub mod cost_saved;
pub mod nodes;
pub mod output;
pub mod schedule;
pub mod server;
pub mod status;
pub mod stored;
