//! Llama-family decoder (Llama, Mistral, Qwen2, Qwen3, Gemma 3 text; what differs is in
//! [`Arch`]) with a batched forward pass: the tokens of every sequence in a step (prefill
//! chunks and single decode tokens alike) go through the projections and the MLP as one
//! matrix;
//! the keys and values live in one padded [`KvCache`] of slots, and the decode tokens of
//! all sequences attend in one batched GEMM per layer; prompt chunks attend one by one.

use super::arch::{Act, Arch};
use super::config::LlamaConfig;
use super::cpu_softmax::causal_softmax;
use super::l2_prefetch::L2Ranges;
use super::mask::{causal_mask, decode_mask};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

/// A linear layer whose weight is dense (safetensors) or quantized (GGUF).
#[derive(Debug, Clone)]
pub enum Lin {
    /// Dense weight `[out, in]` (and optional bias).
    Dense(Linear),
    /// Quantized weight (candle's `QMatMul`) and optional dense bias `[out]`.
    Quant {
        /// The weight.
        w: QMatMul,
        /// The bias.
        b: Option<Tensor>,
    },
}

impl Module for Lin {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Lin::Dense(l) => l.forward(x),
            Lin::Quant { w, b } => {
                let y = match w {
                    QMatMul::QTensor(q)
                        if x.device().is_cpu()
                            && rows(x) >= CPU_GEMM_MIN_ROWS
                            && !super::cpu_qgemv::candle_tiles_take(q, rows(x))
                            && !super::cpu_qgemv::beats_gemm(q) =>
                    {
                        // Many rows (a prompt chunk) and no int8 tiles for this weight: one
                        // f32 GEMM over the dequantized weight beats a quantized dot
                        // product per (row, column).
                        let wd = q.dequantize(&Device::Cpu)?;
                        x.matmul(&wd.t()?)?
                    }
                    QMatMul::QTensor(q) if x.device().is_cpu() => {
                        // A decode step's few rows: our kernel reads the file's blocks.
                        match super::cpu_qgemv::gemv(&[q.as_ref()], x)? {
                            Some(mut ys) => ys.remove(0).to_dtype(x.dtype())?,
                            None => w.forward(x)?,
                        }
                    }
                    _ => w.forward(x)?,
                };
                match b {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
        }
    }
}

/// Rows up to which our weight-streaming kernel beats cuBLAS's GEMM (H200, llama1b,
/// bench/gpu/results/h200-issue17: 476 vs 456 tok/s at 1 row; at 8 rows 2,160 vs 2,980
/// tok/s in total).
const GEMV_FASTER_ROWS: usize = 2;

impl Lin {
    /// The layer on a decode step's few rows `[b, in]`: dense weights of up to
    /// [`GEMV_FASTER_ROWS`] rows go through [`super::decode_ops::FusedGemv`] (no prologue,
    /// the bias as its epilogue), the rest as [`Module::forward`].
    fn forward_rows(&self, x: &Tensor) -> Result<Tensor> {
        use super::decode_ops::{FusedGemv, Prologue};
        match self {
            Lin::Dense(l)
                if rows(x) <= GEMV_FASTER_ROWS && FusedGemv::takes_matrix(x, l.weight()) =>
            {
                x.apply_op2_no_bwd(
                    l.weight(),
                    &FusedGemv {
                        prologue: Prologue::None,
                        eps: 0.0,
                        bias: l.bias().cloned(),
                        res: None,
                        prefetch: Default::default(),
                    },
                )
            }
            _ => self.forward(x),
        }
    }
}

/// Largest error of a quantized matmul, relative to its largest output, that
/// [`Llama::check_quant_matmul`] accepts. The activations are rounded to 8 bits (q8_1)
/// before the product, and the output to the model's dtype: about 1 % in all.
pub const QUANT_CHECK_MAX_ERROR: f32 = 0.05;

/// Most bytes of attention scores one prompt block materializes ([`Llama`]'s prefill
/// attention splits a chunk's query rows into blocks under it; the mask and the softmax
/// take as much again each): the figure the memory check counts.
pub const PREFILL_SCORES_BYTES: usize = dayshift_config::memory::PREFILL_SCORES_BYTES as usize;

/// Rows from which a quantized linear layer on the CPU dequantizes its weight to f32 and
/// runs one GEMM (prefill chunks) instead of candle's quantized dot product per (row,
/// column), which is ~1 multiply-add per weight byte per row: the dequantization is paid
/// once per call and shared by every row. Measured by `examples/prefill_speed.rs`. Not
/// for weights candle's int8 tile kernels take ([`super::cpu_qgemv::candle_tiles_take`]:
/// Q4_K/Q6_K/Q8_0 multiples of 256 wide on x86), which are faster at every chunk size,
/// nor for Q4_1 where our AVX-512 kernel runs ([`super::cpu_qgemv::beats_gemm`]).
pub const CPU_GEMM_MIN_ROWS: usize = 64;

/// Rows of a `[.., rows, in]` activation.
fn rows(x: &Tensor) -> usize {
    let d = x.dims();
    d.iter().rev().skip(1).product()
}

/// Several linear layers on the same input `h`. On the CPU, quantized layers of a decode
/// step's few rows go through [`super::cpu_qgemv::gemv`] when it takes them (x86 with
/// AVX2, Q4_K/Q6_K/Q8_0 mixed freely, rows a multiple of 256 wide), else candle's
/// `QTensor::gemv_fused_shared_lhs` (AVX-512 VNNI, one GGML type): the input is quantized
/// once and the products share one parallel region, instead of one each.
/// Otherwise each layer as `forward_rows` (`rows`) or `forward`.
fn lin_shared(ls: &[&Lin], h: &Tensor, rows_path: bool) -> Result<Vec<Tensor>> {
    let ours_beat_gemm = || {
        ls.iter().all(|l| {
            matches!(l, Lin::Quant { w: QMatMul::QTensor(q), .. } if super::cpu_qgemv::beats_gemm(q))
        })
    };
    if h.device().is_cpu() && (rows(h) < CPU_GEMM_MIN_ROWS || ours_beat_gemm()) {
        let qs: Option<Vec<&QTensor>> = ls
            .iter()
            .map(|l| match l {
                Lin::Quant {
                    w: QMatMul::QTensor(q),
                    ..
                } => Some(q.as_ref()),
                _ => None,
            })
            .collect();
        let outs = match &qs {
            Some(qs) => match super::cpu_qgemv::gemv(qs, h)? {
                Some(outs) => Some(outs),
                None => QTensor::gemv_fused_shared_lhs(qs, h)?,
            },
            None => None,
        };
        if let Some(outs) = outs {
            return ls
                .iter()
                .zip(outs)
                .map(|(l, y)| match l {
                    Lin::Quant { b: Some(b), .. } => y.broadcast_add(b),
                    _ => Ok(y),
                })
                .collect();
        }
    }
    ls.iter()
        .map(|l| {
            if rows_path {
                l.forward_rows(h)
            } else {
                l.forward(h)
            }
        })
        .collect()
}

/// Where [`Llama::load_gguf`] takes its tensors from (GGUF names: `blk.N.attn_q.weight`, …).
pub trait QuantSource {
    /// A linear layer; `rope_heads` is `Some(heads)` for Q and K projections, whose rows
    /// the source turns into the "rotate half" layout this model uses when needed.
    fn lin(&mut self, name: &str, rope_heads: Option<usize>) -> Result<Lin>;
    /// A dense tensor (norm weights, biases, embeddings), dequantized to the model dtype.
    fn dense(&mut self, name: &str) -> Result<Tensor>;
    /// Whether the file holds `name`.
    fn contains(&self, name: &str) -> bool;
    /// Device to load onto.
    fn device(&self) -> &Device;
    /// The dtype of the dense tensors, activations and KV cache.
    fn dtype(&self) -> DType;
}

/// Which logits a sequence wants back from a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantLogits {
    /// None (a prefill chunk that does not end the prompt).
    None,
    /// Only the last token's (to sample the next token).
    Last,
    /// Every token's (tests and scoring).
    All,
}

impl WantLogits {
    /// Rows of logits this wants from a chunk of `n` tokens.
    pub fn rows(self, n: usize) -> usize {
        match self {
            WantLogits::None => 0,
            WantLogits::Last => n.min(1),
            WantLogits::All => n,
        }
    }
}

/// The KV cache of many sequences, padded: per layer, keys and values
/// `[slots, kv_heads, cap, head_dim]`, one slot per running sequence.
///
/// Padded rather than paged because candle's strided batched GEMM can then read every
/// slot's keys in place (a narrowed view, batch stride `cap * head_dim`): decode
/// attention over all sequences is two GEMMs, one mask add and one softmax per layer,
/// whatever their lengths, with no gather of the cache and no custom kernel. The price
/// is memory: each slot reserves `cap` tokens.
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    slots: usize,
    cap: usize,
    /// On CUDA: the zeroed counters of decode attention's split blocks
    /// ([`super::decode_ops::DecodeAttention::counters`]), one buffer for every layer and
    /// step, which each launch leaves zeroed.
    attn_counters: Option<Tensor>,
    /// Decode steps captured as CUDA graphs over this cache (see [`KvCache::capture_graphs`]).
    #[cfg(feature = "cuda")]
    pub(crate) graphs: Option<super::cuda_graph::DecodeGraphs>,
}

impl KvCache {
    /// Zeroed cache of `slots` sequences of up to `cap` tokens each for `model`.
    pub fn new(model: &Llama, slots: usize, cap: usize) -> Result<Self> {
        let shape = (
            slots.max(1),
            model.cfg.kv_heads(),
            cap.max(1),
            model.cfg.head_dim(),
        );
        let mut k = Vec::with_capacity(model.blocks.len());
        let mut v = Vec::with_capacity(model.blocks.len());
        for _ in 0..model.blocks.len() {
            // Zeros, not uninitialised memory: masked positions are multiplied by 0 and
            // must not hold NaN.
            k.push(Tensor::zeros(shape, model.dtype, &model.device)?);
            v.push(Tensor::zeros(shape, model.dtype, &model.device)?);
        }
        let attn_counters = if model.device.is_cuda() {
            Some(Tensor::zeros(
                super::decode_ops::ATTN_COUNTERS,
                DType::U32,
                &model.device,
            )?)
        } else {
            None
        };
        Ok(KvCache {
            k,
            v,
            slots: shape.0,
            cap: shape.2,
            attn_counters,
            #[cfg(feature = "cuda")]
            graphs: None,
        })
    }
    /// On a CUDA device: captures the decode step of every batch bucket (powers of two up
    /// to the slots, and the slots) as a CUDA graph, so that decode-only steps replay one
    /// graph instead of enqueuing every kernel from the host. Returns the buckets captured
    /// (none on the CPU, or when the model's head size or dtype has no decode kernel).
    pub fn capture_graphs(&mut self, model: &Llama) -> Result<Vec<usize>> {
        #[cfg(feature = "cuda")]
        if model.device.is_cuda() && super::decode_ops::supported(model.cfg.head_dim(), model.dtype)
        {
            self.graphs = None;
            let g = super::cuda_graph::DecodeGraphs::capture(model, self)?;
            let buckets = g.buckets();
            self.graphs = Some(g);
            return Ok(buckets);
        }
        let _ = model;
        Ok(Vec::new())
    }
    /// The buckets whose decode graph was captured from a static step
    /// (`DAYSHIFT_BENCH_STATIC_STEP`; see `static_step.rs`); none without CUDA graphs.
    pub fn static_graph_buckets(&self) -> Vec<usize> {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.graphs {
            return g.static_buckets();
        }
        Vec::new()
    }
    /// Sequences it holds.
    pub fn slots(&self) -> usize {
        self.slots
    }
    /// Tokens per sequence.
    pub fn cap(&self) -> usize {
        self.cap
    }
    /// Copies slot `src`'s first `len` tokens of keys and values into slot `dst` (a prompt
    /// prefilled once and shared by several choices of one request). Only `len` tokens
    /// are copied (before, `Tensor::copy` of the slot's view cloned every slot's whole
    /// capacity per layer, seconds per `n = 3` request on a CPU node).
    pub fn copy_slot(&mut self, src: usize, dst: usize, len: usize) -> Result<()> {
        if src >= self.slots || dst >= self.slots {
            candle_core::bail!("KV slot {src} or {dst} out of range ({} slots)", self.slots);
        }
        let len = len.min(self.cap);
        if src == dst || len == 0 {
            return Ok(());
        }
        for t in self.k.iter().chain(self.v.iter()) {
            // A copy of just those tokens with its own storage (slice_set refuses a source
            // sharing it; `Tensor::copy` would clone the whole cache tensor).
            let part = t.narrow(0, src, 1)?.narrow(2, 0, len)?.force_contiguous()?;
            // Slot `dst` of the contiguous cache is itself contiguous: write its first
            // `len` positions in place.
            t.narrow(0, dst, 1)?.slice_set(&part, 2, 0)?;
        }
        Ok(())
    }
    /// A copy with `cap` tokens per slot (the first `keep` tokens of each slot kept).
    fn regrow(&mut self, cap: usize, keep: usize) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            self.graphs = None; // they hold the old tensors' addresses
        }
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            let (s, h, _, d) = t.dims4()?;
            let new = Tensor::zeros((s, h, cap, d), t.dtype(), t.device())?;
            if keep > 0 {
                let old = t.narrow(2, 0, keep)?.contiguous()?;
                new.slice_set(&old, 2, 0)?;
            }
            *t = new;
        }
        self.cap = cap;
        Ok(())
    }
}

