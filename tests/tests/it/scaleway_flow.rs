//! The scaleway provider against fake-scaleway with real OpenSSH test hosts: create →
//! user data → poweron → running with an IPv4 → SSH bootstrap → the uploaded binary
//! answers → terminate → the host is gone and no server, volume or IP is left; the same
//! through injected faults (429, 5xx, a lost answer, out of stock with zone fallback, a
//! slow boot); and an sshd presenting a host key of its own is refused.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dayshift_provisioning::bootstrap::Step;
use dayshift_provisioning::{
    Artifacts, BootstrapSettings, LabelSelector, NodeRequest, Placement, PreparedNode, Provider,
    ScalewayProvider, ScalewaySettings, ServerStatus, SshKeyPair, StartCommand, WriteFile,
    bootstrap, prepare_node,
};
use dayshift_tests::{FakeScaleway, Fault, FaultKind, fixtures, test_host};
use serde_json::Value;

const SERVERS: &str = "/instance/v1/zones/{zone}/servers";
const SERVER: &str = "/instance/v1/zones/{zone}/servers/{id}";
const ACTION: &str = "/instance/v1/zones/{zone}/servers/{id}/action";

fn provider(fake: &FakeScaleway) -> ScalewayProvider {
    let mut s = ScalewaySettings::new("test-secret-key")
        .with_endpoint(fake.endpoint())
        .with_zones(&["fr-par-2", "nl-ams-1"]);
    s.poll_interval = Duration::from_millis(25);
    s.backoff_base = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(200);
    s.action_timeout = Duration::from_secs(60);
    ScalewayProvider::new(s).unwrap()
}

fn node(name: &str, operator: &SshKeyPair, fallback: bool) -> PreparedNode {
    prepare_node(NodeRequest {
        cluster: "scwflow",
        node_id: name,
        pool: "chat",
        name: name.into(),
        placement: Placement {
            server_type: "L4-1-24G".into(),
            location: Some("fr-par-2".into()),
        },
        fallbacks: if fallback {
            vec![Placement {
                server_type: "L4-1-24G".into(),
                location: Some("nl-ams-1".into()),
            }]
        } else {
            vec![]
        },
        image: "ubuntu_noble",
        operator_key: operator,
        provider_ssh_keys: vec![],
        files: vec![WriteFile {
            path: "/etc/dayshift/node-id".into(),
            content: format!("{name}\n"),
            permissions: "0644".into(),
        }],
    })
    .unwrap()
}

fn bootstrap_settings(fake: &FakeScaleway, install_dir: &Path) -> BootstrapSettings {
    BootstrapSettings {
        port: fake.ssh_port(),
        user: test_host::ssh_user(),
        install_dir: install_dir.display().to_string(),
        binary_name: "tiny-responder".into(),
        config_name: "responder.conf".into(),
        start: StartCommand::Shell(
            "nohup {binary} --config {config} >{dir}/node.log 2>&1 </dev/null &".into(),
        ),
        connect_patience: Duration::from_secs(30),
        step_timeout: Duration::from_secs(60),
    }
}

fn responder() -> Vec<u8> {
    std::fs::read(env!("CARGO_BIN_EXE_tiny-responder")).unwrap()
}

fn uuid(id: &str) -> &str {
    id.split_once('/').unwrap().1
}

/// `GET` on the fake's own list endpoint, as any Scaleway client would.
async fn list(fake: &FakeScaleway, zone: &str, what: &str) -> Vec<Value> {
    let url = format!("{}/instance/v1/zones/{zone}/{what}", fake.endpoint());
    let body: Value = reqwest12::Client::new()
        .get(url)
        .header("X-Auth-Token", "any")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body[what].as_array().cloned().unwrap()
}

async fn assert_nothing_left(fake: &FakeScaleway) {
    for zone in ["fr-par-2", "nl-ams-1"] {
        for what in ["servers", "volumes", "ips"] {
            let left = list(fake, zone, what).await;
            assert!(left.is_empty(), "{what} left in {zone}: {left:?}");
        }
    }
    assert_eq!(fake.resource_counts(), (0, 0, 0));
}

/// Bootstraps the responder on the server and checks it answers; returns its address.
async fn serve(
    fake: &FakeScaleway,
    prepared: &PreparedNode,
    server: &dayshift_provisioning::Server,
    operator: &SshKeyPair,
    reply: &str,
) -> SocketAddr {
    let ip = server.ipv4.expect("running server has an IPv4");
    let num = fake.host_number(uuid(&server.id)).unwrap();
    let root = fake.hosts().unwrap().files_root(num).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/dayshift/node-id")).unwrap(),
        format!("{}\n", server.name),
        "cloud-init user data was applied"
    );
    let install_dir = root.join("opt/dayshift");
    let config = format!("listen={ip}:8080\nreply={reply}\n");
    bootstrap(
        &prepared.bootstrap_target(server).unwrap(),
        operator,
        &Artifacts {
            binary: responder(),
            config: config.into_bytes(),
        },
        &bootstrap_settings(fake, &install_dir),
    )
    .await
    .unwrap();
    let addr = SocketAddr::from((ip, 8080));
    let body = fixtures::http_get(addr, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(body, reply);
    addr
}

