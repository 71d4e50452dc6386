//! The integration tests of `dayshift`, one binary (`cargo test -p dayshift --test it`):
//! each file of this folder is a module; a new test file is one more `mod` line here
//! (see tests/README.md, "Adding a test").

mod acme_openai;
mod cli_cost_report;
mod cli_examples;
mod cli_files;
mod cli_firewall;
mod cli_model_fit;
mod cli_scaleway;
mod common;
mod edge;
mod gateway;
mod node_security;
mod real_node;
mod serve_local;
mod serve_self_signed;
mod status_texts;
mod store;
mod units;