/// One sequence's part of a batched step over a shared [`KvCache`].
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// The sequence's slot in the cache.
    pub slot: usize,
    /// Tokens already in the slot; `tokens` go to positions `start..start + len`.
    pub start: usize,
    /// Tokens to run (non-empty).
    pub tokens: &'a [u32],
    /// Which logits to return.
    pub want: WantLogits,
}

/// The KV cache of one sequence run on its own (tests, scoring): a one-slot
/// [`KvCache`] that grows as needed.
#[derive(Default)]
pub struct SeqCache {
    kv: Option<KvCache>,
    len: usize,
}

impl SeqCache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One sequence's part of a step run with its own [`SeqCache`].
pub struct SeqChunk<'a> {
    /// Tokens to run, at positions `cache.len()..cache.len() + tokens.len()`.
    pub tokens: &'a [u32],
    /// That sequence's cache; grows by `tokens.len()`.
    pub cache: &'a mut SeqCache,
    /// Which logits to return.
    pub want: WantLogits,
}

struct Attention {
    q: Lin,
    k: Lin,
    v: Lin,
    o: Lin,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Per-head RMSNorm weights of q and k (Qwen3, Gemma 3).
    qk_norm: Option<(Tensor, Tensor)>,
    /// Attends through the sliding window.
    sliding: bool,
    /// Index of its RoPE table.
    rope: usize,
}

struct Mlp {
    gate: Lin,
    up: Lin,
    down: Lin,
}

struct Block {
    attn: Attention,
    mlp: Mlp,
    /// Norm before attention.
    ln1: Tensor,
    /// Norm before the MLP.
    ln2: Tensor,
    /// Gemma: norms of the attention output and of the MLP output.
    post: Option<(Tensor, Tensor)>,
}

/// A loaded Llama-family model.
pub struct Llama {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Lin,
    /// cos and sin tables `[n, hd/2]`, one pair per entry of `arch.ropes`.
    ropes: Vec<(Tensor, Tensor)>,
    eps: f64,
    dtype: DType,
    device: Device,
    cfg: LlamaConfig,
    arch: Arch,
    /// Per layer, the projections sharing an input as one matrix (dense models; empty
    /// otherwise): what the fused decode step multiplies with.
    fused: Vec<FusedLayer>,
    /// [`PREFILL_SCORES_BYTES`] (smaller in tests, to split short prompts into blocks).
    prefill_scores_bytes: usize,
    /// Per GEMV of the fused decode step, in launch order, the weight bytes it asks the
    /// GPU to bring into L2 ([`super::l2_prefetch`]); empty unless the benchmark switch
    /// `DAYSHIFT_BENCH_L2_PREFETCH_MIB` is set on a CUDA node.
    l2_plan: Vec<L2Ranges>,
}

/// What a loader reads from the files, before [`Llama::assemble`] completes the model.
struct Parts {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Lin,
}

/// Most rows a decode step runs fused ([`Llama::forward_decode_fused`]) in a model whose
/// hidden size is over [`FUSED_SMALL_HIDDEN`]: measured on an H200 with llama1b
/// (bench/gpu), the fused step wins at 1 row (1.75 vs 2.3 ms), ties at 2, and loses
/// from 4 rows on (3.4 vs 2.7 ms then; 1.79 vs 1.64 ms at 4 streams with session 12's
/// kernels, 1.66 vs 1.70 at 8: its GEMV re-reads every row's activation from shared
/// memory per weight load), where cuBLAS's GEMM takes over.
pub const FUSED_DECODE_MAX_ROWS: usize = 2;

/// Hidden size up to which the fused step runs up to [`super::decode_ops::GEMV_MAX_ROWS`]
/// (8) rows: a small model's step is bound by its launches (~18 a layer unfused, 6
/// fused), not by its weights. H200, `bench/gpu/fused_rows.sh`, qwen05 (hidden 896):
/// 4 streams 2.47 → 1.40 ms a step, 8 streams 2.50 → 2.12.
pub const FUSED_SMALL_HIDDEN: usize = 1024;