#[tokio::test]
async fn create_bootstrap_serve_terminate_leaves_nothing() {
    fixtures::init_tracing();
    let fake = fixtures::scaleway_with_hosts().await;
    let p = provider(&fake);
    let operator = SshKeyPair::generate("operator").unwrap();
    let prepared = node("scw-1", &operator, false);
    let server = p.create(&prepared.spec).await.unwrap();
    assert_eq!(server.status, ServerStatus::Running);
    assert_eq!(server.location.as_deref(), Some("fr-par-2"));
    assert_eq!(
        fake.user_data_of(uuid(&server.id)).as_deref(),
        prepared.spec.user_data.as_deref()
    );
    // Before terminate: one server, its block root volume and its IP exist.
    assert_eq!(fake.resource_counts(), (1, 1, 1));
    let addr = serve(&fake, &prepared, &server, &operator, "hello from scaleway").await;
    let num = fake.host_number(uuid(&server.id)).unwrap();
    let hosts = fake.hosts().unwrap().clone();
    assert!(hosts.live_processes(num) > 0);

    p.delete(&server.id).await.unwrap();
    assert!(!hosts.is_up(num));
    assert_eq!(hosts.live_processes(num), 0);
    assert!(fixtures::refuses(addr).await, "the node still answers");
    assert!(
        p.list(&LabelSelector::cluster("scwflow"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_nothing_left(&fake).await;
    // The block volume outlived terminate and was deleted by the provider.
    assert_eq!(
        fake.count_calls("DELETE", "/instance/v1/zones/{zone}/volumes/{id}", 204),
        1
    );
}

#[tokio::test]
async fn the_same_flow_through_injected_faults() {
    fixtures::init_tracing();
    let fake = fixtures::scaleway_with_hosts().await;
    let p = provider(&fake);
    let f = |method: &str, path: &str, fault: FaultKind| Fault {
        method: method.into(),
        path: path.into(),
        count: 1,
        fault,
    };
    // No L4 left in fr-par-2: poweron there fails out_of_stock → the stopped server is
    // removed and nl-ams-1 is tried, where a 429, a 503 and a lost answer are retried
    // without creating a second server, and the boot is slow.
    fake.set_out_of_stock("L4-1-24G", "fr-par-2");
    fake.inject(f("GET", SERVERS, FaultKind::ServerError { status: 502 }));
    let operator = SshKeyPair::generate("operator").unwrap();
    let prepared = node("scw-2", &operator, true);
    let first = p.create(&prepared.spec).await;
    // The 502 hit the first name check (fr-par-2); it was retried.
    let server = first.unwrap();
    assert_eq!(server.location.as_deref(), Some("nl-ams-1"));
    assert_eq!(fake.count_calls("POST", ACTION, 412), 1);
    assert_eq!(fake.count_calls("GET", SERVERS, 502), 1);
    assert_nothing_left_in(&fake, "fr-par-2").await;
    p.delete(&server.id).await.unwrap();

    fake.inject(f(
        "POST",
        SERVERS,
        FaultKind::RateLimit {
            reset_after_secs: 1,
            retry_after_secs: Some(1),
        },
    ));
    fake.inject(f("POST", SERVERS, FaultKind::ServerError { status: 503 }));
    fake.inject(f("POST", SERVERS, FaultKind::LoseResponse));
    fake.inject(f("POST", ACTION, FaultKind::SlowAction { ms: 1000 }));
    fake.inject(f("GET", SERVER, FaultKind::ServerError { status: 500 }));
    let prepared = node("scw-3", &operator, true);
    let server = p.create(&prepared.spec).await.unwrap();
    assert_eq!(server.location.as_deref(), Some("nl-ams-1"));
    assert_eq!(fake.count_calls("POST", SERVERS, 429), 1);
    assert_eq!(fake.count_calls("POST", SERVERS, 503), 1);
    assert_eq!(fake.count_calls("POST", SERVERS, 504), 1);
    assert_eq!(
        fake.resource_counts().0,
        1,
        "the lost answer's server was adopted, not created twice"
    );
    let addr = serve(&fake, &prepared, &server, &operator, "faulty but fine").await;

    fake.inject(f(
        "POST",
        ACTION,
        FaultKind::RateLimit {
            reset_after_secs: 1,
            retry_after_secs: Some(1),
        },
    ));
    p.delete(&server.id).await.unwrap();
    assert!(fixtures::refuses(addr).await);
    assert_nothing_left(&fake).await;
}

async fn assert_nothing_left_in(fake: &FakeScaleway, zone: &str) {
    for what in ["servers", "volumes", "ips"] {
        let left = list(fake, zone, what).await;
        assert!(left.is_empty(), "{what} left in {zone}: {left:?}");
    }
}

#[tokio::test]
async fn an_sshd_presenting_its_own_host_key_is_refused() {
    fixtures::init_tracing();
    let fake = fixtures::scaleway_with_hosts().await;
    let p = provider(&fake);
    let operator = SshKeyPair::generate("operator").unwrap();
    let prepared = node("scw-4", &operator, false);
    fake.inject(Fault {
        method: "POST".into(),
        path: SERVERS.into(),
        count: 1,
        fault: FaultKind::WrongHostKey,
    });
    let server = p.create(&prepared.spec).await.unwrap();
    let num = fake.host_number(uuid(&server.id)).unwrap();
    let install_dir = fake
        .hosts()
        .unwrap()
        .files_root(num)
        .unwrap()
        .join("opt/dayshift");
    let err = bootstrap(
        &prepared.bootstrap_target(&server).unwrap(),
        &operator,
        &Artifacts {
            binary: responder(),
            config: b"listen=127.0.0.1:1\n".to_vec(),
        },
        &bootstrap_settings(&fake, &install_dir),
    )
    .await
    .unwrap_err();
    assert!(err.is_host_key_mismatch(), "{err}");
    assert_eq!(err.step, Step::VerifyHostKey);
    assert!(
        !install_dir.exists(),
        "something was uploaded despite the mismatch"
    );
    p.delete(&server.id).await.unwrap();
    assert_nothing_left(&fake).await;
}
