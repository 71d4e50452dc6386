//! The integration tests of `dayshift-scheduler`, one binary (`cargo test -p dayshift-scheduler --test it`):
//! each file of this folder is a module; a new test file is one more `mod` line here
//! (see tests/README.md, "Adding a test").

mod chaos;
mod common;
mod elastic;
mod error_policy;
mod ledger;
mod policies;
mod week_walk;
