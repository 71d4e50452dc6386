//! The Chat Completions features apps use, against a real `dayshift-node` process with
//! the tiny model: logprobs against the transformers reference, `logit_bias`, `n`
//! choices from one prefill, completions' `echo`, JSON-schema constrained output, and
//! forced tool calls (plain and streamed) with a tool-capable template.

use serde_json::{Value, json};

fn post(c: &reqwest::blocking::Client, url: &str, body: &Value) -> Value {
    let r = c.post(url).json(body).send().unwrap();
    let status = r.status();
    let v: Value = r.json().unwrap();
    assert!(status.is_success(), "{status}: {v} for {body}");
    v
}

fn log_softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    row.iter().map(|x| x - lse).collect()
}

#[test]
fn chat_api_features_on_the_tiny_model() {
    let reference: Value =
        serde_json::from_str(include_str!("../../reference/tiny_reference.json")).unwrap();
    let tiny = crate::common::tiny_model();
    dayshift_node::testmodel::set_chat_template(
        tiny.path(),
        dayshift_node::testmodel::TOOL_CHAT_TEMPLATE,
    )
    .unwrap();
    let node = crate::common::Node::start(&crate::common::config(tiny.path(), false, "", ""));
    let c = crate::common::client();
    let chat = node.url("/v1/chat/completions");
    let comp = node.url("/v1/completions");

    // Logprobs: the prompt's (echo, one full pass) and the generated tokens' (the
    // batched engine) against transformers' logits of the reference case.
    let case = &reference["cases"][0];
    let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
    let logits: Vec<Vec<f64>> = serde_json::from_value(case["logits"].clone()).unwrap();
    let greedy: Vec<u32> = serde_json::from_value(case["greedy"].clone()).unwrap();
    let v = post(
        &c,
        &comp,
        &json!({"model": "tiny", "prompt": ids, "max_tokens": 1, "temperature": 0,
                "logprobs": 5, "echo": true}),
    );
    let lp = &v["choices"][0]["logprobs"];
    let token_lps = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(token_lps.len(), ids.len() + 1, "{lp}");
    assert!(token_lps[0].is_null());
    let mut worst = 0f64;
    for i in 1..ids.len() {
        let want = log_softmax(&logits[i - 1])[ids[i] as usize];
        worst = worst.max((token_lps[i].as_f64().unwrap() - want).abs());
    }
    let last = log_softmax(&logits[ids.len() - 1]);
    let gen_lp = token_lps[ids.len()].as_f64().unwrap();
    worst = worst.max((gen_lp - last[greedy[0] as usize]).abs());
    assert!(worst < 1e-3, "logprobs differ from transformers by {worst}");
    // The top alternatives of the generated token are among the reference's top 5 (the
    // completions format keys them by text, so tokens with the same text merge).
    let top = lp["top_logprobs"][ids.len()].as_object().unwrap();
    assert!(!top.is_empty() && top.len() <= 5, "{top:?}");
    let mut sorted: Vec<f64> = last.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    for g in top.values().map(|x| x.as_f64().unwrap()) {
        assert!(
            sorted[..5].iter().any(|w| (g - w).abs() < 1e-3),
            "top logprob {g} not among {:?}",
            &sorted[..5]
        );
    }
    eprintln!("logprobs: worst difference from transformers {worst:.2e}");

    // Chat logprobs: entries per token with bytes and sorted alternatives.
    let v = post(
        &c,
        &chat,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 3}),
    );
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 4, "{v}");
    for e in content {
        let tops = e["top_logprobs"].as_array().unwrap();
        assert_eq!(tops.len(), 3);
        // Greedy: the token is the most likely one.
        assert!(
            (e["logprob"].as_f64().unwrap() - tops[0]["logprob"].as_f64().unwrap()).abs() < 1e-6
        );
        assert!(e["bytes"].is_array());
    }
    assert!(v["system_fingerprint"].as_str().unwrap().starts_with("fp_"));
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);

    // logit_bias +100 on one token forces it, greedy or sampled; -100 bans the greedy one.
    for temp in [0.0, 1.0] {
        let v = post(
            &c,
            &comp,
            &json!({"model": "tiny", "prompt": "The capital", "max_tokens": 5, "temperature": temp,
                    "logit_bias": {"300": 100}, "logprobs": 0, "seed": 1}),
        );
        let toks = v["choices"][0]["logprobs"]["tokens"].as_array().unwrap();
        let one = post(
            &c,
            &comp,
            &json!({"model": "tiny", "prompt": [300], "max_tokens": 1, "echo": true, "logprobs": 0}),
        );
        let t300 = &one["choices"][0]["logprobs"]["tokens"][0];
        assert_eq!(toks.len(), 5);
        assert!(toks.iter().all(|t| t == t300), "{toks:?} vs {t300}");
    }
    let plain = post(
        &c,
        &comp,
        &json!({"model": "tiny", "prompt": ids, "max_tokens": 3, "temperature": 0}),
    );
    let banned = post(
        &c,
        &comp,
        &json!({"model": "tiny", "prompt": ids, "max_tokens": 3, "temperature": 0,
                "logit_bias": {greedy[0].to_string(): -100}}),
    );
    assert_ne!(plain["choices"][0]["text"], banned["choices"][0]["text"]);

    // n = 3: three choices from one prefill; greedy choices agree, usage counts all.
    let v = post(
        &c,
        &chat,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 6, "temperature": 0, "n": 3}),
    );
    let ch = v["choices"].as_array().unwrap();
    assert_eq!(ch.len(), 3);
    for (i, x) in ch.iter().enumerate() {
        assert_eq!(x["index"], i);
        assert_eq!(x["message"]["content"], ch[0]["message"]["content"]);
    }
    let single = post(
        &c,
        &chat,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 6, "temperature": 0}),
    );
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap(),
        3 * single["usage"]["completion_tokens"].as_u64().unwrap(),
        "{}",
        v["usage"]
    );
    assert_eq!(
        single["choices"][0]["message"]["content"],
        ch[0]["message"]["content"]
    );
    assert_eq!(
        single["usage"]["prompt_tokens"],
        v["usage"]["prompt_tokens"]
    );
    let v = post(
        &c,
        &comp,
        &json!({"model": "tiny", "prompt": "Hello", "max_tokens": 8, "temperature": 1.0, "n": 3, "seed": 5}),
    );
    let texts: Vec<&str> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 3);
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "{texts:?}");

    // Echo: the prompt text comes first.
    let v = post(
        &c,
        &comp,
        &json!({"model": "tiny", "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "echo": true}),
    );
    assert!(
        v["choices"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("The capital of France is")
    );

    // Structured output: even random weights give JSON that fits the schema.
    let schema = json!({"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12},
        "rank": {"type": "integer", "minimum": 0, "maximum": 100},
        "sunny": {"type": "boolean"},
        "tag": {"enum": ["a", "b", "c"]}},
        "required": ["city", "rank", "sunny", "tag"], "additionalProperties": false});
    for seed in 0..3 {
        let v = post(
            &c,
            &chat,
            &json!({"model": "tiny", "messages": [{"role": "user", "content": "hello"}],
                    "max_tokens": 120, "temperature": 1.0, "seed": seed,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": true}}}),
        );
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        let o: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(o["city"].as_str().unwrap().chars().count() <= 12, "{o}");
        assert!(o["rank"].is_i64() && o["sunny"].is_boolean(), "{o}");
        assert!(["a", "b", "c"].contains(&o["tag"].as_str().unwrap()), "{o}");
        assert_eq!(o.as_object().unwrap().len(), 4);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
    let v = post(
        &c,
        &chat,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 60, "temperature": 0, "response_format": {"type": "json_object"}}),
    );
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    if v["choices"][0]["finish_reason"] == "stop" {
        assert!(
            serde_json::from_str::<Value>(text).unwrap().is_object(),
            "{text}"
        );
    }

    // A named tool: the call is forced and valid; the stream's deltas rebuild it.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                       "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"], "additionalProperties": false}}}]);
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "weather in Paris?"}],
        "max_tokens": 60, "temperature": 0, "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let v = post(&c, &chat, &body);
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        ["c", "f"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let r = c.post(&chat).json(&sbody).send().unwrap();
    let mut name = String::new();
    let mut streamed = String::new();
    let mut finish = Value::Null;
    for ev in crate::common::sse_events(r) {
        if ev == "[DONE]" {
            break;
        }
        let e: Value = serde_json::from_str(&ev).unwrap();
        let ch = &e["choices"][0];
        if let Some(tc) = ch["delta"]["tool_calls"].as_array() {
            if let Some(n) = tc[0]["function"]["name"].as_str() {
                name.push_str(n);
            }
            streamed.push_str(tc[0]["function"]["arguments"].as_str().unwrap_or_default());
        }
        if !ch["finish_reason"].is_null() {
            finish = ch["finish_reason"].clone();
        }
    }
    assert_eq!(name, "get_weather");
    assert_eq!(streamed, call["function"]["arguments"].as_str().unwrap());
    assert_eq!(finish, "tool_calls");
    // The history with the call and the tool's answer renders through the template.
    let v = post(
        &c,
        &chat,
        &json!({"model": "tiny", "max_tokens": 3, "tools": tools, "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp\": 21}"}]}),
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 60, "{v}");

    // Prefix cache: the same conversation again reuses all of its prompt but the last
    // token, with the same answer; another scope (the ingress's per-key header) none.
    let ask_as = |scope: Option<&str>, user: Option<&str>| {
        let mut body = json!({"model": "tiny", "max_tokens": 5,
            "temperature": 0, "messages": [
            {"role": "system", "content": "You are a careful assistant for the office."},
            {"role": "user", "content": "Write two lines about the sky."}]});
        if let Some(u) = user {
            body["user"] = u.into();
        }
        let mut r = c.post(&chat).json(&body);
        if let Some(s) = scope {
            r = r.header(dayshift_config::protocol::CACHE_SCOPE_HEADER, s);
        }
        let v: Value = r.send().unwrap().json().unwrap();
        let u = &v["usage"];
        (
            v["choices"][0]["message"]["content"].clone(),
            u["prompt_tokens"].as_u64().unwrap(),
            u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        )
    };
    let ask = |scope| ask_as(scope, None);
    let (text, prompt, _) = ask(Some("key_a"));
    assert!(prompt > 20);
    assert_eq!(ask(Some("key_a")), (text.clone(), prompt, prompt - 1));
    assert_eq!(ask(Some("key_b")), (text.clone(), prompt, 0));
    // The end user (`user`) narrows the scope further.
    assert_eq!(
        ask_as(Some("key_a"), Some("zed")),
        (text.clone(), prompt, 0)
    );
    assert_eq!(
        ask_as(Some("key_a"), Some("zed")),
        (text, prompt, prompt - 1)
    );
    assert!(node.metric("dayshift_node_prompt_tokens_cached_total") >= (prompt - 1) as f64);
}
