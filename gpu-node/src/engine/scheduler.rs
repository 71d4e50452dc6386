//! The engine loop: admission under the KV-cache budget, one batched forward pass per
//! step for every running sequence (decode tokens plus chunks of prompts) over one
//! padded KV cache of slots, sampling (greedy on the device: only the ids come back),
//! text deltas and finishing.

use super::detok::Detok;
use super::grammar::{Constraint, apply_mask};
use super::sampling::{Sampler, top_k};
use super::{EngineLimits, Event, FinishReason, GenRequest, TokenLogprob};
use crate::metrics::Metrics;
use crate::model::GenerationModel;
use crate::model::llama::{BatchItem, KvCache, WantLogits};
use candle_core::{D, DType, Tensor};
use llguidance::toktrie::SimpleVob;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

struct Seq {
    req: Arc<GenRequest>,
    /// Choice index within its request.
    index: usize,
    /// Request number (choices of one request share it).
    group: u64,
    /// A choice other than the first waits for the first's prefill, then copies its KV.
    awaits_fork: bool,
    constraint: Option<Constraint>,
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
    if limits.cuda_graphs {
        capture_graphs(&model, &mut kv, limits.prefill_chunk + slots);
    }
    let _ = warmed.send(()); // the server may have stopped waiting
    let mut free: Vec<usize> = (0..slots).rev().collect(); // pop() gives the lowest slot
    let mut waiting: VecDeque<GenRequest> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut reserved = 0usize;
    let mut next_group = 0u64;
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
                let Some(slot) = free.pop() else { break };
                reserved += per;
                let mut sampling = req.sampling.clone();
                if index > 0 {
                    sampling.seed = sampling.seed.map(|s| s.wrapping_add(index as u64));
                }
                running.push(Seq {
                    sampler: Sampler::new(sampling),
                    detok: Detok::new(req.stop.clone()),
                    index,
                    group: next_group,
                    awaits_fork: index > 0,
                    constraint,
                    slot,
                    len: 0,
                    prefilled: 0,
                    generated: Vec::new(),
                    reserved: per,
                    done: None,
                    req: req.clone(),
                });
            }
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
    }
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
    for (idx, toks, _) in &inputs {
        let s = &mut running[*idx];
        s.len += toks.len();
        if s.prefilled < s.req.prompt.len() {
            s.prefilled += toks.len();
            metrics.prompt_tokens.fetch_add(toks.len() as u64, Relaxed);
        }
    }
    for &(lead, f) in &forks {
        let (len, prefilled) = (running[lead].len, running[lead].prefilled);
        let s = &mut running[f];
        s.len = len;
        s.prefilled = prefilled;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sampling::SamplingParams;

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
