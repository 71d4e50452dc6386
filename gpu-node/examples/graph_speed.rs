//! A batch-1 GPU decode step through the model's decode graph (a CUDA build, on the GPU
//! machine): steps as the engine ran them before session 14 (host enqueue, then the
//! greedy pick copied back, which waits for the GPU: the time per token at batch 1),
//! steps launched one ahead as the engine runs them now (`Llama::launch_greedy`: step
//! k + 1 reads step k's pick on the device and is launched before step k's token is
//! read; the tokens must equal the first form's), the same steps enqueued back to back
//! with one wait at the end, and the graph alone replayed back to back (timed by CUDA
//! events). On an H200 (2026-12-04) both back-to-back forms were slower than the
//! engine's steps (llama1b 1,040 / 1,030 against ~980 µs): a relaunch first frees the
//! previous replay's output (`AUTO_FREE_ON_LAUNCH`), which waits for it. Launched ahead,
//! llama1b's step is 966–971 µs against 976–988 (`bench/gpu/results/h200-s14/`).
//!
//!     cargo build --release -p dayshift-node --features cuda --example graph_speed
//!     [QUANT=q4_k] [KV=SLOTSxTOKENS] [NODE_DEVICE=1] [PAUSE_MS=N] [PROMPT=N]
//!     [DAYSHIFT_BENCH_GPU_TIMING=1] [DAYSHIFT_BENCH_L2_PREFETCH_MIB=N]
//!     [DAYSHIFT_BENCH_STATIC_STEP=off|plain|pdl|pdl+pair|...]
//!     graph_speed MODEL [STEPS]
//!
//! (a model as `serve` takes it; `NODE_DEVICE=1` opens the GPU as `serve` does;
//! `PAUSE_MS` adds bursts of steps after an idle GPU.)

use candle_core::{Device, Tensor};
use dayshift_node::model::decode_ops::argmax_rows;
use dayshift_node::model::greedy_step::DecodeIds;
use dayshift_node::model::llama::{BatchItem, KvCache, Llama, WantLogits};
use dayshift_node::model::{LoadedModel, load_quantized};
use std::time::Instant;

/// One decode step of slot 0 at position `pos`; the logits.
fn step(m: &Llama, kv: &mut KvCache, pos: usize, tok: u32) -> anyhow::Result<Tensor> {
    let toks = [tok];
    let item = BatchItem {
        slot: 0,
        start: pos,
        tokens: &toks,
        want: WantLogits::Last,
    };
    m.forward_batch(kv, &[item])?
        .ok_or_else(|| anyhow::anyhow!("the step returned no logits"))
}

