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
//! With `DAYSHIFT_BENCH_STATIC_STEP` (an experiment) the fused step is captured instead
//! from [`super::static_step`]'s launches over buffers allocated before the capture.

use super::decode_ops::{index_buffer, max_abs_diff};
use super::greedy_step::{DecodeIds, GreedyStep};
use super::llama::{BatchItem, KvCache, Llama, WantLogits};
use super::static_step::{StaticStep, StaticStepMode};
use candle_core::cuda_backend::CudaDevice;
use candle_core::cuda_backend::cudarc::driver::{CudaEvent, CudaGraph, PinnedHostSlice, sys};
use candle_core::{Device, Result, Storage, Tensor};

/// The captured decode graphs of one [`KvCache`].
pub struct DecodeGraphs {
    /// By bucket size, ascending.
    entries: Vec<Entry>,
    /// Page-locked buffers of the largest bucket's rows, free for a chained step's picks
    /// (`replay_greedy`); two are in use at a time.
    pinned: Vec<PinnedHostSlice<u32>>,
    /// The last greedy step's start event (`DAYSHIFT_BENCH_GPU_TIMING=1`).
    last_start: Option<std::sync::Arc<CudaEvent>>,
}

struct Entry {
    /// Rows of the bucket.
    b: usize,
    /// The graph's output `[b, vocab]` (a graph allocation, or the static step's buffer;
    /// rewritten by every replay). Declared before `graph`: freed first.
    logits: Tensor,
    /// The graph's input `[3 * b]` u32: ids, positions, slots.
    idx: Tensor,
    graph: CudaGraph,
    /// The static step the graph was captured from (its buffers), if it was.
    step: Option<StaticStep>,
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
        Ok(DecodeGraphs {
            entries,
            pinned: Vec::new(),
            last_start: None,
        })
    }

    /// The bucket sizes captured.
    pub fn buckets(&self) -> Vec<usize> {
        self.entries.iter().map(|e| e.b).collect()
    }

    /// The buckets captured from a static step (`DAYSHIFT_BENCH_STATIC_STEP`): a bucket
    /// that should have been but is not fell back to candle's operations (the log says why).
    pub fn static_buckets(&self) -> Vec<usize> {
        self.entries
            .iter()
            .filter(|e| e.step.is_some())
            .map(|e| e.b)
            .collect()
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
    let mode = StaticStepMode::from_env();
    if mode.on {
        match capture_static(model, kv, dev, &idx, &eager, b, mode) {
            Ok(Some(e)) => return Ok(e),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                rows = b,
                "the static decode step failed, capturing candle's operations instead: {e}"
            ),
        }
    }
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
    check_replay(model, kv, &idx, b, &graph, &logits, &eager, 1)?;
    Ok(Entry {
        b,
        logits,
        idx,
        graph,
        step: None,
    })
}

/// The decode step of `b` rows captured from its [`StaticStep`] (`None` where the model
/// has none), checked like the candle capture over several replays (with `pdl`, a kernel
/// reading before the previous one's end would show as a replay that differs).
fn capture_static(
    model: &Llama,
    kv: &KvCache,
    dev: &CudaDevice,
    idx: &Tensor,
    eager: &Tensor,
    b: usize,
    mode: StaticStepMode,
) -> Result<Option<Entry>> {
    let Some(step) = model.static_decode_step(kv, idx, b, mode)? else {
        return Ok(None);
    };
    let stream = dev.cuda_stream();
    stream
        .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
        .map_err(|e| err("begin capture", e))?;
    let out = step.enqueue(dev);
    let graph = stream.end_capture(
        sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
    );
    out?;
    let graph = graph
        .map_err(|e| err("end capture", e))?
        .ok_or_else(|| err("end capture", "the capture recorded no work"))?;
    let logits = step.logits().clone();
    check_replay(model, kv, idx, b, &graph, &logits, eager, 8)?;
    tracing::info!(
        rows = b,
        kernels = step.launches(),
        pdl = step.pdl(),
        swiglu_in_gate_up = step.paired(),
        "decode step captured from its static launches"
    );
    Ok(Some(Entry {
        b,
        logits,
        idx: idx.clone(),
        graph,
        step: Some(step),
    }))
}

