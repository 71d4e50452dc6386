//! The full flow against the fake with real OpenSSH test hosts: create → action success →
//! running with an IPv4 → SSH bootstrap → the uploaded binary answers → delete → gone.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use dayshift_provisioning::bootstrap::{FailureKind, Step};
use dayshift_provisioning::{
    Artifacts, BootstrapSettings, BootstrapTarget, CloudInit, HetznerProvider, HetznerSettings,
    LabelSelector, Provider, ServerSpec, ServerStatus, SshKeyPair, StartCommand, WriteFile,
    bootstrap, dayshift_labels,
};
use dayshift_tests::{FakeHcloud, fixtures, test_host};

fn provider(fake: &FakeHcloud) -> HetznerProvider {
    let mut s = HetznerSettings::new("test-token").with_endpoint(fake.endpoint());
    s.poll_interval = Duration::from_millis(25);
    s.action_timeout = Duration::from_secs(60);
    HetznerProvider::new(s).unwrap()
}

fn spec(name: &str, user_data: String) -> ServerSpec {
    ServerSpec {
        name: name.into(),
        server_type: "cx22".into(),
        image: "ubuntu-24.04".into(),
        location: Some("fsn1".into()),
        labels: dayshift_labels("flow", name, "chat"),
        ssh_keys: vec![],
        user_data: Some(user_data),
        fallbacks: vec![],
    }
}

