//! The ingress: `dayshift serve` (gateway, node API, TLS, store) and the operator CLI.

pub mod cli;
pub mod control;
pub mod costing;
pub mod elastic_view;
pub mod server;
pub mod state_files;
pub mod store;