fn main() -> anyhow::Result<()> {
    // The node's log lines (graph capture, a static step falling back, L2 plan) on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: graph_speed MODEL_DIR [STEPS]"))?;
    let steps: usize = args.next().map_or(Ok(256), |s| s.parse())?;
    // NODE_DEVICE=1: the device as `serve` opens it (no cudarc event tracking, the memory
    // pool kept), to compare with candle's plain `Device::new_cuda`.
    let dev = if std::env::var("NODE_DEVICE").is_ok_and(|v| v == "1") {
        dayshift_node::device::select("cuda:0")?.device
    } else {
        Device::new_cuda(0)?
    };
    // QUANT=q4_k (a uniform type) quantizes a safetensors model's matrices at load.
    let quant = std::env::var("QUANT").ok().filter(|q| !q.is_empty());
    let path = std::path::Path::new(&dir);
    let LoadedModel::Generation(g) = load_quantized(path, None, quant.as_deref(), &dev)? else {
        anyhow::bail!("{dir}: not a generation model");
    };
    let m = &g.llama;
    // PROMPT=N: the prompt's length (default 16; bench/gpu/run.sh's clients send 128).
    let prompt_len: u32 = std::env::var("PROMPT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let prompt: Vec<u32> = (0..prompt_len).collect();
    // KV=SLOTSxTOKENS sets the cache's geometry (default: one slot of prompt + steps), e.g.
    // `KV=128x4096` for what `serve` allocates for a 4k-context model.
    let (slots, cap) = match std::env::var("KV").ok().and_then(|v| {
        let (a, b) = v.split_once('x')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }) {
        Some(x) => x,
        None => (1, prompt.len() + 2 * steps + 8),
    };
    anyhow::ensure!(
        cap >= prompt.len() + 2 * steps + 8,
        "KV: the cache must hold 2 x STEPS tokens"
    );
    let mut kv = KvCache::new(m, slots, cap)?;
    let buckets = kv.capture_graphs(m)?;
    let (gemvs, bytes) = m.l2_prefetch_plan();
    let static_buckets = kv.static_graph_buckets();
    println!(
        "{dir} {}: graph buckets {buckets:?}; L2 prefetch: {:.1} MB a step over {gemvs} GEMVs; static step: {:?}, captured for buckets {static_buckets:?}",
        quant.as_deref().unwrap_or(""),
        bytes as f64 / 1e6,
        dayshift_node::model::static_step::StaticStepMode::from_env(),
    );
    let first = BatchItem {
        slot: 0,
        start: 0,
        tokens: &prompt,
        want: WantLogits::Last,
    };
    let lg = m
        .forward_batch(&mut kv, &[first])?
        .ok_or_else(|| anyhow::anyhow!("no logits"))?;
    let mut tok = argmax_rows(&lg)?.to_vec1::<u32>()?[0];
    let mut pos = prompt.len();
    for round in 0..2 {
        // As the engine without overlap: enqueue, then wait for the picked token.
        let (start_pos, start_tok) = (pos, tok);
        let mut engine_toks = Vec::with_capacity(steps);
        let (mut enqueue, t0) = (0f64, Instant::now());
        for _ in 0..steps {
            let t = Instant::now();
            let lg = step(m, &mut kv, pos, tok)?;
            enqueue += t.elapsed().as_secs_f64();
            tok = argmax_rows(&lg)?.to_vec1::<u32>()?[0];
            engine_toks.push(tok);
            pos += 1;
        }
        let synced = t0.elapsed().as_secs_f64();
        // As the engine with overlap: step k + 1 is launched on step k's picks (on the
        // device) before step k's token is read.
        dev.synchronize()?;
        let t0 = Instant::now();
        let mut chained_toks = Vec::with_capacity(steps);
        let mut prev =
            m.launch_greedy(&mut kv, &[(0, start_pos)], DecodeIds::Host(&[start_tok]))?;
        for k in 1..steps {
            let next =
                m.launch_greedy(&mut kv, &[(0, start_pos + k)], DecodeIds::Previous(&prev))?;
            chained_toks.extend(prev.tokens(&mut kv)?);
            prev = next;
        }
        chained_toks.extend(prev.tokens(&mut kv)?);
        let chained = t0.elapsed().as_secs_f64();
        #[cfg(feature = "cuda")]
        if let Some((busy, period)) = dayshift_node::model::cuda_graph::take_gpu_timing() {
            println!(
                "launched ahead, DAYSHIFT_BENCH_GPU_TIMING: GPU busy {:.1} us a step, period {:.1} us",
                busy * 1e3,
                period * 1e3
            );
        }
        // Back to back: every step's input is the same token, one wait at the end.
        dev.synchronize()?;
        let t0 = Instant::now();
        let mut last = None;
        for _ in 0..steps {
            last = Some(argmax_rows(&step(m, &mut kv, pos, tok)?)?);
            pos += 1;
        }
        if let Some(l) = last {
            l.to_vec1::<u32>()?;
        }
        let b2b = t0.elapsed().as_secs_f64();
        let us = |s: f64| s * 1e6 / steps as f64;
        // FNV-1a of the tokens, to compare runs of different settings.
        let fnv = engine_toks.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
            (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3)
        });
        println!(
            "round {round}: {steps} steps; as the engine {:.1} us a step (host enqueue {:.1} us of it); launched ahead {:.1} us a step (same tokens: {}); back to back {:.1} us a step; tokens {fnv:016x}",
            us(synced),
            us(enqueue),
            us(chained),
            chained_toks == engine_toks,
            us(b2b),
        );
        pos = prompt.len(); // the next round rewrites the same positions
    }
    // PAUSE_MS=N: bursts of 128 engine-like steps with N ms of idle GPU between them, as a
    // benchmark client's requests leave it (the median step of the bursts' steps).
    if let Some(pause) = std::env::var("PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let mut times = Vec::new();
        for _ in 0..8 {
            std::thread::sleep(std::time::Duration::from_millis(pause));
            pos = prompt.len();
            for _ in 0..128.min(steps) {
                let t = Instant::now();
                let lg = step(m, &mut kv, pos, tok)?;
                tok = argmax_rows(&lg)?.to_vec1::<u32>()?[0];
                times.push(t.elapsed().as_secs_f64() * 1e6);
                pos += 1;
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "bursts of 128 steps after {pause} ms idle: median {:.1} us a step, p10 {:.1}, p90 {:.1}",
            times[times.len() / 2],
            times[times.len() / 10],
            times[times.len() * 9 / 10]
        );
    }
    #[cfg(feature = "cuda")]
    {
        let us = dayshift_node::model::cuda_graph::replay_gpu_us(m, &kv, 1, steps)?;
        println!("graph alone, replayed back to back: {us:.1} us a step (GPU time)");
    }
    Ok(())
}
