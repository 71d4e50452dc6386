//! The engine loop: admission under the KV-cache budget, one batched forward pass per
//! step for every running sequence (decode tokens plus chunks of prompts) over one
//! padded KV cache of slots, sampling (greedy on the device: only the ids come back),
//! text deltas and finishing.

use super::detok::Detok;
use super::sampling::Sampler;
use super::{EngineLimits, Event, FinishReason, GenRequest};
use crate::metrics::Metrics;
use crate::model::GenerationModel;
use crate::model::llama::{BatchItem, KvCache, WantLogits};
use candle_core::{D, DType, Tensor};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

struct Seq {
    req: GenRequest,
    slot: usize,
    len: usize,
    prefilled: usize,
    generated: Vec<u32>,
    sampler: Sampler,
    detok: Detok,
    reserved: usize,
    done: Option<FinishReason>,
}

/// Where the engine thread's time goes, logged (`engine timings`) after each 2 s of
/// steps and whenever the engine goes idle (so each burst of work gets its own line):
/// `forward` is the host time to enqueue a step's kernels, `sync` the wait for the
/// device and the copy of the sampled ids (or logits), `host` sampling, detokenising
/// and sending. A GPU-bound engine waits in `sync`; a launch-bound one in `forward`.
#[derive(Default)]
struct Timings {
    steps: u64,
    rows: u64,
    prep: Duration,
    forward: Duration,
    sync: Duration,
    host: Duration,
}

impl Timings {
    fn busy(&self) -> Duration {
        self.prep + self.forward + self.sync + self.host
    }
    fn maybe_log(&mut self) {
        if self.busy() >= Duration::from_secs(2) {
            self.flush();
        }
    }
    fn flush(&mut self) {
        if self.steps == 0 {
            return;
        }
        let per = |d: Duration| d.as_secs_f64() * 1e3 / self.steps as f64;
        tracing::info!(
            steps = self.steps,
            avg_batch = format!("{:.1}", self.rows as f64 / self.steps as f64),
            step_ms = format!("{:.3}", per(self.busy())),
            prep_ms = format!("{:.3}", per(self.prep)),
            forward_ms = format!("{:.3}", per(self.forward)),
            sync_ms = format!("{:.3}", per(self.sync)),
            host_ms = format!("{:.3}", per(self.host)),
            "engine timings (per step)"
        );
        *self = Timings::default();
    }
}

/// Runs until every [`super::EngineHandle`] is dropped and no work is left.
pub fn run(
    model: Arc<GenerationModel>,
    limits: EngineLimits,
    metrics: Arc<Metrics>,
    rx: Receiver<GenRequest>,
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
            for r in rx.iter() {
                let _ = r
                    .events
                    .send(Event::Error("the engine has no KV cache".into()));
            }
            return;
        }
    };
    tracing::info!(slots, tokens_per_slot = cap, "KV cache allocated");
    warm_up(&model, &mut kv);
    let mut free: Vec<usize> = (0..slots).rev().collect(); // pop() gives the lowest slot
    let mut waiting: VecDeque<GenRequest> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut reserved = 0usize;
    let mut open = true;
    let mut timings = Timings::default();
    loop {
        if running.is_empty() && waiting.is_empty() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(r) => waiting.push_back(r),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(r) => waiting.push_back(r),
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
        // Admission: FIFO while slots and KV budget allow.
        while let Some(front) = waiting.front() {
            let need = front.prompt.len() + front.max_tokens;
            if running.len() >= limits.max_running
                || free.is_empty()
                || reserved + need > limits.kv_tokens
            {
                break;
            }
            let (Some(req), Some(slot)) = (waiting.pop_front(), free.pop()) else {
                break;
            };
            metrics.queued.fetch_sub(1, Relaxed);
            reserved += need;
            running.push(Seq {
                sampler: Sampler::new(req.sampling.clone()),
                detok: Detok::new(req.stop.clone()),
                slot,
                len: 0,
                prefilled: 0,
                generated: Vec::new(),
                reserved: need,
                done: None,
                req,
            });
        }
        // Lowest slots first keeps the decode batch's slot range tight.
        free.sort_unstable_by(|a, b| b.cmp(a));
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
        );
        timings.maybe_log();
        // Retire finished or cancelled sequences.
        running.retain(|s| {
            let keep = s.done.is_none() && !s.req.events.is_closed();
            if !keep {
                reserved -= s.reserved;
                free.push(s.slot);
            }
            keep
        });
        if running.is_empty() {
            timings.flush();
        }
        let used: usize = running.iter().map(|s| s.len).sum();
        metrics.kv_used_tokens.store(used as u64, Relaxed);
        metrics.running.store(running.len() as u64, Relaxed);
        metrics.kv_reserved_tokens.store(reserved as u64, Relaxed);
    }
}

