//! The local provider beyond the contract: children answer on their port, state survives a
//! restart of the provider, orphans are killed, exits are reported.

use std::net::SocketAddr;
use std::time::Duration;

use dayshift_provisioning::{
    LabelSelector, LocalProvider, LocalSettings, Provider, ServerSpec, ServerStatus,
    dayshift_labels,
};
use dayshift_tests::fixtures;

fn settings(state: &std::path::Path) -> LocalSettings {
    let mut s = LocalSettings::new(
        env!("CARGO_BIN_EXE_tiny-responder"),
        vec![
            "--listen".into(),
            "{host}:{port}".into(),
            "--reply".into(),
            "{name}".into(),
        ],
        state,
    );
    s.stop_timeout = Duration::from_secs(5);
    s
}

fn spec(name: &str) -> ServerSpec {
    ServerSpec {
        name: name.into(),
        server_type: "local".into(),
        image: "dayshift-node".into(),
        location: None,
        labels: dayshift_labels("localtest", name, "chat"),
        ssh_keys: vec![],
        user_data: None,
        fallbacks: vec![],
    }
}

fn addr(s: &dayshift_provisioning::Server) -> SocketAddr {
    SocketAddr::from((s.ipv4.unwrap(), s.port.unwrap()))
}

#[tokio::test]
async fn children_serve_survive_a_restart_and_orphans_die() {
    fixtures::init_tracing();
    let state = tempfile::tempdir().unwrap();
    let _reaper = fixtures::KillLocalChildren(state.path().to_path_buf());
    let p = LocalProvider::new(settings(state.path())).await.unwrap();
    let keep = p.create(&spec("keep")).await.unwrap();
    let lost = p.create(&spec("lost")).await.unwrap();
    let dying = p.create(&spec("dying")).await.unwrap();
    for s in [&keep, &lost, &dying] {
        assert_eq!(
            fixtures::http_get(addr(s), Duration::from_secs(20))
                .await
                .unwrap(),
            s.name
        );
    }
    assert!(p.work_dir(&keep.id).join("node.log").exists());

    // Simulate a crash of the ingress: one record vanished, one deletion was interrupted.
    std::fs::remove_file(p.work_dir(&lost.id).join("server.json")).unwrap();
    let rec_path = p.work_dir(&dying.id).join("server.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
    rec["deleting"] = serde_json::Value::Bool(true);
    std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    drop(p);

    let p = LocalProvider::new(settings(state.path())).await.unwrap();
    let all = p.list(&LabelSelector::cluster("localtest")).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].id, keep.id);
    assert_eq!(all[0].status, ServerStatus::Running);
    assert_eq!(all[0].port, keep.port);
    assert_eq!(
        fixtures::http_get(addr(&keep), Duration::from_secs(5))
            .await
            .unwrap(),
        "keep"
    );
    assert!(
        fixtures::refuses(addr(&lost)).await,
        "orphan without a record still runs"
    );
    assert!(
        fixtures::refuses(addr(&dying)).await,
        "interrupted deletion left the child running"
    );
    assert!(!p.work_dir(&lost.id).exists());
    assert!(!p.work_dir(&dying.id).exists());

    p.delete(&keep.id).await.unwrap();
    assert!(fixtures::refuses(addr(&keep)).await);
    assert!(!p.work_dir(&keep.id).exists());
    assert!(p.list(&LabelSelector::all()).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_exited_child_reports_off() {
    let state = tempfile::tempdir().unwrap();
    let _reaper = fixtures::KillLocalChildren(state.path().to_path_buf());
    let mut s = settings(state.path());
    s.args = vec!["--no-such-flag".into()];
    s.restart_on_exit = false;
    let p = LocalProvider::new(s).await.unwrap();
    let srv = p.create(&spec("quits")).await.unwrap();
    let log_path = p.work_dir(&srv.id).join("node.log");
    let (mut status, mut log) = (srv.status, String::new());
    for _ in 0..500 {
        status = p.get(&srv.id).await.unwrap().status;
        log = std::fs::read_to_string(&log_path).unwrap();
        if status == ServerStatus::Off && log.contains("usage") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, ServerStatus::Off);
    assert!(log.contains("usage"), "{log}");
    p.delete(&srv.id).await.unwrap();
}

#[tokio::test]
async fn a_missing_command_is_invalid() {
    let state = tempfile::tempdir().unwrap();
    let _reaper = fixtures::KillLocalChildren(state.path().to_path_buf());
    let mut s = settings(state.path());
    s.command = state.path().join("no-such-binary");
    let p = LocalProvider::new(s).await.unwrap();
    let e = p.create(&spec("nobin")).await.unwrap_err();
    assert!(
        matches!(e, dayshift_provisioning::ProviderError::Invalid(_)),
        "{e:?}"
    );
    assert!(p.list(&LabelSelector::all()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_crashed_child_is_restarted_on_the_same_port() {
    let state = tempfile::tempdir().unwrap();
    let _reaper = fixtures::KillLocalChildren(state.path().to_path_buf());
    let mut s = settings(state.path());
    s.supervise_interval = Duration::from_millis(50);
    let p = LocalProvider::new(s).await.unwrap();
    let srv = p.create(&spec("phoenix")).await.unwrap();
    assert_eq!(
        fixtures::http_get(addr(&srv), Duration::from_secs(20))
            .await
            .unwrap(),
        "phoenix"
    );
    let pid_file = p.work_dir(&srv.id).join("pid");
    let first: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: killing the child this test started.
    unsafe {
        libc::kill(first, libc::SIGKILL);
    }
    let mut restarted = None;
    for _ in 0..1000 {
        let now: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if now != first && p.get(&srv.id).await.unwrap().status == ServerStatus::Running {
            restarted = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        restarted.is_some(),
        "the supervisor did not restart the child"
    );
    assert_eq!(
        fixtures::http_get(addr(&srv), Duration::from_secs(20))
            .await
            .unwrap(),
        "phoenix"
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.work_dir(&srv.id).join("server.json")).unwrap())
            .unwrap();
    assert_eq!(rec["restarts"], 1);
    p.delete(&srv.id).await.unwrap();
    assert!(fixtures::refuses(addr(&srv)).await);
}

#[tokio::test]
async fn servers_outlive_the_process_that_created_them() {
    let state = tempfile::tempdir().unwrap();
    let _reaper = fixtures::KillLocalChildren(state.path().to_path_buf());
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_local-provider"))
            .arg("--state")
            .arg(state.path())
            .arg("--command")
            .arg(env!("CARGO_BIN_EXE_tiny-responder"))
            .args([
                "--arg",
                "--listen",
                "--arg",
                "{host}:{port}",
                "--arg",
                "--reply",
                "--arg",
                "{name}",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // One process creates the server and exits ("the ingress stopped").
    let created: dayshift_provisioning::Server =
        serde_json::from_str(cli(&["create", "survivor"]).trim()).unwrap();
    assert_eq!(
        fixtures::http_get(addr(&created), Duration::from_secs(20))
            .await
            .unwrap(),
        "survivor"
    );
    // Another process finds it running ("the ingress restarted").
    let listed: dayshift_provisioning::Server =
        serde_json::from_str(cli(&["list"]).trim()).unwrap();
    assert_eq!(
        (listed.id.as_str(), listed.status),
        (created.id.as_str(), ServerStatus::Running)
    );
    // And this one can delete it.
    let p = LocalProvider::new(settings(state.path())).await.unwrap();
    p.delete(&created.id).await.unwrap();
    assert!(fixtures::refuses(addr(&created)).await);
    assert!(cli(&["list"]).trim().is_empty());
}
