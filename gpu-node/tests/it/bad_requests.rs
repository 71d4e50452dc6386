//! Bad requests get the right status and OpenAI-style error JSON, and the node keeps
//! serving afterwards (no panic).

use crate::common;

use serde_json::{Value, json};

fn check(
    c: &reqwest::blocking::Client,
    url: &str,
    body: &str,
    status: u16,
    param: Option<&str>,
    code: Option<&str>,
) {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), status, "status for {body}");
    let v: Value = r.json().unwrap();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(
        e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code"),
        "{v}"
    );
    if let Some(p) = param {
        assert_eq!(e["param"], p, "param for {body}: {v}");
    }
    if let Some(cd) = code {
        assert_eq!(e["code"], cd, "code for {body}: {v}");
    }
}

#[test]
fn bad_requests_get_openai_errors() {
    let tiny = common::tiny_model();
    let node = common::Node::start(&common::config(tiny.path(), true, "", ""));
    let c = common::client();
    let chat = node.url("/v1/chat/completions");
    let comp = node.url("/v1/completions");
    let emb = node.url("/v1/embeddings");
    let m = |extra: Value| {
        let mut b = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    // Bad JSON, wrong shapes.
    check(&c, &chat, "{not json", 400, None, None);
    check(&c, &chat, "[1,2]", 400, None, None);
    check(&c, &chat, r#"{"model":"tiny"}"#, 400, None, None);
    check(
        &c,
        &chat,
        &m(json!({"temperature": "hot"})),
        400,
        Some("temperature"),
        None,
    );
    check(
        &c,
        &chat,
        &json!({"model": "tiny", "messages": []}).to_string(),
        400,
        Some("messages"),
        None,
    );
    check(
        &c,
        &chat,
        &json!({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}).to_string(),
        400,
        Some("messages[0].role"),
        None,
    );
    // Unknown model, wrong kind of model.
    check(
        &c,
        &chat,
        &json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).to_string(),
        404,
        Some("model"),
        Some("model_not_found"),
    );
    check(
        &c,
        &chat,
        &json!({"model": "minilm", "messages": [{"role": "user", "content": "x"}]}).to_string(),
        400,
        Some("model"),
        None,
    );
    check(
        &c,
        &emb,
        &json!({"model": "tiny", "input": "x"}).to_string(),
        400,
        Some("model"),
        None,
    );
    // Bad parameter values.
    for (k, v) in [
        ("temperature", json!(2.5)),
        ("temperature", json!(-1)),
        ("top_p", json!(-0.1)),
        ("top_p", json!(1.5)),
        ("top_k", json!(-3)),
        ("presence_penalty", json!(3)),
        ("frequency_penalty", json!(-2.5)),
        ("n", json!(0)),
        ("n", json!(17)),
        ("n", json!(2.5)),
        ("max_tokens", json!(9.5)),
        ("max_tokens", json!(0)),
        ("max_tokens", json!(-5)),
        ("stop", json!(["a", "b", "c", "d", "e"])),
        ("logprobs", json!("yes")),
        ("top_logprobs", json!(3)),
        ("tools", json!("get_weather")),
        ("tool_choice", json!("required")),
        ("frobnicate", json!(1)),
        ("functions", json!([])),
    ] {
        check(&c, &chat, &m(json!({k: v})), 400, Some(k), None);
    }
    // Several unknown parameters: all named in the message.
    let r = c
        .post(&chat)
        .header("content-type", "application/json")
        .body(m(json!({"frobnicate": 1, "service_tier": "auto"})))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("frobnicate") && msg.contains("service_tier"),
        "{msg}"
    );
    assert_eq!(v["error"]["code"], "unknown_parameter");
    for (body, param) in [
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (json!({"logit_bias": {"abc": 1}}), "logit_bias.abc"),
        (json!({"logit_bias": {"5": 101}}), "logit_bias.5"),
        (json!({"logit_bias": {"99999": 1}}), "logit_bias.99999"),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format.type",
        ),
        (
            json!({"response_format": {"type": "json_schema"}}),
            "response_format.json_schema",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
    ] {
        check(&c, &chat, &m(body), 400, Some(param), None);
    }
    // Values the spec allows are accepted: top_p 0, whole numbers as floats, hints.
    for extra in [
        json!({"top_p": 0, "max_tokens": 2}),
        json!({"max_tokens": 2.0, "n": 2.0, "seed": 3.0}),
        json!({"max_tokens": 2, "user": "u1", "metadata": {"a": "b"}, "store": false}),
        json!({"max_tokens": 2, "logprobs": false, "tools": [], "tool_choice": "none"}),
    ] {
        let r = c
            .post(&chat)
            .header("content-type", "application/json")
            .body(m(extra.clone()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{extra}: {}", r.text().unwrap_or_default());
    }
    let r = c
        .post(&comp)
        .header("content-type", "application/json")
        .body(json!({"model": "tiny", "prompt": null, "max_tokens": 2.0}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "prompt: null");
    check(
        &c,
        &chat,
        &m(json!({"stream_options": {"include_usage": true}})),
        400,
        Some("stream_options"),
        None,
    );
    // Context overflow: prompt + max_tokens > 512.
    check(
        &c,
        &chat,
        &m(json!({"max_tokens": 10000})),
        400,
        Some("messages"),
        Some("context_length_exceeded"),
    );
    let long = "word ".repeat(2000);
    check(
        &c,
        &comp,
        &json!({"model": "tiny", "prompt": long}).to_string(),
        400,
        Some("prompt"),
        Some("context_length_exceeded"),
    );
    check(
        &c,
        &comp,
        &json!({"model": "tiny", "prompt": [1, 2, 99999]}).to_string(),
        400,
        Some("prompt"),
        None,
    );
    check(
        &c,
        &comp,
        &json!({"model": "tiny", "prompt": ["a", "b"]}).to_string(),
        400,
        Some("prompt"),
        None,
    );
    check(
        &c,
        &comp,
        &json!({"model": "tiny", "prompt": "x", "suffix": "y"}).to_string(),
        400,
        Some("suffix"),
        None,
    );
    // Embeddings.
    check(
        &c,
        &emb,
        &json!({"model": "minilm", "input": "x", "encoding_format": "hex"}).to_string(),
        400,
        Some("encoding_format"),
        None,
    );
    check(
        &c,
        &emb,
        &json!({"model": "minilm", "input": "x", "dimensions": 12.5}).to_string(),
        400,
        Some("dimensions"),
        None,
    );
    check(
        &c,
        &emb,
        &json!({"model": "minilm", "input": "x", "truncate": true}).to_string(),
        400,
        Some("truncate"),
        Some("unknown_parameter"),
    );
    check(
        &c,
        &emb,
        &json!({"model": "minilm", "input": []}).to_string(),
        400,
        Some("input"),
        None,
    );
    check(
        &c,
        &emb,
        &json!({"model": "minilm", "input": ""}).to_string(),
        400,
        None,
        None,
    );
    check(
        &c,
        &emb,
        &json!({"model": "minilm", "input": "x", "dimensions": 12}).to_string(),
        400,
        Some("dimensions"),
        None,
    );
    check(
        &c,
        &emb,
        &json!({"model": "minilm", "input": "word ".repeat(600)}).to_string(),
        400,
        None,
        Some("context_length_exceeded"),
    );
    // Unknown path and method.
    let r = c.get(node.url("/v2/nothing")).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().unwrap()["error"]["message"].is_string());
    let r = c.get(node.url("/v1/chat/completions")).send().unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().unwrap()["error"]["message"].is_string());
    // Still alive and well.
    let r = c
        .post(&chat)
        .body(m(json!({"max_tokens": 3, "temperature": 0})))
        .header("content-type", "application/json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let h: Value = c.get(node.url("/health")).send().unwrap().json().unwrap();
    assert_eq!(h["status"], "ready");
    assert!(node.metric("dayshift_node_requests_total{outcome=\"error\"}") >= 30.0);
}
