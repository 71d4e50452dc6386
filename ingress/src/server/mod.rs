//! `dayshift serve`: the HTTP server — gateway, node API, model mirror, admin API,
//! status page, metrics — and its TLS.

#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod edge;
pub mod errors;
pub mod gateway;
pub mod in_flight_sync;
pub mod keys_cache;
pub mod limits;
pub mod load_sampler;
pub mod metrics;
pub mod mirror;
pub mod node_api;
pub mod registry;
pub mod run;
pub mod state;
pub mod status_page;
pub mod tap;
pub mod tls;
pub mod upstream;
pub mod usage_writer;

pub use run::{Built, build, serve};
pub use state::{AppState, NodeNotice, SharedState, Tuning};
