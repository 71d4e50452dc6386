//! The official Python clients (`hcloud`, `scaleway`; versions pinned in
//! scripts/deps/python.sh), unchanged, against the fake binaries: catalog, create with
//! labels/tags and a firewall / security group, list by label selector / tags, the
//! firewall and security-group calls, delete. The driver is `tests/python_clients.py`; it
//! prints one line per check and exits non-zero on the first failure.

use std::process::Command;
use std::time::Instant;

use dayshift_tests::fixtures::FakeProcess;

/// Runs the driver for one client against `url`; panics with its whole output unless it
/// passed.
fn drive(which: &str, url: &str) {
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python_clients.py"
        ))
        .args([which, url])
        .output()
        .expect("python3 (install the clients with `bash scripts/deps/python.sh`)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    println!("{which} driver: {:.2} s", started.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "the official {which} client failed against the fake ({}):\n{text}",
        out.status
    );
    assert!(
        text.contains(&format!("{which}: all checks passed")),
        "the driver did not finish:\n{text}"
    );
}

#[test]
fn official_hcloud_python_client_works_against_fake_hcloud() {
    let fake = FakeProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_fake-hcloud")),
        &["--action-ms", "100"],
    )
    .unwrap();
    drive("hcloud", &format!("http://127.0.0.1:{}/v1", fake.port));
}

#[test]
fn official_scaleway_python_client_works_against_fake_scaleway() {
    let fake = FakeProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_fake-scaleway")),
        &[],
    )
    .unwrap();
    drive("scaleway", &format!("http://127.0.0.1:{}", fake.port));
}