/// Runs a prompt chunk and a decode step through slot 0 before the first request, so
/// that the first request does not pay for loading (on CUDA: JIT-compiling) kernels.
fn warm_up(model: &GenerationModel, kv: &mut KvCache) {
    let t = Instant::now();
    let ctx = model.llama.config().max_position_embeddings;
    if kv.cap() < 3 || ctx < 3 {
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
    match run(kv, 0, &[0, 0]).and_then(|_| run(kv, 2, &[0])) {
        Ok(()) => tracing::info!(secs = t.elapsed().as_secs_f64(), "engine warmed up"),
        Err(e) => tracing::warn!("warm-up step failed (the first request will show it): {e}"),
    }
}

/// Sampled token per row: greedy rows are picked on the device (only their ids are
/// copied back); the other rows' logits are copied to the host for the sampler.
fn pick(logits: &Tensor, running: &mut [Seq], sampled: &[usize]) -> candle_core::Result<Vec<u32>> {
    let host_rows: Vec<u32> = sampled
        .iter()
        .enumerate()
        .filter(|(_, i)| !running[**i].sampler.is_greedy())
        .map(|(r, _)| r as u32)
        .collect();
    let mut toks = if host_rows.len() < sampled.len() {
        logits.argmax(D::Minus1)?.to_vec1::<u32>()?
    } else {
        vec![0; sampled.len()]
    };
    if !host_rows.is_empty() {
        let n = host_rows.len();
        let idx = Tensor::from_vec(host_rows.clone(), n, logits.device())?;
        let rows = logits
            .index_select(&idx, 0)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (r, mut row) in host_rows.into_iter().zip(rows) {
            toks[r as usize] = running[sampled[r as usize]].sampler.sample(&mut row);
        }
    }
    for (r, &i) in sampled.iter().enumerate() {
        let s = &mut running[i].sampler;
        if s.is_greedy() {
            s.accept(toks[r]);
        }
    }
    Ok(toks)
}

fn step(
    model: &GenerationModel,
    limits: &EngineLimits,
    metrics: &Metrics,
    kv: &mut KvCache,
    running: &mut [Seq],
    ctx: usize,
    timings: &mut Timings,
) {
    let t0 = Instant::now();
    let mut budget = limits.prefill_chunk;
    let mut inputs: Vec<(usize, Vec<u32>, bool)> = Vec::new(); // (seq index, tokens, sample after)
    for (i, s) in running.iter().enumerate() {
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
    let result = model.llama.forward_batch(kv, &items);
    let t2 = Instant::now();
    let sampled: Vec<usize> = inputs
        .iter()
        .filter(|(_, _, s)| *s)
        .map(|(i, _, _)| *i)
        .collect();
    let toks = result.and_then(|lg| match lg {
        Some(lg) => pick(&lg, running, &sampled),
        None => Ok(Vec::new()),
    });
    let t3 = Instant::now();
    let toks = match toks {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("forward pass failed for a batch of {}: {e}", inputs.len());
            for (idx, _, _) in &inputs {
                let s = &mut running[*idx];
                let _ = s
                    .req
                    .events
                    .send(Event::Error(format!("inference failed: {e}")));
                s.done = Some(FinishReason::Stop);
            }
            return;
        }
    };
    for (idx, toks, _) in &inputs {
        let s = &mut running[*idx];
        s.len += toks.len();
        if s.prefilled < s.req.prompt.len() {
            s.prefilled += toks.len();
            metrics.prompt_tokens.fetch_add(toks.len() as u64, Relaxed);
        }
    }
    for (&idx, &tok) in sampled.iter().zip(&toks) {
        let s = &mut running[idx];
        if s.generated.is_empty() {
            metrics.ttft.observe(s.req.arrived.elapsed().as_secs_f64());
        }
        s.generated.push(tok);
        metrics.generated_tokens.fetch_add(1, Relaxed);
        let mut finish = None;
        if model.eos_ids.contains(&tok) {
            finish = Some(FinishReason::Stop);
        } else {
            let p = s.detok.push(&model.tokenizer, tok);
            if !p.delta.is_empty() {
                let _ = s.req.events.send(Event::Delta(p.delta));
            }
            if p.stopped {
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
                let _ = s.req.events.send(Event::Delta(rest));
            }
            let _ = s.req.events.send(Event::Done {
                finish: f,
                prompt_tokens: s.req.prompt.len(),
                completion_tokens: s.generated.len(),
            });
            s.done = Some(f);
        }
    }
    let t4 = Instant::now();
    timings.steps += 1;
    timings.rows += inputs.len() as u64;
    timings.prep += t1 - t0;
    timings.forward += t2 - t1;
    timings.sync += t3 - t2;
    timings.host += t4 - t3;
}
