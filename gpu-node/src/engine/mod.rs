//! The generation engine: a dedicated thread that runs continuous batching over the
//! model; HTTP handlers submit requests through an [`EngineHandle`] and read events back.

pub mod detok;
pub mod grammar;
pub mod prefix;
pub mod sampling;
mod scheduler;

use crate::metrics::Metrics;
use crate::model::GenerationModel;
use sampling::SamplingParams;
pub use sampling::top_k;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::sync::mpsc;

/// Why a sequence ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS token or stop string.
    Stop,
    /// `max_tokens` or the context end.
    Length,
}

impl FinishReason {
    /// The OpenAI wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The log-probability of a generated token and of the most likely alternatives, from
/// the model's raw logits (before penalties, `logit_bias`, temperature or a grammar).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token picked.
    pub token: u32,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens with theirs, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What the engine sends back for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text of choice `index` (may be empty when a token only completes part of a
    /// character), with the logprobs of the tokens behind it when they were asked for.
    Delta {
        /// Choice (0..n).
        index: usize,
        /// The text.
        text: String,
        /// One entry per token, when logprobs were asked for.
        logprobs: Vec<TokenLogprob>,
    },
    /// Choice `index` ended.
    Done {
        /// Choice (0..n).
        index: usize,
        /// Why.
        finish: FinishReason,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Prompt tokens whose keys and values an earlier request left in the KV cache
        /// (not computed again; `[engine] prefix_cache`).
        cached_tokens: usize,
        /// Tokens generated for this choice.
        completion_tokens: usize,
    },
    /// The engine failed on this request.
    Error(String),
}

/// A request for generation (already validated).
pub struct GenRequest {
    /// Prompt token ids (non-empty).
    pub prompt: Vec<u32>,
    /// Most tokens to generate per choice.
    pub max_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Where events go; a closed receiver cancels the request.
    pub events: mpsc::UnboundedSender<Event>,
    /// Arrival time, for time-to-first-token.
    pub arrived: Instant,
    /// Choices to generate: the prompt is prefilled once and its KV copied to the
    /// other choices' slots.
    pub n: usize,
    /// `Some(k)`: send each token's logprob and the top `k` alternatives.
    pub logprobs: Option<usize>,
    /// One grammar per choice (empty: unconstrained).
    pub constraints: Vec<grammar::Constraint>,
    /// Requests reuse KV-cached prompt prefixes only of the same scope (the ingress
    /// sends a hash of the API key: `x-dayshift-cache-scope`; 0 without one).
    pub cache_scope: u64,
}

/// The padded KV cache's shape for `limits` and a model context of `ctx` tokens:
/// `(slots, tokens per slot)`. Each slot holds up to `min(ctx, kv_tokens / max_running)`
/// tokens, and there are as many slots as fit `kv_tokens` (at most `max_running`).
pub fn cache_shape(limits: &EngineLimits, ctx: usize) -> (usize, usize) {
    let running = limits.max_running.max(1);
    let cap = ctx.min(limits.kv_tokens / running).max(1);
    let slots = (limits.kv_tokens / cap).clamp(1, running);
    (slots, cap)
}

/// Engine limits.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// Most sequences per step.
    pub max_running: usize,
    /// KV-cache capacity in tokens (admission reserves prompt + max_tokens); the padded
    /// cache splits it into slots, see [`cache_shape`].
    pub kv_tokens: usize,
    /// Prompt tokens per step across all prefilling sequences.
    pub prefill_chunk: usize,
    /// Most requests waiting for admission.
    pub max_queued: usize,
    /// Capture decode steps as CUDA graphs at warm-up and replay them (CUDA only).
    pub cuda_graphs: bool,
    /// When a greedy decode step is launched before the previous step's tokens are read.
    pub overlap: Overlap,
    /// Reuse a free KV slot's keys and values for a new prompt that starts with the
    /// tokens it holds (same scope; [`prefix::PrefixCache`]).
    pub prefix_cache: bool,
}

/// When the engine launches a greedy decode step before it reads the previous step's
/// tokens (only while the batch stays the same: every sequence decoding, greedy, without
/// a grammar or logprobs). The step reads the previous step's picks on the device, so the
/// host's work on a token (copy back, detokenize, send, upload the next indices) overlaps
/// the GPU's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Never: each step's tokens are read before the next step is launched.
    Off,
    /// When decode steps chain on the device (CUDA graphs were captured); elsewhere it
    /// would only delay each token by a step. The node's setting.
    OnDevice,
    /// Always: where the device cannot chain, the previous step's picks are read back
    /// first. The same tokens in the same order (tests check the scheduling on the CPU).
    Always,
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// Too many requests are waiting.
    #[error("the node's queue is full ({0} requests waiting): retry later or on another node")]
    QueueFull(usize),
    /// Prompt + max_tokens can never fit the KV cache.
    #[error(
        "prompt + max_tokens = {need} tokens exceeds this node's KV cache of {cap} tokens: shorten the prompt or lower max_tokens"
    )]
    TooLarge {
        /// Tokens needed.
        need: usize,
        /// KV capacity.
        cap: usize,
    },
    /// More choices than KV slots.
    #[error(
        "n = {n} choices do not fit this node's KV cache at once (it holds {slots} of this length): lower n or max_tokens"
    )]
    TooManyChoices {
        /// Choices asked for.
        n: usize,
        /// KV slots.
        slots: usize,
    },
    /// The engine thread is gone.
    #[error("the engine has stopped")]
    Stopped,
}

