//! What the gateway's conversation affinity costs per request, for chat bodies of 1 KB
//! to 1 MB: the request head's parse as before it (`model`, `stream`, …), the head's
//! parse as the gateway does it now (also borrowing the raw `messages` and `prompt`) plus
//! `gateway::affinity_of` (the conversation's start hashed), and beside them the
//! standalone `gateway::affinity` (a second parse of the body) and a full
//! `serde_json::Value` parse.
//!
//!     cargo run --release -p dayshift --example affinity_cost
//!
//! Prints µs per call (median of 5 runs of N calls) and the gateway's now against before.
use std::time::Instant;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Head {
    model: Option<String>,
    stream: Option<bool>,
    max_tokens: Option<f64>,
    user: Option<String>,
}

/// The head as the gateway parses it now: the same fields and the raw start.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct HeadNow<'a> {
    model: Option<String>,
    stream: Option<bool>,
    max_tokens: Option<f64>,
    user: Option<String>,
    #[serde(borrow, default)]
    messages: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a serde_json::value::RawValue>,
}

/// A chat body of about `bytes`: a system prompt, then turns of ~500-byte messages.
fn body(bytes: usize) -> Vec<u8> {
    let msg =
        "The quarterly figures for the office are attached; please summarise them. ".repeat(7);
    let mut messages = vec![serde_json::json!({"role": "system", "content": "Be brief."})];
    let mut i = 0;
    while serde_json::to_vec(&messages).map_or(0, |v| v.len()) < bytes {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": format!("{i}: {msg}")}));
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({"model": "m", "stream": true, "messages": messages}))
        .unwrap_or_default()
}

/// Median µs per call of `f` over 5 runs of `n` calls.
fn time(n: usize, mut f: impl FnMut() -> u64) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let mut x = 0u64;
            for _ in 0..n {
                x = x.wrapping_add(std::hint::black_box(f()));
            }
            std::hint::black_box(x);
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn main() {
    use dayshift::server::gateway::{ConversationStart, affinity, affinity_of};
    println!(
        "body       head before   head + affinity now  (ratio)   standalone affinity   full Value parse"
    );
    for bytes in [1_000, 20_000, 200_000, 1_000_000] {
        let b = body(bytes);
        let n = (20_000_000 / b.len()).max(20);
        let before = time(n, || {
            serde_json::from_slice::<Head>(&b).map_or(0, |h| h.model.map_or(1, |m| m.len() as u64))
        });
        let now = time(n, || {
            serde_json::from_slice::<HeadNow<'_>>(&b).map_or(0, |h| {
                let start = ConversationStart {
                    messages: h.messages,
                    prompt: h.prompt,
                };
                affinity_of("key_1", &start).unwrap_or(0)
            })
        });
        let alone = time(n, || affinity("key_1", &b).unwrap_or(0));
        let full = time(n, || {
            serde_json::from_slice::<serde_json::Value>(&b)
                .map_or(0, |v| v.as_object().map_or(0, |o| o.len() as u64))
        });
        println!(
            "{:>7} B  {before:>9.2} µs  {now:>14.2} µs  ({:.2}×)  {alone:>14.2} µs  {full:>14.2} µs",
            b.len(),
            now / before
        );
    }
}
