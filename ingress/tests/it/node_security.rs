//! Node API security: join tokens bound to the node id, expiring, not replayable;
//! certificate pinning; the admin API behind its token; the model mirror for nodes only.

use std::time::Duration;

use crate::common::*;
use dayshift::store::hash_secret;
use dayshift_config::protocol::Secret;

#[tokio::test]
async fn join_token_replay_and_wrong_node_are_refused() {
    let gw = gateway().await;
    let node = stand_in("n1", true, false).await;
    let token = gw.state().create_node("n1", "chat").await.unwrap();
    let body = register_body(
        "n1",
        &token,
        &node.url,
        node.fingerprint.as_deref(),
        "tiny-chat",
    );
    let (s, _) = post_register(&gw, &body).await;
    assert_eq!(s, 200);
    // The same node again (e.g. after an ingress restart): accepted, same pin.
    let (s, _) = post_register(&gw, &body).await;
    assert_eq!(s, 200);
    // Replay by someone else: another certificate for the same node id.
    let other = stand_in("n1", true, false).await;
    let replay = register_body(
        "n1",
        &token,
        &other.url,
        other.fingerprint.as_deref(),
        "tiny-chat",
    );
    let (s, v) = post_register(&gw, &replay).await;
    assert_eq!(s, 403, "{v}");
    assert_openai_error(&v);
    assert_eq!(v["error"]["code"], "join_token_replayed");
    // The token bound to n1 does not admit n2.
    gw.state().create_node("n2", "chat").await.unwrap();
    let (s, v) = post_register(
        &gw,
        &register_body(
            "n2",
            &token,
            &other.url,
            other.fingerprint.as_deref(),
            "tiny-chat",
        ),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["code"], "bad_join_token");
    // Unknown node id.
    let (s, _) = post_register(
        &gw,
        &register_body("n9", &token, &other.url, None, "tiny-chat"),
    )
    .await;
    assert_eq!(s, 403);
    // https without a fingerprint is refused (nothing to pin).
    let t3 = gw.state().create_node("n3", "chat").await.unwrap();
    let (s, v) = post_register(
        &gw,
        &register_body("n3", &t3, &other.url, None, "tiny-chat"),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    gw.stop().await;
}

#[tokio::test]
async fn expired_join_token_is_refused() {
    let gw = gateway().await;
    let node = stand_in("n1", true, false).await;
    let token = Secret::new("dsj-test-expired");
    gw.state()
        .store
        .insert_node(&dayshift::store::NewNode {
            id: "n1".into(),
            pool: "chat".into(),
            state: dayshift::store::NodeState::Loading,
            join_token_hash: Some(hash_secret(token.expose())),
            join_token_expires_at: Some(chrono::Utc::now().timestamp_millis() - 1000),
        })
        .await
        .unwrap();
    let (s, v) = post_register(
        &gw,
        &register_body(
            "n1",
            &token,
            &node.url,
            node.fingerprint.as_deref(),
            "tiny-chat",
        ),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["code"], "join_token_expired");
    gw.stop().await;
}

#[tokio::test]
async fn node_presenting_another_certificate_is_refused() {
    let gw = gateway().await;
    // The node registers fingerprint A but its server presents certificate B.
    let (_, _, fp_a) = cert();
    let node = stand_in("n1", true, false).await;
    let token = gw.state().create_node("n1", "chat").await.unwrap();
    let (s, _) = post_register(
        &gw,
        &register_body("n1", &token, &node.url, Some(&fp_a), "tiny-chat"),
    )
    .await;
    assert_eq!(s, 200);
    let key = api_key(&gw).await;
    let r = gw
        .post_json(
            &format!("{}/v1/chat/completions", gw.url),
            Some(&key),
            &chat_body("tiny-chat", false),
        )
        .await;
    assert_eq!(
        r.status(),
        502,
        "a node with another certificate must not be talked to"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_openai_error(&v);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("pinned")
            || v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("certificate"),
        "{v}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn node_api_credential_is_required_and_sent_on_every_proxied_request() {
    let gw = gateway().await;
    let node = stand_in("n1", true, false).await;
    let token = gw.state().create_node("n1", "chat").await.unwrap();
    // A registration without a usable API credential is refused, naming the field.
    let mut weak = register_body(
        "n1",
        &token,
        &node.url,
        node.fingerprint.as_deref(),
        "tiny-chat",
    );
    weak.api_token = Secret::new("short");
    let (s, v) = post_register(&gw, &weak).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "api_token", "{v}");
    // The stand-in answers 401 to anything without its credential, like a real node: a
    // plain and a streamed completion through the gateway prove the ingress sends it
    // (and not the client's API key).
    let ok = register_body(
        "n1",
        &token,
        &node.url,
        node.fingerprint.as_deref(),
        "tiny-chat",
    );
    let (s, v) = post_register(&gw, &ok).await;
    assert_eq!(s, 200, "{v}");
    let key = api_key(&gw).await;
    for stream in [false, true] {
        let r = gw
            .post_json(
                &format!("{}/v1/chat/completions", gw.url),
                Some(&key),
                &chat_body("tiny-chat", stream),
            )
            .await;
        assert_eq!(r.status(), 200, "stream={stream}");
        let text = r.text().await.unwrap();
        assert!(!text.contains("no node credential"), "{text}");
    }
    // The handle holds the credential in memory; the store does not.
    let handle = gw.state().registry.node("n1").expect("registered");
    assert_eq!(handle.api_token, stand_in_api_token("n1"));
    gw.stop().await;
}

#[tokio::test]
async fn admin_api_needs_its_token() {
    let gw = gateway().await;
    for path in ["/admin/nodes", "/admin/keys", "/admin/usage"] {
        let r = gw.get(&format!("{}{path}", gw.url), None).await;
        assert_eq!(r.status(), 401, "{path}");
        let r = gw.get(&format!("{}{path}", gw.url), Some("wrong")).await;
        assert_eq!(r.status(), 401, "{path}");
        let r = gw.get(&format!("{}{path}", gw.url), Some(&gw.admin)).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    // An API key is not an admin token.
    let key = api_key(&gw).await;
    let r = gw.get(&format!("{}/admin/keys", gw.url), Some(&key)).await;
    assert_eq!(r.status(), 401);
    // Create and revoke a key through the admin API.
    let r = gw
        .post_json(
            &format!("{}/admin/keys", gw.url),
            Some(&gw.admin),
            &serde_json::json!({"name": "bob"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let id = v["key"]["id"].as_str().unwrap().to_string();
    let r = gw
        .http
        .delete(format!("{}/admin/keys/{id}", gw.url))
        .bearer_auth(&gw.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = gw
        .post_json(
            &format!("{}/admin/pools/chat/on-the-way", gw.url),
            None,
            &serde_json::json!({"count": 1}),
        )
        .await;
    assert_eq!(r.status(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn model_mirror_manifest_and_range_for_nodes_only() {
    let gw = gateway().await;
    let dir = gw.state().models_dir.join("tiny-chat");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("model.bin"), &data).unwrap();
    std::fs::write(dir.join("sub/config.json"), b"{}").unwrap();
    let token = gw.state().create_node("n1", "chat").await.unwrap();
    let base = format!("{}/internal/models/tiny-chat", gw.url);
    let r = gw.get(&format!("{base}/manifest"), None).await;
    assert_eq!(r.status(), 401);
    let r = gw.get(&format!("{base}/manifest"), Some("dsj-nope")).await;
    assert_eq!(r.status(), 401);
    let r = gw
        .get(&format!("{base}/manifest"), Some(token.expose()))
        .await;
    assert_eq!(r.status(), 200);
    let m: dayshift_config::protocol::ModelManifest = r.json().await.unwrap();
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["model.bin", "sub/config.json"]);
    assert_eq!(m.files[0].size, 10_000);
    use sha2::Digest;
    assert_eq!(m.files[0].sha256, hex::encode(sha2::Sha256::digest(&data)));
    // Another pool's model is not for this node.
    let r = gw
        .get(
            &format!("{}/internal/models/tiny-embed/manifest", gw.url),
            Some(token.expose()),
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = gw
        .get(&format!("{base}/files/model.bin"), Some(token.expose()))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    // A byte range of the file, as a resuming download asks for it.
    let range = |r: &'static str| {
        gw.http
            .get(format!("{base}/files/model.bin"))
            .bearer_auth(token.expose())
            .header("range", r)
            .send()
    };
    let r = range("bytes=100-199").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[100..200]);
    let r = range("bytes=9990-").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[9990..]);
    let r = range("bytes=20000-").await.unwrap();
    assert_eq!(r.status(), 416);
    let r = gw
        .get(
            &format!("{base}/files/..%2F..%2Fadmin-token"),
            Some(token.expose()),
        )
        .await;
    assert_eq!(r.status(), 404);
    let _ = Duration::from_secs(0);
    gw.stop().await;
}

/// A node that cannot start reports why with its join token: only for its own id, only
/// once (from a node on its way), and the node is then `failed` with the reason.
#[tokio::test]
async fn a_start_failure_needs_the_join_token_and_fails_the_node_with_its_reason() {
    use dayshift::store::NodeState;
    use dayshift_config::protocol::{FAIL_PATH, PROTOCOL_VERSION, StartFailure, StartFailureKind};
    let gw = gateway().await;
    let t1 = gw.state().create_node("n1", "chat").await.unwrap();
    let t2 = gw.state().create_node("n2", "chat").await.unwrap();
    let body = |id: &str| StartFailure {
        protocol_version: PROTOCOL_VERSION,
        node_id: id.into(),
        kind: StartFailureKind::DoesNotFit,
        reason: "model \"big\" does not fit on NVIDIA L4: its weights need 28.00 GiB".into(),
        gpus: vec![],
    };
    let post = |token: String, b: StartFailure| {
        let http = gw.http.clone();
        let url = format!("{}{FAIL_PATH}", gw.url);
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&b)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    // n2's token does not speak for n1; neither does a made-up one.
    let (s, v) = post(t2.expose().to_string(), body("n1")).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "bad_join_token");
    let (s, _) = post("dsj-nonsense".into(), body("n1")).await;
    assert_eq!(s, 403);
    let (s, _) = post(t1.expose().to_string(), body("n9")).await;
    assert_eq!(s, 403);
    // The node's own report: 204, failed, reason in the event and the error.
    let (s, v) = post(t1.expose().to_string(), body("n1")).await;
    assert_eq!(s, 204, "{v}");
    let store = &gw.state().store;
    let n = store.get_node("n1").await.unwrap().unwrap();
    assert_eq!(n.state, NodeState::Failed);
    let want = "node start failed (does_not_fit): model \"big\" does not fit on NVIDIA L4";
    assert!(
        n.error.as_deref().is_some_and(|e| e.starts_with(want)),
        "{:?}",
        n.error
    );
    let events = store.node_events("n1").await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.to, dayshift::store::NodeState::Failed);
    assert!(last.message.starts_with(want), "{}", last.message);
    // Once failed, a second report is refused (409) and changes nothing.
    let (s, v) = post(t1.expose().to_string(), body("n1")).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "node_not_starting");
    assert_eq!(store.node_events("n1").await.unwrap().len(), events.len());
    gw.stop().await;
}
