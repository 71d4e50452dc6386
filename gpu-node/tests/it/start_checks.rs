//! What a node refuses at start, as a real process: a configured KV cache larger than
//! the memory left after the weights (issue 18: "refuse a KV-cache setting that does not
//! fit and say so").

use crate::common::{self, BIN};
use std::process::Command;

#[test]
fn a_kv_cache_that_does_not_fit_stops_the_node_with_the_figures() {
    let tiny = common::tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    // 10^12 tokens of the tiny model's 512 bytes each: far beyond this machine's memory.
    std::fs::write(
        &cfg,
        common::config(tiny.path(), false, "", "kv_cache_tokens = 1000000000000"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("kv_cache_tokens = 1000000000000 does not fit")
            && err.contains("GiB is free after the weights")
            && err.contains("set kv_cache_tokens to at most"),
        "{err}"
    );
}
