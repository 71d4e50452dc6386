//! 32 simultaneous streaming requests complete, run batched (the engine's metrics show
//! more than one sequence per step), and give exactly the text of the same requests
//! run one at a time with greedy sampling.

use crate::common;

use serde_json::{Value, json};

fn stream_text(c: &reqwest::blocking::Client, url: &str, prompt: &str) -> (String, String) {
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 20, "temperature": 0, "stream": true,
    });
    let resp = c.post(url).json(&body).send().unwrap();
    assert_eq!(resp.status(), 200);
    let events = common::sse_events(resp);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    let mut finish = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        let ch = &v["choices"][0];
        text.push_str(ch["delta"]["content"].as_str().unwrap_or(""));
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    assert!(!finish.is_empty());
    (text, finish)
}

#[test]
fn thirty_two_streams_batched_match_sequential_greedy() {
    let tiny = common::tiny_model();
    let node = common::Node::start(&common::config(
        tiny.path(),
        false,
        "",
        "prefill_chunk_tokens = 64",
    ));
    let url = node.url("/v1/chat/completions");
    let prompts: Vec<String> = (0..32)
        .map(|i| {
            format!(
                "Tell me story number {i} about the {} fox.",
                ["quick", "lazy", "brown", "small"][i % 4]
            )
        })
        .collect();
    let c = common::client();
    let sequential: Vec<(String, String)> =
        prompts.iter().map(|p| stream_text(&c, &url, p)).collect();
    assert_eq!(
        node.metric("dayshift_node_step_sequences_max"),
        1.0,
        "one at a time must run alone"
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(prompts.len()));
    let handles: Vec<_> = prompts
        .iter()
        .cloned()
        .map(|p| {
            let url = url.clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                let c = common::client();
                b.wait();
                stream_text(&c, &url, &p)
            })
        })
        .collect();
    let concurrent: Vec<(String, String)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let max = node.metric("dayshift_node_step_sequences_max");
    eprintln!("most sequences in one step: {max}");
    assert!(max > 1.0, "requests were not batched");
    for (i, (s, c)) in sequential.iter().zip(&concurrent).enumerate() {
        assert_eq!(
            s, c,
            "prompt {i} differs between sequential and batched runs"
        );
    }
}