/// What the engine thread is told.
enum Command {
    /// Serve a request.
    Generate(GenRequest),
    /// End every request still queued or running with an error, free the KV cache and
    /// the model's device memory, and end the thread ([`EngineHandle::shutdown`]).
    Stop,
}

/// Cheap, cloneable handle to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std::sync::mpsc::Sender<Command>,
    /// The engine thread, until [`EngineHandle::shutdown`] has joined it.
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    metrics: Arc<Metrics>,
    limits: EngineLimits,
    /// Most tokens (prompt + max_tokens) one sequence may need: a KV slot's size.
    seq_cap: usize,
    /// KV slots (most sequences at once).
    slots: usize,
}

impl EngineHandle {
    /// Queues a request; events arrive on its channel.
    pub fn submit(&self, req: GenRequest) -> Result<(), SubmitError> {
        let need = req.prompt.len() + req.max_tokens;
        if need > self.seq_cap {
            return Err(SubmitError::TooLarge {
                need,
                cap: self.seq_cap,
            });
        }
        let n = req.n.max(1);
        if n > self.slots || n * (req.prompt.len() + req.max_tokens) > self.limits.kv_tokens {
            return Err(SubmitError::TooManyChoices {
                n,
                slots: self
                    .slots
                    .min(self.limits.kv_tokens / (req.prompt.len() + req.max_tokens).max(1)),
            });
        }
        let q = self.metrics.queued.load(Relaxed) as usize;
        if q >= self.limits.max_queued {
            return Err(SubmitError::QueueFull(q));
        }
        self.metrics.queued.fetch_add(1, Relaxed);
        self.tx.send(Command::Generate(req)).map_err(|_| {
            self.metrics.queued.fetch_sub(1, Relaxed);
            SubmitError::Stopped
        })
    }
    /// The limits it runs with.
    pub fn limits(&self) -> &EngineLimits {
        &self.limits
    }
    /// Most tokens (prompt + max_tokens) one request may need: the size of a KV slot
    /// (see [`cache_shape`]); a request without `max_tokens` should be clamped to it.
    pub fn seq_cap(&self) -> usize {
        self.seq_cap
    }
    /// True when nothing is queued or running.
    pub fn idle(&self) -> bool {
        self.metrics.queued.load(Relaxed) == 0 && self.metrics.running.load(Relaxed) == 0
    }

    /// Stops the engine thread and waits up to `wait` for it to end: requests still
    /// queued or running get an error event, and the thread frees the KV cache and its
    /// CUDA graphs before it ends. The node calls it after draining, before the process
    /// exits: a thread still freeing device memory while the CUDA driver tears itself
    /// down at exit can crash the process (a bf16 Qwen3-8B node exited with SIGSEGV
    /// after "bye" on the H100, `bench/gguf-gpu/results/h100-2026-12-05-s18/qwen3_8b/`).
    /// True when the thread has ended (or had already); later submits fail with
    /// [`SubmitError::Stopped`].
    pub async fn shutdown(&self, wait: std::time::Duration) -> bool {
        let _ = self.tx.send(Command::Stop); // already gone: nothing to stop
        let thread = match self.thread.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(thread) = thread else {
            return true;
        };
        let deadline = Instant::now() + wait;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "the engine thread did not end within {wait:?} of being told to stop"
                );
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if thread.join().is_err() {
            tracing::error!("the engine thread panicked");
        }
        true
    }
}

/// Starts the engine thread over a loaded model. The receiver is told (or dropped) once
/// the engine has warmed up (kernels loaded, on CUDA JIT-compiled, decode graphs
/// captured): the node reports ready, and so registers, only after that.
pub fn start(
    model: Arc<GenerationModel>,
    limits: EngineLimits,
    metrics: Arc<Metrics>,
) -> (EngineHandle, tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (warm_tx, warm_rx) = tokio::sync::oneshot::channel();
    let (slots, seq_cap) = cache_shape(&limits, model.llama.config().max_position_embeddings);
    metrics
        .kv_total_tokens
        .store((slots * seq_cap) as u64, Relaxed);
    let m = metrics.clone();
    let l = limits.clone();
    let spawned = std::thread::Builder::new()
        .name("dayshift-engine".into())
        .spawn(move || scheduler::run(model, l, m, rx, warm_tx));
    let thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!("cannot start the engine thread: {e}");
            None
        }
    };
    (
        EngineHandle {
            tx,
            thread: Arc::new(std::sync::Mutex::new(thread)),
            metrics,
            limits,
            seq_cap,
            slots,
        },
        warm_rx,
    )
}
