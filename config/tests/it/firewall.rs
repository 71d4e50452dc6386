//! `provider.firewall`, `provider.firewall_sources` and the required `provider.ssh_key`:
//! what each accepts, and where each refusal points (file, line, column, field).

use std::path::Path;

use dayshift_config::Config;
use dayshift_config::firewall::{Cidr, FirewallSetting, SourceOrigin};

const CLOUD: &str = r#"cluster = "office"

[provider]
kind = "hetzner"
ssh_key = "id_ed25519"
firewall = "auto"
firewall_sources = ["203.0.113.7/32", "2001:db8::1"]

[provider.server_types.ccx63]
hourly = "0.85"

[pools.chat]
model = "tiny"
server_types = ["ccx63"]
"#;

fn parse(src: &str) -> Result<Config, Vec<dayshift_config::Problem>> {
    Config::parse("dayshift.toml", src, Path::new("/etc/dayshift")).map_err(|p| p.0)
}

fn only_problem(src: &str) -> dayshift_config::Problem {
    let p = parse(src).expect_err("expected a problem");
    assert_eq!(p.len(), 1, "{p:#?}");
    p[0].clone()
}

#[test]
fn auto_with_sources_is_read_and_normalised() {
    let c = parse(CLOUD).unwrap();
    assert_eq!(c.provider.firewall, Some(FirewallSetting::Auto));
    let (sources, origin) = c.firewall_sources().unwrap();
    assert_eq!(origin, SourceOrigin::Configured);
    let text: Vec<String> = sources.iter().map(Cidr::to_string).collect();
    assert_eq!(text, ["203.0.113.7/32", "2001:db8::1/128"]);

    let named = CLOUD
        .replace("firewall = \"auto\"", "firewall = \"my-fw\"")
        .replace(
            "firewall_sources = [\"203.0.113.7/32\", \"2001:db8::1\"]\n",
            "",
        );
    let c = parse(&named).unwrap();
    assert_eq!(
        c.provider.firewall,
        Some(FirewallSetting::Named("my-fw".into()))
    );
}

#[test]
fn a_bad_source_is_named_with_its_line_and_column() {
    let src = CLOUD.replace("\"2001:db8::1\"", "\"10.0.0.5/24\"");
    let p = only_problem(&src);
    assert_eq!((p.line, p.column), (7, 39), "{p}");
    assert_eq!(p.field, "provider.firewall_sources[1]");
    assert!(p.message.contains("10.0.0.0/24"), "{p}");

    let src = CLOUD.replace("\"2001:db8::1\"", "\"everyone\"");
    let p = only_problem(&src);
    assert!(p.message.contains("CIDR"), "{p}");
}

#[test]
fn sources_without_auto_and_firewall_on_local_are_refused() {
    let src = CLOUD.replace("firewall = \"auto\"", "firewall = \"my-fw\"");
    let p = only_problem(&src);
    assert_eq!(
        (p.line, p.field.as_str()),
        (7, "provider.firewall_sources"),
        "{p}"
    );
    assert!(
        p.message.contains("only applies with firewall = \"auto\""),
        "{p}"
    );

    let local = "cluster = \"c\"\n[provider]\nkind = \"local\"\nfirewall = \"auto\"\n[pools.chat]\nmodel = \"m\"\n";
    let p = only_problem(local);
    assert_eq!((p.line, p.column), (4, 12), "{p}");
    assert!(p.message.contains("local provider"), "{p}");
}

#[test]
fn auto_without_any_ingress_address_says_to_set_firewall_sources() {
    let src = CLOUD.replace(
        "firewall_sources = [\"203.0.113.7/32\", \"2001:db8::1\"]\n",
        "",
    );
    let p = only_problem(&src);
    assert_eq!((p.line, p.column), (6, 12), "{p}");
    assert_eq!(p.field, "provider.firewall");
    assert!(p.message.contains("firewall_sources"), "{p}");

    // gateway.node_address gives it; so does a public_url with an IP host.
    let c = parse(&format!(
        "{src}[gateway]\nnode_address = \"198.51.100.4:443\"\n"
    ))
    .unwrap();
    let (s, origin) = c.firewall_sources().unwrap();
    assert_eq!(
        (s[0].to_string(), origin),
        ("198.51.100.4/32".into(), SourceOrigin::NodeAddress)
    );
    let c = parse(&format!(
        "{src}[gateway]\npublic_url = \"https://[2001:db8::5]:443\"\n"
    ))
    .unwrap();
    let (s, origin) = c.firewall_sources().unwrap();
    assert_eq!(
        (s[0].to_string(), origin),
        ("2001:db8::5/128".into(), SourceOrigin::PublicUrl)
    );
    // A name that cannot resolve is an error that says what to set.
    let c = parse(&format!(
        "{src}[gateway]\npublic_url = \"https://nowhere.invalid\"\n"
    ))
    .unwrap();
    let e = c.firewall_sources().unwrap_err();
    assert!(
        e.contains("nowhere.invalid") && e.contains("firewall_sources"),
        "{e}"
    );
}

#[test]
fn a_cloud_provider_needs_the_operator_ssh_key() {
    for kind in ["hetzner", "scaleway"] {
        let src = CLOUD
            .replace("kind = \"hetzner\"", &format!("kind = \"{kind}\""))
            .replace("ssh_key = \"id_ed25519\"\n", "");
        let p = only_problem(&src);
        assert_eq!(
            (p.line, p.column, p.field.as_str()),
            (3, 1, "provider.ssh_key"),
            "{p}"
        );
        assert!(p.message.contains("missing required key `ssh_key`"), "{p}");
        assert!(p.message.contains("ssh-keygen"), "{p}");
    }
}
