//! The integration tests of `dayshift-config`, one binary (`cargo test -p dayshift-config --test it`):
//! each file of this folder is a module; a new test file is one more `mod` line here
//! (see tests/README.md, "Adding a test").

mod errors;
mod firewall;
mod no_panic;
mod plan_properties;
mod ranges;
mod schedule_eval;
