//! CPU decode speed of a GGUF model in the engine's own forward pass (no HTTP, no
//! tokenizer, no sampling beyond an argmax): a 32-token prompt, then `STEPS` single-token
//! steps of one sequence, as a batch-1 decode does. Prints ms per token of 3 runs; run it
//! under `perf record` to see where a decode step's time goes.
//!
//!     cargo run --release -p dayshift-node --example decode_speed -- MODEL.gguf [STEPS]
//!
//! `KV=SLOTSxTOKENS` sets the KV cache's geometry (default: one slot of prompt + steps);
//! `serve` sizes it from free memory, e.g. `KV=32x2931` for a Qwen3-0.6B shape here (on
//! 2026-12-04 within this machine's ±10 % run-to-run noise of one small slot).
//! `AB=1` alternates runs between our quantized GEMV (`model::cpu_qgemv`) and candle's
//! (6 runs), so both are compared in one process.

use candle_core::{D, Device};
use dayshift_node::model::gguf;
use dayshift_node::model::llama::{BatchItem, KvCache, WantLogits};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    // SAFETY: no other thread yet; as `serve` does.
    unsafe { dayshift_node::device::pin_cpu_threads() };
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: decode_speed MODEL.gguf [STEPS]"))?;
    let steps: usize = args.next().map_or(Ok(128), |s| s.parse())?;
    let m = gguf::load(std::path::Path::new(&path), None, &Device::Cpu)?;
    let vocab = m.llama.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..32u32).map(|i| (i * 7919) % vocab).collect();
    let ab = std::env::var("AB").is_ok_and(|v| v == "1");
    for run in 0..if ab { 6 } else { 3 } {
        let ours = !ab || run % 2 == 0;
        dayshift_node::model::cpu_qgemv::set_enabled(ours);
        let (slots, cap) = match std::env::var("KV").ok().and_then(|v| {
            let (a, b) = v.split_once('x')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }) {
            Some(x) => x,
            None => (1, prompt.len() + steps + 1),
        };
        let mut kv = KvCache::new(&m.llama, slots, cap)?;
        let first = BatchItem {
            slot: 0,
            start: 0,
            tokens: &prompt,
            want: WantLogits::Last,
        };
        let mut next = match m.llama.forward_batch(&mut kv, &[first])? {
            Some(l) => l.argmax(D::Minus1)?.to_vec1::<u32>()?[0],
            None => 0,
        };
        let t0 = Instant::now();
        for i in 0..steps {
            let tok = [next];
            let item = BatchItem {
                slot: 0,
                start: prompt.len() + i,
                tokens: &tok,
                want: WantLogits::Last,
            };
            next = match m.llama.forward_batch(&mut kv, &[item])? {
                Some(l) => l.argmax(D::Minus1)?.to_vec1::<u32>()?[0],
                None => 0,
            };
        }
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "run {run} ({}): {steps} steps, {:.3} ms/token, {:.1} tok/s",
            if ours { "cpu_qgemv" } else { "candle" },
            dt * 1e3 / steps as f64,
            steps as f64 / dt
        );
    }
    Ok(())
}
