//! Decode steps replayed as CUDA graphs (issue 17).
//!
//! An eager decode step enqueues a few hundred candle operations, each costing the host
//! ~15 µs: at batch 1 the GPU waits for the host most of the step. Here the decode step
//! of each batch bucket (powers of two up to the cache's slots, and the slots) is
//! captured once, at warm-up, from [`Llama::forward_decode`], whose only per-step input
//! is one device buffer (token ids, positions, slots; see `decode_ops.rs`). A decode-only
//! step then copies its indices into the bucket's buffer and launches the graph: one
//! host call instead of hundreds. Rows above the step's size are padding (they write
//! nothing). Prefill and mixed steps stay eager.
//!
//! Memory: candle allocates inside the capture with `cuMemAllocAsync`, which becomes
//! graph allocations; the logits are the one allocation not freed inside the graph, kept
//! by the entry and freed by the driver before each relaunch
//! (`CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH`; their address stays the same).

use super::decode_ops::{index_buffer, max_abs_diff};
use super::llama::{BatchItem, KvCache, Llama, WantLogits};
use candle_core::cuda_backend::CudaDevice;
use candle_core::cuda_backend::cudarc::driver::{CudaGraph, sys};
use candle_core::{Device, Result, Tensor};

/// The captured decode graphs of one [`KvCache`].
pub struct DecodeGraphs {
    /// By bucket size, ascending.
    entries: Vec<Entry>,
}

struct Entry {
    /// Rows of the bucket.
    b: usize,
    /// The graph's output `[b, vocab]` (a graph allocation, rewritten by every replay).
    /// Declared before `graph`: freed first.
    logits: Tensor,
    /// The graph's input `[3 * b]` u32: ids, positions, slots.
    idx: Tensor,
    graph: CudaGraph,
}

fn err(what: &str, e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{what}: {e}"))
}

/// Batch buckets for a cache of `slots` sequences: 1, 2, 4, ... below `slots`, and `slots`.
pub fn buckets(slots: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut b = 1;
    while b < slots {
        v.push(b);
        b *= 2;
    }
    v.push(slots.max(1));
    v
}

impl DecodeGraphs {
    /// Captures every bucket's decode step over `kv`. Each capture is checked: the
    /// graph's first replay must give the logits of the same step run eagerly. Writes
    /// position 0 of the first slots (call it before any sequence uses the cache).
    pub fn capture(model: &Llama, kv: &KvCache) -> Result<Self> {
        let Device::Cuda(dev) = model.device() else {
            candle_core::bail!("CUDA graphs need a CUDA device");
        };
        let mut entries = Vec::new();
        for b in buckets(kv.slots()) {
            entries.push(capture_one(model, kv, dev, b).map_err(|e| {
                err(
                    &format!("capturing the decode step of {b} rows as a CUDA graph"),
                    e,
                )
            })?);
        }
        Ok(DecodeGraphs { entries })
    }

    /// The bucket sizes captured.
    pub fn buckets(&self) -> Vec<usize> {
        self.entries.iter().map(|e| e.b).collect()
    }
}

