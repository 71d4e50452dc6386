//! What the gateway's conversation affinity (`gateway::affinity`: the body parsed again
//! with borrowed raw JSON, the conversation's start hashed) costs per request, beside
//! the parse the gateway already did before it (the request head: `model`, `stream`, …)
//! and beside a full `serde_json::Value` parse, for chat bodies of 1 KB to 1 MB.
//!
//!     cargo run --release -p dayshift --example affinity_cost
//!
//! Prints µs per call (median of 5 runs of N calls) and the ratio to the head's parse.
use std::time::Instant;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Head {
    model: Option<String>,
    stream: Option<bool>,
    max_tokens: Option<f64>,
    user: Option<String>,
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
    println!("body       head parse   affinity   (ratio)   full Value parse");
    for bytes in [1_000, 20_000, 200_000, 1_000_000] {
        let b = body(bytes);
        let n = (20_000_000 / b.len()).max(20);
        let head = time(n, || {
            serde_json::from_slice::<Head>(&b).map_or(0, |h| h.model.map_or(1, |m| m.len() as u64))
        });
        let aff = time(n, || {
            dayshift::server::gateway::affinity("key_1", &b).unwrap_or(0)
        });
        let full = time(n, || {
            serde_json::from_slice::<serde_json::Value>(&b)
                .map_or(0, |v| v.as_object().map_or(0, |o| o.len() as u64))
        });
        println!(
            "{:>7} B  {head:>9.2} µs  {aff:>8.2} µs  ({:.2}×)  {full:>9.2} µs",
            b.len(),
            aff / head
        );
    }
}
