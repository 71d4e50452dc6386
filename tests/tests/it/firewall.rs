//! `provider.firewall` applied (issue 15): `dayshift serve` as a real process against
//! fake-hcloud creates the `"auto"` Cloud Firewall, registers the operator key, and the
//! server it creates carries the firewall with exactly the expected rules; a second and
//! third start keep the one firewall (no change without drift, rules set back after
//! drift); a named firewall that does not exist stops `serve` before any server. The
//! Scaleway provider against fake-scaleway: the security group a created Instance ends
//! up in, with exactly the expected rules and policies, kept and repaired the same way.

use std::path::Path;
use std::time::{Duration, Instant};

use dayshift_provisioning::firewall::SetupError;
use dayshift_provisioning::{
    FirewallPolicy, ManagedFirewall, Provider, ScalewayProvider, ScalewaySettings, ServerSpec,
    dayshift_labels,
};
use dayshift_tests::pebble::free_port;
use dayshift_tests::serve::{PoolSpec, ServeProc, ServeSpec, TlsSpec, listed_servers};
use dayshift_tests::{FakeHcloud, FakeScaleway, fixtures};
use serde_json::{Value, json};

const READY: &str = "provider account ready";

/// `dayshift serve`'s config for the fake with `firewall` lines added to `[provider]`,
/// and a schedule whose one window is always open.
fn write_config(dir: &Path, fake: &FakeHcloud, firewall: &str) -> std::path::PathBuf {
    let spec = ServeSpec {
        dir: dir.to_path_buf(),
        port: free_port(),
        endpoint: fake.endpoint(),
        ssh_port: 2222,
        tls: TlsSpec::Off,
        pools: vec![PoolSpec {
            name: "chat".into(),
            model: "tiny-llama".into(),
            locations: vec!["fsn1".into()],
            cold_start_secs: 3,
            drain_timeout_secs: 5,
        }],
        budget: None,
        database_url: None,
        public_port: None,
    };
    let path = spec.write();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "ssh_key = \"operator_key\"\n",
        &format!("ssh_key = \"operator_key\"\n{firewall}"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    std::fs::write(
        dir.join("schedule.toml"),
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"mon-sun\"\nstart = \"00:00\"\nend = \"24:00\"\nnodes = 1\n",
    )
    .unwrap();
    path
}

async fn wait_for<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn api(
    fake: &FakeHcloud,
    method: reqwest12::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = reqwest12::Client::new()
        .request(method, format!("{}{path}", fake.endpoint()))
        .bearer_auth("e2e-token");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// The rules `"auto"` must give: TCP 2222 (SSH) and 8443 (node) in from the two sources, nothing else.
fn expected_rules() -> Vec<Value> {
    let mut v: Vec<Value> = ["2222", "8443"]
        .iter()
        .map(|port| {
            json!({
                "direction": "in",
                "protocol": "tcp",
                "port": port,
                "source_ips": ["203.0.113.7/32", "2001:db8::1/128"],
                "destination_ips": [],
            })
        })
        .collect();
    v.sort_by_key(|r| r["port"].as_str().unwrap().to_string());
    v
}

/// A rule without its description, for comparison.
fn essential(rules: &Value) -> Vec<Value> {
    let mut v: Vec<Value> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("description");
            r
        })
        .collect();
    v.sort_by_key(|r| r["port"].as_str().unwrap_or_default().to_string());
    v
}