/// Uploads and replays `graph` `replays` times, each replay's `logits` checked against
/// the eager step's: the same kernels on the same inputs, equal up to cuBLAS's choice of
/// algorithm. A difference is an error that says whether the eager step and the graph
/// each repeat themselves, and which rows differ, so the log tells a nondeterministic
/// kernel from a wrong capture.
#[allow(clippy::too_many_arguments)]
fn check_replay(
    model: &Llama,
    kv: &KvCache,
    idx: &Tensor,
    b: usize,
    graph: &CudaGraph,
    logits: &Tensor,
    eager: &Tensor,
    replays: usize,
) -> Result<()> {
    graph.upload().map_err(|e| err("graph upload", e))?;
    let scale = max_abs_diff(eager, &eager.zeros_like()?)?.max(1.0);
    for replay in 0..replays.max(1) {
        graph.launch().map_err(|e| err("graph launch", e))?;
        let diff = max_abs_diff(logits, eager)?;
        if !(diff.is_nan() || diff > 1e-2 * scale) {
            continue;
        }
        let first = logits.copy()?;
        let again = model.forward_decode(kv, idx, b)?;
        graph.launch().map_err(|e| err("graph launch", e))?;
        let eager_repeat = max_abs_diff(&again, eager)?;
        let replay_repeat = max_abs_diff(logits, &first)?;
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
            "replay {replay} of the graph gave logits that differ from the eager step's by {diff} (largest logit {scale}); a second eager step differs from the first by {eager_repeat}, a second replay from the first by {replay_repeat}; {}",
            rows.join(", ")
        );
    }
    Ok(())
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
    launch_entry(model, e, host, None)?;
    Ok(Some(e.logits.narrow(0, 0, n)?))
}

/// Uploads a step's indices (`index_buffer` of the entry's bucket) into the entry's
/// input, overwrites its token ids with `ids` (a previous step's picks on the device)
/// when given, and launches the graph.
fn launch_entry(model: &Llama, e: &Entry, host: Vec<u32>, ids: Option<&Tensor>) -> Result<()> {
    let src = Tensor::from_vec(host, 3 * e.b, model.device())?;
    e.idx.slice_set(&src, 0, 0)?;
    if let Some(ids) = ids {
        e.idx.slice_set(ids, 0, 0)?;
    }
    e.graph.launch().map_err(|e| err("decode graph launch", e))
}

/// The page-locked buffer a chained step's picks are copied into (see
/// [`replay_greedy`]).
pub(crate) struct PickFetch {
    /// Taken back into the graphs' pool once the picks are read; a fetch dropped
    /// unread (an error, the engine stopping with a step launched ahead) waits for its
    /// copy before the buffer is freed (see the `Drop` below).
    buf: Option<PinnedHostSlice<u32>>,
    /// With `DAYSHIFT_BENCH_GPU_TIMING=1`: timing events at the step's start and end on
    /// the stream, and the previous launched step's start.
    timing: Option<StepEvents>,
    /// Recorded after the copy. (The buffer's own event is never recorded: candle turns
    /// cudarc's stream synchronization off, so `PinnedHostSlice::as_slice` would not wait.)
    copied: CudaEvent,
}

impl Drop for PickFetch {
    /// A copy into page-locked memory may still be pending: freeing the buffer under
    /// it would let the GPU write into freed host memory. cudarc's own drop waits only
    /// on the buffer's event, which is never recorded here.
    fn drop(&mut self) {
        if self.buf.is_some()
            && let Err(e) = self.copied.synchronize()
        {
            tracing::warn!("waiting for a decode step's picks before dropping them: {e}");
        }
    }
}

/// Timing events of one greedy step (`DAYSHIFT_BENCH_GPU_TIMING=1`).
struct StepEvents {
    start: std::sync::Arc<CudaEvent>,
    end: CudaEvent,
    previous_start: Option<std::sync::Arc<CudaEvent>>,
}

/// Whether greedy steps record timing events (`DAYSHIFT_BENCH_GPU_TIMING=1`, a
/// benchmark's diagnosis: the engine then logs the GPU's busy time and the period
/// between step starts).
fn gpu_timing_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DAYSHIFT_BENCH_GPU_TIMING").is_ok_and(|v| v == "1"))
}

/// Sums of GPU timings of greedy steps: busy ns, steps, period ns, periods.
static GPU_TIMES: std::sync::Mutex<(u64, u64, u64, u64)> = std::sync::Mutex::new((0, 0, 0, 0));

/// The average GPU time of a greedy step from its indices' upload to its picks (ms) and
/// the average period between two steps' starts (ms, periods over 5 ms left out), since
/// the last call; `None` without `DAYSHIFT_BENCH_GPU_TIMING=1` or steps.
pub fn take_gpu_timing() -> Option<(f64, f64)> {
    let mut g = GPU_TIMES.lock().ok()?;
    let (busy, n, period, m) = std::mem::take(&mut *g);
    (n > 0).then(|| {
        (
            busy as f64 / 1e6 / n as f64,
            if m > 0 {
                period as f64 / 1e6 / m as f64
            } else {
                0.0
            },
        )
    })
}

