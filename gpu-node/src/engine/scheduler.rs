//! The engine loop: admission under the KV-cache budget, one batched forward pass per
//! step for every running sequence (decode tokens plus chunks of prompts) over one
//! padded KV cache of slots, sampling (greedy on the device: only the ids come back),
//! text deltas and finishing. Greedy decode steps whose batch does not change are
//! launched one ahead: step N + 1 reads step N's picks on the device and runs while the
//! host reads, detokenizes and sends step N's tokens (see [`Ahead`]).

use super::detok::Detok;
use super::grammar::{Constraint, apply_mask};
use super::prefix::{MIN_REUSE_TOKENS, PrefixCache};
use super::sampling::{Sampler, top_k};
use super::{Command, EngineLimits, Event, FinishReason, GenRequest, Overlap, TokenLogprob};
use crate::metrics::Metrics;
use crate::model::GenerationModel;
use crate::model::greedy_step::{DecodeIds, GreedyStep, chains_on_device};
use crate::model::llama::{BatchItem, KvCache, WantLogits};
use candle_core::{D, DType, Tensor};
use llguidance::toktrie::SimpleVob;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

struct Seq {
    /// Unique while the engine runs (slots are reused).
    id: u64,
    req: Arc<GenRequest>,
    /// Choice index within its request.
    index: usize,
    /// Request number (choices of one request share it).
    group: u64,
    /// A choice other than the first waits for the first's prefill, then copies its KV.
    awaits_fork: bool,
    constraint: Option<Constraint>,
    slot: usize,
    /// Tokens whose keys and values are in the slot (positions `0..len`).
    len: usize,
    prefilled: usize,
    /// Prompt tokens whose keys and values the slot held from an earlier request
    /// ([`PrefixCache`]); they were not prefilled again.
    cached: usize,
    /// The engine failed this sequence's step: its slot's content is not trusted.
    failed: bool,
    generated: Vec<u32>,
    sampler: Sampler,
    detok: Detok,
    reserved: usize,
    done: Option<FinishReason>,
}

/// A greedy decode step launched before the previous step's tokens were read: one row
/// per sequence of `seqs` (by [`Seq::id`], in row order), each at its current length and
/// fed the token the previous step picked for it. When the next step would run exactly
/// these rows, it is this step (and the one after is launched ahead in turn); otherwise
/// its tokens are taken for the sequences still running before anything else runs.
struct Ahead {
    step: GreedyStep,
    seqs: Vec<u64>,
}

/// Where the engine thread's time goes, logged (`engine timings`) after each 2 s of
/// steps and whenever the engine goes idle (so each burst of work gets its own line),
/// one line per kind of step ([`StepKind`]): decode-only steps, and steps that read
/// prompt tokens (a prompt chunk takes far longer than a decode step, so one average
/// would hide both). `forward` is the host time to enqueue a step's kernels, `sync` the
/// wait for the device and the copy of the sampled ids (or logits), `host` sampling,
/// detokenising and sending. A GPU-bound engine waits in `sync`; a launch-bound one in
/// `forward`. In a decode step whose successor is launched ahead (`launched_ahead`
/// steps, [`Overlap`]), `forward` is that launch, made while the GPU still runs this
/// step, and `sync` the rest of the wait for this step.
#[derive(Default)]
struct Timings {
    decode: StepTimes,
    prompt: StepTimes,
}

/// Which line of [`Timings`] a step counts in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StepKind {
    /// Every row decodes one token.
    Decode,
    /// Some row reads prompt tokens (a chunk of a prompt, or its last part).
    Prompt,
}

/// The summed phases of the steps of one [`StepKind`].
#[derive(Default)]
struct StepTimes {
    steps: u64,
    rows: u64,
    /// Decode steps whose successor was launched before their tokens were read.
    ahead: u64,
    prep: Duration,
    forward: Duration,
    sync: Duration,
    host: Duration,
}

impl StepTimes {
    fn busy(&self) -> Duration {
        self.prep + self.forward + self.sync + self.host
    }

    fn log(&self, kind: StepKind) {
        if self.steps == 0 {
            return;
        }
        let per = |d: Duration| d.as_secs_f64() * 1e3 / self.steps as f64;
        let kind = match kind {
            StepKind::Decode => "decode",
            StepKind::Prompt => "with prompt tokens",
        };
        tracing::info!(
            kind,
            steps = self.steps,
            launched_ahead = self.ahead,
            avg_batch = format!("{:.1}", self.rows as f64 / self.steps as f64),
            step_ms = format!("{:.3}", per(self.busy())),
            prep_ms = format!("{:.3}", per(self.prep)),
            forward_ms = format!("{:.3}", per(self.forward)),
            sync_ms = format!("{:.3}", per(self.sync)),
            host_ms = format!("{:.3}", per(self.host)),
            "engine timings (per step)"
        );
    }
}

impl Timings {
    /// Adds one step of `rows` rows whose phases ended at `t`: started, prepared,
    /// enqueued, synced, done; `ahead`: its successor was launched before its tokens
    /// were read.
    fn add(&mut self, kind: StepKind, rows: usize, ahead: bool, t: [Instant; 5]) {
        let s = match kind {
            StepKind::Decode => &mut self.decode,
            StepKind::Prompt => &mut self.prompt,
        };
        s.steps += 1;
        s.rows += rows as u64;
        s.ahead += u64::from(ahead);
        s.prep += t[1] - t[0];
        s.forward += t[2] - t[1];
        s.sync += t[3] - t[2];
        s.host += t[4] - t[3];
    }

    fn steps(&self) -> u64 {
        self.decode.steps + self.prompt.steps
    }

    fn maybe_log(&mut self) {
        if self.decode.busy() + self.prompt.busy() >= Duration::from_secs(2) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.steps() == 0 {
            return;
        }
        #[cfg(feature = "cuda")]
        if let Some((busy, period)) = crate::model::cuda_graph::take_gpu_timing() {
            tracing::info!(
                gpu_busy_ms = format!("{busy:.3}"),
                gpu_period_ms = format!("{period:.3}"),
                "GPU time of the greedy steps launched through decode graphs (DAYSHIFT_BENCH_GPU_TIMING)"
            );
        }
        self.decode.log(StepKind::Decode);
        self.prompt.log(StepKind::Prompt);
        *self = Timings::default();
    }
}

/// What a request still queued or running is told when the engine is stopped.
const STOPPED: &str = "the node is shutting down: retry on another node";

