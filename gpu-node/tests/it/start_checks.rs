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

/// A node reports ready (and so registers) only after its engine has warmed up (issue
/// 17: on a fresh GPU server the warm-up loads the kernels and captures the decode
/// graphs; no user request may wait for that).
#[test]
fn the_node_is_ready_only_after_its_engine_warmed_up() {
    let tiny = common::tiny_model();
    let node = common::Node::start(&common::config(tiny.path(), false, "", ""));
    let log = node.log.lock().unwrap().clone();
    let at = |needle: &str| log.iter().position(|l| l.contains(needle));
    let (Some(warm), Some(ready)) = (
        at("engine warmed up"),
        at("INFO dayshift_node::server: ready"),
    ) else {
        panic!("no warm-up or ready line in the log:\n{}", log.join("\n"));
    };
    assert!(
        warm < ready,
        "ready came before the warm-up:\n{}",
        log.join("\n")
    );
    node.term();
}
