//! The integration tests of `dayshift-tests`, one binary (`cargo test -p dayshift-tests --test it`):
//! each file of this folder is a module; a new test file is one more `mod` line here
//! (see tests/README.md, "Adding a test").

mod bootstrap_errors;
mod chaos_serve;
mod e2e_office_day;
mod elastic_hetzner;
mod fake_hcloud_binary;
mod fake_scaleway_binary;
mod firewall_hetzner;
mod firewall_scaleway;
mod ha_postgres;
mod hcloud_compat;
mod hetzner_faults;
mod hetzner_flow;
mod local_provider;
mod provider_contract;
mod python_clients;
mod scaleway_estimate;
mod scaleway_flow;
mod scaleway_security_groups;
