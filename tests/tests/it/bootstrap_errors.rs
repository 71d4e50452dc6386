//! Bootstrap failures name their step: no sshd, a silent peer, a failing start command.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dayshift_provisioning::bootstrap::{FailureKind, Step};
use dayshift_provisioning::{
    Artifacts, BootstrapSettings, BootstrapTarget, CloudInit, HetznerProvider, HetznerSettings,
    Provider, ServerSpec, SshKeyPair, StartCommand, bootstrap, dayshift_labels,
};
use dayshift_tests::{fixtures, test_host};

fn quick(port: u16) -> BootstrapSettings {
    BootstrapSettings {
        port,
        connect_patience: Duration::from_millis(600),
        step_timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

fn target(key: &SshKeyPair) -> BootstrapTarget {
    BootstrapTarget {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        expected_host_key: key.public_key().clone(),
    }
}

#[tokio::test]
async fn nothing_listening_fails_at_connect() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = SshKeyPair::generate("k").unwrap();
    let err = bootstrap(
        &target(&key),
        &key,
        &Artifacts {
            binary: vec![],
            config: vec![],
        },
        &quick(port),
    )
    .await
    .unwrap_err();
    assert_eq!(err.step, Step::Connect, "{err}");
    assert!(err.to_string().contains("connect"), "{err}");
}

#[tokio::test]
async fn a_silent_peer_times_out_at_connect() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let key = SshKeyPair::generate("k").unwrap();
    let err = bootstrap(
        &target(&key),
        &key,
        &Artifacts {
            binary: vec![],
            config: vec![],
        },
        &quick(port),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.step, err.kind),
        (Step::Connect, FailureKind::Failed),
        "{err}"
    );
    assert!(err.message.contains("no SSH handshake"), "{err}");
}

#[tokio::test]
async fn a_failing_start_command_fails_at_start_after_a_verified_upload() {
    let fake = fixtures::fake_with_hosts().await;
    let mut s = HetznerSettings::new("t").with_endpoint(fake.endpoint());
    s.poll_interval = Duration::from_millis(25);
    let p = HetznerProvider::new(s).unwrap();
    let operator = SshKeyPair::generate("operator").unwrap();
    let host_key = SshKeyPair::generate("h").unwrap();
    let user_data = CloudInit {
        host_key: &host_key,
        authorized_keys: vec![operator.public_openssh()],
        write_files: vec![],
    }
    .render()
    .unwrap();
    let server = p
        .create(&ServerSpec {
            name: "boot-err".into(),
            server_type: "cx22".into(),
            image: "debian-12".into(),
            location: None,
            labels: dayshift_labels("booterr", "boot-err", "chat"),
            ssh_keys: vec![],
            user_data: Some(user_data),
            fallbacks: vec![],
        })
        .await
        .unwrap();
    let id: i64 = server.id.parse().unwrap();
    let dir = fake
        .hosts()
        .unwrap()
        .files_root(id)
        .unwrap()
        .join("opt/dayshift");
    let settings = BootstrapSettings {
        port: fake.ssh_port(),
        user: test_host::ssh_user(),
        install_dir: dir.display().to_string(),
        start: StartCommand::Shell("echo cannot start >&2; exit 3".into()),
        connect_patience: Duration::from_secs(20),
        step_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let err = bootstrap(
        &BootstrapTarget {
            host: IpAddr::V4(server.ipv4.unwrap()),
            expected_host_key: host_key.public_key().clone(),
        },
        &operator,
        &Artifacts {
            binary: b"#!/bin/sh\n".to_vec(),
            config: b"x=1\n".to_vec(),
        },
        &settings,
    )
    .await
    .unwrap_err();
    assert_eq!(err.step, Step::Start, "{err}");
    assert!(err.message.contains("cannot start"), "{err}");
    // Upload and install happened before the start step.
    assert_eq!(
        std::fs::read(dir.join("dayshift-node")).unwrap(),
        b"#!/bin/sh\n"
    );
    p.delete(&server.id).await.unwrap();
}