fn bootstrap_settings(fake: &FakeHcloud, install_dir: &Path) -> BootstrapSettings {
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

#[tokio::test]
async fn create_bootstrap_serve_delete() {
    fixtures::init_tracing();
    let fake = fixtures::fake_with_hosts().await;
    let p = provider(&fake);
    let operator = SshKeyPair::generate("operator").unwrap();
    let host_key = SshKeyPair::generate("flow-1").unwrap();
    // The operator key reaches the server through the provider's ssh_keys (registered
    // once, idempotently), not through the user data.
    let key_name = p
        .ensure_ssh_key("dayshift-operator", &operator.public_openssh())
        .await
        .unwrap();
    assert_eq!(key_name, "dayshift-operator");
    let again = p
        .ensure_ssh_key("other-name", &operator.public_openssh())
        .await
        .unwrap();
    assert_eq!(again, "dayshift-operator");
    let user_data = CloudInit {
        host_key: &host_key,
        authorized_keys: vec![],
        write_files: vec![WriteFile {
            path: "/etc/dayshift/node-id".into(),
            content: "flow-1\n".into(),
            permissions: "0644".into(),
        }],
    }
    .render()
    .unwrap();

    let mut sp = spec("flow-1", user_data);
    sp.ssh_keys = vec![key_name];
    let server = p.create(&sp).await.unwrap();
    assert_eq!(server.status, ServerStatus::Running);
    let ip = server.ipv4.expect("running server has an IPv4");
    let id: i64 = server.id.parse().unwrap();
    let hosts = fake.hosts().unwrap();
    assert!(hosts.is_up(id));
    let root = hosts.files_root(id).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/dayshift/node-id")).unwrap(),
        "flow-1\n"
    );

    let install_dir = root.join("opt/dayshift");
    let config = format!("listen={ip}:8080\nreply=hello from flow-1\n");
    let report = bootstrap(
        &BootstrapTarget {
            host: IpAddr::V4(ip),
            expected_host_key: host_key.public_key().clone(),
        },
        &operator,
        &Artifacts {
            binary: responder(),
            config: config.clone().into_bytes(),
        },
        &bootstrap_settings(&fake, &install_dir),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&report.binary_path).unwrap(), responder());
    assert_eq!(
        std::fs::read_to_string(&report.config_path).unwrap(),
        config
    );

    let addr = SocketAddr::from((ip, 8080));
    let body = fixtures::http_get(addr, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(body, "hello from flow-1");
    assert!(hosts.live_processes(id) > 0);

    p.delete(&server.id).await.unwrap();
    assert!(!hosts.is_up(id));
    assert_eq!(hosts.live_processes(id), 0);
    assert!(
        fixtures::refuses(addr).await,
        "the node still answers after delete"
    );
    assert!(
        fixtures::refuses(SocketAddr::from((ip, fake.ssh_port()))).await,
        "sshd still answers"
    );
    assert!(
        p.list(&LabelSelector::cluster("flow"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_different_host_key_aborts_before_upload() {
    fixtures::init_tracing();
    let fake = fixtures::fake_with_hosts().await;
    let p = provider(&fake);
    let operator = SshKeyPair::generate("operator").unwrap();
    let real_key = SshKeyPair::generate("flow-2").unwrap();
    let expected = SshKeyPair::generate("what-we-expect").unwrap();
    let user_data = CloudInit {
        host_key: &real_key,
        authorized_keys: vec![operator.public_openssh()],
        write_files: vec![],
    }
    .render()
    .unwrap();
    let server = p.create(&spec("flow-2", user_data)).await.unwrap();
    let ip = server.ipv4.unwrap();
    let id: i64 = server.id.parse().unwrap();
    let install_dir = fake
        .hosts()
        .unwrap()
        .files_root(id)
        .unwrap()
        .join("opt/dayshift");

    let err = bootstrap(
        &BootstrapTarget {
            host: IpAddr::V4(ip),
            expected_host_key: expected.public_key().clone(),
        },
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
    assert!(err.to_string().contains("nothing was uploaded"), "{err}");
    assert!(
        !install_dir.exists(),
        "something was uploaded despite the mismatch"
    );

    // A wrong operator key is refused at the authenticate step, also before any upload.
    let stranger = SshKeyPair::generate("stranger").unwrap();
    let err = bootstrap(
        &BootstrapTarget {
            host: IpAddr::V4(ip),
            expected_host_key: real_key.public_key().clone(),
        },
        &stranger,
        &Artifacts {
            binary: responder(),
            config: vec![],
        },
        &bootstrap_settings(&fake, &install_dir),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.step, err.kind),
        (Step::Authenticate, FailureKind::Failed),
        "{err}"
    );
    assert!(!install_dir.exists());

    p.delete(&server.id).await.unwrap();
    assert!(
        p.list(&LabelSelector::cluster("flow"))
            .await
            .unwrap()
            .iter()
            .all(|s| s.name != "flow-2")
    );
}

#[tokio::test]
async fn the_same_flow_through_injected_faults() {
    use dayshift_provisioning::Placement;
    use dayshift_tests::{Fault, FaultKind};
    fixtures::init_tracing();
    let fake = fixtures::fake_with_hosts().await;
    let mut s = HetznerSettings::new("test-token").with_endpoint(fake.endpoint());
    s.poll_interval = Duration::from_millis(25);
    s.backoff_base = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(200);
    let p = HetznerProvider::new(s).unwrap();
    let f = |method: &str, path: &str, fault: FaultKind| Fault {
        method: method.into(),
        path: path.into(),
        count: 1,
        fault,
    };
    fake.inject(f(
        "POST",
        "/v1/servers",
        FaultKind::RateLimit {
            reset_after_secs: 1,
            retry_after_secs: None,
        },
    ));
    fake.inject(f("POST", "/v1/servers", FaultKind::ResourceUnavailable));
    fake.inject(f(
        "POST",
        "/v1/servers",
        FaultKind::ServerError { status: 503 },
    ));
    fake.inject(f("POST", "/v1/servers", FaultKind::SlowAction { ms: 1000 }));
    fake.inject(f(
        "GET",
        "/v1/actions/{id}",
        FaultKind::ServerError { status: 502 },
    ));
    fake.inject(f(
        "GET",
        "/v1/servers/{id}",
        FaultKind::ServerError { status: 500 },
    ));

    let operator = SshKeyPair::generate("operator").unwrap();
    let node = dayshift_provisioning::prepare_node(dayshift_provisioning::NodeRequest {
        cluster: "flow",
        node_id: "flow-3",
        pool: "chat",
        name: "flow-3".into(),
        placement: Placement {
            server_type: "cx22".into(),
            location: Some("fsn1".into()),
        },
        fallbacks: vec![Placement {
            server_type: "cx22".into(),
            location: Some("nbg1".into()),
        }],
        image: "ubuntu-24.04",
        operator_key: &operator,
        provider_ssh_keys: vec![],
        files: vec![],
    })
    .unwrap();
    let sp = node.spec.clone();
    let host_key = node.host_key.clone();
    let server = p.create(&sp).await.unwrap();
    // 429 waited out, then resource_unavailable in fsn1 → nbg1, where a 503 is retried and
    // the create action runs slowly.
    assert_eq!(server.location.as_deref(), Some("nbg1"));
    assert_eq!(fake.count_calls("POST", "/v1/servers", 429), 1);
    assert_eq!(fake.count_calls("POST", "/v1/servers", 412), 1);
    assert_eq!(fake.count_calls("POST", "/v1/servers", 503), 1);
    assert_eq!(fake.count_calls("POST", "/v1/servers", 201), 1);
    assert_eq!(fake.count_calls("GET", "/v1/actions/{id}", 502), 1);

    let ip = server.ipv4.unwrap();
    let id: i64 = server.id.parse().unwrap();
    let install_dir = fake
        .hosts()
        .unwrap()
        .files_root(id)
        .unwrap()
        .join("opt/dayshift");
    let target = node.bootstrap_target(&server).unwrap();
    assert_eq!(target.expected_host_key, *host_key.public_key());
    bootstrap(
        &target,
        &operator,
        &Artifacts {
            binary: responder(),
            config: format!("listen={ip}:8081\nreply=faulty but fine\n").into_bytes(),
        },
        &bootstrap_settings(&fake, &install_dir),
    )
    .await
    .unwrap();
    let addr = SocketAddr::from((ip, 8081));
    assert_eq!(
        fixtures::http_get(addr, Duration::from_secs(20))
            .await
            .unwrap(),
        "faulty but fine"
    );

    fake.inject(f(
        "DELETE",
        "/v1/servers/{id}",
        FaultKind::RateLimit {
            reset_after_secs: 1,
            retry_after_secs: None,
        },
    ));
    p.delete(&server.id).await.unwrap();
    assert!(fixtures::refuses(addr).await);
    assert!(
        p.list(&LabelSelector::cluster("flow"))
            .await
            .unwrap()
            .iter()
            .all(|s| s.name != "flow-3")
    );
}

#[tokio::test]
async fn an_sshd_presenting_its_own_host_key_is_refused() {
    use dayshift_provisioning::Placement;
    use dayshift_tests::{Fault, FaultKind};
    fixtures::init_tracing();
    let fake = fixtures::fake_with_hosts().await;
    let p = provider(&fake);
    let operator = SshKeyPair::generate("operator").unwrap();
    let node = dayshift_provisioning::prepare_node(dayshift_provisioning::NodeRequest {
        cluster: "flow",
        node_id: "flow-4",
        pool: "chat",
        name: "flow-4".into(),
        placement: Placement {
            server_type: "cx22".into(),
            location: None,
        },
        fallbacks: vec![],
        image: "debian-12",
        operator_key: &operator,
        provider_ssh_keys: vec![],
        files: vec![],
    })
    .unwrap();
    fake.inject(Fault {
        method: "POST".into(),
        path: "/v1/servers".into(),
        count: 1,
        fault: FaultKind::WrongHostKey,
    });
    let server = p.create(&node.spec).await.unwrap();
    let id: i64 = server.id.parse().unwrap();
    let install_dir = fake
        .hosts()
        .unwrap()
        .files_root(id)
        .unwrap()
        .join("opt/dayshift");
    let err = bootstrap(
        &node.bootstrap_target(&server).unwrap(),
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
}
