//! Test harness: the fake Hetzner Cloud API with real OpenSSH test hosts, and fixtures
//! other crates' tests reuse.

#![warn(missing_docs)]

pub mod fake_base;
pub mod fake_hcloud;
pub mod fake_scaleway;
pub mod fixtures;
pub mod pebble;
pub mod processes;
pub mod serve;
pub mod test_host;
pub mod util;

pub use fake_hcloud::{FakeHcloud, FakeOptions, Fault, FaultKind};
pub use fake_scaleway::{FakeScaleway, ScalewayOptions};
