//! `provider.firewall` applied on Hetzner (issue 15): `dayshift serve` as a real process
//! against fake-hcloud creates the `"auto"` Cloud Firewall, registers the operator key,
//! and the server it creates carries the firewall with exactly the expected rules; a
//! second and third start keep the one firewall (no change without drift, rules set back
//! after drift); a named firewall that does not exist stops `serve` before any server.

use std::path::Path;
use std::time::{Duration, Instant};

use dayshift_provisioning::{
    FirewallPolicy, HetznerProvider, HetznerSettings, ManagedFirewall, OperatorKey, Provider,
    SshKeyPair,
};
use dayshift_tests::pebble::free_port;
use dayshift_tests::serve::{PoolSpec, ServeProc, ServeSpec, TlsSpec, listed_servers};
use dayshift_tests::{FakeHcloud, fixtures};
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

#[tokio::test]
async fn two_replicas_starting_together_end_with_one_firewall_and_one_key() {
    fixtures::init_tracing();
    let fake = fixtures::fake_without_hosts().await;
    let operator = SshKeyPair::generate("operator").unwrap();
    let make = || {
        let managed =
            ManagedFirewall::new("ha", vec!["203.0.113.7".parse().unwrap()], vec![22, 8443]);
        let mut s = HetznerSettings::new("e2e-token")
            .with_endpoint(fake.endpoint())
            .with_firewall(FirewallPolicy::Managed(managed))
            .with_operator_key(OperatorKey {
                name: "dayshift-ha-operator".into(),
                public_openssh: operator.public_openssh(),
            });
        s.poll_interval = Duration::from_millis(25);
        HetznerProvider::new(s).unwrap()
    };
    let (a, b) = (make(), make());
    let (ra, rb) = tokio::join!(a.prepare(), b.prepare());
    ra.unwrap();
    rb.unwrap();
    let all = api(&fake, reqwest12::Method::GET, "/firewalls", None).await;
    assert_eq!(all["firewalls"].as_array().unwrap().len(), 1, "{all}");
    let keys = api(&fake, reqwest12::Method::GET, "/ssh_keys", None).await;
    assert_eq!(keys["ssh_keys"].as_array().unwrap().len(), 1, "{keys}");
}
