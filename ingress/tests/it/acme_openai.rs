//! End to end over HTTPS: `dayshift serve` (the real binary) gets its certificate from
//! Pebble (ACME TLS-ALPN-01), stand-in nodes register over the node API, and the
//! official `openai` Python client, trusting only Pebble's root, talks to the gateway.
//! Afterwards the database files and the log are searched for every secret.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use dayshift_tests::pebble::{PEBBLE_DIR, Proc, free_port, start_pebble};

fn dayshift() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dayshift"))
}

fn grep_files(files: &[PathBuf], needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for f in files {
        let mut data = Vec::new();
        if let Ok(mut fh) = std::fs::File::open(f) {
            let _ = fh.read_to_end(&mut data);
        }
        if data.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            hits.push(f.display().to_string());
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_over_acme_https_and_no_secret_in_db_or_logs() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pebble = start_pebble(dir.path(), port).await;

    let domain = "dayshift.test";
    let state = dir.path().join("state");
    let config = dir.path().join("dayshift.toml");
    std::fs::write(
        &config,
        format!(
            r#"cluster = "e2e"
state_dir = "{state}"
[provider]
kind = "local"
[pools.chat]
model = "tiny-chat"
[pools.embed]
model = "tiny-embed"
[gateway]
listen = "127.0.0.1:{port}"
[tls]
mode = "acme"
domains = ["{domain}"]
contact = ["mailto:ops@dayshift.test"]
directory = "{directory}"
directory_ca = "{PEBBLE_DIR}/ca.pem"
"#,
            state = state.display(),
            directory = pebble.directory,
        ),
    )
    .unwrap();
    let admin = "dsa-e2e-admin-token-0123456789";
    let log_path = dir.path().join("ingress.log");
    let child = dayshift()
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("DAYSHIFT_ADMIN_TOKEN", admin)
        .env("DAYSHIFT_LOG", "debug")
        .stdout(Stdio::from(
            std::fs::File::create(dir.path().join("ingress.out")).unwrap(),
        ))
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .expect("dayshift serve");
    let mut ingress = Proc(child);

    // Pebble's issuing root (new on every start).
    let root = pebble.root_pem.clone();
    let root_path = pebble.root_path.clone();

    // A client that trusts only Pebble's root; the test domain resolves to loopback.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
        .resolve(domain, addr)
        .build()
        .unwrap();
    let base = format!("https://{domain}:{port}");
    let started = Instant::now();
    loop {
        match https.get(format!("{base}/")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ => {}
        }
        if let Ok(Some(status)) = ingress.0.try_wait() {
            panic!(
                "dayshift serve exited ({status}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no certificate from Pebble in 90 s; log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("certificate from Pebble after {:?}", started.elapsed());

    // Stand-in nodes (pinned TLS) register with join tokens from the admin API.
    let chat_node = stand_in("chat-1", true, false).await;
    let embed_node = stand_in("embed-1", true, false).await;
    let mut secrets: Vec<String> = vec![admin.to_string()];
    for (node, pool, model) in [
        (&chat_node, "chat", "tiny-chat"),
        (&embed_node, "embed", "tiny-embed"),
    ] {
        let r = https
            .post(format!("{base}/admin/nodes"))
            .bearer_auth(admin)
            .json(&serde_json::json!({"id": node.id, "pool": pool}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        let token = dayshift_config::protocol::Secret::new(v["join_token"].as_str().unwrap());
        secrets.push(token.expose().to_string());
        let body = register_body(
            &node.id,
            &token,
            &node.url,
            node.fingerprint.as_deref(),
            model,
        );
        let r = https
            .post(format!("{base}/internal/nodes/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        secrets.push(v["session_token"].as_str().unwrap().to_string());
    }

    // An API key from the CLI (shown once).
    let out = dayshift()
        .args([
            "keys",
            "create",
            "--config",
            config.to_str().unwrap(),
            "--name",
            "python",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = v["secret"].as_str().unwrap().to_string();
    let prefix = v["key"]["prefix"].as_str().unwrap().to_string();
    secrets.push(key.clone());
    let listed = dayshift()
        .args(["keys", "list", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains(&prefix) && !listed.contains(&key),
        "{listed}"
    );

    let py = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/openai_client.py"
        ))
        .env("DAYSHIFT_BASE_URL", format!("{base}/v1"))
        .env("DAYSHIFT_CA", &root_path)
        .env("DAYSHIFT_KEY", &key)
        .env("DAYSHIFT_HOST", domain)
        .output()
        .expect("python3 (run scripts/deps/python-ingress.sh)");
    let py_out = String::from_utf8_lossy(&py.stdout).to_string();
    assert!(
        py.status.success() && py_out.contains("ALL OK"),
        "openai client failed:\n{py_out}\n{}",
        String::from_utf8_lossy(&py.stderr)
    );

    // A revoked key is refused (through the CLI, against the running server).
    let out = dayshift()
        .args([
            "keys",
            "revoke",
            "--config",
            config.to_str().unwrap(),
            &prefix,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let r = https
        .get(format!("{base}/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Stop (SIGTERM: graceful, usage flushed), then look for secrets everywhere.
    sigterm(&ingress.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ingress.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "dayshift serve did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut files: Vec<PathBuf> = vec![log_path.clone(), dir.path().join("ingress.out")];
    for entry in std::fs::read_dir(&state).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("dayshift.db")
        {
            files.push(p);
        }
    }
    assert!(files.len() >= 3, "database files: {files:?}");
    assert!(
        !grep_files(&files, &prefix).is_empty(),
        "the visible prefix should be stored"
    );
    for s in &secrets {
        let hits = grep_files(&files, s);
        assert!(
            hits.is_empty(),
            "a secret ({}…) was found in clear in {hits:?}",
            &s[..6]
        );
    }
    // Usage was recorded for the Python client's requests.
    let store =
        dayshift::store::Store::open(&format!("sqlite://{}", state.join("dayshift.db").display()))
            .await
            .unwrap();
    let rows = store.usage_rows(0, i64::MAX).await.unwrap();
    assert!(
        rows.iter().filter(|r| r.status == 200).count() >= 4,
        "{rows:?}"
    );
    drop(ingress);
}

/// Sends SIGTERM to our own child (no `kill` binary needed).
fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: plain kill(2) on the pid of a child this test spawned and still owns.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}