/// The most rows a decode step of a model of hidden size `hidden` runs fused, or the
/// benchmark override `DAYSHIFT_BENCH_FUSED_ROWS` (1 to
/// [`super::decode_ops::GEMV_MAX_ROWS`]; read once), which `bench/gpu/fused_rows.sh` sets
/// to compare limits in one run.
fn fused_decode_max_rows(hidden: usize) -> usize {
    static ROWS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let bench = *ROWS.get_or_init(|| {
        std::env::var("DAYSHIFT_BENCH_FUSED_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|r| (1..=super::decode_ops::GEMV_MAX_ROWS).contains(r))
    });
    bench.unwrap_or(if hidden <= FUSED_SMALL_HIDDEN {
        super::decode_ops::GEMV_MAX_ROWS
    } else {
        FUSED_DECODE_MAX_ROWS
    })
}

/// Whether CUDA loads run the fused decode step (1–2 rows) for quantized weights
/// ([`super::decode_ops::QuantGemv`], `cuda/qgemv.cuh`) instead of candle's quantized
/// kernels in the unfused step. On an H200, Qwen3-8B Q4_K_M at batch 1: 218.9 tok/s
/// against 210.3 with candle's (bench/gguf-gpu, two runs of 2026-12-04); an earlier
/// design of the kernel measured 184.6, which is why this stays a switch.
pub const QUANT_FUSED_DECODE: bool = true;

/// One layer's projections that share an input, as the fused decode step multiplies
/// them: q|k|v (and their biases) and gate|up. Dense weights are concatenated by output
/// (the layer's own q/k/v/gate/up weights are views of these); quantized ones stay
/// separate matrices that one kernel reads side by side.
struct FusedLayer {
    qkv: StepWeight,
    qkv_bias: Option<Tensor>,
    gate_up: StepWeight,
}

/// A weight the fused decode step multiplies with.
#[derive(Clone)]
enum StepWeight {
    /// Dense `[out, in]` ([`super::decode_ops::FusedGemv`]).
    Dense(Tensor),
    /// GGML-quantized matrices whose outputs lie side by side
    /// ([`super::decode_ops::QuantGemv`]).
    Quant(Vec<std::sync::Arc<QTensor>>),
}

impl StepWeight {
    /// The weight of a linear layer, if the fused step can multiply with it.
    fn of(l: &Lin) -> Option<StepWeight> {
        match l {
            Lin::Dense(l) => Some(StepWeight::Dense(l.weight().clone())),
            Lin::Quant {
                w: QMatMul::QTensor(q),
                ..
            } => Some(StepWeight::Quant(vec![q.clone()])),
            Lin::Quant { .. } => None,
        }
    }

    /// [`StepWeight::of`], or an error saying the fused step cannot multiply with it.
    fn required(l: &Lin) -> Result<StepWeight> {
        StepWeight::of(l).ok_or_else(|| {
            candle_core::Error::Msg(
                "the fused decode step needs dense or quantized (QTensor) weights".into(),
            )
        })
    }

    /// Whether the fused kernels take `b` rows of `k` inputs of `dtype` times this weight.
    fn takes(&self, b: usize, k: usize, dtype: DType) -> bool {
        use super::decode_ops::{FusedGemv, QuantGemv};
        match self {
            StepWeight::Dense(w) => {
                FusedGemv::takes(b, k, dtype) && w.dims2().is_ok_and(|(_, kk)| kk == k)
            }
            StepWeight::Quant(qs) => {
                let refs: Vec<&QTensor> = qs.iter().map(|q| q.as_ref()).collect();
                QuantGemv::takes(b, &refs) && qs[0].shape().dims2().is_ok_and(|(_, kk)| kk == k)
            }
        }
    }

    /// `epilogue(prologue(x) w^T)` in one kernel.
    fn gemv(
        &self,
        x: &Tensor,
        prologue: super::decode_ops::Prologue,
        eps: f32,
        bias: Option<Tensor>,
        res: Option<Tensor>,
        prefetch: L2Ranges,
    ) -> Result<Tensor> {
        use super::decode_ops::{FusedGemv, QuantGemv};
        match self {
            StepWeight::Dense(w) => x.apply_op2_no_bwd(
                w,
                &FusedGemv {
                    prologue,
                    eps,
                    bias,
                    res,
                    prefetch,
                },
            ),
            StepWeight::Quant(qs) => x.apply_op1_no_bwd(&QuantGemv {
                prologue,
                eps,
                segments: qs.clone(),
                bias,
                res,
                prefetch,
            }),
        }
    }

    /// The device memory the kernel reads this weight from, in order (CUDA only).
    #[cfg(feature = "cuda")]
    fn extents(&self) -> Result<Vec<super::l2_prefetch::Extent>> {
        match self {
            StepWeight::Dense(w) => Ok(vec![super::decode_ops::dense_extent(w)?]),
            StepWeight::Quant(qs) => qs
                .iter()
                .map(|q| {
                    let t = q.dtype();
                    Ok(super::l2_prefetch::Extent {
                        ptr: q.device_ptr()? as u64,
                        bytes: (q.shape().elem_count() / t.block_size() * t.type_size()) as u64,
                    })
                })
                .collect(),
        }
    }
}

/// A linear layer's bias.
fn bias_of(l: &Lin) -> Option<Tensor> {
    match l {
        Lin::Dense(l) => l.bias().cloned(),
        Lin::Quant { b, .. } => b.clone(),
    }
}

/// A linear layer of a safetensors model: dense, or quantized at load to `quant` (on
/// the CPU, then moved to the weights' device; a K-quant type falls back as in
/// `quantize` when the input width is not a multiple of 256).
fn linear(
    vb: VarBuilder,
    inp: usize,
    out: usize,
    bias: bool,
    quant: Option<GgmlDType>,
) -> Result<Lin> {
    let Some(q) = quant else {
        return if bias {
            candle_nn::linear(inp, out, vb).map(Lin::Dense)
        } else {
            candle_nn::linear_no_bias(inp, out, vb).map(Lin::Dense)
        };
    };
    let w = vb.get((out, inp), "weight")?.to_device(&Device::Cpu)?;
    let t = super::quantize::fit_type(q, inp);
    let qt = super::quantize::quantize_parallel(&w, t)?;
    let qt = if vb.device().is_cpu() {
        qt
    } else {
        candle_core::quantized::ggml_file::qtensor_from_ggml(
            t,
            &qt.data()?,
            w.dims().to_vec(),
            vb.device(),
        )?
    };
    Ok(Lin::Quant {
        w: QMatMul::from_arc(std::sync::Arc::new(qt))?,
        b: if bias {
            Some(vb.get(out, "bias")?)
        } else {
            None
        },
    })
}

/// `[n, hd/2]` cos and sin tables of each of the model's rotary embeddings, in `dtype` on
/// `device`.
fn rope_tables(
    cfg: &LlamaConfig,
    arch: &Arch,
    dtype: DType,
    device: &Device,
) -> Result<Vec<(Tensor, Tensor)>> {
    let n = cfg.max_position_embeddings;
    let pos = Tensor::arange(0u32, n as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((n, 1))?;
    let mut out = Vec::with_capacity(arch.ropes.len());
    for r in &arch.ropes {
        let inv = super::arch::inv_freqs(cfg.head_dim(), r);
        let half = inv.len();
        let inv_t = Tensor::from_vec(inv, (1, half), &Device::Cpu)?;
        let freqs = pos.broadcast_mul(&inv_t)?;
        out.push((
            freqs.cos()?.to_dtype(dtype)?.to_device(device)?,
            freqs.sin()?.to_dtype(dtype)?.to_device(device)?,
        ));
    }
    Ok(out)
}

/// The architecture choices of a config that [`LlamaConfig::check`] accepted.
fn arch_of(cfg: &LlamaConfig) -> Result<Arch> {
    Arch::from_config(cfg).map_err(candle_core::Error::msg)
}

/// An RMSNorm weight as applied: Gemma stores `w` and scales by `1 + w`.
fn norm_weight(w: Tensor, arch: &Arch) -> Result<Tensor> {
    if arch.gemma_norms {
        w.to_dtype(DType::F32)?
            .affine(1.0, 1.0)?
            .to_dtype(w.dtype())
    } else {
        Ok(w)
    }
}

/// Where the decoder's tensors live: `model.` (text models), `language_model.model.` or
/// `model.language_model.` (Gemma 3's multimodal checkpoints); and the `lm_head` name.
pub(crate) fn weight_prefixes(vb: &VarBuilder) -> (String, String) {
    for (m, head) in [
        ("model", "lm_head"),
        ("language_model.model", "language_model.lm_head"),
        ("model.language_model", "lm_head"),
    ] {
        if vb.contains_tensor(&format!("{m}.embed_tokens.weight")) {
            return (m.to_string(), head.to_string());
        }
    }
    ("model".into(), "lm_head".into())
}

impl Llama {
    /// Builds the model from weights (HF names: `model.layers.N.self_attn.q_proj.weight`, …).
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        Self::load_with(vb, cfg, None)
    }

    /// [`Llama::load`], with every linear layer (the untied output matrix included)
    /// quantized at load to `quant`; `vb` should then be f32 (the activations' dtype).
    pub fn load_with(vb: VarBuilder, cfg: &LlamaConfig, quant: Option<GgmlDType>) -> Result<Self> {
        let arch = arch_of(cfg)?;
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let (prefix, head_name) = weight_prefixes(&vb);
        let m = vb.pp(prefix);
        let norm = |vb: &VarBuilder, n: usize, name: &str| norm_weight(vb.get(n, name)?, &arch);
        let embed = candle_nn::embedding(cfg.vocab_size, h, m.pp("embed_tokens"))?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let b = m.pp(format!("layers.{i}"));
            let a = b.pp("self_attn");
            let qk_norm = if arch.qk_norm {
                Some((
                    norm(&a, hd, "q_norm.weight")?,
                    norm(&a, hd, "k_norm.weight")?,
                ))
            } else {
                None
            };
            let attn = Attention {
                q: linear(a.pp("q_proj"), h, nh * hd, cfg.qkv_bias(), quant)?,
                k: linear(a.pp("k_proj"), h, nkv * hd, cfg.qkv_bias(), quant)?,
                v: linear(a.pp("v_proj"), h, nkv * hd, cfg.qkv_bias(), quant)?,
                o: linear(a.pp("o_proj"), nh * hd, h, cfg.o_bias(), quant)?,
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
                qk_norm,
                sliding: arch.sliding[i],
                rope: arch.layer_rope[i],
            };
            let p = b.pp("mlp");
            let mlp = Mlp {
                gate: linear(
                    p.pp("gate_proj"),
                    h,
                    cfg.intermediate_size,
                    cfg.mlp_bias,
                    quant,
                )?,
                up: linear(
                    p.pp("up_proj"),
                    h,
                    cfg.intermediate_size,
                    cfg.mlp_bias,
                    quant,
                )?,
                down: linear(
                    p.pp("down_proj"),
                    cfg.intermediate_size,
                    h,
                    cfg.mlp_bias,
                    quant,
                )?,
            };
            // Gemma: post_attention_layernorm normalises the attention output and
            // pre_feedforward_layernorm the MLP input; in Llama the latter's job is
            // post_attention_layernorm's.
            let (ln2, post) = if arch.gemma_norms {
                (
                    norm(&b, h, "pre_feedforward_layernorm.weight")?,
                    Some((
                        norm(&b, h, "post_attention_layernorm.weight")?,
                        norm(&b, h, "post_feedforward_layernorm.weight")?,
                    )),
                )
            } else {
                (norm(&b, h, "post_attention_layernorm.weight")?, None)
            };
            blocks.push(Block {
                attn,
                mlp,
                ln1: norm(&b, h, "input_layernorm.weight")?,
                ln2,
                post,
            });
        }
        let norm = norm(&m, h, "norm.weight")?;
        let lm_head =
            if cfg.tie_word_embeddings && !vb.contains_tensor(&format!("{head_name}.weight")) {
                Lin::Dense(Linear::new(embed.embeddings().clone(), None))
            } else {
                linear(vb.pp(head_name), h, cfg.vocab_size, false, quant)?
            };
        let parts = Parts {
            embed,
            blocks,
            norm,
            lm_head,
        };
        Self::assemble(parts, cfg, arch, vb.dtype(), vb.device())
    }

    /// Concatenates each layer's q/k/v and gate/up weights (when all are dense) into one
    /// matrix each, and makes the layer's own weights views of them: the eager path is
    /// unchanged, and the fused decode step reads each matrix with one kernel.
    /// With `quantized`, layers of quantized weights are taken too (as separate matrices
    /// for [`super::decode_ops::QuantGemv`]); see [`QUANT_FUSED_DECODE`].
    pub(crate) fn fuse_projections(&mut self, quantized: bool) -> Result<()> {
        fn dense(l: &Lin) -> Option<&Linear> {
            match l {
                Lin::Dense(l) => Some(l),
                Lin::Quant { .. } => None,
            }
        }
        fn views(w: &Tensor, b: Option<&Tensor>, sizes: &[usize]) -> Result<Vec<Lin>> {
            let mut out = Vec::with_capacity(sizes.len());
            let mut at = 0;
            for &n in sizes {
                let bias = b.map(|b| b.narrow(0, at, n)).transpose()?;
                out.push(Lin::Dense(Linear::new(w.narrow(0, at, n)?, bias)));
                at += n;
            }
            Ok(out)
        }
        fn quant(l: &Lin) -> Option<std::sync::Arc<QTensor>> {
            match l {
                Lin::Quant {
                    w: QMatMul::QTensor(q),
                    ..
                } => Some(q.clone()),
                _ => None,
            }
        }
        let mut fused = Vec::with_capacity(self.blocks.len());
        for b in self.blocks.iter_mut() {
            let (at, m) = (&mut b.attn, &mut b.mlp);
            if let (true, Some(q), Some(k), Some(v), Some(g), Some(u)) = (
                quantized,
                quant(&at.q),
                quant(&at.k),
                quant(&at.v),
                quant(&m.gate),
                quant(&m.up),
            ) {
                if bias_of(&m.gate).is_some() || bias_of(&m.up).is_some() {
                    return Ok(());
                }
                let qkv_bias = match (bias_of(&at.q), bias_of(&at.k), bias_of(&at.v)) {
                    (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
                    (None, None, None) => None,
                    _ => return Ok(()),
                };
                fused.push(FusedLayer {
                    qkv: StepWeight::Quant(vec![q, k, v]),
                    qkv_bias,
                    gate_up: StepWeight::Quant(vec![g, u]),
                });
                continue;
            }
            let (Some(q), Some(k), Some(v), Some(g), Some(u)) = (
                dense(&at.q),
                dense(&at.k),
                dense(&at.v),
                dense(&m.gate),
                dense(&m.up),
            ) else {
                return Ok(());
            };
            if g.bias().is_some() || u.bias().is_some() {
                return Ok(());
            }
            let bias = match (q.bias(), k.bias(), v.bias()) {
                (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
                (None, None, None) => None,
                _ => return Ok(()),
            };
            let sizes = [q.weight().dim(0)?, k.weight().dim(0)?, v.weight().dim(0)?];
            let qkv = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
            let gsizes = [g.weight().dim(0)?, u.weight().dim(0)?];
            let gate_up = Tensor::cat(&[g.weight(), u.weight()], 0)?;
            let mut qkv_l = views(&qkv, bias.as_ref(), &sizes)?.into_iter();
            let mut gu_l = views(&gate_up, None, &gsizes)?.into_iter();
            if let (Some(q), Some(k), Some(v), Some(g), Some(u)) = (
                qkv_l.next(),
                qkv_l.next(),
                qkv_l.next(),
                gu_l.next(),
                gu_l.next(),
            ) {
                (at.q, at.k, at.v, m.gate, m.up) = (q, k, v, g, u);
            }
            fused.push(FusedLayer {
                qkv: StepWeight::Dense(qkv),
                qkv_bias: bias,
                gate_up: StepWeight::Dense(gate_up),
            });
        }
        self.fused = fused;
        #[cfg(feature = "cuda")]
        if self.device.is_cuda() {
            self.l2_plan = self.plan_l2_prefetch(super::l2_prefetch::window_bytes())?;
        }
        Ok(())
    }

    /// The fused decode step's L2 prefetch (`DAYSHIFT_BENCH_L2_PREFETCH_MIB`): how many
    /// GEMVs have a plan, and the bytes they ask for a step (0, 0 when off).
    pub fn l2_prefetch_plan(&self) -> (usize, u64) {
        (
            self.l2_plan.len(),
            self.l2_plan.iter().map(|r| r.total()).sum(),
        )
    }

    /// [`Llama::l2_plan`] for a window of `window` bytes (empty for 0 or when a weight
    /// of the fused step is not one it multiplies with).
    #[cfg(feature = "cuda")]
    fn plan_l2_prefetch(&self, window: u64) -> Result<Vec<L2Ranges>> {
        if window == 0 || self.fused.len() != self.blocks.len() {
            return Ok(Vec::new());
        }
        let mut gemvs = Vec::with_capacity(4 * self.blocks.len() + 1);
        for (blk, f) in self.blocks.iter().zip(&self.fused) {
            for w in [
                Some(f.qkv.clone()),
                StepWeight::of(&blk.attn.o),
                Some(f.gate_up.clone()),
                StepWeight::of(&blk.mlp.down),
            ] {
                let Some(w) = w else { return Ok(Vec::new()) };
                gemvs.push(w.extents()?);
            }
        }
        let Some(head) = StepWeight::of(&self.lm_head) else {
            return Ok(Vec::new());
        };
        gemvs.push(head.extents()?);
        let plan = super::l2_prefetch::plan(&gemvs, window);
        tracing::info!(
            window_mib = window >> 20,
            gemvs = plan.len(),
            prefetched_mb = plan.iter().map(|r| r.total()).sum::<u64>() / 1_000_000,
            "decode step: L2 prefetch of the weight stream on (DAYSHIFT_BENCH_L2_PREFETCH_MIB)"
        );
        Ok(plan)
    }

    /// Builds the model from a GGUF file's tensors (quantized linear layers; dense
    /// tensors, activations and KV cache in the source's dtype); `cfg` comes from the
    /// file's metadata.
    pub fn load_gguf(src: &mut dyn QuantSource, cfg: &LlamaConfig) -> Result<Self> {
        let arch = arch_of(cfg)?;
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let h = cfg.hidden_size;
        let emb = src.dense("token_embd.weight")?;
        let embed = Embedding::new(emb, h);
        let bias = |src: &mut dyn QuantSource, name: String| -> Result<Option<Tensor>> {
            if src.contains(&name) {
                src.dense(&name).map(Some)
            } else {
                Ok(None)
            }
        };
        let with_bias = |src: &mut dyn QuantSource, lin: Lin, name: String| -> Result<Lin> {
            match (lin, bias(src, name)?) {
                (Lin::Quant { w, .. }, Some(b)) => Ok(Lin::Quant { w, b: Some(b) }),
                (Lin::Dense(l), Some(b)) => {
                    Ok(Lin::Dense(Linear::new(l.weight().clone(), Some(b))))
                }
                (l, None) => Ok(l),
            }
        };
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("blk.{i}");
            let q = src.lin(&format!("{p}.attn_q.weight"), Some(nh))?;
            let k = src.lin(&format!("{p}.attn_k.weight"), Some(nkv))?;
            let v = src.lin(&format!("{p}.attn_v.weight"), None)?;
            let o = src.lin(&format!("{p}.attn_output.weight"), None)?;
            let qk_norm = if arch.qk_norm {
                Some((
                    src.dense(&format!("{p}.attn_q_norm.weight"))?,
                    src.dense(&format!("{p}.attn_k_norm.weight"))?,
                ))
            } else {
                None
            };
            let attn = Attention {
                q: with_bias(src, q, format!("{p}.attn_q.bias"))?,
                k: with_bias(src, k, format!("{p}.attn_k.bias"))?,
                v: with_bias(src, v, format!("{p}.attn_v.bias"))?,
                o: with_bias(src, o, format!("{p}.attn_output.bias"))?,
                heads: nh,
                kv_heads: nkv,
                head_dim: cfg.head_dim(),
                qk_norm,
                sliding: arch.sliding[i],
                rope: arch.layer_rope[i],
            };
            let mlp = Mlp {
                gate: src.lin(&format!("{p}.ffn_gate.weight"), None)?,
                up: src.lin(&format!("{p}.ffn_up.weight"), None)?,
                down: src.lin(&format!("{p}.ffn_down.weight"), None)?,
            };
            // Gemma 3 (llama.cpp's names): `ffn_norm` is the norm before the MLP
            // (`pre_feedforward_layernorm`), `post_attention_norm` and `post_ffw_norm`
            // come after attention and the MLP. GGUF files store every Gemma norm as
            // applied (`1 + w`, added by llama.cpp's converter), so unlike
            // [`norm_weight`] nothing is added here.
            let post = if arch.gemma_norms {
                Some((
                    src.dense(&format!("{p}.post_attention_norm.weight"))?,
                    src.dense(&format!("{p}.post_ffw_norm.weight"))?,
                ))
            } else {
                None
            };
            blocks.push(Block {
                attn,
                mlp,
                ln1: src.dense(&format!("{p}.attn_norm.weight"))?,
                ln2: src.dense(&format!("{p}.ffn_norm.weight"))?,
                post,
            });
        }
        let norm = src.dense("output_norm.weight")?;
        let lm_head = if src.contains("output.weight") {
            src.lin("output.weight", None)?
        } else {
            src.lin("token_embd.weight", None)?
        };
        let parts = Parts {
            embed,
            blocks,
            norm,
            lm_head,
        };
        Self::assemble(parts, cfg, arch, src.dtype(), src.device())
    }

    /// The model from the weights a loader read (HF layout or GGUF): its RoPE tables
    /// built and, on CUDA, the projections sharing an input fused into one matrix (only
    /// the CUDA decode graphs read those).
    fn assemble(
        parts: Parts,
        cfg: &LlamaConfig,
        arch: Arch,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut llama = Llama {
            embed: parts.embed,
            blocks: parts.blocks,
            norm: parts.norm,
            lm_head: parts.lm_head,
            ropes: rope_tables(cfg, &arch, dtype, device)?,
            eps: cfg.rms_norm_eps,
            dtype,
            device: device.clone(),
            cfg: cfg.clone(),
            arch,
            fused: Vec::new(),
            l2_plan: Vec::new(),
            prefill_scores_bytes: PREFILL_SCORES_BYTES,
        };
        if llama.device.is_cuda() {
            llama.fuse_projections(QUANT_FUSED_DECODE)?;
        }
        Ok(llama)
    }

    /// The blocks' linear layers held as quantized tensors, with their tensor.
    fn quantized_layers(&self) -> impl Iterator<Item = (&Lin, &std::sync::Arc<QTensor>)> {
        self.blocks
            .iter()
            .flat_map(|b| {
                [
                    &b.attn.q,
                    &b.attn.k,
                    &b.attn.v,
                    &b.attn.o,
                    &b.mlp.gate,
                    &b.mlp.up,
                    &b.mlp.down,
                ]
            })
            .filter_map(|l| match l {
                Lin::Quant {
                    w: QMatMul::QTensor(q),
                    ..
                } => Some((l, q)),
                _ => None,
            })
    }

    /// On CUDA, grows candle's quantized-matmul scratch buffers (global, grow-only, one
    /// per device: MMVQ for up to 8 rows, MMQ above) to what a step of up to `rows` rows
    /// can need, by running the widest quantized layer once on zeros at 8 and at `rows`
    /// rows. Call it before capturing CUDA graphs: a captured graph keeps the buffers'
    /// addresses, and a later step that grew a buffer would free the one it uses.
    /// A no-op without quantized layers or off CUDA.
    pub fn reserve_quant_scratch(&self, rows: usize) -> Result<()> {
        if !self.device.is_cuda() {
            return Ok(());
        }
        let mut widest: Option<(&Lin, usize)> = None;
        for (l, q) in self.quantized_layers() {
            let k = q.shape().dims().last().copied().unwrap_or(0);
            if widest.is_none_or(|(_, w)| k > w) {
                widest = Some((l, k));
            }
        }
        let Some((lin, k)) = widest else {
            return Ok(());
        };
        for n in [8usize.min(rows.max(1)), rows.max(1)] {
            let x = Tensor::zeros((n, k), self.dtype, &self.device)?;
            lin.forward(&x)?;
        }
        self.device.synchronize()
    }

    /// Checks the device's quantized matmul against a plain f32 matmul of the dequantized
    /// weight, once per GGML type the model's layers use, at 1, 2 and 16 rows (the
    /// kernels for one row, a few rows and many rows), and the fused decode step's
    /// quantized kernel ([`super::decode_ops::QuantGemv`]) at 1 and 2 rows for the types
    /// it reads. Returns the largest relative error
    /// per type; fails when one exceeds [`QUANT_CHECK_MAX_ERROR`] or is not finite, naming
    /// the type and the rows: on a GPU whose architecture the build has no code for,
    /// candle's quantized kernels fail to launch without an error and leave their output
    /// unwritten (H200, 2026-12-04).
    pub fn check_quant_matmul(&self) -> Result<Vec<(GgmlDType, f32)>> {
        use super::decode_ops::{Prologue, QuantGemv};
        let mut seen: Vec<(GgmlDType, &std::sync::Arc<QTensor>)> = Vec::new();
        for (_, q) in self.quantized_layers() {
            match seen.iter_mut().find(|(t, _)| *t == q.dtype()) {
                // The smallest matrix of each type: cheapest to dequantize.
                Some(e) if q.shape().elem_count() < e.1.shape().elem_count() => e.1 = q,
                Some(_) => {}
                None => seen.push((q.dtype(), q)),
            }
        }
        let mut out = Vec::new();
        for (t, q) in seen {
            let (n, k) = q.shape().dims2()?;
            let wd = q.dequantize(&self.device)?.to_dtype(DType::F32)?;
            let mm = QMatMul::from_arc(q.clone())?;
            let mut worst = 0f32;
            for rows in [1usize, 2, 16] {
                // Deterministic, varied inputs in [-1, 1].
                let x = Tensor::arange(0u32, (rows * k) as u32, &self.device)?
                    .to_dtype(DType::F32)?
                    .affine(0.37, 0.0)?
                    .sin()?
                    .reshape((rows, k))?;
                let want = x.matmul(&wd.t()?)?;
                let xd = x.to_dtype(self.dtype)?;
                let mut kernels = vec![("candle's", mm.forward(&xd)?)];
                // Our fused decode kernel, where the fused step would use it.
                if rows <= QuantGemv::MAX_ROWS && QuantGemv::takes(rows, &[q.as_ref()]) {
                    let op = QuantGemv {
                        prologue: Prologue::None,
                        eps: 0.0,
                        segments: vec![q.clone()],
                        bias: None,
                        res: None,
                        prefetch: Default::default(),
                    };
                    kernels.push(("the fused decode", xd.apply_op1_no_bwd(&op)?));
                }
                for (which, got) in kernels {
                    let got = got.to_dtype(DType::F32)?;
                    let scale = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
                    let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
                    if !err.is_finite() || err > QUANT_CHECK_MAX_ERROR {
                        candle_core::bail!(
                            "{which} quantized matmul on the {} ({t:?}, {n}x{k}) at {rows} rows is off by {err:.3} of the largest output: this build of dayshift-node may lack code for this GPU's architecture (scripts/build-cuda-node.sh, CANDLE_KERNELS_SASS)",
                            if self.device.is_cuda() { "GPU" } else { "CPU" }
                        );
                    }
                    worst = worst.max(err);
                }
            }
            out.push((t, worst));
        }
        Ok(out)
    }

    /// The model's config.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }
    /// Device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// dtype of weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Bytes of KV cache one token takes (all layers, keys and values).
    pub fn kv_bytes_per_token(&self) -> usize {
        dayshift_config::memory::kv_bytes_per_token(
            self.cfg.num_hidden_layers as u64,
            self.cfg.kv_heads() as u64,
            self.cfg.head_dim() as u64,
            self.dtype.size_in_bytes() as u64,
        ) as usize
    }

    /// Runs one step of sequences that each have their own [`SeqCache`] (tests,
    /// scoring): every chunk runs alone. Returns, per chunk, its logits as f32
    /// `[rows, vocab]` (`None` for [`WantLogits::None`]).
    pub fn forward(&self, chunks: &mut [SeqChunk<'_>]) -> Result<Vec<Option<Tensor>>> {
        let mut out = Vec::with_capacity(chunks.len());
        for c in chunks.iter_mut() {
            if c.tokens.is_empty() {
                out.push(None);
                continue;
            }
            let need = c.cache.len + c.tokens.len();
            let have = c.cache.kv.as_ref().map_or(0, |k| k.cap);
            if need > have {
                let cap = need
                    .next_power_of_two()
                    .max(16)
                    .min(self.cfg.max_position_embeddings.max(need));
                match c.cache.kv.as_mut() {
                    Some(kv) => kv.regrow(cap, c.cache.len)?,
                    None => c.cache.kv = Some(KvCache::new(self, 1, cap)?),
                }
            }
            let Some(kv) = c.cache.kv.as_mut() else {
                candle_core::bail!("sequence cache missing after allocation");
            };
            let item = BatchItem {
                slot: 0,
                start: c.cache.len,
                tokens: c.tokens,
                want: c.want,
            };
            let logits = self.forward_batch(kv, &[item])?;
            c.cache.len = need;
            out.push(match logits {
                Some(l) => Some(l.to_dtype(DType::F32)?),
                None => None,
            });
        }
        Ok(out)
    }

    /// Runs one batched step over the shared cache `kv`: every item's tokens go through
    /// the projections and the MLP as one matrix (the weights are read once per step);
    /// the keys and values of all items are written into the cache with one scatter per
    /// layer; single-token items (decode) attend together in one batched GEMM per layer
    /// over their slots, multi-token items (prompt chunks) one by one. Returns the wanted
    /// logits `[rows, vocab]` in the model's dtype, rows in item order (`None` when no
    /// item wants any). Items must use distinct slots.
    pub fn forward_batch(
        &self,
        kv: &mut KvCache,
        items: &[BatchItem<'_>],
    ) -> Result<Option<Tensor>> {
        if items.is_empty() {
            return Ok(None);
        }
        #[cfg(feature = "cuda")]
        if let Some(logits) = super::cuda_graph::replay(self, kv, items)? {
            return Ok(Some(logits));
        }
        let (nkv, hd) = (self.cfg.kv_heads(), self.cfg.head_dim());
        let (s_used, tmax) = self.check_items(kv, items)?;
        // Row order inside the step: single-token items first, then the longer ones.
        // Singles in slot order: when they fill slots 0..n (the steady state of a
        // batch), rows and slots coincide and the gathers below are skipped.
        let mut singles: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].tokens.len() == 1)
            .collect();
        singles.sort_by_key(|&i| items[i].slot);
        let multis: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].tokens.len() > 1)
            .collect();
        let mut row0 = vec![0usize; items.len()];
        let mut ids = Vec::new();
        let mut pos = Vec::new();
        for &i in singles.iter().chain(&multis) {
            row0[i] = ids.len();
            let it = &items[i];
            ids.extend_from_slice(it.tokens);
            pos.extend((it.start..it.start + it.tokens.len()).map(|p| p as u32));
        }
        let total = ids.len();
        // Where each (slot, j) of the scatter source comes from, and its position.
        let mut wrow = vec![0u32; s_used * tmax];
        let mut wpos = vec![u32::MAX; s_used * tmax];
        for (i, it) in items.iter().enumerate() {
            for j in 0..it.tokens.len() {
                wrow[it.slot * tmax + j] = (row0[i] + j) as u32;
                wpos[it.slot * tmax + j] = (it.start + j) as u32;
            }
        }
        // Decode: query row of each slot, the slot of each single, and slot lengths.
        let mut qmap = vec![0u32; s_used];
        let mut omap = Vec::with_capacity(singles.len());
        let mut lens = vec![1usize; s_used];
        let mut lmax = 0usize;
        for &i in &singles {
            let it = &items[i];
            qmap[it.slot] = row0[i] as u32;
            omap.push(it.slot as u32);
            lens[it.slot] = it.start + 1;
            lmax = lmax.max(it.start + 1);
        }
        // Rows whose logits are wanted, in item order.
        let mut want = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let n = it.tokens.len();
            match it.want {
                WantLogits::None => {}
                WantLogits::Last => want.push((row0[i] + n - 1) as u32),
                WantLogits::All => want.extend((row0[i]..row0[i] + n).map(|r| r as u32)),
            }
        }
        // One upload for all the indices of the step.
        let parts = [&ids, &pos, &wrow, &wpos, &qmap, &omap, &want];
        let mut packed = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut offs = Vec::with_capacity(parts.len());
        for p in parts {
            offs.push((packed.len(), p.len()));
            packed.extend_from_slice(p);
        }
        let packed_len = packed.len();
        let packed = Tensor::from_vec(packed, packed_len, &self.device)?;
        let part = |k: usize| packed.narrow(0, offs[k].0, offs[k].1);
        let ids_t = part(0)?;
        let pos_t = part(1)?;
        let wrow_t = part(2)?;
        let widx = part(3)?
            .reshape((s_used, 1, tmax, 1))?
            .broadcast_as((s_used, nkv, tmax, hd))?
            .contiguous()?;
        let dense = singles.len() == s_used;
        let mut cos = Vec::with_capacity(self.ropes.len());
        let mut sin = Vec::with_capacity(self.ropes.len());
        for (c, s) in &self.ropes {
            cos.push(c.index_select(&pos_t, 0)?); // [T, hd/2]
            sin.push(s.index_select(&pos_t, 0)?);
        }
        let window = self.arch.window;
        let dec = if singles.is_empty() {
            None
        } else {
            let mask = |w| -> Result<Option<Tensor>> {
                match decode_mask(&lens, lmax, w) {
                    Some(m) => Ok(Some(
                        Tensor::from_vec(m, (s_used, 1, 1, lmax), &self.device)?
                            .to_dtype(self.dtype)?,
                    )),
                    None => Ok(None),
                }
            };
            Some(Decode {
                qmap: if dense { None } else { Some(part(4)?) },
                omap: if dense { None } else { Some(part(5)?) },
                mask: mask(None)?,
                mask_win: match window {
                    Some(w) => mask(Some(w))?,
                    None => None,
                },
                lmax,
                n: singles.len(),
            })
        };
        // On the CPU in f32, prompt chunks mask and softmax in one pass (no mask tensors).
        let fused_softmax = self.device.is_cpu() && self.dtype == DType::F32;
        let prefill: Vec<Prefill> = multis
            .iter()
            .map(|&i| {
                let it = &items[i];
                let n = it.tokens.len();
                let mask = |w| causal_mask(n, it.start, w, &self.device, self.dtype);
                Ok(Prefill {
                    row: row0[i],
                    n,
                    slot: it.slot,
                    start: it.start,
                    window,
                    mask: if fused_softmax {
                        None
                    } else {
                        Some(mask(None)?)
                    },
                    mask_win: match window {
                        Some(w) if !fused_softmax && it.start + n > w => Some(mask(Some(w))?),
                        _ => None,
                    },
                })
            })
            .collect::<Result<_>>()?;
        let step = Step {
            total,
            s_used,
            tmax,
            cos,
            sin,
            wrow: if dense && tmax == 1 {
                None
            } else {
                Some(wrow_t)
            },
            widx,
            dec,
            prefill,
        };
        let mut x = self.embed_tokens(&ids_t)?; // [T,H]
        let eps = self.eps as f32;
        for (li, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.ln1, eps)?;
            let a = self.attention(&b.attn, &h, &kv.k[li], &kv.v[li], &step)?;
            x = self.finish_block(b, x, a, false)?;
        }
        if want.is_empty() {
            return Ok(None);
        }
        // Only the rows someone wants go through the norm and lm_head.
        let sel = x.index_select(&part(6)?, 0)?;
        self.head(&sel, false).map(Some)
    }

    /// Checks that every item of a step has tokens and fits the model's context and the
    /// cache; returns the slots touched (`0..s_used`) and the longest item.
    pub(crate) fn check_items(
        &self,
        kv: &KvCache,
        items: &[BatchItem<'_>],
    ) -> Result<(usize, usize)> {
        let mut s_used = 0usize;
        let mut tmax = 0usize;
        for it in items {
            let end = it.start + it.tokens.len();
            if it.tokens.is_empty() {
                candle_core::bail!("an item of a batched step has no tokens");
            }
            if end > self.cfg.max_position_embeddings {
                candle_core::bail!(
                    "sequence of {end} tokens exceeds the model's context of {}",
                    self.cfg.max_position_embeddings
                );
            }
            if end > kv.cap || it.slot >= kv.slots {
                candle_core::bail!(
                    "slot {} up to {end} tokens does not fit the KV cache ({} slots of {} tokens)",
                    it.slot,
                    kv.slots,
                    kv.cap
                );
            }
            s_used = s_used.max(it.slot + 1);
            tmax = tmax.max(it.tokens.len());
        }
        Ok((s_used, tmax))
    }

    /// A decode step of `b` single-token rows whose token ids, positions and slots are in
    /// `idx` (`[3 * b]` u32 on the model's device: ids, then positions, then slots): the
    /// same arithmetic as a decode-only [`Llama::forward_batch`], with the cache write and
    /// attention done by [`super::decode_ops`], which read `idx` on the device. Nothing
    /// here depends on host values, so the step can be captured as a CUDA graph and
    /// replayed with new contents of `idx`. A row with slot [`super::decode_ops::PAD_SLOT`] is padding: it
    /// writes nothing and attends to nothing. Returns the logits `[b, vocab]`.
    pub fn forward_decode(&self, kv: &KvCache, idx: &Tensor, b: usize) -> Result<Tensor> {
        use super::decode_ops::KvWrite;
        if self.fused_decode_takes(b) {
            return self.forward_decode_fused(kv, idx, b);
        }
        let ids = idx.narrow(0, 0, b)?;
        let pos = idx.narrow(0, b, b)?;
        let mut cos = Vec::with_capacity(self.ropes.len());
        let mut sin = Vec::with_capacity(self.ropes.len());
        for (c, s) in &self.ropes {
            cos.push(c.index_select(&pos, 0)?);
            sin.push(s.index_select(&pos, 0)?);
        }
        let mut x = self.embed_tokens(&ids)?;
        let eps = self.eps as f32;
        let write = KvWrite { b };
        for (li, blk) in self.blocks.iter().enumerate() {
            let at = &blk.attn;
            let h = candle_nn::ops::rms_norm(&x, &blk.ln1, eps)?;
            let (q, k, v) = self.qkv(at, &h, b, &cos[at.rope], &sin[at.rope], true)?;
            kv.k[li].inplace_op3(&k, idx, &write)?;
            kv.v[li].inplace_op3(&v, idx, &write)?;
            let o =
                q.apply_op3_no_bwd(&kv.k[li], &kv.v[li], &self.decode_attention(at, b, idx, kv))?;
            let a = at.o.forward_rows(&o)?;
            x = self.finish_block(blk, x, a, true)?;
        }
        self.head(&x, true)
    }

    /// Whether [`Llama::forward_decode_fused`] runs a step of `b` rows of this model:
    /// projections fused at load (dense, or quantized in types the quantized kernel
    /// reads), SiLU MLP without Gemma's extra norms, head size 64/128/256, and every
    /// activation fitting the fused kernels' shared memory.
    fn fused_decode_takes(&self, b: usize) -> bool {
        use super::decode_ops::RopeRows;
        let (h, hd) = (self.cfg.hidden_size, self.cfg.head_dim());
        let (attn_in, inter) = (
            self.cfg.num_attention_heads * hd,
            self.cfg.intermediate_size,
        );
        let dt = self.dtype;
        let lin_takes = |l: &Lin, k: usize| StepWeight::of(l).is_some_and(|w| w.takes(b, k, dt));
        b <= fused_decode_max_rows(h)
            && self.fused.len() == self.blocks.len()
            && !self.blocks.is_empty()
            && matches!(self.arch.act, Act::Silu)
            && self.blocks.iter().all(|b| b.post.is_none())
            && RopeRows::takes(hd)
            && super::decode_ops::supported(hd, dt)
            && lin_takes(&self.lm_head, h)
            && self.blocks.iter().zip(&self.fused).all(|(blk, f)| {
                f.qkv.takes(b, h, dt)
                    && f.gate_up.takes(b, h, dt)
                    && lin_takes(&blk.attn.o, attn_in)
                    && lin_takes(&blk.mlp.down, inter)
            })
    }

    /// Each layer with its fused projections and its key and value caches in `kv`.
    fn fused_layers<'a>(
        &'a self,
        kv: &'a KvCache,
    ) -> impl Iterator<Item = (&'a Block, &'a FusedLayer, &'a Tensor, &'a Tensor)> {
        self.blocks
            .iter()
            .zip(&self.fused)
            .zip(kv.k.iter().zip(&kv.v))
            .map(|((blk, f), (kc, vc))| (blk, f, kc, vc))
    }

    /// [`Llama::forward_decode`] in six kernels per layer on CUDA: RMSNorm + q|k|v
    /// projection; q/k norm + RoPE of q and k + cache write of k and v; attention (its
    /// splits merged in the kernel); o projection + residual; RMSNorm + gate|up
    /// projection; SwiGLU + down projection + residual
    /// ([`super::decode_ops::FusedGemv`] or, for quantized weights,
    /// [`super::decode_ops::QuantGemv`]; [`super::decode_ops::RopeRows`]); for dense
    /// weights the same arithmetic and roundings as the unfused step, for quantized ones
    /// the activation rounded to 8 bits per 32 values as candle's quantized kernels do.
    fn forward_decode_fused(&self, kv: &KvCache, idx: &Tensor, b: usize) -> Result<Tensor> {
        use super::decode_ops::{Prologue, RopeRows};
        let ids = idx.narrow(0, 0, b)?;
        let mut x = self.embed_tokens(&ids)?.contiguous()?;
        let eps = self.eps as f32;
        let weight = StepWeight::required;
        // Each GEMV's share of the L2 prefetch, in launch order.
        let mut plan = self.l2_plan.iter().copied();
        let mut pf = move || plan.next().unwrap_or_default();
        for (blk, f, kc, vc) in self.fused_layers(kv) {
            let at = &blk.attn;
            let qkv = f.qkv.gemv(
                &x,
                Prologue::Norm(blk.ln1.clone()),
                eps,
                f.qkv_bias.clone(),
                None,
                pf(),
            )?;
            let (cos, sin) = &self.ropes[at.rope];
            let rope = RopeRows {
                b,
                heads: at.heads,
                kv_heads: at.kv_heads,
                head_dim: at.head_dim,
                cos: cos.clone(),
                sin: sin.clone(),
                q_norm: at.qk_norm.as_ref().map(|(q, _)| q.clone()),
                k_norm: at.qk_norm.as_ref().map(|(_, k)| k.clone()),
                eps,
                idx: idx.clone(),
            };
            let q = rope.apply(&qkv, kc, vc)?;
            let o = q.apply_op3_no_bwd(kc, vc, &self.decode_attention(at, b, idx, kv))?;
            x = weight(&at.o)?.gemv(&o, Prologue::None, eps, bias_of(&at.o), Some(x), pf())?;
            let gu = f
                .gate_up
                .gemv(&x, Prologue::Norm(blk.ln2.clone()), eps, None, None, pf())?;
            let down = &blk.mlp.down;
            x = weight(down)?.gemv(&gu, Prologue::SiluMul, eps, bias_of(down), Some(x), pf())?;
        }
        let logits = weight(&self.lm_head)?.gemv(
            &x,
            Prologue::Norm(self.norm.clone()),
            eps,
            bias_of(&self.lm_head),
            None,
            pf(),
        )?;
        match self.arch.final_softcap {
            Some(cap) => softcap(&logits, cap),
            None => Ok(logits),
        }
    }

    /// [`Llama::forward_decode_fused`] as a [`super::static_step::StaticStep`] of `b`
    /// rows reading `idx`: the same kernels with the same arguments, over buffers the
    /// step owns (`DAYSHIFT_BENCH_STATIC_STEP`). `None` where the fused step does not run
    /// this model at `b` rows, or where it needs something the static step lacks (an
    /// embedding scale, a final soft-cap, attention other than head size 64/128/256).
    #[cfg(feature = "cuda")]
    pub(crate) fn static_decode_step(
        &self,
        kv: &KvCache,
        idx: &Tensor,
        b: usize,
        mode: super::static_step::StaticStepMode,
    ) -> Result<Option<super::static_step::StaticStep>> {
        use super::static_step::{AttentionIn, Builder, GemvIn, GemvOut, RopeIn};
        let Device::Cuda(dev) = &self.device else {
            return Ok(None);
        };
        let hd = self.cfg.head_dim();
        if !self.fused_decode_takes(b)
            || self.arch.embed_scale.is_some()
            || self.arch.final_softcap.is_some()
            || ![64, 128, 256].contains(&hd)
        {
            return Ok(None);
        }
        let mut s = Builder::new(dev, self.dtype, b, mode)?;
        let idx_p = super::decode_ops::raw::device_ptr(idx)?;
        let h = self.cfg.hidden_size;
        let most = |f: &dyn Fn(&Block) -> usize| self.blocks.iter().map(f).max().unwrap_or(0);
        let qkv_n = most(&|blk| (blk.attn.heads + 2 * blk.attn.kv_heads) * blk.attn.head_dim);
        let attn_n = most(&|blk| blk.attn.heads * blk.attn.head_dim);
        let (mut x, mut other) = (s.buffer(b * h)?, s.buffer(b * h)?);
        let qkv = s.buffer(b * qkv_n)?;
        let (q, att) = (s.buffer(b * attn_n)?, s.buffer(b * attn_n)?);
        let gu = s.buffer(b * 2 * self.cfg.intermediate_size)?;
        let logits = s.tensor((b, self.cfg.vocab_size))?;
        let eps = self.eps as f32;
        s.embed(self.embed.embeddings(), idx_p, x)?;
        let mut plan = self.l2_plan.iter().copied();
        let mut pf = move || plan.next().unwrap_or_default();
        // Each GEMV as `StepWeight::gemv` runs it.
        let gemv = |s: &mut Builder,
                    w: &StepWeight,
                    input: GemvIn<'_>,
                    output: GemvOut<'_>,
                    pf: L2Ranges|
         -> Result<()> {
            match w {
                StepWeight::Dense(w) => s.dense_gemv(w, input, eps, output, pf),
                StepWeight::Quant(qs) => s.quant_gemv(qs, input, eps, output, pf),
            }
        };
        let weight = StepWeight::required;
        for (blk, f, kc, vc) in self.fused_layers(kv) {
            let at = &blk.attn;
            let norm1 = GemvIn {
                x,
                pro: 1,
                norm: Some(&blk.ln1),
            };
            let out = GemvOut {
                bias: f.qkv_bias.as_ref(),
                res: None,
                y: qkv,
            };
            gemv(&mut s, &f.qkv, norm1, out, pf())?;
            let (cos, sin) = &self.ropes[at.rope];
            let qk = at.qk_norm.as_ref();
            let rope = RopeIn {
                qkv,
                norms: (qk.map(|(q, _)| q), qk.map(|(_, k)| k)),
                eps,
                table: (cos, sin),
            };
            let attn = AttentionIn {
                heads: at.heads,
                out: att,
                caches: (kc, vc),
                idx: idx_p,
                counters: kv.attn_counters.as_ref(),
                window: self.arch.window.filter(|_| at.sliding),
                scale: self.arch.attn_scale as f32,
            };
            if mode.rope_in_attention {
                s.rope_attention(&rope, &attn)?;
            } else {
                s.rope(&rope, q, &attn)?;
                s.attention(q, &attn)?;
            }
            let o_bias = bias_of(&at.o);
            let plain = GemvIn {
                x: att,
                pro: 0,
                norm: None,
            };
            let out = GemvOut {
                bias: o_bias.as_ref(),
                res: Some(x),
                y: other,
            };
            gemv(&mut s, &weight(&at.o)?, plain, out, pf())?;
            std::mem::swap(&mut x, &mut other);
            let norm2 = GemvIn {
                x,
                pro: 1,
                norm: Some(&blk.ln2),
            };
            let out = GemvOut {
                bias: None,
                res: None,
                y: gu,
            };
            let down = &blk.mlp.down;
            // With `pair`, dense gate|up writes silu(gate) · up, which the down
            // projection then takes as it is (the same roundings as its SwiGLU prologue).
            let pro = match (&f.gate_up, weight(down)?) {
                (StepWeight::Dense(w), StepWeight::Dense(_)) if mode.pairs(h) => {
                    s.swiglu_gate_up(w, norm2, eps, gu, pf())?;
                    0
                }
                _ => {
                    gemv(&mut s, &f.gate_up, norm2, out, pf())?;
                    2
                }
            };
            let d_bias = bias_of(down);
            let silu = GemvIn {
                x: gu,
                pro,
                norm: None,
            };
            let out = GemvOut {
                bias: d_bias.as_ref(),
                res: Some(x),
                y: other,
            };
            gemv(&mut s, &weight(down)?, silu, out, pf())?;
            std::mem::swap(&mut x, &mut other);
        }
        let head_bias = bias_of(&self.lm_head);
        let norm = GemvIn {
            x,
            pro: 1,
            norm: Some(&self.norm),
        };
        let y = super::decode_ops::raw::device_ptr(&logits)?;
        let out = GemvOut {
            bias: head_bias.as_ref(),
            res: None,
            y,
        };
        gemv(&mut s, &weight(&self.lm_head)?, norm, out, pf())?;
        Ok(Some(s.finish(logits)))
    }

    /// Token embeddings `[T, hidden]` (scaled for Gemma).
    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.embed.forward(ids)?;
        match self.arch.embed_scale {
            Some(scale) => {
                // As transformers does: the scale rounded to the model dtype first.
                let scale = Tensor::new(scale as f32, &self.device)?.to_dtype(self.dtype)?;
                x.broadcast_mul(&scale)
            }
            None => Ok(x),
        }
    }

    /// The rest of a layer after attention: residual, MLP, residual (with Gemma's norms).
    /// `rows`: a decode step's few rows (see [`Lin::forward_rows`]).
    fn finish_block(&self, b: &Block, x: Tensor, mut a: Tensor, rows: bool) -> Result<Tensor> {
        let lin = |l: &Lin, h: &Tensor| {
            if rows {
                l.forward_rows(h)
            } else {
                l.forward(h)
            }
        };
        let eps = self.eps as f32;
        if let Some((post_attn, _)) = &b.post {
            a = candle_nn::ops::rms_norm(&a, post_attn, eps)?;
        }
        let x = (x + a)?;
        let h = candle_nn::ops::rms_norm(&x, &b.ln2, eps)?;
        let mut p = lin_shared(&[&b.mlp.gate, &b.mlp.up], &h, rows)?.into_iter();
        let (Some(g), Some(u)) = (p.next(), p.next()) else {
            candle_core::bail!("gate/up projections: two outputs expected");
        };
        let g = match self.arch.act {
            Act::Silu => candle_nn::ops::silu(&g)?,
            Act::GeluTanh => g.gelu()?,
        };
        let mut m = lin(&b.mlp.down, &(g * u)?)?;
        if let Some((_, post_ffn)) = &b.post {
            m = candle_nn::ops::rms_norm(&m, post_ffn, eps)?;
        }
        x + m
    }

    /// Final norm, lm_head and soft-capping of the rows `x` `[rows, hidden]`.
    fn head(&self, x: &Tensor, rows: bool) -> Result<Tensor> {
        let x = candle_nn::ops::rms_norm(x, &self.norm, self.eps as f32)?;
        let logits = if rows {
            self.lm_head.forward_rows(&x)?
        } else {
            self.lm_head.forward(&x)?
        };
        match self.arch.final_softcap {
            Some(cap) => softcap(&logits, cap),
            None => Ok(logits),
        }
    }

    /// The decode attention of layer `at` for a step of `b` rows indexed by `idx`.
    fn decode_attention(
        &self,
        at: &Attention,
        b: usize,
        idx: &Tensor,
        kv: &KvCache,
    ) -> super::decode_ops::DecodeAttention {
        super::decode_ops::DecodeAttention {
            b,
            heads: at.heads,
            window: self.arch.window.filter(|_| at.sliding),
            scale: self.arch.attn_scale as f32,
            idx: idx.clone(),
            counters: kv.attn_counters.clone(),
        }
    }

    /// Queries `[t, heads, hd]`, keys and values `[t, kv_heads, hd]` of `t` rows, with
    /// q/k norms and RoPE (`cos`/`sin`: the rows' table entries) applied.
    fn qkv(
        &self,
        at: &Attention,
        h: &Tensor,
        t: usize,
        cos: &Tensor,
        sin: &Tensor,
        rows: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (nh, nkv, hd) = (at.heads, at.kv_heads, at.head_dim);
        let mut p = lin_shared(&[&at.q, &at.k, &at.v], h, rows)?.into_iter();
        let (Some(q), Some(k), Some(v)) = (p.next(), p.next(), p.next()) else {
            candle_core::bail!("q/k/v projections: three outputs expected");
        };
        let mut q = q.reshape((1, t, nh, hd))?;
        let mut k = k.reshape((1, t, nkv, hd))?;
        if let Some((qn, kn)) = &at.qk_norm {
            let eps = self.eps as f32;
            q = candle_nn::ops::rms_norm(&q, qn, eps)?;
            k = candle_nn::ops::rms_norm(&k, kn, eps)?;
        }
        let q = candle_nn::rotary_emb::rope_thd(&q, cos, sin)?.reshape((t, nh, hd))?;
        let k = candle_nn::rotary_emb::rope_thd(&k, cos, sin)?.reshape((t, nkv, hd))?;
        let v = v.reshape((t, nkv, hd))?;
        Ok((q, k, v))
    }

    fn attention(
        &self,
        at: &Attention,
        h: &Tensor,
        kc: &Tensor,
        vc: &Tensor,
        st: &Step,
    ) -> Result<Tensor> {
        let t = st.total;
        let (nh, nkv, hd) = (at.heads, at.kv_heads, at.head_dim);
        let rep = nh / nkv;
        let scale = self.arch.attn_scale;
        let (q, k, v) = self.qkv(at, h, t, &st.cos[at.rope], &st.sin[at.rope], false)?;
        // Write this step's keys and values into their slots: one scatter each.
        let (s, tm) = (st.s_used, st.tmax);
        for (src, cache) in [(&k, kc), (&v, vc)] {
            let src = match &st.wrow {
                Some(w) => src.index_select(w, 0)?,
                None => src.clone(),
            }
            .reshape((s, tm, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
            cache.narrow(0, 0, s)?.scatter_set(&st.widx, &src, 2)?;
        }
        let mut outs = Vec::with_capacity(1 + st.prefill.len());
        if let Some(d) = &st.dec {
            // All decoding sequences at once, over slots 0..s: [s, nkv, rep, L].
            let qs = q.narrow(0, 0, d.n)?;
            let qs = match &d.qmap {
                Some(m) => qs.index_select(m, 0)?,
                None => qs,
            }
            .reshape((s, nkv, rep, hd))?;
            let kk = kc.narrow(0, 0, s)?.narrow(2, 0, d.lmax)?;
            let vv = vc.narrow(0, 0, s)?.narrow(2, 0, d.lmax)?;
            let scores = (qs.matmul(&kk.t()?)? * scale)?;
            let mask = if at.sliding { &d.mask_win } else { &d.mask };
            let scores = match mask {
                Some(m) => scores.broadcast_add(m)?,
                None => scores,
            };
            let p = candle_nn::ops::softmax_last_dim(&scores)?;
            let o = p.matmul(&vv)?.reshape((s, nh * hd))?;
            outs.push(match &d.omap {
                Some(m) => o.index_select(m, 0)?,
                None => o,
            });
        }
        for pf in &st.prefill {
            // The prompt's query rows in blocks, so that one block's scores [heads,
            // rows, keys] stay within PREFILL_SCORES_BYTES however long the prompt is (a
            // 4,096-token chunk at 32,768 keys would otherwise materialize 8 GiB of
            // bf16 scores, and as much again for the mask and the softmax).
            let per_row = nh * (pf.start + pf.n) * self.dtype.size_in_bytes();
            let block = (self.prefill_scores_bytes / per_row.max(1)).clamp(1, pf.n.max(1));
            let mask = match (&pf.mask_win, at.sliding) {
                (Some(m), true) => Some(m),
                _ => pf.mask.as_ref(),
            };
            let mut r0 = 0;
            while r0 < pf.n {
                let n = block.min(pf.n - r0);
                // Keys the block's rows can see: every one before its last row's position.
                let total = pf.start + r0 + n;
                let qi = q
                    .narrow(0, pf.row + r0, n)?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((1, nkv, rep * n, hd))?;
                let kk = kc.narrow(0, pf.slot, 1)?.narrow(2, 0, total)?;
                let vv = vc.narrow(0, pf.slot, 1)?.narrow(2, 0, total)?;
                let p = match mask {
                    None => causal_softmax(
                        &qi.matmul(&kk.t()?)?,
                        n,
                        pf.start + r0,
                        pf.window.filter(|_| at.sliding),
                        scale as f32,
                    )?,
                    Some(mask) => {
                        let mask = mask.narrow(0, r0, n)?.narrow(1, 0, total)?;
                        let scores = (qi.matmul(&kk.t()?)? * scale)?
                            .reshape((nkv, rep, n, total))?
                            .broadcast_add(&mask)?
                            .reshape((1, nkv, rep * n, total))?;
                        candle_nn::ops::softmax_last_dim(&scores)?
                    }
                };
                let o = p
                    .matmul(&vv)? // [1, nkv, rep*n, hd]
                    .reshape((nh, n, hd))?
                    .transpose(0, 1)?
                    .reshape((n, nh * hd))?;
                outs.push(o);
                r0 += n;
            }
        }
        let o = if outs.len() == 1 {
            outs.swap_remove(0)
        } else {
            Tensor::cat(&outs, 0)?
        };
        at.o.forward(&o)
    }
}

/// `cap * tanh(x / cap)`.
fn softcap(x: &Tensor, cap: f64) -> Result<Tensor> {
    (x / cap)?.tanh()? * cap
}

/// What every layer of one batched step shares.
struct Step {
    total: usize,
    s_used: usize,
    tmax: usize,
    /// Per RoPE table: cos and sin rows of this step's positions.
    cos: Vec<Tensor>,
    sin: Vec<Tensor>,
    /// Source row of each (slot, j) of the cache write, `[s_used * tmax]` (`None`:
    /// row = slot).
    wrow: Option<Tensor>,
    /// Cache position of each element of the write, `u32::MAX` to skip.
    widx: Tensor,
    dec: Option<Decode>,
    prefill: Vec<Prefill>,
}

/// The single-token items of a step.
struct Decode {
    /// Query row of each slot (`None`: row = slot).
    qmap: Option<Tensor>,
    /// Slot of each single, in row order (`None`: slot = row).
    omap: Option<Tensor>,
    /// `-inf` past each slot's length (`None`: all slots have `lmax` tokens).
    mask: Option<Tensor>,
    /// The same, also `-inf` before each slot's sliding window (`None`: nothing masked).
    mask_win: Option<Tensor>,
    lmax: usize,
    n: usize,
}

/// One multi-token item of a step.
struct Prefill {
    row: usize,
    n: usize,
    slot: usize,
    start: usize,
    /// Keys a query of a sliding-window layer sees.
    window: Option<usize>,
    /// The causal mask (`None`: the CPU's fused [`causal_softmax`] masks instead).
    mask: Option<Tensor>,
    /// The mask of sliding-window layers (`None`: the same as `mask`).
    mask_win: Option<Tensor>,
}

/// Logits of every position of `tokens` run as one sequence from scratch (tests, scoring).
pub fn full_logits(model: &Llama, tokens: &[u32]) -> Result<Tensor> {
    let mut cache = SeqCache::default();
    let mut chunks = [SeqChunk {
        tokens,
        cache: &mut cache,
        want: WantLogits::All,
    }];
    let out = model.forward(&mut chunks)?;
    match out.into_iter().next().flatten() {
        Some(t) => Ok(t),
        None => candle_core::bail!("no logits for an empty token list"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each sequence's whole prompt from position 0 in its slot, asking for its last logits.
    fn whole_prompts(seqs: &[(usize, Vec<u32>)]) -> Vec<BatchItem<'_>> {
        seqs.iter()
            .map(|(slot, ids)| BatchItem {
                slot: *slot,
                start: 0,
                tokens: ids,
                want: WantLogits::Last,
            })
            .collect()
    }
    use crate::model::{self, LoadedModel};

    fn tiny() -> (tempfile::TempDir, Box<crate::model::GenerationModel>) {
        let dir = tempfile::tempdir().unwrap();
        crate::testmodel::make_test_model(dir.path()).unwrap();
        let LoadedModel::Generation(m) = model::load(dir.path(), None, &Device::Cpu).unwrap()
        else {
            panic!("tiny model must load as a generation model")
        };
        (dir, m)
    }

    fn last_row(t: &Tensor) -> Vec<f32> {
        let n = t.dim(0).unwrap();
        t.narrow(0, n - 1, 1)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn close(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Sequences of different lengths in non-adjacent slots, prefilled and decoded in
    /// shared batched steps (one still prefilling while the others decode), give the
    /// logits each gets when run alone from scratch.
    #[test]
    fn batched_steps_match_each_sequence_alone() {
        let (_d, m) = tiny();
        // Scattered slots (gathers and masks), then slots 0..3 (the dense path).
        check_batched(&m.llama, [3, 0, 4]);
        check_batched(&m.llama, [1, 0, 2]);
    }

    /// The same for every test architecture: Qwen3's q/k norms, Gemma's and Mistral's
    /// sliding windows (shorter than the 17-token prompt and the decoded lengths) in
    /// prefill chunks and in batched decode.
    #[test]
    fn batched_steps_match_each_sequence_alone_every_family() {
        for f in crate::testmodel::Family::ALL {
            let dir = tempfile::tempdir().unwrap();
            crate::testmodel::make_test_model_family(dir.path(), f).unwrap();
            let LoadedModel::Generation(m) = model::load(dir.path(), None, &Device::Cpu).unwrap()
            else {
                panic!("{f:?} must load as a generation model")
            };
            check_batched(&m.llama, [3, 0, 4]);
            check_batched(&m.llama, [1, 0, 2]);
        }
    }

    /// A prompt's attention split into blocks of query rows (to bound the scores'
    /// memory) gives the logits of the unsplit prompt, for every test architecture, in
    /// f32 (the CPU's fused causal softmax) and bf16 (mask tensors, sliding windows
    /// shorter than the prompt included), with blocks of 1 and of 3 rows.
    #[test]
    fn prefill_attention_in_row_blocks_matches_the_whole_prompt() {
        let prompt: Vec<u32> = (0..29).map(|i| (i * 7 + 3) % 60).collect();
        for f in crate::testmodel::Family::ALL {
            let dir = tempfile::tempdir().unwrap();
            crate::testmodel::make_test_model_family(dir.path(), f).unwrap();
            for dtype in ["f32", "bf16"] {
                let LoadedModel::Generation(mut m) =
                    model::load(dir.path(), Some(dtype), &Device::Cpu).unwrap()
                else {
                    panic!("{f:?} must load as a generation model")
                };
                let want = full_logits(&m.llama, &prompt).unwrap();
                let heads = m.llama.cfg.num_attention_heads;
                let elem = m.llama.dtype.size_in_bytes();
                for rows in [1, 3] {
                    // A budget of `rows` rows of scores at the prompt's full length.
                    m.llama.prefill_scores_bytes = rows * heads * prompt.len() * elem;
                    let got = full_logits(&m.llama, &prompt).unwrap();
                    let d = crate::model::decode_ops::max_abs_diff(&want, &got).unwrap();
                    let tol = if dtype == "f32" { 1e-4 } else { 3e-2 };
                    assert!(
                        d <= tol,
                        "{f:?} {dtype} blocks of {rows}: logits differ by {d}"
                    );
                }
            }
        }
    }

    /// The decode step that CUDA graphs capture ([`Llama::forward_decode`]: indices read
    /// from one device buffer, cache write and attention by `decode_ops`, a padding row)
    /// gives the eager batched step's logits and leaves the same KV cache, for every test
    /// architecture (sliding windows shorter than the sequences included).
    /// Models of head size 64 (`Dims::WIDE`) run the fused step
    /// ([`Llama::forward_decode_fused`]: Qwen3's q/k norms and Mistral's window included),
    /// the others and Gemma the unfused one.
    #[test]
    fn the_graph_decode_step_matches_the_eager_step_every_family() {
        use crate::testmodel::{Dims, Family};
        let cases = Family::ALL.into_iter().map(|f| (f, f.dims(), false)).chain(
            [Family::Llama, Family::Qwen3, Family::Mistral]
                .into_iter()
                .map(|f| (f, Dims::WIDE, true)),
        );
        for (f, dims, fused) in cases {
            let dir = tempfile::tempdir().unwrap();
            crate::testmodel::make_test_model_family_dims(dir.path(), f, dims).unwrap();
            let LoadedModel::Generation(mut m) =
                model::load(dir.path(), None, &Device::Cpu).unwrap()
            else {
                panic!("{f:?} must load as a generation model")
            };
            // What a CUDA load does (the CPU does not fuse).
            m.llama.fuse_projections(false).unwrap();
            let m = &m.llama;
            assert_eq!(m.fused_decode_takes(1), fused, "{f:?} {dims:?}");
            assert_eq!(m.fused_decode_takes(4), fused, "{f:?} {dims:?}");
            let mut eager = KvCache::new(m, 5, 64).unwrap();
            let mut graph = KvCache::new(m, 5, 64).unwrap();
            let mut seqs: Vec<(usize, Vec<u32>)> = vec![
                (3, vec![5, 9, 14, 20, 33, 7, 8]),
                (0, vec![11]),
                (4, (2..21).collect()),
            ];
            for kv in [&mut eager, &mut graph] {
                m.forward_batch(kv, &whole_prompts(&seqs)).unwrap();
            }
            let mut worst = 0f32;
            for step in 0..24 {
                let last: Vec<u32> = seqs.iter().map(|(_, ids)| ids[ids.len() - 1]).collect();
                let items: Vec<BatchItem> = seqs
                    .iter()
                    .zip(&last)
                    .map(|((slot, ids), t)| BatchItem {
                        slot: *slot,
                        start: ids.len() - 1,
                        tokens: std::slice::from_ref(t),
                        want: WantLogits::Last,
                    })
                    .collect();
                let want = m.forward_batch(&mut eager, &items).unwrap().unwrap();
                // Unfused: the three rows padded to a bucket of four. Fused: two rows,
                // then the third padded to two, and every other step (these small
                // models run fused at up to 8 rows) the three padded to four.
                let b = if fused && step % 2 == 0 { 2 } else { 4 };
                let mut rows = Vec::new();
                for chunk in items.chunks(b) {
                    let idx = crate::model::decode_ops::index_buffer(
                        chunk
                            .iter()
                            .map(|it| (it.slot as u32, it.start as u32, it.tokens[0])),
                        b,
                    );
                    let idx = Tensor::from_vec(idx, 3 * b, &Device::Cpu).unwrap();
                    let out = m.forward_decode(&graph, &idx, b).unwrap();
                    assert_eq!(out.dims2().unwrap().0, b);
                    rows.push(out.narrow(0, 0, chunk.len()).unwrap());
                }
                let got = Tensor::cat(&rows, 0).unwrap();
                for (r, (_, ids)) in seqs.iter_mut().enumerate() {
                    let w = last_row(&want.narrow(0, r, 1).unwrap());
                    let g = last_row(&got.narrow(0, r, 1).unwrap());
                    worst = worst.max(close(&w, &g));
                    // The sequences grow past the sliding windows.
                    ids.push(crate::engine::sampling::argmax(&w));
                }
            }
            assert!(
                worst < 1e-4,
                "{f:?} {dims:?}: decode-step logits differ by {worst}"
            );
            for (a, b) in eager
                .k
                .iter()
                .zip(&graph.k)
                .chain(eager.v.iter().zip(&graph.v))
            {
                let d = crate::model::decode_ops::max_abs_diff(a, b).unwrap();
                assert!(d < 1e-5, "{f:?}: the caches differ by {d}");
            }
        }
    }

    /// Models quantized at load (Q4_K, Q6_K, Q8_0: the types the quantized decode kernel
    /// reads) run the fused decode step ([`super::super::decode_ops::QuantGemv`], q, k
    /// and v as one launch of three matrices) at one and two rows, and it tracks the
    /// eager step's logits (candle's quantized matmul, which rounds the activation to 8
    /// bits; the CPU form of the fused step multiplies the dequantized weights in f32)
    /// within [`QUANT_CHECK_MAX_ERROR`] of the largest logit, and greedy tokens agree,
    /// over 16 steps.
    #[test]
    fn the_fused_decode_step_of_a_quantized_model_tracks_the_eager_step() {
        use crate::testmodel::{Dims, Family};
        for (f, q) in [
            (Family::Llama, "q4_k"),
            (Family::Qwen3, "q6_k"),
            (Family::Mistral, "q8_0"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            crate::testmodel::make_test_model_family_dims(dir.path(), f, Dims::WIDE).unwrap();
            let LoadedModel::Generation(mut m) =
                model::load_quantized(dir.path(), None, Some(q), &Device::Cpu).unwrap()
            else {
                panic!("{f:?} must load as a generation model")
            };
            m.llama.fuse_projections(true).unwrap();
            let m = &m.llama;
            assert!(
                matches!(m.fused.first().map(|l| &l.qkv), Some(StepWeight::Quant(s)) if s.len() == 3),
                "{f:?} {q}: q|k|v fused as three quantized matrices"
            );
            assert!(
                m.fused_decode_takes(1) && m.fused_decode_takes(2),
                "{f:?} {q}"
            );
            let mut eager = KvCache::new(m, 3, 64).unwrap();
            let mut fused = KvCache::new(m, 3, 64).unwrap();
            let mut seqs: Vec<(usize, Vec<u32>)> = vec![(2, vec![5, 9, 14, 20]), (0, vec![11, 3])];
            for kv in [&mut eager, &mut fused] {
                m.forward_batch(kv, &whole_prompts(&seqs)).unwrap();
            }
            let (mut worst, mut same) = (0f32, 0usize);
            for step in 0..16 {
                // Alternate one-row and two-row steps.
                let rows = if step % 2 == 0 { 2 } else { 1 };
                let last: Vec<u32> = seqs.iter().map(|(_, ids)| ids[ids.len() - 1]).collect();
                let items: Vec<BatchItem> = seqs
                    .iter()
                    .zip(&last)
                    .take(rows)
                    .map(|((slot, ids), t)| BatchItem {
                        slot: *slot,
                        start: ids.len() - 1,
                        tokens: std::slice::from_ref(t),
                        want: WantLogits::Last,
                    })
                    .collect();
                let want = m.forward_batch(&mut eager, &items).unwrap().unwrap();
                let idx = crate::model::decode_ops::index_buffer(
                    items
                        .iter()
                        .map(|it| (it.slot as u32, it.start as u32, it.tokens[0])),
                    rows,
                );
                let idx = Tensor::from_vec(idx, 3 * rows, &Device::Cpu).unwrap();
                let got = m.forward_decode(&fused, &idx, rows).unwrap();
                for (r, (_, ids)) in seqs.iter_mut().enumerate().take(rows) {
                    let w = last_row(&want.narrow(0, r, 1).unwrap());
                    let g = last_row(&got.narrow(0, r, 1).unwrap());
                    let scale = w.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
                    worst = worst.max(close(&w, &g) / scale);
                    let t = crate::engine::sampling::argmax(&w);
                    same += usize::from(t == crate::engine::sampling::argmax(&g));
                    ids.push(t);
                }
            }
            eprintln!(
                "{f:?} {q}: fused logits within {worst} of the largest, {same}/24 greedy tokens agree"
            );
            assert!(
                worst < QUANT_CHECK_MAX_ERROR,
                "{f:?} {q}: fused logits off by {worst} of the largest"
            );
            assert!(same >= 22, "{f:?} {q}: {same} of 24 greedy tokens agree");
        }
    }

    fn check_batched(m: &Llama, slots: [usize; 3]) {
        let mut kv = KvCache::new(m, 5, 64).unwrap();
        let mut seqs: Vec<(usize, Vec<u32>, usize)> = vec![
            (slots[0], vec![5, 9, 14, 20, 33, 7, 8], 0),
            (slots[1], vec![11], 0),
            (
                slots[2],
                vec![2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18],
                0,
            ),
        ];
        let mut worst = 0f32;
        for _ in 0..8 {
            // Seq 2 prefills in chunks of 6 while the others already decode.
            let toks: Vec<Vec<u32>> = seqs
                .iter()
                .enumerate()
                .map(|(k, (_, ids, done))| {
                    let lim = if k == 2 { 6 } else { usize::MAX };
                    ids[*done..ids.len().min(done.saturating_add(lim))].to_vec()
                })
                .collect();
            let items: Vec<BatchItem> = seqs
                .iter()
                .zip(&toks)
                .map(|((slot, _, done), t)| BatchItem {
                    slot: *slot,
                    start: *done,
                    tokens: t,
                    want: WantLogits::Last,
                })
                .collect();
            let logits = m.forward_batch(&mut kv, &items).unwrap().unwrap();
            assert_eq!(logits.dim(0).unwrap(), 3);
            for (k, (_, ids, done)) in seqs.iter_mut().enumerate() {
                *done += toks[k].len();
                let want = last_row(&full_logits(m, &ids[..*done]).unwrap());
                let got = last_row(&logits.narrow(0, k, 1).unwrap());
                worst = worst.max(close(&want, &got));
                if *done == ids.len() {
                    ids.push(crate::engine::sampling::argmax(&got));
                }
            }
        }
        assert!(worst < 1e-4, "batched logits differ by {worst}");
        assert!(seqs.iter().all(|(_, ids, done)| *done + 1 == ids.len()));
    }
}
