//! Gateway behaviour against stand-in nodes (in-process ingress, TLS off towards the
//! client; nodes over pinned TLS unless a test says otherwise).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use chrono::{TimeZone, Utc};
use dayshift::store::KeyLimits;
use dayshift_config::clock::ManualClock;

#[tokio::test]
async fn auth_missing_wrong_revoked_key_is_401() {
    let gw = gateway().await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let r = gw
        .post_json(&url, None, &chat_body("tiny-chat", false))
        .await;
    assert_eq!(r.status(), 401);
    assert_openai_error(&r.json().await.unwrap());
    let r = gw
        .post_json(&url, Some("dsk-wrong"), &chat_body("tiny-chat", false))
        .await;
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_openai_error(&v);
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let node = stand_in("n1", true, false).await;
    register(&gw, &node, "chat", "tiny-chat").await;
    let k = gw
        .state()
        .store
        .create_api_key("alice", KeyLimits::default())
        .await
        .unwrap();
    let secret = k.secret.expose().to_string();
    let r = gw
        .post_json(&url, Some(&secret), &chat_body("tiny-chat", false))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        gw.state()
            .store
            .revoke_api_key(&k.key.prefix)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // key cache TTL in tests
    let r = gw
        .post_json(&url, Some(&secret), &chat_body("tiny-chat", false))
        .await;
    assert_eq!(r.status(), 401);
    let r = gw.get(&format!("{}/v1/models", gw.url), None).await;
    assert_eq!(r.status(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn chat_over_pinned_tls_records_usage_and_metrics() {
    let gw = gateway().await;
    let node = stand_in("n1", true, false).await;
    register(&gw, &node, "chat", "tiny-chat").await;
    let key = api_key(&gw).await;
    let r = gw
        .post_json(
            &format!("{}/v1/chat/completions", gw.url),
            Some(&key),
            &chat_body("tiny-chat", false),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-stand-in-node"], "n1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Paris.");
    let r = gw
        .post_json(
            &format!("{}/v1/embeddings", gw.url),
            Some(&key),
            &serde_json::json!({"model": "tiny-embed", "input": "x"}),
        )
        .await;
    assert_eq!(r.status(), 503, "no embed node registered");
    let r = gw.get(&format!("{}/v1/models", gw.url), Some(&key)).await;
    let v: serde_json::Value = r.json().await.unwrap();
    let models: Vec<(String, bool)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["available"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        models,
        vec![
            ("tiny-chat".to_string(), true),
            ("tiny-embed".to_string(), false)
        ]
    );

    // Usage is written in the background, in batches.
    let store = gw.state().store.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows = store.usage_rows(0, i64::MAX).await.unwrap();
        if rows.iter().any(|r| r.status == 200) || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ok: Vec<_> = rows.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "{rows:?}");
    // (of the 7 prompt tokens, the stand-in says 3 came from its prefix cache)
    assert_eq!(
        (
            ok[0].prompt_tokens,
            ok[0].cached_tokens,
            ok[0].completion_tokens
        ),
        (7, 3, 2)
    );
    assert_eq!(ok[0].node_id.as_deref(), Some("n1"));
    assert_eq!(ok[0].pool, "chat");

    let m = gw.metrics_text().await;
    assert!(
        m.contains("dayshift_requests_total{pool=\"chat\",code=\"200\"} 1"),
        "{m}"
    );
    for (kind, n) in [("prompt", 7), ("cached_prompt", 3), ("completion", 2)] {
        assert!(
            m.contains(&format!(
                "dayshift_tokens_total{{pool=\"chat\",kind=\"{kind}\"}} {n}"
            )),
            "{kind}: {m}"
        );
    }
    assert!(
        m.contains("dayshift_requests_total{pool=\"embed\",code=\"503\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("dayshift_request_duration_seconds_bucket{pool=\"chat\""),
        "{m}"
    );
    assert!(
        m.contains("dayshift_nodes{pool=\"chat\",state=\"ready\"} 1"),
        "{m}"
    );
    let page = gw
        .http
        .get(&gw.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("tiny-chat") && page.contains("n1"), "{page}");
    gw.stop().await;
}

#[tokio::test]
async fn streaming_first_chunk_arrives_before_upstream_finishes() {
    let gw = gateway().await;
    let node = stand_in("n1", true, true).await;
    register(&gw, &node, "chat", "tiny-chat").await;
    let key = api_key(&gw).await;
    let mut body = chat_body("tiny-chat", true);
    body["stream_options"] = serde_json::json!({"include_usage": true});
    let mut r = gw
        .post_json(
            &format!("{}/v1/chat/completions", gw.url),
            Some(&key),
            &body,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    // The stand-in holds the rest of the stream until the gate opens: the first chunk
    // must come through now.
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("first chunk must arrive while the node still holds the stream")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("Par"));
    node.gate.add_permits(1);
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("is.") && rest.contains("[DONE]") && rest.contains("\"usage\""));
    let store = gw.state().store.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = store.usage_rows(0, i64::MAX).await.unwrap();
        if let Some(u) = rows.first() {
            assert_eq!(
                (u.prompt_tokens, u.cached_tokens, u.completion_tokens),
                (7, 3, 2)
            );
            break;
        }
        assert!(Instant::now() < deadline, "no usage row");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let gw = gateway().await;
    let key = api_key(&gw).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let big = "x".repeat(70_000);
    let r = gw
        .http
        .post(&url)
        .bearer_auth(&key)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_openai_error(&r.json().await.unwrap());
    let r = gw
        .http
        .post(&url)
        .bearer_auth(&key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_openai_error(&r.json().await.unwrap());
    let r = gw
        .post_json(&url, Some(&key), &serde_json::json!({"messages": []}))
        .await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "model");
    let r = gw
        .post_json(&url, Some(&key), &chat_body("nope", false))
        .await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    let r = gw.get(&url, Some(&key)).await;
    assert_eq!(r.status(), 405);
    assert_openai_error(&r.json().await.unwrap());
    let r = gw
        .http
        .post(format!("{}/v1/nothing", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_openai_error(&r.json().await.unwrap());
    // Binary garbage and odd headers: an answer, never a panic.
    let r = gw
        .http
        .post(&url)
        .header("authorization", "Bearer")
        .body(vec![0xff, 0, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn failover_to_second_node_when_first_dies_before_first_byte() {
    let gw = gateway().await;
    // n-dead: registered, but nothing answers at its address (plain HTTP on loopback).
    let dead_url = dead_node().await;
    let token = gw.state().create_node("n-dead", "chat").await.unwrap();
    let (s, v) = post_register(
        &gw,
        &register_body("n-dead", &token, &dead_url, None, "tiny-chat"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let good = stand_in("n-good", true, false).await;
    register(&gw, &good, "chat", "tiny-chat").await;
    let key = api_key(&gw).await;
    // Each conversation prefers one of the two nodes (rendezvous hashing of its start):
    // new conversations until one preferred n-dead, failed over to n-good, and took
    // n-dead out of routing. Every answer comes from n-good.
    let retries = || async {
        let m = gw.metrics_text().await;
        m.lines()
            .find_map(|l| l.strip_prefix("dayshift_upstream_retries_total{pool=\"chat\"} "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let mut asked = 0;
    while retries().await == 0 {
        assert!(asked < 40, "40 conversations and none preferred n-dead");
        let stream = asked % 2 == 1;
        let mut body = chat_body("tiny-chat", stream);
        body["messages"][0]["content"] = format!("question {asked}").into();
        let r = gw
            .post_json(
                &format!("{}/v1/chat/completions", gw.url),
                Some(&key),
                &body,
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-stand-in-node"], "n-good");
        let _ = r.bytes().await.unwrap();
        asked += 1;
    }
    assert_eq!(retries().await, 1);
    gw.stop().await;
}

#[tokio::test]
async fn request_waits_for_a_node_on_its_way() {
    let gw = gateway_with(None, "10s").await;
    let key = api_key(&gw).await;
    assert!(gw.state().set_nodes_on_the_way("chat", 1));
    let http = gw.http.clone();
    let url = format!("{}/v1/chat/completions", gw.url);
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(key)
            .json(&chat_body("tiny-chat", false))
            .send()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "the request must wait for the node");
    let node = stand_in("n1", true, false).await;
    register(&gw, &node, "chat", "tiny-chat").await;
    let r = waiting.await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(700));
    gw.stop().await;
}

#[tokio::test]
async fn queue_gives_up_after_queue_timeout() {
    let gw = gateway_with(None, "1s").await;
    let key = api_key(&gw).await;
    gw.state().set_nodes_on_the_way("chat", 1);
    let started = Instant::now();
    let r = gw
        .post_json(
            &format!("{}/v1/chat/completions", gw.url),
            Some(&key),
            &chat_body("tiny-chat", false),
        )
        .await;
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "node_starting");
    gw.stop().await;
}

#[tokio::test]
async fn outside_hours_503_with_retry_after_next_window() {
    // Saturday 2026-11-21 12:00 Berlin (11:00 UTC); next window Monday 08:00 Berlin (07:00 UTC).
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 11, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let gw = gateway_with(Some(clock), "3s").await;
    let key = api_key(&gw).await;
    let r = gw
        .post_json(
            &format!("{}/v1/chat/completions", gw.url),
            Some(&key),
            &chat_body("tiny-chat", false),
        )
        .await;
    assert_eq!(r.status(), 503);
    let expected = (Utc.with_ymd_and_hms(2026, 11, 23, 7, 0, 0).unwrap() - now).num_seconds();
    assert_eq!(
        r.headers()["retry-after"].to_str().unwrap(),
        expected.to_string()
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_openai_error(&v);
    assert_eq!(v["error"]["code"], "no_node_available");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("2026-11-23T07:00:00"), "{msg}");
    gw.stop().await;
}

#[tokio::test]
async fn rate_limit_per_key_is_429_with_retry_after() {
    let gw = gateway().await;
    let node = stand_in("n1", false, false).await;
    register(&gw, &node, "chat", "tiny-chat").await;
    let k = gw
        .state()
        .store
        .create_api_key(
            "limited",
            KeyLimits {
                requests_per_minute: Some(2),
                tokens_per_day: None,
            },
        )
        .await
        .unwrap();
    let url = format!("{}/v1/chat/completions", gw.url);
    for _ in 0..2 {
        let r = gw
            .post_json(
                &url,
                Some(k.secret.expose()),
                &chat_body("tiny-chat", false),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = gw
        .post_json(
            &url,
            Some(k.secret.expose()),
            &chat_body("tiny-chat", false),
        )
        .await;
    assert_eq!(r.status(), 429);
    let ra: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&ra));
    assert_openai_error(&r.json().await.unwrap());
    // Token budget: 9 tokens per answer, 10 allowed → the second request is refused.
    let t = gw
        .state()
        .store
        .create_api_key(
            "tokens",
            KeyLimits {
                requests_per_minute: None,
                tokens_per_day: Some(10),
            },
        )
        .await
        .unwrap();
    // n × max_tokens = 3 × 4 = 12 > 10: refused before reaching a node.
    let mut big = chat_body("tiny-chat", false);
    big["n"] = 3.into();
    big["max_tokens"] = 4.0.into();
    let r = gw.post_json(&url, Some(t.secret.expose()), &big).await;
    assert_eq!(r.status(), 429);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "tokens_exceeded");
    // Two small requests pass; the third goes over the day's tokens.
    for expected in [200, 200, 429] {
        let body = chat_body("tiny-chat", false);
        let r = gw.post_json(&url, Some(t.secret.expose()), &body).await;
        assert_eq!(r.status(), expected);
        let v: serde_json::Value = r.json().await.unwrap();
        if expected == 429 {
            assert_eq!(v["error"]["code"], "tokens_exceeded");
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn drain_request_takes_node_out_of_routing() {
    let gw = gateway().await;
    let node = stand_in("n1", true, false).await;
    let session = register(&gw, &node, "chat", "tiny-chat").await;
    assert!(gw.state().request_drain("n1"));
    let r = gw.post_json(&format!("{}/internal/nodes/heartbeat", gw.url), Some(session.session_token.expose()), &serde_json::json!({"node_id": "n1", "state": "ready", "load": {
            "running_sequences": 0, "queued_requests": 0, "kv_cache_used_tokens": 0,
            "kv_cache_total_tokens": 0, "generation_tokens_per_second": 0.0, "requests_in_flight": 0}})).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["action"], "drain");
    let key = api_key(&gw).await;
    let r = gw
        .post_json(
            &format!("{}/v1/chat/completions", gw.url),
            Some(&key),
            &chat_body("tiny-chat", false),
        )
        .await;
    assert_eq!(r.status(), 503);
    // Goodbye: out of routing and the store says draining.
    let r = gw
        .post_json(
            &format!("{}/internal/nodes/goodbye", gw.url),
            Some(session.session_token.expose()),
            &serde_json::json!({"node_id": "n1", "reason": "SIGTERM"}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let n = gw.state().store.get_node("n1").await.unwrap().unwrap();
    assert_eq!(n.state.as_str(), "draining");
    let r = gw
        .post_json(
            &format!("{}/internal/nodes/heartbeat", gw.url),
            Some(session.session_token.expose()),
            &serde_json::json!({"node_id": "n1", "state": "ready", "load": {}}),
        )
        .await;
    assert_eq!(r.status(), 401, "a node that said goodbye has no session");
    gw.stop().await;
}