/// Runs until every [`super::EngineHandle`] is dropped and no work is left, or until
/// told to stop ([`Command::Stop`]: what is queued or running then gets an error).
pub fn run(
    model: Arc<GenerationModel>,
    limits: EngineLimits,
    metrics: Arc<Metrics>,
    rx: Receiver<Command>,
    warmed: tokio::sync::oneshot::Sender<()>,
) {
    let ctx = model.llama.config().max_position_embeddings;
    let (slots, cap) = super::cache_shape(&limits, ctx);
    let mut kv = match KvCache::new(&model.llama, slots, cap) {
        Ok(kv) => kv,
        Err(e) => {
            tracing::error!(
                "cannot allocate the KV cache ({slots} slots of {cap} tokens): {e}; lower engine.kv_cache_tokens or kv_cache_memory_fraction"
            );
            // Fail every request rather than hang them.
            for c in rx.iter() {
                match c {
                    Command::Generate(r) => {
                        let _ = r
                            .events
                            .send(Event::Error("the engine has no KV cache".into()));
                    }
                    Command::Stop => return,
                }
            }
            return;
        }
    };
    tracing::info!(slots, tokens_per_slot = cap, "KV cache allocated");
    warm_up(&model, &mut kv);
    if limits.cuda_graphs {
        capture_graphs(&model, &mut kv, limits.prefill_chunk + slots);
    }
    let _ = warmed.send(()); // the server may have stopped waiting
    let mut free: Vec<usize> = (0..slots).rev().collect(); // pop() gives the lowest slot
    let mut waiting: VecDeque<GenRequest> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut reserved = 0usize;
    let mut next_group = 0u64;
    let mut next_seq = 0u64;
    let mut open = true;
    let mut timings = Timings::default();
    let overlap = match limits.overlap {
        Overlap::Off => false,
        Overlap::OnDevice => chains_on_device(&kv),
        Overlap::Always => true,
    };
    let mut ahead: Option<Ahead> = None;
    let mut prefix = PrefixCache::new(slots, limits.prefix_cache);
    loop {
        if running.is_empty() && waiting.is_empty() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(Command::Generate(r)) => waiting.push_back(r),
                Ok(Command::Stop) | Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Command::Generate(r)) => waiting.push_back(r),
                Ok(Command::Stop) => {
                    metrics.queued.fetch_sub(waiting.len() as u64, Relaxed);
                    for r in waiting.drain(..) {
                        let _ = r.events.send(Event::Error(STOPPED.into()));
                    }
                    for s in running.drain(..) {
                        let _ = s.req.events.send(Event::Error(STOPPED.into()));
                    }
                    // A step launched ahead still runs on the device: let it finish
                    // before its buffers are freed.
                    if let Some(a) = ahead.take() {
                        let _ = a.step.tokens(&mut kv);
                    }
                    metrics.running.store(0, Relaxed);
                    return;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Drop waiting requests whose client went away.
        let before = waiting.len();
        waiting.retain(|r| !r.events.is_closed());
        metrics
            .queued
            .fetch_sub((before - waiting.len()) as u64, Relaxed);
        // Lowest slots first keeps the decode batch's slot range tight.
        free.sort_unstable_by(|a, b| b.cmp(a));
        // Admission: FIFO while slots and KV budget allow (n slots for n choices).
        while let Some(front) = waiting.front() {
            let n = front.n.max(1);
            let per = front.prompt.len() + front.max_tokens;
            if running.len() + n > limits.max_running
                || free.len() < n
                || reserved + n * per > limits.kv_tokens
            {
                break;
            }
            let Some(mut req) = waiting.pop_front() else {
                break;
            };
            metrics.queued.fetch_sub(1, Relaxed);
            let mut constraints: Vec<Option<Constraint>> = std::mem::take(&mut req.constraints)
                .into_iter()
                .map(Some)
                .collect();
            constraints.resize_with(n, || None);
            let req = Arc::new(req);
            next_group += 1;
            for (index, constraint) in constraints.into_iter().enumerate() {
                // The first choice may find its prompt's start in a free slot; the
                // others get the first's keys and values copied in.
                let taken = if index == 0 {
                    prefix.take(&mut free, req.cache_scope, &req.prompt)
                } else {
                    prefix.take_plain(&mut free).map(|s| (s, 0))
                };
                let Some((slot, mut cached)) = taken else {
                    break;
                };
                // A running sequence of the same scope may hold a longer start of the
                // prompt (two chats with one long system prompt): copy its keys and
                // values into the new slot.
                if index == 0
                    && limits.prefix_cache
                    && let Some((src, n)) = running_prefix(&running, &req, cached)
                {
                    match kv.copy_slot(src, slot, n) {
                        Ok(()) => cached = n,
                        Err(e) => tracing::warn!(
                            "cannot copy a running sequence's cached prompt start ({n} tokens), prefilling it: {e}"
                        ),
                    }
                }
                metrics
                    .prompt_tokens_cached
                    .fetch_add(cached as u64, Relaxed);
                next_seq += 1;
                reserved += per;
                let mut sampling = req.sampling.clone();
                if index > 0 {
                    sampling.seed = sampling.seed.map(|s| s.wrapping_add(index as u64));
                }
                running.push(Seq {
                    id: next_seq,
                    sampler: Sampler::new(sampling),
                    detok: Detok::new(req.stop.clone()),
                    index,
                    group: next_group,
                    awaits_fork: index > 0,
                    constraint,
                    slot,
                    len: cached,
                    prefilled: cached,
                    cached,
                    failed: false,
                    generated: Vec::new(),
                    reserved: per,
                    done: None,
                    req: req.clone(),
                });
            }
        }
        metrics.running.store(running.len() as u64, Relaxed);
        metrics.kv_reserved_tokens.store(reserved as u64, Relaxed);
        if running.is_empty() {
            continue;
        }
        step(
            &model,
            &limits,
            &metrics,
            &mut kv,
            &mut running,
            ctx,
            &mut timings,
            overlap.then_some(&mut ahead),
        );
        timings.maybe_log();
        // Retire finished or cancelled sequences.
        running.retain(|s| {
            let keep = s.done.is_none() && !s.req.events.is_closed();
            if !keep {
                reserved -= s.reserved;
                free.push(s.slot);
                if !s.failed {
                    prefix.retain(s.slot, s.req.cache_scope, fed_tokens(s));
                }
            }
            keep
        });
        if running.is_empty() {
            // A step launched ahead for sequences that have all ended: let it finish.
            if let Some(a) = ahead.take() {
                metrics.steps_ahead_unmatched.fetch_add(1, Relaxed);
                let _ = a.step.tokens(&mut kv);
            }
            timings.flush();
        }
        let used: usize = running.iter().map(|s| s.len).sum();
        metrics.kv_used_tokens.store(used as u64, Relaxed);
        metrics.running.store(running.len() as u64, Relaxed);
        metrics.kv_reserved_tokens.store(reserved as u64, Relaxed);
    }
}

/// Tokens of the warm-up's prompt chunk: 3 or more, so that on the CPU candle packs its
/// int8 tiles of every quantized weight it will take for prompts (on first use: 1.4 s for
/// a Qwen3-0.6B shape on the 2-core dev machine) before the node is ready, not inside
/// the first user's time to first token.
const WARM_UP_PROMPT: usize = 4;