#[tokio::test]
async fn auto_firewall_is_attached_at_create_and_kept_across_serve_starts() {
    fixtures::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let fake = fixtures::fake_without_hosts().await;
    let config = write_config(
        dir.path(),
        &fake,
        "firewall = \"auto\"\nfirewall_sources = [\"2001:db8::1/128\", \"203.0.113.7\"]\n",
    );
    let log = dir.path().join("serve.log");

    // First start: the firewall exists before any server, and the server carries it.
    let mut serve = ServeProc::start(&config, &log, 200);
    let fw = wait_for("the firewall", 30, async || {
        fake.firewall_by_name("dayshift-e2e-nodes")
    })
    .await;
    let fw_id = fw["id"].as_i64().unwrap();
    assert_eq!(fw["labels"]["dayshift-cluster"], "e2e", "{fw}");
    assert_eq!(essential(&fw["rules"]), expected_rules(), "{fw}");
    let server = wait_for("a server", 30, async || {
        listed_servers(&fake).await["servers"]
            .as_array()
            .and_then(|s| s.first().cloned())
    })
    .await;
    let effective = fake
        .server_firewall(server["id"].as_i64().unwrap())
        .unwrap();
    assert_eq!(effective["firewalls"], json!([fw_id]), "{effective}");
    assert_eq!(
        essential(&effective["rules"]),
        expected_rules(),
        "{effective}"
    );
    assert_eq!(
        server["public_net"]["firewalls"][0]["id"].as_i64(),
        Some(fw_id),
        "{server}"
    );
    // The operator key was registered at start (no Console step).
    let keys = api(&fake, reqwest12::Method::GET, "/ssh_keys", None).await;
    let names: Vec<&str> = keys["ssh_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["dayshift-e2e-operator"], "{keys}");
    serve.kill_hard();

    // Second start, nothing drifted: the same firewall, no new action on it.
    let actions = |v: &Value| v["actions"].as_array().map(Vec::len).unwrap_or(0);
    let before = api(
        &fake,
        reqwest12::Method::GET,
        &format!("/firewalls/{fw_id}/actions"),
        None,
    )
    .await;
    let mut serve = ServeProc::start(&config, &log, 200);
    wait_for("the second start", 30, async || {
        (serve.log_text().matches(READY).count() == 2).then_some(())
    })
    .await;
    let after = api(
        &fake,
        reqwest12::Method::GET,
        &format!("/firewalls/{fw_id}/actions"),
        None,
    )
    .await;
    assert_eq!(actions(&after), actions(&before), "{after}");
    let all = api(&fake, reqwest12::Method::GET, "/firewalls", None).await;
    assert_eq!(all["firewalls"].as_array().unwrap().len(), 1, "{all}");
    serve.kill_hard();

    // Someone opens it to the world; the third start sets the rules back.
    api(
        &fake,
        reqwest12::Method::POST,
        &format!("/firewalls/{fw_id}/actions/set_rules"),
        Some(
            json!({"rules": [{"direction": "in", "protocol": "tcp", "port": "1-65535",
            "source_ips": ["0.0.0.0/0", "::/0"]}]}),
        ),
    )
    .await;
    let drifted = fake.firewall_by_name("dayshift-e2e-nodes").unwrap();
    assert_ne!(essential(&drifted["rules"]), expected_rules());
    let mut serve = ServeProc::start(&config, &log, 200);
    wait_for("the third start", 30, async || {
        (serve.log_text().matches(READY).count() == 3).then_some(())
    })
    .await;
    let fixed = fake.firewall_by_name("dayshift-e2e-nodes").unwrap();
    assert_eq!(fixed["id"].as_i64(), Some(fw_id));
    assert_eq!(essential(&fixed["rules"]), expected_rules(), "{fixed}");
    let all = api(&fake, reqwest12::Method::GET, "/firewalls", None).await;
    assert_eq!(all["firewalls"].as_array().unwrap().len(), 1, "{all}");
    serve.kill_hard();
}

#[tokio::test]
async fn a_missing_named_firewall_stops_serve_before_any_server() {
    fixtures::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let fake = fixtures::fake_without_hosts().await;
    let config = write_config(dir.path(), &fake, "firewall = \"office-fence\"\n");
    // A child process awaited without blocking: the fake runs on this test's runtime.
    let out = tokio::process::Command::new(dayshift_tests::processes::dayshift_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env(dayshift_tests::serve::TOKEN_ENV, "e2e-token")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "provider.firewall = \"office-fence\": no Cloud Firewall of that name at hetzner"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("set provider.firewall = \"auto\""),
        "{stderr}"
    );
    let servers = listed_servers(&fake).await;
    assert_eq!(servers["servers"], json!([]), "{servers}");

    // Once it exists, the created server carries it (its rules are the operator's).
    let made = api(
        &fake,
        reqwest12::Method::POST,
        "/firewalls",
        Some(
            json!({"name": "office-fence", "rules": [{"direction": "in", "protocol": "tcp",
            "port": "22", "source_ips": ["198.51.100.0/24"]}]}),
        ),
    )
    .await;
    let id = made["firewall"]["id"].as_i64().unwrap();
    let log = dir.path().join("serve.log");
    let _serve = ServeProc::start(&config, &log, 200);
    let server = wait_for("a server", 30, async || {
        listed_servers(&fake).await["servers"]
            .as_array()
            .and_then(|s| s.first().cloned())
    })
    .await;
    let effective = fake
        .server_firewall(server["id"].as_i64().unwrap())
        .unwrap();
    assert_eq!(effective["firewalls"], json!([id]), "{effective}");
}

fn scaleway(fake: &FakeScaleway, firewall: FirewallPolicy) -> ScalewayProvider {
    let mut s = ScalewaySettings::new("test-secret-key")
        .with_endpoint(fake.endpoint())
        .with_zones(&["fr-par-2"])
        .with_firewall(firewall);
    s.poll_interval = Duration::from_millis(25);
    s.action_timeout = Duration::from_secs(60);
    ScalewayProvider::new(s).unwrap()
}

fn scw_spec(name: &str) -> ServerSpec {
    ServerSpec {
        name: name.into(),
        server_type: "L4-1-24G".into(),
        image: "ubuntu_noble".into(),
        location: Some("fr-par-2".into()),
        labels: dayshift_labels("office", name, "chat"),
        ssh_keys: vec![],
        user_data: Some("#cloud-config\n".into()),
        fallbacks: vec![],
    }
}

/// (direction, protocol, action, ip_range, port) of each rule, sorted.
fn scw_rules(rules: &Value) -> Vec<(String, String, String, String, i64)> {
    let mut v: Vec<_> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["direction"].as_str().unwrap().to_string(),
                // Compared in upper case: the API documents `TCP`.
                r["protocol"].as_str().unwrap().to_ascii_uppercase(),
                r["action"].as_str().unwrap().to_string(),
                r["ip_range"].as_str().unwrap().to_string(),
                r["dest_port_from"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    v.sort();
    v
}

fn scw_expected() -> Vec<(String, String, String, String, i64)> {
    let mut v = Vec::new();
    for range in ["198.51.100.4/32", "2001:db8::1/128"] {
        for port in [22, 8443] {
            v.push((
                "inbound".into(),
                "TCP".into(),
                "accept".into(),
                range.into(),
                port,
            ));
        }
    }
    v.sort();
    v
}

#[tokio::test]
async fn scaleway_instances_go_into_the_managed_security_group_and_it_is_kept() {
    fixtures::init_tracing();
    let fake = fixtures::scaleway_without_hosts().await;
    let managed = ManagedFirewall::new(
        "office",
        vec![
            "2001:db8::1/128".parse().unwrap(),
            "198.51.100.4".parse().unwrap(),
        ],
        vec![8443, 22],
    );
    let p = scaleway(&fake, FirewallPolicy::Managed(managed.clone()));
    p.prepare().await.unwrap();
    let server = p.create(&scw_spec("n1")).await.unwrap();
    let uuid = server.id.split('/').nth(1).unwrap();
    let sg = fake.server_security_group(uuid).unwrap();
    assert_eq!(
        sg["security_group"]["name"], "dayshift-office-nodes",
        "{sg}"
    );
    assert_eq!(
        sg["security_group"]["inbound_default_policy"], "drop",
        "{sg}"
    );
    assert_eq!(
        sg["security_group"]["outbound_default_policy"], "accept",
        "{sg}"
    );
    assert_eq!(sg["security_group"]["stateful"], true, "{sg}");
    assert_eq!(
        sg["security_group"]["tags"],
        json!(["dayshift-cluster=office"]),
        "{sg}"
    );
    assert_eq!(scw_rules(&sg["rules"]), scw_expected(), "{sg}");
    let group_id = sg["security_group"]["id"].as_str().unwrap().to_string();

    // Drift: rules opened to the world and inbound accepted by default.
    let http = reqwest12::Client::new();
    let base = format!(
        "{}/instance/v1/zones/fr-par-2/security_groups/{group_id}",
        fake.endpoint()
    );
    for (method, url, body) in [
        (
            reqwest12::Method::PUT,
            format!("{base}/rules"),
            json!({"rules": [{"protocol": "ANY",
            "direction": "inbound", "action": "accept", "ip_range": "0.0.0.0/0", "position": 1}]}),
        ),
        (
            reqwest12::Method::PATCH,
            base.clone(),
            json!({"inbound_default_policy": "accept"}),
        ),
    ] {
        let r = http
            .request(method, url)
            .header("X-Auth-Token", "test-secret-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    // A new start (a new provider) sets it back, and makes no second group.
    let again = scaleway(&fake, FirewallPolicy::Managed(managed));
    again.prepare().await.unwrap();
    let sg = fake.server_security_group(uuid).unwrap();
    assert_eq!(sg["security_group"]["id"], group_id.as_str());
    assert_eq!(
        sg["security_group"]["inbound_default_policy"], "drop",
        "{sg}"
    );
    assert_eq!(scw_rules(&sg["rules"]), scw_expected(), "{sg}");
    let list: Value = http
        .get(format!(
            "{}/instance/v1/zones/fr-par-2/security_groups?name=dayshift-office-nodes",
            fake.endpoint()
        ))
        .header("X-Auth-Token", "test-secret-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["security_groups"].as_array().unwrap().len(),
        1,
        "{list}"
    );
    p.delete(&server.id).await.unwrap();
}

#[tokio::test]
async fn a_missing_named_security_group_is_a_clear_error_and_no_instance() {
    fixtures::init_tracing();
    let fake = fixtures::scaleway_without_hosts().await;
    let p = scaleway(&fake, FirewallPolicy::Named("office-fence".into()));
    let e = p.prepare().await.unwrap_err();
    assert!(matches!(e, SetupError::FirewallMissing { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("no security group of that name at scaleway in zone fr-par-2"),
        "{text}"
    );
    assert!(text.contains("\"auto\""), "{text}");
    let e = p.create(&scw_spec("n2")).await.unwrap_err();
    assert!(e.to_string().contains("office-fence"), "{e}");
    assert_eq!(fake.resource_counts().0, 0, "no Instance may be created");
}
