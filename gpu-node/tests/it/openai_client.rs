//! The official `openai` Python client talks to a real `dayshift-node` process:
//! models, chat, chat streaming with usage, completions (both ways), embeddings
//! (base64, the client's default, and float), and its error classes.

use crate::common;

use std::process::Command;

#[test]
fn official_openai_client_works_unchanged() {
    let tiny = common::tiny_model();
    let node = common::Node::start(&common::config(tiny.path(), true, "", ""));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(node.url("/v1"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai client script failed");
    assert!(stdout.contains("ALL OK"));
}