/// Launches a greedy decode step of `rows` (slot, position) through the smallest bucket
/// that holds it: the indices are uploaded (from pageable memory, as `replay` does:
/// page-locked staging measured no different on the H200, 986.0 vs 988.5 tok/s
/// llama1b batch 1, `bench/gpu/results/h200-s14/`), the ids of a [`DecodeIds::Previous`] step
/// copied on the device into the graph's input, the graph launched, the argmax of each
/// row taken, and the picks copied asynchronously into a page-locked buffer. Returns
/// without waiting for the device; `None` when no graphs are captured or no bucket holds
/// the rows (the caller runs the step eagerly).
pub(crate) fn replay_greedy(
    model: &Llama,
    kv: &mut KvCache,
    rows: &[(usize, usize)],
    ids: &DecodeIds<'_>,
) -> Result<Option<GreedyStep>> {
    let n = rows.len();
    let Some(g) = kv.graphs.as_ref() else {
        return Ok(None);
    };
    let Some(ei) = g.entries.iter().position(|e| e.b >= n) else {
        return Ok(None);
    };
    let Device::Cuda(dev) = model.device() else {
        return Ok(None);
    };
    let zero = [0u32];
    let items: Vec<BatchItem<'_>> = rows
        .iter()
        .map(|&(slot, start)| BatchItem {
            slot,
            start,
            tokens: &zero,
            want: WantLogits::Last,
        })
        .collect();
    model.check_items(kv, &items)?;
    let Some(g) = kv.graphs.as_mut() else {
        return Ok(None);
    };
    let stream = dev.cuda_stream();
    let start = if gpu_timing_on() {
        Some(std::sync::Arc::new(
            stream
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| err("timing event", e))?,
        ))
    } else {
        None
    };
    let e = &g.entries[ei];
    let tok = |r: usize| match ids {
        DecodeIds::Host(t) => t.get(r).copied().unwrap_or(0),
        DecodeIds::Previous(_) => 0,
    };
    let host = index_buffer(
        rows.iter()
            .enumerate()
            .map(|(r, &(slot, start))| (slot as u32, start as u32, tok(r))),
        e.b,
    );
    let ids = match ids {
        DecodeIds::Previous(p) => Some(p.ids()),
        DecodeIds::Host(_) => None,
    };
    launch_entry(model, e, host, ids)?;
    let picks = super::decode_ops::argmax_rows(&e.logits.narrow(0, 0, n)?)?;
    let timing = match start {
        Some(start) => {
            let end = stream
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| err("timing event", e))?;
            let previous_start = g.last_start.replace(start.clone());
            Some(StepEvents {
                start,
                end,
                previous_start,
            })
        }
        None => None,
    };
    let largest = g.entries.last().map_or(n, |e| e.b);
    let mut buf = match g.pinned.pop() {
        Some(b) => b,
        // SAFETY: the buffer is only read after a copy into it has completed.
        None => unsafe { stream.context().alloc_pinned_with_flags::<u32>(largest, 0) }
            .map_err(|e| err("page-locked buffer for the picks", e))?,
    };
    {
        let (st, l) = picks.storage_and_layout();
        let Storage::Cuda(c) = &*st else {
            candle_core::bail!("the decode step's picks are not on the GPU");
        };
        let start = l.start_offset();
        let view = c.as_cuda_slice::<u32>()?.slice(start..start + n);
        // Into the buffer's first `n` values only (a copy into the whole buffer would
        // read past the picks). A plain slice: cudarc neither waits nor records here.
        let host = buf
            .as_mut_slice()
            .map_err(|e| err("the picks' page-locked buffer", e))?;
        let host = host
            .get_mut(..n)
            .ok_or_else(|| err("the picks' page-locked buffer", "smaller than the step"))?;
        stream
            .memcpy_dtoh(&view, host)
            .map_err(|e| err("copying the picks to the host", e))?;
    }
    let copied = stream
        .record_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
        .map_err(|e| err("an event after the picks' copy", e))?;
    Ok(Some(GreedyStep::fetching(
        picks,
        n,
        PickFetch {
            buf: Some(buf),
            copied,
            timing,
        },
    )))
}

/// Waits for a chained step's picks and returns its first `n`; the buffer goes back to
/// the graphs' pool.
pub(crate) fn finish_fetch(kv: &mut KvCache, mut f: PickFetch, n: usize) -> Result<Vec<u32>> {
    f.copied
        .synchronize()
        .map_err(|e| err("waiting for the decode step's picks", e))?;
    if let Some(t) = &f.timing
        && let Ok(busy) = t.start.elapsed_ms(&t.end)
        && let Ok(mut g) = GPU_TIMES.lock()
    {
        g.0 += (busy as f64 * 1e6) as u64;
        g.1 += 1;
        if let Some(p) = &t.previous_start
            && let Ok(period) = p.elapsed_ms(&t.start)
            && period < 5.0
        {
            g.2 += (period as f64 * 1e6) as u64;
            g.3 += 1;
        }
    }
    let buf = f
        .buf
        .take()
        .ok_or_else(|| err("the decode step's picks", "already read"))?;
    let v = buf
        .as_slice()
        .map_err(|e| err("waiting for the decode step's picks", e))?
        .get(..n)
        .map(<[u32]>::to_vec)
        .ok_or_else(|| err("the decode step's picks", "fewer than its rows"))?;
    if let Some(g) = kv.graphs.as_mut() {
        g.pinned.push(buf);
    }
    Ok(v)
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
