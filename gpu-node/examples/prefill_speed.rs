//! Prefill speed of a GGUF model on this machine's CPU, in the engine's own batched
//! forward pass (no HTTP, no tokenizer): a prompt of `TOKENS` token ids run through one
//! cache slot in chunks of `CHUNK` (the node's `prefill_chunk_tokens`), the last chunk
//! asking for the last token's logits, as a request's first step does.
//!
//!     [SLOTS=S] [CAP=C] [RUNS=N] [ALLOC=glibc] \
//!     cargo run --release -p dayshift-node --example prefill_speed -- MODEL.gguf [TOKENS] [CHUNK]
//!
//! Prints the time and tokens/s of each of 2 runs and the time spent per chunk start
//! (the attention part grows with the position). Used to find where a long prompt's
//! time goes; the figure users see is `bench/gguf-cpu/run.sh`'s time to first token.

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Tensor};
use dayshift_node::model::gguf;
use dayshift_node::model::llama::{BatchItem, KvCache, WantLogits};
use std::time::Instant;

/// Milliseconds per call of `f` (median of 5 rounds of `reps` calls).
fn time_ms(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut v = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        v.push(t.elapsed().as_secs_f64() * 1000.0 / reps as f64);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[2])
}

/// Where dequantize + f32 GEMM overtakes candle's quantized dot products: one
/// MLP-sized matrix (1536 × 768) in Q8_0 and Q4_K, for 1 to 256 rows.
fn crossover() -> anyhow::Result<()> {
    let w = Tensor::randn(0f32, 0.05, (1536, 768), &Device::Cpu)?;
    for dt in [GgmlDType::Q8_0, GgmlDType::Q4K] {
        let q = std::sync::Arc::new(QTensor::quantize(&w, dt)?);
        let qm = QMatMul::QTensor(q.clone());
        let mut line = format!("{dt:?} 1536x768, ms per call (quantized dot / dequantize+GEMM):");
        for rows in [1usize, 8, 16, 32, 64, 128, 256] {
            let x = Tensor::randn(0f32, 1.0, (rows, 768), &Device::Cpu)?;
            let a = time_ms(20, || Ok(qm.forward(&x).map(|_| ())?))?;
            let b = time_ms(20, || {
                let wd = q.dequantize(&Device::Cpu)?;
                Ok(x.matmul(&wd.t()?).map(|_| ())?)
            })?;
            line.push_str(&format!(" {rows}: {a:.2}/{b:.2}"));
        }
        println!("{line}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: prefill_speed MODEL.gguf [TOKENS] [CHUNK]"))?;
    let tokens: usize = args.next().map_or(Ok(3000), |s| s.parse())?;
    let chunk: usize = args.next().map_or(Ok(256), |s| s.parse())?;
    // As the node does (`ALLOC=glibc`: glibc's defaults, for an A/B).
    if std::env::var("ALLOC").is_ok_and(|v| v == "glibc") {
        println!("allocator: glibc's defaults");
    } else {
        dayshift_node::device::keep_freed_memory();
    }
    crossover()?;
    let m = gguf::load(std::path::Path::new(&path), None, &Device::Cpu)?;
    let vocab = m.llama.config().vocab_size as u32;
    // A fixed, varied prompt: ids spread over the vocabulary.
    let ids: Vec<u32> = (0..tokens as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % vocab)
        .collect();
    // SLOTS=S CAP=C: the cache's geometry (default 1 slot of the prompt's length; a node's
    // cache has more slots, each of `kv_cache_tokens / max_running_sequences`).
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let (slots, cap) = (env("SLOTS").unwrap_or(1), env("CAP").unwrap_or(tokens + 1));
    for run in 0..env("RUNS").unwrap_or(2) {
        let mut kv = KvCache::new(&m.llama, slots, cap.max(tokens + 1))?;
        let t0 = Instant::now();
        let mut marks = Vec::new();
        let mut start = 0;
        for c in ids.chunks(chunk) {
            let tc = Instant::now();
            let last = start + c.len() == tokens;
            let item = BatchItem {
                slot: 0,
                start,
                tokens: c,
                want: if last {
                    WantLogits::Last
                } else {
                    WantLogits::None
                },
            };
            let out = m.llama.forward_batch(&mut kv, &[item])?;
            if let Some(t) = out {
                let _ = t.to_vec2::<f32>()?;
            }
            marks.push((start, tc.elapsed().as_secs_f64()));
            start += c.len();
        }
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "run {run}: {tokens} tokens in chunks of {chunk}: {dt:.2} s, {:.1} tok/s",
            tokens as f64 / dt
        );
        let show: Vec<String> = marks
            .iter()
            .step_by((marks.len() / 6).max(1))
            .map(|(s, t)| format!("@{s}: {:.0} ms", t * 1000.0))
            .collect();
        println!("  per chunk: {}", show.join(", "));
    }
    Ok(())
}
