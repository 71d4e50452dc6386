//! `dayshift config check` on `provider.firewall` and `provider.ssh_key`: a warning that
//! says what is open to whom without a firewall, the rule set of `"auto"`, a refusal
//! when `"auto"` finds no ingress address, and a file:line:column refusal without the
//! operator's SSH key. Run as real processes of the `dayshift` binary.

use std::path::Path;
use std::process::{Command, Output};

const BASE: &str = r#"cluster = "office"

[provider]
kind = "KIND"
ssh_key = "id_ed25519"
FIREWALL
[provider.server_types.t1]
hourly = "0.50"

[pools.chat]
model = "m"
server_types = ["t1"]
"#;

fn check(dir: &Path, kind: &str, firewall: &str, extra: &str) -> Output {
    let path = dir.join("dayshift.toml");
    let text = BASE.replace("KIND", kind).replace("FIREWALL", firewall) + extra;
    std::fs::write(&path, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .expect("run dayshift")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_a_firewall_a_cloud_provider_gets_a_warning_that_says_what_is_open() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["hetzner", "scaleway"] {
        let out = check(dir.path(), kind, "", "");
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains(": ok"), "{stdout}");
        assert!(
            stderr.contains("warning: provider.firewall is not set"),
            "{stderr}"
        );
        assert!(stderr.contains("whole internet"), "{stderr}");
        assert!(
            stderr.contains("TCP 8443") && stderr.contains("TCP 22"),
            "{stderr}"
        );
        assert!(stderr.contains("firewall = \"auto\""), "{stderr}");
    }
    // The local provider rents nothing: no warning.
    let out = check(dir.path(), "local", "", "");
    let (_, stderr) = text(&out);
    assert!(
        out.status.success() && !stderr.contains("warning"),
        "{stderr}"
    );
}

#[test]
fn auto_shows_its_rules_or_refuses_without_an_ingress_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(
        dir.path(),
        "hetzner",
        "firewall = \"auto\"\nfirewall_sources = [\"203.0.113.7/32\"]\n",
        "[provider.bootstrap]\nnode_port = 9443\nssh_port = 2222\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(
            "firewall \"auto\" (dayshift-office-nodes): inbound only TCP 9443 and 2222 from 203.0.113.7/32 (from provider.firewall_sources)"
        ),
        "{stdout}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");

    // From gateway.node_address when firewall_sources is absent.
    let out = check(
        dir.path(),
        "scaleway",
        "firewall = \"auto\"\n",
        "[gateway]\nnode_address = \"198.51.100.4:443\"\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("from 198.51.100.4/32 (from gateway.node_address)"),
        "{stdout}"
    );

    // Nothing gives the ingress's address: refused, with file:line:column.
    let out = check(dir.path(), "hetzner", "firewall = \"auto\"\n", "");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("dayshift.toml:6:12: provider.firewall:"),
        "{stderr}"
    );
    assert!(stderr.contains("firewall_sources"), "{stderr}");

    // A public_url host that does not resolve: refused, saying what to set.
    let out = check(
        dir.path(),
        "hetzner",
        "firewall = \"auto\"\n",
        "[gateway]\npublic_url = \"https://ingress.invalid\"\n",
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("provider.firewall: cannot resolve"),
        "{stderr}"
    );
    assert!(stderr.contains("set provider.firewall_sources"), "{stderr}");
}

#[test]
fn a_cloud_provider_without_ssh_key_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dayshift.toml");
    std::fs::write(
        &path,
        BASE.replace("KIND", "scaleway")
            .replace("ssh_key = \"id_ed25519\"\n", "")
            .replace(
                "FIREWALL",
                "firewall = \"auto\"\nfirewall_sources = [\"203.0.113.7\"]\n",
            ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("dayshift.toml:3:1: provider.ssh_key: missing required key `ssh_key`"),
        "{stderr}"
    );
}