/// Runs a prompt chunk and a decode step through slot 0 before the first request, so
/// that the first request does not pay for loading (on CUDA: JIT-compiling) kernels.
fn warm_up(model: &GenerationModel, kv: &mut KvCache) {
    let t = Instant::now();
    let ctx = model.llama.config().max_position_embeddings;
    let n = WARM_UP_PROMPT.min(kv.cap().min(ctx).saturating_sub(1));
    if n < 2 {
        return;
    }
    let run = |kv: &mut KvCache, start: usize, tokens: &[u32]| -> candle_core::Result<()> {
        let item = BatchItem {
            slot: 0,
            start,
            tokens,
            want: WantLogits::Last,
        };
        if let Some(l) = model.llama.forward_batch(kv, &[item])? {
            l.argmax(D::Minus1)?.to_vec1::<u32>()?;
        }
        Ok(())
    };
    match run(kv, 0, &[0; WARM_UP_PROMPT][..n]).and_then(|_| run(kv, n, &[0])) {
        Ok(()) => tracing::info!(secs = t.elapsed().as_secs_f64(), "engine warmed up"),
        Err(e) => tracing::warn!("warm-up step failed (the first request will show it): {e}"),
    }
}

/// Captures the decode step of every batch bucket as a CUDA graph (a no-op on the CPU);
/// on failure the node decodes eagerly and says why. `max_rows`: the most rows a step
/// can have (a prefill chunk and every slot), for which candle's quantized scratch
/// buffers are grown first
/// ([`crate::model::llama::Llama::reserve_quant_scratch`]).
fn capture_graphs(model: &GenerationModel, kv: &mut KvCache, max_rows: usize) {
    let t = Instant::now();
    if let Err(e) = model.llama.reserve_quant_scratch(max_rows) {
        tracing::warn!(
            "cannot reserve the quantized matmul's scratch for {max_rows} rows, decoding eagerly instead of with CUDA graphs: {e}"
        );
        return;
    }
    match kv.capture_graphs(&model.llama) {
        Ok(b) if b.is_empty() => {}
        Ok(buckets) => tracing::info!(
            secs = t.elapsed().as_secs_f64(),
            ?buckets,
            "decode steps captured as CUDA graphs"
        ),
        Err(e) => tracing::warn!(
            "cannot capture decode steps as CUDA graphs, decoding eagerly instead: {e}"
        ),
    }
}

/// One sequence to sample this step: its index in `running` and its row of logits
/// (choices forked from a prompt share their first choice's row).
struct Pick {
    seq: usize,
    row: usize,
}

/// What [`pick`] chose: a token per pick, its logprobs where asked, and the picks whose
/// grammar failed (that sequence ends with the error; the rest of the batch goes on).
struct Picked {
    toks: Vec<u32>,
    logprobs: Vec<Option<TokenLogprob>>,
    failed: Vec<Option<String>>,
}

/// Masks a host row by its grammar (if any) and samples it. A grammar error, or a mask
/// that allows no token, is that sequence's failure, never the batch's.
fn choose_on_host(
    row: &mut [f32],
    mask: Option<Result<SimpleVob, String>>,
    sampler: &mut Sampler,
) -> Result<u32, String> {
    if let Some(m) = mask {
        let mask = m.map_err(|e| format!("grammar: {e}"))?;
        apply_mask(row, &mask);
        if row.iter().all(|l| !l.is_finite()) {
            return Err("grammar: the grammar allows no token here".into());
        }
    }
    Ok(sampler.sample(row))
}

/// Sampled token per pick: greedy, unconstrained rows are picked on the device (only
/// their ids are copied back); the others' logits are copied to the host, biased,
/// masked by their grammar and sampled. Logprobs (from the raw logits) are computed
/// on the device for the rows that asked for them, and only those rows come back.
fn pick(
    logits: &Tensor,
    running: &mut [Seq],
    picks: &[Pick],
    masks: &mut [Option<Result<SimpleVob, String>>],
) -> candle_core::Result<Picked> {
    let on_host: Vec<bool> = picks
        .iter()
        .map(|p| !running[p.seq].sampler.is_greedy() || masks[p.seq].is_some())
        .collect();
    let host: Vec<usize> = (0..picks.len()).filter(|&i| on_host[i]).collect();
    let mut toks = if host.len() < picks.len() {
        crate::model::decode_ops::argmax_rows(logits)?.to_vec1::<u32>()?
    } else {
        Vec::new()
    };
    let mut out = vec![0u32; picks.len()];
    let mut failed: Vec<Option<String>> = vec![None; picks.len()];
    for (i, p) in picks.iter().enumerate() {
        if !on_host[i] {
            out[i] = toks.get(p.row).copied().unwrap_or(0);
        }
    }
    toks.clear();
    if !host.is_empty() {
        let rows: Vec<u32> = host.iter().map(|&i| picks[i].row as u32).collect();
        let idx = Tensor::from_vec(rows, host.len(), logits.device())?;
        let vals = logits
            .index_select(&idx, 0)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (&i, mut row) in host.iter().zip(vals) {
            let seq = picks[i].seq;
            match choose_on_host(&mut row, masks[seq].take(), &mut running[seq].sampler) {
                Ok(tok) => out[i] = tok,
                Err(e) => failed[i] = Some(e),
            }
        }
    }
    for (i, p) in picks.iter().enumerate() {
        if !on_host[i] {
            running[p.seq].sampler.accept(out[i]);
        }
    }
    // Logprobs: log-softmax on the device for the asked rows only.
    let mut lps = vec![None; picks.len()];
    let asked: Vec<usize> = (0..picks.len())
        .filter(|&i| running[picks[i].seq].req.logprobs.is_some())
        .collect();
    if !asked.is_empty() {
        let rows: Vec<u32> = asked.iter().map(|&i| picks[i].row as u32).collect();
        let idx = Tensor::from_vec(rows, asked.len(), logits.device())?;
        let ls = candle_nn::ops::log_softmax(
            &logits.index_select(&idx, 0)?.to_dtype(DType::F32)?,
            D::Minus1,
        )?
        .to_vec2::<f32>()?;
        for (&i, row) in asked.iter().zip(ls) {
            let k = running[picks[i].seq].req.logprobs.unwrap_or(0);
            let tok = out[i];
            lps[i] = Some(TokenLogprob {
                token: tok,
                logprob: row.get(tok as usize).copied().unwrap_or(f32::NEG_INFINITY),
                top: top_k(&row, k),
            });
        }
    }
    Ok(Picked {
        toks: out,
        logprobs: lps,
        failed,
    })
}

/// Threads for the grammar masks of one step: the machine's cores less one (the
/// forward pass's own thread), at least one.
fn mask_threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get().saturating_sub(1).max(1))
            .unwrap_or(1)
    })
}

fn fail_all(running: &mut [Seq], which: impl Iterator<Item = usize>, msg: &str) {
    for idx in which {
        let s = &mut running[idx];
        let _ = s.req.events.send(Event::Error(msg.to_string()));
        s.done = Some(FinishReason::Stop);
        s.failed = true;
    }
}