fn capture_one(model: &Llama, kv: &KvCache, dev: &CudaDevice, b: usize) -> Result<Entry> {
    // Row r: slot r, position 0, token r (a real step, so the check below means something).
    let host = index_buffer(
        (0..b).map(|r| {
            (
                r as u32,
                0,
                r as u32 % model.config().vocab_size.max(1) as u32,
            )
        }),
        b,
    );
    let idx = Tensor::from_vec(host, 3 * b, model.device())?;
    // candle uploads small host data (shapes and strides of strided operations) during
    // some operations; with this guard it keeps one device copy per distinct value, which
    // the captured graph then reads. The eager run fills it (a miss while capturing is an
    // error), loads the kernels, lets cuBLAS pick its algorithms, and gives the logits
    // the replay must reproduce.
    let cache_guard = dev.enable_cuda_graph_htod_cache();
    let eager = model.forward_decode(kv, &idx, b)?;
    model.device().synchronize()?;
    let stream = dev.cuda_stream();
    stream
        .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
        .map_err(|e| err("begin capture", e))?;
    let out = model.forward_decode(kv, &idx, b);
    // End the capture whatever happened, so the stream is usable again.
    let graph = stream.end_capture(
        sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
    );
    drop(cache_guard);
    let logits = out?;
    let graph = graph
        .map_err(|e| err("end capture", e))?
        .ok_or_else(|| err("end capture", "the capture recorded no work"))?;
    graph.upload().map_err(|e| err("graph upload", e))?;
    graph.launch().map_err(|e| err("graph launch", e))?;
    let diff = max_abs_diff(&logits, &eager)?;
    // The same kernels on the same inputs: equal up to cuBLAS's choice of algorithm.
    let scale = max_abs_diff(&eager, &eager.zeros_like()?)?.max(1.0);
    if diff.is_nan() || diff > 1e-2 * scale {
        // Say whether the eager step and the graph each repeat themselves, and which
        // rows differ, so the log tells a nondeterministic kernel from a wrong capture.
        let first = logits.copy()?;
        let again = model.forward_decode(kv, &idx, b)?;
        graph.launch().map_err(|e| err("graph launch", e))?;
        let eager_repeat = max_abs_diff(&again, &eager)?;
        let replay_repeat = max_abs_diff(&logits, &first)?;
        let rows: Vec<String> = (0..b)
            .map(|r| -> Result<String> {
                let (g, e) = (first.get(r)?, eager.get(r)?);
                Ok(format!(
                    "row {r}: {:.4} (argmax {} vs {})",
                    max_abs_diff(&g, &e)?,
                    g.argmax(0)?.to_scalar::<u32>()?,
                    e.argmax(0)?.to_scalar::<u32>()?
                ))
            })
            .collect::<Result<_>>()?;
        candle_core::bail!(
            "the replayed graph's logits differ from the eager step's by {diff} (largest logit {scale}); a second eager step differs from the first by {eager_repeat}, a second replay from the first by {replay_repeat}; {}",
            rows.join(", ")
        );
    }
    Ok(Entry {
        b,
        logits,
        idx,
        graph,
    })
}

/// Runs a decode-only step (every item one token, its logits wanted) by replaying the
/// smallest captured bucket that holds it; `None` when the step is not one (prefill,
/// mixed, larger than every bucket) or no graphs are captured, and the caller runs it
/// eagerly. The logits `[items, vocab]` (rows in item order) are valid until the next step.
pub(crate) fn replay(
    model: &Llama,
    kv: &mut KvCache,
    items: &[BatchItem<'_>],
) -> Result<Option<Tensor>> {
    let Some(g) = kv.graphs.as_ref() else {
        return Ok(None);
    };
    if items
        .iter()
        .any(|it| it.tokens.len() != 1 || !matches!(it.want, WantLogits::Last))
    {
        return Ok(None);
    }
    let n = items.len();
    let Some(e) = g.entries.iter().find(|e| e.b >= n) else {
        return Ok(None);
    };
    model.check_items(kv, items)?;
    let host = index_buffer(
        items
            .iter()
            .map(|it| (it.slot as u32, it.start as u32, it.tokens[0])),
        e.b,
    );
    let src = Tensor::from_vec(host, 3 * e.b, model.device())?;
    e.idx.slice_set(&src, 0, 0)?;
    e.graph
        .launch()
        .map_err(|e| err("decode graph launch", e))?;
    Ok(Some(e.logits.narrow(0, 0, n)?))
}

/// GPU time of one replay of the captured graph of `b` rows, in µs: `n` replays back to
/// back on the stream, without index updates, between two timing events (a benchmark's
/// view of the graph alone, `examples/graph_speed.rs`). Each relaunch first frees the
/// previous replay's output (`AUTO_FREE_ON_LAUNCH`), which waits for it: replays back to
/// back are slower than steps with the host in between (H200, 2026-12-04).
pub fn replay_gpu_us(model: &Llama, kv: &KvCache, b: usize, n: usize) -> Result<f64> {
    let Device::Cuda(dev) = model.device() else {
        candle_core::bail!("graph timing needs a CUDA device");
    };
    let Some(e) = kv
        .graphs
        .as_ref()
        .and_then(|g| g.entries.iter().find(|e| e.b == b))
    else {
        candle_core::bail!("no decode graph of {b} rows was captured");
    };
    let stream = dev.cuda_stream();
    let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    e.graph.launch().map_err(|e| err("graph launch", e))?;
    let t0 = stream
        .record_event(timing)
        .map_err(|e| err("timing event", e))?;
    for _ in 0..n {
        e.graph.launch().map_err(|e| err("graph launch", e))?;
    }
    let t1 = stream
        .record_event(timing)
        .map_err(|e| err("timing event", e))?;
    t1.synchronize().map_err(|e| err("timing event", e))?;
    let ms = t0.elapsed_ms(&t1).map_err(|e| err("timing event", e))?;
    Ok(ms as f64 * 1e3 / n.max(1) as f64)
}
