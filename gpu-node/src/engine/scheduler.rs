//! The engine loop: admission under the KV-cache budget, one batched forward pass per
//! step for every running sequence (decode tokens plus chunks of prompts), sampling,
//! text deltas and finishing.

use super::detok::Detok;
use super::sampling::Sampler;
use super::{EngineLimits, Event, FinishReason, GenRequest};
use crate::metrics::Metrics;
use crate::model::GenerationModel;
use crate::model::llama::{SeqCache, SeqChunk, WantLogits};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};

struct Seq {
    req: GenRequest,
    cache: SeqCache,
    prefilled: usize,
    generated: Vec<u32>,
    sampler: Sampler,
    detok: Detok,
    reserved: usize,
    done: Option<FinishReason>,
}

/// Runs until every [`super::EngineHandle`] is dropped and no work is left.
pub fn run(
    model: Arc<GenerationModel>,
    limits: EngineLimits,
    metrics: Arc<Metrics>,
    rx: Receiver<GenRequest>,
) {
    let mut waiting: VecDeque<GenRequest> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut reserved = 0usize;
    let mut open = true;
    let ctx = model.llama.config().max_position_embeddings;
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
            if running.len() >= limits.max_running || reserved + need > limits.kv_tokens {
                break;
            }
            let Some(req) = waiting.pop_front() else {
                break;
            };
            metrics.queued.fetch_sub(1, Relaxed);
            reserved += need;
            running.push(Seq {
                sampler: Sampler::new(req.sampling.clone()),
                detok: Detok::new(req.stop.clone()),
                cache: SeqCache::default(),
                prefilled: 0,
                generated: Vec::new(),
                reserved: need,
                done: None,
                req,
            });
        }
        metrics.running.store(running.len() as u64, Relaxed);
        metrics.kv_reserved_tokens.store(reserved as u64, Relaxed);
        if running.is_empty() {
            continue;
        }
        step(&model, &limits, &metrics, &mut running, ctx);
        // Retire finished or cancelled sequences.
        running.retain(|s| {
            let keep = s.done.is_none() && !s.req.events.is_closed();
            if !keep {
                reserved -= s.reserved;
            }
            keep
        });
        let used: usize = running.iter().map(|s| s.cache.len()).sum();
        metrics.kv_used_tokens.store(used as u64, Relaxed);
        metrics.running.store(running.len() as u64, Relaxed);
        metrics.kv_reserved_tokens.store(reserved as u64, Relaxed);
    }
}

fn step(
    model: &GenerationModel,
    limits: &EngineLimits,
    metrics: &Metrics,
    running: &mut [Seq],
    ctx: usize,
) {
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
    // Borrow each chosen sequence's cache mutably, in index order.
    let mut chunks = Vec::with_capacity(inputs.len());
    {
        let mut it = running.iter_mut().enumerate();
        for (idx, toks, sample) in &inputs {
            for (j, s) in it.by_ref() {
                if j == *idx {
                    chunks.push(SeqChunk {
                        tokens: toks,
                        cache: &mut s.cache,
                        want: if *sample {
                            WantLogits::Last
                        } else {
                            WantLogits::None
                        },
                    });
                    break;
                }
            }
        }
    }
    metrics.record_step(chunks.len());
    let result = model.llama.forward(&mut chunks);
    drop(chunks);
    let logits = match result {
        Ok(l) => l,
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
    for ((idx, toks, sample), lg) in inputs.iter().zip(logits) {
        let s = &mut running[*idx];
        if s.prefilled < s.req.prompt.len() {
            s.prefilled += toks.len();
            metrics.prompt_tokens.fetch_add(toks.len() as u64, Relaxed);
        }
        if !*sample {
            continue;
        }
        let row = lg
            .and_then(|t| t.squeeze(0).ok())
            .and_then(|t| t.to_vec1::<f32>().ok());
        let Some(mut row) = row else {
            let _ = s
                .req
                .events
                .send(Event::Error("inference produced no logits".into()));
            s.done = Some(FinishReason::Stop);
            continue;
        };
        let tok = s.sampler.sample(&mut row);
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
}