/// The running sequence of `req`'s scope whose slot holds the longest start of `req`'s
/// prompt, if that is at least [`MIN_REUSE_TOKENS`] longer than `cached` (what the new
/// request's own slot holds already): its slot and that length (never the whole prompt).
fn running_prefix(running: &[Seq], req: &GenRequest, cached: usize) -> Option<(usize, usize)> {
    let most = req.prompt.len().saturating_sub(1);
    running
        .iter()
        .filter(|s| s.req.cache_scope == req.cache_scope && !s.failed && !s.awaits_fork)
        .map(|s| {
            let held = s.req.prompt.iter().chain(&s.generated).take(s.len);
            let n = held.zip(&req.prompt).take_while(|(a, b)| a == b).count();
            (s.slot, n.min(most))
        })
        .filter(|&(_, n)| n >= cached + MIN_REUSE_TOKENS)
        .max_by_key(|&(_, n)| n)
}

/// The tokens whose keys and values `s` wrote into its slot (positions `0..s.len`): its
/// prompt, then the tokens it generated and fed back (all but the last).
fn fed_tokens(s: &Seq) -> Vec<u32> {
    s.req
        .prompt
        .iter()
        .chain(&s.generated)
        .take(s.len)
        .copied()
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn step(
    model: &GenerationModel,
    limits: &EngineLimits,
    metrics: &Metrics,
    kv: &mut KvCache,
    running: &mut [Seq],
    ctx: usize,
    timings: &mut Timings,
    ahead: Option<&mut Option<Ahead>>,
) {
    let t0 = Instant::now();
    let mut budget = limits.prefill_chunk;
    let mut inputs: Vec<(usize, Vec<u32>, bool)> = Vec::new(); // (seq index, tokens, sample after)
    for (i, s) in running.iter().enumerate() {
        if s.awaits_fork {
            continue;
        }
        if s.prefilled < s.req.prompt.len() {
            if budget == 0 {
                continue;
            }
            let n = (s.req.prompt.len() - s.prefilled).min(budget);
            budget -= n;
            let end = s.prefilled + n;
            inputs.push((
                i,
                s.req.prompt[s.prefilled..end].to_vec(),
                end == s.req.prompt.len(),
            ));
        } else if let Some(&last) = s.generated.last() {
            inputs.push((i, vec![last], true));
        }
    }
    if inputs.is_empty() {
        return;
    }
    let kind = if budget == limits.prefill_chunk {
        StepKind::Decode
    } else {
        StepKind::Prompt
    };
    if let Some(ahead) = ahead {
        let ids: Vec<u64> = inputs.iter().map(|(i, _, _)| running[*i].id).collect();
        let chains = inputs.iter().all(|(i, _, _)| overlaps(&running[*i]));
        match ahead.take() {
            Some(a) if chains && a.seqs == ids => {
                decode_ahead(
                    model,
                    metrics,
                    kv,
                    running,
                    &inputs,
                    Some(a.step),
                    ahead,
                    ctx,
                    timings,
                    t0,
                );
                return;
            }
            Some(a) => {
                take_ahead(model, metrics, kv, running, a, ctx, timings, t0);
                return;
            }
            None if chains => {
                decode_ahead(
                    model, metrics, kv, running, &inputs, None, ahead, ctx, timings, t0,
                );
                return;
            }
            None => {}
        }
    }
    // Rows to sample: each sampling item's row, plus the choices that fork from a
    // first choice whose prompt ends in this step.
    let mut picks: Vec<Pick> = Vec::new();
    let mut forks: Vec<(usize, usize)> = Vec::new(); // (leader, follower)
    for (row, (i, _, _)) in inputs.iter().filter(|(_, _, s)| *s).enumerate() {
        picks.push(Pick { seq: *i, row });
        if running[*i].generated.is_empty() {
            let g = running[*i].group;
            for (j, f) in running.iter().enumerate() {
                if f.awaits_fork && f.group == g {
                    picks.push(Pick { seq: j, row });
                    forks.push((*i, j));
                }
            }
        }
    }
    let items: Vec<BatchItem<'_>> = inputs
        .iter()
        .map(|(i, toks, sample)| BatchItem {
            slot: running[*i].slot,
            start: running[*i].len,
            tokens: toks,
            want: if *sample {
                WantLogits::Last
            } else {
                WantLogits::None
            },
        })
        .collect();
    metrics.record_step(items.len());
    let t1 = Instant::now();
    // Grammar masks are computed on another thread while the forward pass runs.
    let mut masks: Vec<Option<Result<SimpleVob, String>>> = Vec::new();
    masks.resize_with(running.len(), || None);
    let constrained: Vec<bool> = running.iter().map(|s| s.constraint.is_some()).collect();
    let picked: Vec<usize> = picks
        .iter()
        .map(|p| p.seq)
        .filter(|&i| constrained[i])
        .collect();
    let result = if picked.is_empty() {
        model.llama.forward_batch(kv, &items)
    } else {
        let mut cons: Vec<(usize, &mut Constraint)> = running
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| picked.contains(i))
            .filter_map(|(i, s)| s.constraint.as_mut().map(|c| (i, c)))
            .collect();
        // Split over up to `mask_threads` threads (one grammar is a few tens of µs to
        // a few ms per token; 32 of them in a row outlast a GPU step).
        let per = cons
            .len()
            .div_ceil(mask_threads().min(cons.len()).max(1))
            .max(1);
        std::thread::scope(|sc| {
            let handles: Vec<_> = cons
                .chunks_mut(per)
                .map(|chunk| {
                    sc.spawn(move || {
                        chunk
                            .iter_mut()
                            .map(|(i, c)| (*i, c.mask()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let r = model.llama.forward_batch(kv, &items);
            let mut panicked = false;
            for h in handles {
                match h.join() {
                    Ok(ms) => {
                        for (i, m) in ms {
                            masks[i] = Some(m);
                        }
                    }
                    Err(_) => panicked = true,
                }
            }
            if panicked {
                for &i in &picked {
                    if masks[i].is_none() {
                        masks[i] = Some(Err("the grammar engine panicked".into()));
                    }
                }
            }
            r
        })
    };
    let t2 = Instant::now();
    // Copy the prompt's KV to forked choices before they decode.
    let result = result.and_then(|lg| {
        for &(lead, f) in &forks {
            // The leader's tokens so far plus this step's (its length is updated below).
            let step = inputs
                .iter()
                .find(|(i, _, _)| *i == lead)
                .map_or(0, |(_, t, _)| t.len());
            let upto = running[lead].len + step;
            kv.copy_slot(running[lead].slot, running[f].slot, upto)?;
        }
        Ok(lg)
    });
    let toks = result.and_then(|lg| match lg {
        Some(lg) => pick(&lg, running, &picks, &mut masks),
        None => Ok(Picked {
            toks: Vec::new(),
            logprobs: Vec::new(),
            failed: Vec::new(),
        }),
    });
    let t3 = Instant::now();
    let Picked {
        toks,
        logprobs: lps,
        failed,
    } = match toks {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("step failed for a batch of {}: {e}", inputs.len());
            let mut all: Vec<usize> = inputs.iter().map(|(i, _, _)| *i).collect();
            all.extend(forks.iter().map(|f| f.1));
            fail_all(running, all.into_iter(), &format!("inference failed: {e}"));
            return;
        }
    };
    apply(
        model, metrics, running, &inputs, &forks, &picks, toks, lps, failed, ctx,
    );
    timings.add(kind, inputs.len(), false, [t0, t1, t2, t3, Instant::now()]);
}

/// Whether `s` may decode in a step launched ahead: it decodes (its prompt is in), greedy
/// on the raw logits, without a grammar or logprobs.
fn overlaps(s: &Seq) -> bool {
    s.prefilled >= s.req.prompt.len()
        && !s.awaits_fork
        && !s.generated.is_empty()
        && s.sampler.is_greedy()
        && s.constraint.is_none()
        && s.req.logprobs.is_none()
}

/// Whether a step after this one may be launched ahead for `s`: its next token cannot
/// end it by length (so the step after writes inside its KV reservation).
fn may_chain(s: &Seq, ctx: usize) -> bool {
    s.generated.len() + 1 < s.req.max_tokens && s.req.prompt.len() + s.generated.len() + 1 < ctx
}

/// A greedy decode step of `inputs` (every one [`overlaps`]): `current` when it was
/// launched ahead by the previous step, else launched now from the host's tokens. The
/// step after it is launched before its tokens are read, unless a sequence may end by
/// length here; then its tokens are taken as any step's.
#[allow(clippy::too_many_arguments)]
fn decode_ahead(
    model: &GenerationModel,
    metrics: &Metrics,
    kv: &mut KvCache,
    running: &mut [Seq],
    inputs: &[(usize, Vec<u32>, bool)],
    current: Option<GreedyStep>,
    ahead: &mut Option<Ahead>,
    ctx: usize,
    timings: &mut Timings,
    t0: Instant,
) {
    let rows_at = |k: usize| -> Vec<(usize, usize)> {
        inputs
            .iter()
            .map(|(i, _, _)| (running[*i].slot, running[*i].len + k))
            .collect()
    };
    if current.is_none() {
        metrics.record_step(inputs.len());
    }
    let t1 = Instant::now();
    let current = match current {
        Some(c) => Ok(c),
        None => {
            let toks: Vec<u32> = inputs
                .iter()
                .map(|(_, t, _)| t.first().copied().unwrap_or_default())
                .collect();
            model
                .llama
                .launch_greedy(kv, &rows_at(0), DecodeIds::Host(&toks))
        }
    };
    let current = current.inspect(|c| {
        if inputs.iter().all(|(i, _, _)| may_chain(&running[*i], ctx)) {
            metrics.record_step(inputs.len());
            match model
                .llama
                .launch_greedy(kv, &rows_at(1), DecodeIds::Previous(c))
            {
                Ok(next) => {
                    metrics.steps_ahead.fetch_add(1, Relaxed);
                    *ahead = Some(Ahead {
                        step: next,
                        seqs: inputs.iter().map(|(i, _, _)| running[*i].id).collect(),
                    });
                }
                Err(e) => tracing::warn!("cannot launch the next decode step ahead: {e}"),
            }
        }
    });
    let t2 = Instant::now();
    let toks = current.and_then(|c| c.tokens(kv));
    let t3 = Instant::now();
    let toks = match toks {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("decode step failed for a batch of {}: {e}", inputs.len());
            *ahead = None;
            let all: Vec<usize> = inputs.iter().map(|(i, _, _)| *i).collect();
            fail_all(running, all.into_iter(), &format!("inference failed: {e}"));
            return;
        }
    };
    let picks: Vec<Pick> = (0..inputs.len())
        .map(|row| Pick {
            seq: inputs[row].0,
            row,
        })
        .collect();
    let n = picks.len();
    apply_greedy(model, metrics, running, inputs, &picks, toks, n, ctx);
    let launched_ahead = ahead.is_some();
    timings.add(
        StepKind::Decode,
        inputs.len(),
        launched_ahead,
        [t0, t1, t2, t3, Instant::now()],
    );
}

/// Takes the tokens of a step launched ahead whose rows no longer match the batch (a
/// sequence ended or arrived): the sequences of its rows still running get theirs.
#[allow(clippy::too_many_arguments)]
fn take_ahead(
    model: &GenerationModel,
    metrics: &Metrics,
    kv: &mut KvCache,
    running: &mut [Seq],
    a: Ahead,
    ctx: usize,
    timings: &mut Timings,
    t0: Instant,
) {
    metrics.steps_ahead_unmatched.fetch_add(1, Relaxed);
    let mut inputs = Vec::new();
    let mut picks = Vec::new();
    for (row, id) in a.seqs.iter().enumerate() {
        if let Some(i) = running.iter().position(|s| s.id == *id)
            && let Some(&last) = running[i].generated.last()
        {
            picks.push(Pick { seq: i, row });
            inputs.push((i, vec![last], true));
        }
    }
    let t2 = Instant::now();
    let toks = a.step.tokens(kv);
    let t3 = Instant::now();
    match toks {
        Ok(toks) => apply_greedy(
            model,
            metrics,
            running,
            &inputs,
            &picks,
            toks,
            a.seqs.len(),
            ctx,
        ),
        Err(e) => {
            tracing::error!("decode step failed for a batch of {}: {e}", a.seqs.len());
            let all: Vec<usize> = inputs.iter().map(|(i, _, _)| *i).collect();
            fail_all(running, all.into_iter(), &format!("inference failed: {e}"));
            return;
        }
    }
    timings.add(
        StepKind::Decode,
        inputs.len(),
        false,
        [t0, t2, t2, t3, Instant::now()],
    );
}

/// Applies the greedy picks `toks` (one per row of a step of `rows` rows) of a decode
/// step to the sequences of `picks` (each one input of `inputs`).
#[allow(clippy::too_many_arguments)]
fn apply_greedy(
    model: &GenerationModel,
    metrics: &Metrics,
    running: &mut [Seq],
    inputs: &[(usize, Vec<u32>, bool)],
    picks: &[Pick],
    toks: Vec<u32>,
    rows: usize,
    ctx: usize,
) {
    if toks.len() != rows {
        let msg = format!(
            "a decode step of {rows} rows returned {} tokens",
            toks.len()
        );
        tracing::error!("{msg}");
        fail_all(
            running,
            picks.iter().map(|p| p.seq),
            &format!("inference failed: {msg}"),
        );
        return;
    }
    let out: Vec<u32> = picks
        .iter()
        .map(|p| toks.get(p.row).copied().unwrap_or_default())
        .collect();
    for (p, &t) in picks.iter().zip(&out) {
        running[p.seq].sampler.accept(t);
    }
    let n = picks.len();
    apply(
        model,
        metrics,
        running,
        inputs,
        &[],
        picks,
        out,
        vec![None; n],
        vec![None; n],
        ctx,
    );
}

/// Applies one step's sampled tokens: lengths, prompt progress and forks, then per pick
/// its token (grammar, EOS, text delta, stop strings, length) and its events.
#[allow(clippy::too_many_arguments)]
fn apply(
    model: &GenerationModel,
    metrics: &Metrics,
    running: &mut [Seq],
    inputs: &[(usize, Vec<u32>, bool)],
    forks: &[(usize, usize)],
    picks: &[Pick],
    toks: Vec<u32>,
    lps: Vec<Option<TokenLogprob>>,
    failed: Vec<Option<String>>,
    ctx: usize,
) {
    for (idx, toks, _) in inputs {
        let s = &mut running[*idx];
        s.len += toks.len();
        if s.prefilled < s.req.prompt.len() {
            s.prefilled += toks.len();
            metrics.prompt_tokens.fetch_add(toks.len() as u64, Relaxed);
        }
    }
    for &(lead, f) in forks {
        let l = &running[lead];
        let (len, prefilled, cached) = (l.len, l.prefilled, l.cached);
        let s = &mut running[f];
        s.len = len;
        s.prefilled = prefilled;
        s.cached = cached;
        s.awaits_fork = false;
    }
    for (((p, &tok), lp), failure) in picks.iter().zip(&toks).zip(lps).zip(failed) {
        let s = &mut running[p.seq];
        if let Some(e) = failure {
            tracing::warn!("a constrained sequence ended: {e}");
            let _ = s.req.events.send(Event::Error(e));
            s.done = Some(FinishReason::Stop);
            continue;
        }
        if s.generated.is_empty() && s.index == 0 {
            metrics.ttft.observe(s.req.arrived.elapsed().as_secs_f64());
        }
        s.generated.push(tok);
        metrics.generated_tokens.fetch_add(1, Relaxed);
        let mut finish = None;
        let mut grammar_done = false;
        if let Some(c) = s.constraint.as_mut() {
            if let Err(e) = c.commit(tok) {
                let _ = s.req.events.send(Event::Error(format!("grammar: {e}")));
                s.done = Some(FinishReason::Stop);
                continue;
            }
            grammar_done = c.stopped();
        }
        let index = s.index;
        if model.eos_ids.contains(&tok) {
            finish = Some(FinishReason::Stop);
        } else {
            let p = s.detok.push(&model.tokenizer, tok);
            if !p.delta.is_empty() || lp.is_some() {
                let _ = s.req.events.send(Event::Delta {
                    index,
                    text: p.delta,
                    logprobs: lp.into_iter().collect(),
                });
            }
            if p.stopped || grammar_done {
                finish = Some(FinishReason::Stop);
            } else if s.generated.len() >= s.req.max_tokens
                || s.req.prompt.len() + s.generated.len() >= ctx
            {
                finish = Some(FinishReason::Length);
            }
        }
        if let Some(f) = finish {
            let rest = s.detok.finish();
            if !rest.is_empty() {
                let _ = s.req.events.send(Event::Delta {
                    index,
                    text: rest,
                    logprobs: Vec::new(),
                });
            }
            let _ = s.req.events.send(Event::Done {
                index,
                finish: f,
                prompt_tokens: s.req.prompt.len(),
                cached_tokens: s.cached,
                completion_tokens: s.generated.len(),
            });
            s.done = Some(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sampling::SamplingParams;

    #[test]
    fn prompt_steps_are_not_averaged_into_decode_steps() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut t = Timings::default();
        // Two decode steps of 1 ms (one launched its successor ahead), one prompt chunk
        // of 100 ms.
        t.add(StepKind::Decode, 1, true, [t0, t0, ms(1), ms(1), ms(1)]);
        t.add(StepKind::Decode, 1, false, [t0, t0, t0, ms(1), ms(1)]);
        t.add(
            StepKind::Prompt,
            2,
            false,
            [t0, t0, ms(90), ms(100), ms(100)],
        );
        assert_eq!((t.decode.steps, t.decode.ahead, t.decode.rows), (2, 1, 2));
        assert_eq!(t.decode.busy(), Duration::from_millis(2));
        assert_eq!(t.decode.forward, Duration::from_millis(1));
        assert_eq!((t.prompt.steps, t.prompt.rows), (1, 2));
        assert_eq!(t.prompt.busy(), Duration::from_millis(100));
        assert_eq!(t.steps(), 3);
        t.flush();
        assert_eq!(t.steps(), 0);
    }

    /// One request of [`run_engine`]: prompt, max_tokens, stop strings, temperature,
    /// choices, logprobs.
    struct Spec {
        prompt: Vec<u32>,
        max_tokens: usize,
        stop: Vec<String>,
        temperature: f32,
        n: usize,
        logprobs: Option<usize>,
    }

    impl Spec {
        fn greedy(prompt: &[u32], max_tokens: usize) -> Self {
            Spec {
                prompt: prompt.to_vec(),
                max_tokens,
                stop: Vec::new(),
                temperature: 0.0,
                n: 1,
                logprobs: None,
            }
        }

        /// The request (seed 7) and the channel its events arrive on.
        fn request(&self) -> (GenRequest, tokio::sync::mpsc::UnboundedReceiver<Event>) {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let req = GenRequest {
                prompt: self.prompt.clone(),
                max_tokens: self.max_tokens,
                sampling: SamplingParams {
                    temperature: self.temperature,
                    seed: Some(7),
                    ..Default::default()
                },
                stop: self.stop.clone(),
                events: tx,
                arrived: Instant::now(),
                n: self.n,
                logprobs: self.logprobs,
                constraints: Vec::new(),
                cache_scope: 0,
            };
            (req, rx)
        }
    }

    /// Per request, per choice: its text, finish reason and token count.
    type Outcome = Vec<(String, Option<FinishReason>, usize)>;

    /// The tiny test model (its directory lives as long as the first value).
    fn tiny_model() -> (tempfile::TempDir, Arc<GenerationModel>) {
        let dir = tempfile::tempdir().unwrap();
        crate::testmodel::make_test_model(dir.path()).unwrap();
        let crate::model::LoadedModel::Generation(m) =
            crate::model::load(dir.path(), None, &candle_core::Device::Cpu).unwrap()
        else {
            panic!("the tiny model must load as a generation model")
        };
        (dir, Arc::from(m))
    }

    /// A greedy request of `max_tokens` for `prompt`, its events on the returned channel.
    fn greedy_request(
        prompt: &[u32],
        max_tokens: usize,
    ) -> (GenRequest, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        Spec::greedy(prompt, max_tokens).request()
    }

    /// Reads a single-choice stream to its end: (text, logprob of each token, cached
    /// prompt tokens).
    fn text_of(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> (String, Vec<f32>, usize) {
        let (mut text, mut lps) = (String::new(), Vec::new());
        loop {
            match rx.blocking_recv() {
                Some(Event::Delta {
                    text: t, logprobs, ..
                }) => {
                    text.push_str(&t);
                    lps.extend(logprobs.iter().map(|l| l.logprob));
                }
                Some(Event::Done { cached_tokens, .. }) => return (text, lps, cached_tokens),
                other => panic!("unexpected event {other:?}"),
            }
        }
    }

    /// A warmed-up engine of 2 slots of `slot_tokens` over `model` (no overlap), its
    /// prefix cache `on`, and its metrics.
    fn two_slot_engine(
        model: &Arc<GenerationModel>,
        slot_tokens: usize,
        prefill_chunk: usize,
        on: bool,
    ) -> (super::super::EngineHandle, Arc<Metrics>) {
        let limits = EngineLimits {
            max_running: 2,
            kv_tokens: 2 * slot_tokens,
            prefill_chunk,
            max_queued: 8,
            cuda_graphs: false,
            overlap: Overlap::Off,
            prefix_cache: on,
        };
        let metrics = Arc::new(Metrics::new());
        let (engine, warm) = super::super::start(model.clone(), limits, metrics.clone());
        let _ = warm.blocking_recv();
        (engine, metrics)
    }

    /// A prompt that starts as an earlier request's did reuses the keys and values that
    /// request left in its slot (same scope only), and gives the same tokens and
    /// logprobs as when it is prefilled whole.
    #[test]
    fn a_prompt_reuses_an_earlier_requests_cached_prefix() {
        let (_dir, model) = tiny_model();
        let first: Vec<u32> = (0..40).map(|i| 3 + (i * 7) % 50).collect();
        let mut longer = first.clone();
        longer.extend([11, 12, 13, 14, 15]);
        // (prompt, scope) in order, one at a time.
        let asks = [
            (first.clone(), 1),
            (longer.clone(), 1),
            (longer.clone(), 2),
            (first.clone(), 1),
        ];
        let run = |on: bool| {
            let (engine, metrics) = two_slot_engine(&model, 128, 16, on);
            let outs: Vec<_> = asks
                .iter()
                .map(|(p, scope)| {
                    let mut spec = Spec::greedy(p, 12);
                    spec.logprobs = Some(0);
                    let (mut req, mut rx) = spec.request();
                    req.cache_scope = *scope;
                    engine.submit(req).unwrap();
                    text_of(&mut rx)
                })
                .collect();
            (outs, metrics.prompt_tokens_cached.load(Relaxed))
        };
        let (cold, cold_cached) = run(false);
        let (warm, warm_cached) = run(true);
        // Cached: all of the first prompt for the longer one (its 40 tokens, then 12
        // generated of which 11 were fed, are in the slot), nothing for another scope,
        // all but the last token for the first prompt again.
        let cached: Vec<usize> = warm.iter().map(|o| o.2).collect();
        assert_eq!(cached, [0, 40, 0, 39]);
        assert_eq!(warm_cached, 79);
        assert!(cold.iter().all(|o| o.2 == 0) && cold_cached == 0);
        for (i, (c, w)) in cold.iter().zip(&warm).enumerate() {
            assert_eq!(c.0, w.0, "request {i}: the same text");
            assert_eq!(c.1.len(), w.1.len());
            for (a, b) in c.1.iter().zip(&w.1) {
                assert!((a - b).abs() < 1e-4, "request {i}: logprobs {a} vs {b}");
            }
        }
    }

    /// A request whose prompt starts as a *running* sequence's (of the same scope) gets
    /// those keys and values copied into its slot, with the same text as a whole prefill.
    #[test]
    fn a_prompt_copies_the_start_a_running_sequence_holds() {
        let (_dir, model) = tiny_model();
        let shared: Vec<u32> = (0..40).map(|i| 3 + (i * 5) % 47).collect();
        let mut second = shared.clone();
        second.extend([21, 22, 23]);
        let run = |on: bool| {
            let (engine, _) = two_slot_engine(&model, 512, 64, on);
            // The first keeps running (400 tokens: long after the second arrives, however
            // slowly this thread is scheduled).
            let (first, mut rx1) = Spec::greedy(&shared, 400).request();
            engine.submit(first).unwrap();
            match rx1.blocking_recv() {
                Some(Event::Delta { .. }) => {}
                other => panic!("the first request's first token: {other:?}"),
            }
            let mut spec = Spec::greedy(&second, 8);
            spec.logprobs = Some(0);
            let (req, mut rx2) = spec.request();
            engine.submit(req).unwrap();
            let out = text_of(&mut rx2);
            let first = text_of(&mut rx1);
            (out, first.0)
        };
        let (cold, cold_first) = run(false);
        let (warm, warm_first) = run(true);
        assert_eq!((cold.2, warm.2), (0, 40), "cached tokens off / on");
        assert_eq!(cold.0, warm.0, "the same text");
        for (a, b) in cold.1.iter().zip(&warm.1) {
            assert!((a - b).abs() < 1e-4, "logprobs {a} vs {b}");
        }
        assert_eq!(cold_first, warm_first, "the running sequence is untouched");
    }

    /// Reads a single-choice stream to its end: (finish, completion tokens).
    fn finish_of(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> (FinishReason, usize) {
        loop {
            match rx.blocking_recv() {
                Some(Event::Delta { .. }) => {}
                Some(Event::Done {
                    finish,
                    completion_tokens,
                    ..
                }) => return (finish, completion_tokens),
                other => panic!("unexpected event {other:?}"),
            }
        }
    }

    /// A client that goes away while a step is launched ahead for it: the other streams
    /// run to their full length, and a later request is served.
    #[test]
    fn a_stream_cancelled_while_a_step_is_ahead_leaves_the_others_whole() {
        let (_dir, model) = tiny_model();
        let limits = EngineLimits {
            max_running: 4,
            kv_tokens: 4 * 64,
            prefill_chunk: 64,
            max_queued: 8,
            cuda_graphs: false,
            overlap: Overlap::Always,
            prefix_cache: true,
        };
        let metrics = Arc::new(Metrics::new());
        let (engine, warm) = super::super::start(model, limits, metrics.clone());
        let mut rxs = Vec::new();
        for p in [&[5u32, 6, 7][..], &[9, 3], &[20, 21, 22, 23]] {
            let (req, rx) = greedy_request(p, 40);
            engine.submit(req).unwrap();
            rxs.push(rx);
        }
        let _ = warm.blocking_recv();
        let mut first = rxs.remove(0);
        let mut deltas = 0;
        while deltas < 3 {
            match first.blocking_recv() {
                Some(Event::Delta { .. }) => deltas += 1,
                other => panic!("the first stream ended early: {other:?}"),
            }
        }
        drop(first);
        for mut rx in rxs {
            assert_eq!(finish_of(&mut rx), (FinishReason::Length, 40));
        }
        let (req, mut rx) = greedy_request(&[1, 2, 3], 5);
        engine.submit(req).unwrap();
        assert_eq!(finish_of(&mut rx), (FinishReason::Length, 5));
        assert!(metrics.steps_ahead.load(Relaxed) > 10);
    }

    /// `shutdown` ends the engine thread: a request running then gets an error event
    /// (not a silent end), a later submit fails with `Stopped`, and a second shutdown
    /// returns at once.
    #[test]
    fn shutdown_ends_the_engine_thread_and_fails_what_runs() {
        let (_dir, model) = tiny_model();
        let (engine, metrics) = two_slot_engine(&model, 256, 64, false);
        let (req, mut done) = greedy_request(&[5, 6, 7], 4);
        engine.submit(req).unwrap();
        assert_eq!(finish_of(&mut done), (FinishReason::Length, 4));
        let (req, mut running) = greedy_request(&[9, 3], 250);
        engine.submit(req).unwrap();
        assert!(matches!(running.blocking_recv(), Some(Event::Delta { .. })));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        assert!(rt.block_on(engine.shutdown(Duration::from_secs(30))));
        let mut last = None;
        while let Some(e) = running.blocking_recv() {
            last = Some(e);
        }
        assert!(
            matches!(&last, Some(Event::Error(m)) if m.contains("shutting down")),
            "{last:?}"
        );
        assert!(metrics.running.load(Relaxed) == 0 && metrics.queued.load(Relaxed) == 0);
        let (req, _rx) = greedy_request(&[1, 2], 3);
        assert_eq!(engine.submit(req), Err(super::super::SubmitError::Stopped));
        assert!(rt.block_on(engine.clone().shutdown(Duration::from_millis(1))));
    }

    /// Submits every request before the engine's loop starts (so the batch's history is
    /// the same in every run), waits for all, and returns each request's outcome with
    /// the engine's counts of steps launched ahead (all, unmatched).
    fn run_engine(
        model: &Arc<GenerationModel>,
        overlap: Overlap,
        specs: &[Spec],
    ) -> (Vec<Outcome>, u64, u64) {
        let limits = EngineLimits {
            max_running: 8,
            kv_tokens: 8 * 64,
            prefill_chunk: 64,
            max_queued: 16,
            cuda_graphs: false,
            overlap,
            prefix_cache: false,
        };
        let metrics = Arc::new(Metrics::new());
        let (engine, warm) = super::super::start(model.clone(), limits, metrics.clone());
        let mut rxs = Vec::new();
        for s in specs {
            let (req, rx) = s.request();
            engine.submit(req).unwrap();
            rxs.push((rx, s.n));
        }
        let _ = warm.blocking_recv();
        let outcomes = rxs
            .into_iter()
            .map(|(mut rx, n)| {
                let mut out: Outcome = vec![(String::new(), None, 0); n];
                while out.iter().any(|o| o.1.is_none()) {
                    match rx.blocking_recv() {
                        Some(Event::Delta { index, text, .. }) => out[index].0.push_str(&text),
                        Some(Event::Done {
                            index,
                            finish,
                            completion_tokens,
                            ..
                        }) => {
                            out[index].1 = Some(finish);
                            out[index].2 = completion_tokens;
                        }
                        other => panic!("unexpected event {other:?}"),
                    }
                }
                out
            })
            .collect();
        (
            outcomes,
            metrics.steps_ahead.load(Relaxed),
            metrics.steps_ahead_unmatched.load(Relaxed),
        )
    }

    /// Greedy decode steps launched ahead (chained through the host on the CPU) give
    /// every request the text of an engine that reads each step's tokens first: with
    /// sequences ending at different steps (length, a stop string), a sampled request
    /// and one with logprobs (neither may be launched ahead) and two choices forked
    /// from one prompt in the same batch.
    #[test]
    fn steps_launched_ahead_give_the_same_text() {
        let (_dir, model) = tiny_model();
        let mut specs = vec![
            Spec::greedy(&[5, 6, 7, 8], 24),
            Spec::greedy(&[9, 3], 9),
            Spec::greedy(&[12, 40, 41, 42, 43, 44, 45], 16),
            Spec::greedy(&[20], 30),
        ];
        // A stop string from the middle of request 3's own text ends it early.
        let (plain, _, _) = run_engine(&model, Overlap::Off, &specs);
        let text = &plain[3][0].0;
        let stop: String = text
            .chars()
            .skip(text.chars().count() / 2)
            .take(2)
            .collect();
        assert!(!stop.is_empty(), "request 3 generated no text: {plain:?}");
        specs[3].stop = vec![stop];
        specs.push(Spec {
            temperature: 0.8,
            ..Spec::greedy(&[7, 7, 2], 6)
        });
        specs.push(Spec {
            logprobs: Some(2),
            ..Spec::greedy(&[30, 31], 5)
        });
        specs.push(Spec {
            n: 2,
            ..Spec::greedy(&[14, 15, 16], 12)
        });
        let (off, ahead_off, _) = run_engine(&model, Overlap::Off, &specs);
        let (on, ahead_on, unmatched) = run_engine(&model, Overlap::Always, &specs);
        assert_eq!(on, off);
        assert_eq!(ahead_off, 0);
        assert!(ahead_on > 10, "{ahead_on} steps launched ahead");
        assert!(unmatched >= 1, "no step launched ahead was unmatched");
        assert_eq!(off[3][0].1, Some(FinishReason::Stop), "{off:?}");
        assert!(off[3][0].2 < 30);
        // On the CPU the node's setting never launches ahead (it would only delay tokens).
        let (dev, ahead_dev, _) = run_engine(&model, Overlap::OnDevice, &specs);
        assert_eq!(dev, off);
        assert_eq!(ahead_dev, 0);
    }

    fn greedy() -> Sampler {
        Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        })
    }

    #[test]
    fn a_grammar_failure_is_the_sequences_own_error() {
        // The mask picks among the allowed tokens only.
        let mut mask = SimpleVob::alloc(4);
        mask.allow_token(2);
        let mut row = [5.0, 1.0, 0.5, 4.0];
        assert_eq!(
            choose_on_host(&mut row, Some(Ok(mask)), &mut greedy()),
            Ok(2)
        );
        // A grammar error and a mask that allows nothing are errors of this row, which
        // the step turns into that sequence's end (the batch's other rows go on).
        let e = choose_on_host(
            &mut [1.0, 2.0],
            Some(Err("too complex".into())),
            &mut greedy(),
        );
        assert_eq!(e, Err("grammar: too complex".to_string()));
        let none = SimpleVob::alloc(2);
        let e = choose_on_host(&mut [1.0, 2.0], Some(Ok(none)), &mut greedy()).unwrap_err();
        assert!(e.contains("allows no token"), "{e}");
        // No grammar: plain sampling.
        assert_eq!(choose_on_host(&mut [1.0, 2.0], None, &mut greedy()), Ok(1));
    }
}
