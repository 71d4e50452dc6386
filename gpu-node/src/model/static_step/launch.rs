//! The CUDA side of the static decode step: kernel launches with their arguments
//! resolved to device addresses once, enqueued with `cuLaunchKernelEx` (with or without
//! programmatic stream serialization).

use super::{ArgKind, signature};
use crate::model::decode_ops::raw;
use crate::model::l2_prefetch::L2Ranges;
use candle_core::cuda_backend::CudaDevice;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaStream, sys};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Result, Tensor};
use std::sync::Arc;

fn err(what: &str, e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{what}: {e}"))
}

fn int(x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| err("static decode step", format!("{x} exceeds i32")))
}

/// One kernel argument's value.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// A device address (0: none).
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `float`.
    F32(f32),
    /// `L2Ranges`.
    L2(L2Ranges),
}

impl Arg {
    fn kind(&self) -> ArgKind {
        match self {
            Arg::Ptr(_) => ArgKind::Ptr,
            Arg::I32(_) => ArgKind::I32,
            Arg::F32(_) => ArgKind::F32,
            Arg::L2(_) => ArgKind::L2,
        }
    }
}

/// One kernel launch of the step, its arguments resolved.
pub struct KernelCall {
    name: &'static str,
    f: CudaFunction,
    grid: (u32, u32, u32),
    block: u32,
    smem: u32,
    args: Vec<Arg>,
}

impl KernelCall {
    /// The launch of kernel `name` with `args`, checked against the kernel's parameters
    /// ([`super::SIGNATURES`]); dynamic shared memory over 48 KiB is opted into.
    pub fn new(
        dev: &CudaDevice,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: Vec<Arg>,
    ) -> Result<Self> {
        let sig = signature(name)
            .ok_or_else(|| err("static decode step", format!("{name} has no signature")))?;
        let kinds: Vec<ArgKind> = args.iter().map(Arg::kind).collect();
        if kinds != sig {
            candle_core::bail!("static decode step: {name} takes {sig:?}, was given {kinds:?}");
        }
        let (name, f) = raw::kernel(dev, name)?;
        if smem > 48 << 10 {
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                crate::model::decode_ops::FUSED_SMEM_BYTES as i32,
            )
            .map_err(|e| err(name, e))?;
        }
        Ok(KernelCall {
            name,
            f,
            grid,
            block,
            smem,
            args,
        })
    }

    /// Enqueues the launch on `stream`; with `pdl`, allowed to start before the previous
    /// kernel on the stream ends (the kernel waits for it where it must: `pdl_wait`).
    fn launch(&self, stream: &CudaStream, pdl: bool) -> Result<()> {
        let mut vals = self.args.clone();
        let mut params: Vec<*mut std::ffi::c_void> = vals
            .iter_mut()
            .map(|a| match a {
                Arg::Ptr(p) => p as *mut u64 as *mut std::ffi::c_void,
                Arg::I32(v) => v as *mut i32 as *mut std::ffi::c_void,
                Arg::F32(v) => v as *mut f32 as *mut std::ffi::c_void,
                Arg::L2(r) => r as *mut L2Ranges as *mut std::ffi::c_void,
            })
            .collect();
        // SAFETY: a zeroed attribute is a valid plain-data value; its id and value are set next.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let cfg = sys::CUlaunchConfig {
            gridDimX: self.grid.0,
            gridDimY: self.grid.1,
            gridDimZ: self.grid.2,
            blockDimX: self.block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: self.smem,
            hStream: stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: u32::from(pdl),
        };
        // SAFETY: `params` points at `vals`, which outlives the call, one value per
        // parameter of the kernel in its declared order and kind (checked in `new`); the
        // addresses are the step's buffers, the model's weights and the cache, which the
        // step's owner keeps alive for as long as the launches (or a graph of them) run.
        let r = unsafe {
            sys::cuLaunchKernelEx(
                &cfg,
                self.f.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        if r != sys::CUresult::CUDA_SUCCESS {
            candle_core::bail!("launching {}: {r:?}", self.name);
        }
        Ok(())
    }
}

/// The decode step of `b` rows as a list of launches over buffers of its own (see the
/// module's doc): enqueue it inside a stream capture, then replay the graph; the logits
/// land in [`StaticStep::logits`].
pub struct StaticStep {
    calls: Vec<KernelCall>,
    logits: Tensor,
    pdl: bool,
    paired: bool,
    /// The activations' buffers (kept as long as the step).
    _buffers: Vec<Tensor>,
}

impl StaticStep {
    /// Enqueues every launch on the device's stream.
    pub fn enqueue(&self, dev: &CudaDevice) -> Result<()> {
        let stream = dev.cuda_stream();
        for c in &self.calls {
            c.launch(&stream, self.pdl)?;
        }
        Ok(())
    }

    /// The step's output `[b, vocab]`, rewritten by each run.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// Kernels a step launches.
    pub fn launches(&self) -> usize {
        self.calls.len()
    }

    /// Whether its gate|up GEMVs compute the SwiGLU (`pair`).
    pub fn paired(&self) -> bool {
        self.paired
    }

    /// Whether its kernels are launched with programmatic dependent launch.
    pub fn pdl(&self) -> bool {
        self.pdl
    }
}

/// What RoPE reads: the step's q|k|v rows, the q/k norms (Qwen3, Gemma 3), their
/// epsilon and the cos/sin tables.
pub struct RopeIn<'a> {
    /// Address of the q|k|v rows `[b, heads + 2 kv_heads, head_dim]`.
    pub qkv: u64,
    /// The q and k norms' weights `[head_dim]`, where the model has them.
    pub norms: (Option<&'a Tensor>, Option<&'a Tensor>),
    /// The norms' epsilon.
    pub eps: f32,
    /// The cos and sin tables `[positions, head_dim / 2]`.
    pub table: (&'a Tensor, &'a Tensor),
}

/// A decode attention's operands besides its queries.
#[derive(Clone, Copy)]
pub struct AttentionIn<'a> {
    /// Query heads.
    pub heads: usize,
    /// Address of the output `[b, heads, head_dim]`.
    pub out: u64,
    /// The layer's key and value caches `[slots, kv_heads, cap, head_dim]`.
    pub caches: (&'a Tensor, &'a Tensor),
    /// Address of the step's index buffer.
    pub idx: u64,
    /// The cache's zeroed counters, needed where the keys are split.
    pub counters: Option<&'a Tensor>,
    /// A sliding window's length.
    pub window: Option<usize>,
    /// The scores' scale.
    pub scale: f32,
}

/// A launch not yet built: kernel name, grid, arguments.
struct Launch {
    name: String,
    grid: (u32, u32, u32),
    args: Vec<Arg>,
}

/// Builds a [`StaticStep`]: buffers, then launches in the order the step runs them.
pub struct Builder {
    dev: CudaDevice,
    dtype: DType,
    sfx: &'static str,
    b: usize,
    calls: Vec<KernelCall>,
    buffers: Vec<Tensor>,
    pdl: bool,
    /// The GEMV launch shapes asked for (`split_rows`, `narrow_blocks`, `pair_u2`).
    mode: super::StaticStepMode,
    /// Decode attention's partial results: for (parts, head size), three addresses.
    attn_scratch: Option<(usize, usize, u64, u64, u64)>,
    /// Whether a gate|up GEMV computes the SwiGLU ([`Builder::swiglu_gate_up`]).
    paired: bool,
}

/// A GEMV's input side: the activation's address, the prologue (code of `decode.cu`: 0
/// none, 1 RMSNorm, 2 SwiGLU) and the norm weights of an RMSNorm.
pub struct GemvIn<'a> {
    /// Address of the activation `[b, k]` (`[b, 2 k]` for SwiGLU).
    pub x: u64,
    /// Prologue code.
    pub pro: u8,
    /// RMSNorm weights `[k]`.
    pub norm: Option<&'a Tensor>,
}

/// A GEMV's output side: bias, residual, output address.
pub struct GemvOut<'a> {
    /// Bias `[n]`.
    pub bias: Option<&'a Tensor>,
    /// Address of the residual `[b, n]` added last.
    pub res: Option<u64>,
    /// Address of the output `[b, n]` (never the input's).
    pub y: u64,
}

impl Builder {
    /// A step of `b` rows of a model computing in `dtype` on `dev`, launched as `mode`
    /// says (programmatic dependent launch, the GEMVs' launch shapes).
    pub fn new(
        dev: &CudaDevice,
        dtype: DType,
        b: usize,
        mode: super::StaticStepMode,
    ) -> Result<Self> {
        let sfx = match dtype {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            other => candle_core::bail!("static decode step: no kernels for {other:?}"),
        };
        // Programmatic dependent launch exists from sm_90 on; the kernels' hooks compile
        // to nothing before, and the launches go plainly.
        let (major, _) = dev
            .cuda_stream()
            .context()
            .compute_capability()
            .map_err(|e| err("reading the compute capability", e))?;
        Ok(Builder {
            dev: dev.clone(),
            dtype,
            sfx,
            b,
            calls: Vec::new(),
            buffers: Vec::new(),
            pdl: mode.pdl && major >= 9,
            mode,
            attn_scratch: None,
            paired: false,
        })
    }

    /// A zeroed buffer of `shape` in the model's dtype, kept by the step; its tensor.
    pub fn tensor(&mut self, shape: (usize, usize)) -> Result<Tensor> {
        let t = Tensor::zeros(shape, self.dtype, &Device::Cuda(self.dev.clone()))?;
        self.buffers.push(t.clone());
        Ok(t)
    }

    /// A zeroed buffer of `n` elements in the model's dtype, kept by the step; its address.
    pub fn buffer(&mut self, n: usize) -> Result<u64> {
        let t = self.tensor((1, n.max(1)))?;
        raw::device_ptr(&t)
    }

    /// The address of a tensor the step reads or writes (weights, tables, caches) that
    /// must be in the model's dtype.
    fn model_ptr(&self, t: &Tensor, what: &str) -> Result<u64> {
        if t.dtype() != self.dtype {
            candle_core::bail!(
                "static decode step: {what} is {:?}, the model computes in {:?}",
                t.dtype(),
                self.dtype
            );
        }
        raw::device_ptr(t)
    }

    fn opt_ptr(&self, t: Option<&Tensor>, what: &str) -> Result<u64> {
        t.map_or(Ok(0), |t| self.model_ptr(t, what))
    }

    fn push(
        &mut self,
        name: String,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: Vec<Arg>,
    ) -> Result<()> {
        let call = KernelCall::new(&self.dev, &name, grid, block, smem, args)?;
        self.calls.push(call);
        Ok(())
    }

    /// `out[r] = table[ids[r]]` (`embed_rows`): `table` `[vocab, hidden]`.
    pub fn embed(&mut self, table: &Tensor, idx: u64, out: u64) -> Result<()> {
        let (vocab, hidden) = table.dims2()?;
        let t = self.model_ptr(table, "the embedding table")?;
        let args = vec![
            Arg::Ptr(t),
            Arg::Ptr(idx),
            Arg::Ptr(out),
            Arg::I32(int(vocab)?),
            Arg::I32(int(hidden)?),
        ];
        let name = format!("embed_rows_{}", self.sfx);
        self.push(name, (self.b as u32, 1, 1), 256, 0, args)
    }

    /// The arguments before a fused GEMV's weights: x, norm weights, epsilon.
    fn gemv_head(&self, input: &GemvIn<'_>, eps: f32) -> Result<[Arg; 3]> {
        Ok([
            Arg::Ptr(input.x),
            Arg::Ptr(self.opt_ptr(input.norm, "a norm's weights")?),
            Arg::F32(eps),
        ])
    }

    /// The arguments after a fused GEMV's weights: bias, residual, output, n, k, L2 ranges.
    fn gemv_tail(
        &self,
        output: &GemvOut<'_>,
        (n, k): (usize, usize),
        pf: L2Ranges,
    ) -> Result<[Arg; 6]> {
        Ok([
            Arg::Ptr(self.opt_ptr(output.bias, "a bias")?),
            Arg::Ptr(output.res.unwrap_or(0)),
            Arg::Ptr(output.y),
            Arg::I32(int(n)?),
            Arg::I32(int(k)?),
            Arg::L2(pf),
        ])
    }

    /// A dense fused GEMV (`gemvfp_*`, as `decode_ops::FusedGemv` launches `gemvf_*`):
    /// `w` `[n, k]`.
    pub fn dense_gemv(
        &mut self,
        w: &Tensor,
        input: GemvIn<'_>,
        eps: f32,
        output: GemvOut<'_>,
        pf: L2Ranges,
    ) -> Result<()> {
        let (n, k) = w.dims2()?;
        let b = self.b;
        let smem = (b * k * self.dtype.size_in_bytes()) as u32;
        let mut args = self.gemv_head(&input, eps)?.to_vec();
        args.push(Arg::Ptr(self.model_ptr(w, "a weight")?));
        args.extend(self.gemv_tail(&output, (n, k), pf)?);
        // As the candle operation: 16-warp blocks behind the SwiGLU prologue, 8 otherwise;
        // the mode's launch shapes (see StaticStepMode) where asked for.
        let split = self.mode.split_rows && input.pro != 1 && k >= super::SPLIT_MIN_K && k >= 4 * n;
        let narrow = self.mode.narrow_blocks && input.pro != 2 && n <= super::NARROW_MAX_N;
        let (stem, warps, rows_per_block): (&str, u32, u32) = match (split, input.pro) {
            (true, 2) => ("gemvfk", 16, 4),
            (true, _) => ("gemvfk", 8, 2),
            (false, 2) => ("gemvfp", 16, 16),
            (false, _) if narrow => ("gemvfp", 4, 4),
            (false, _) => ("gemvfp", 8, 8),
        };
        let name = format!("{stem}_{}_{b}_{}", self.sfx, input.pro);
        self.push(
            name,
            ((n as u32).div_ceil(rows_per_block), 1, 1),
            32 * warps,
            smem,
            args,
        )
    }

    /// RMSNorm + gate|up with SwiGLU as the epilogue (`gemvfs_*`): `w` `[2 n, k]` (gate
    /// rows, then up rows), `y` `[b, n]` = silu(gate) · up.
    pub fn swiglu_gate_up(
        &mut self,
        w: &Tensor,
        input: GemvIn<'_>,
        eps: f32,
        y: u64,
        pf: L2Ranges,
    ) -> Result<()> {
        let (rows, k) = w.dims2()?;
        if input.pro != 1 || !rows.is_multiple_of(2) {
            candle_core::bail!(
                "static decode step: SwiGLU gate|up takes an RMSNorm input and 2 n rows"
            );
        }
        let n = rows / 2;
        let b = self.b;
        let smem = (b * k * self.dtype.size_in_bytes()) as u32;
        let output = GemvOut {
            bias: None,
            res: None,
            y,
        };
        let mut args = self.gemv_head(&input, eps)?.to_vec();
        args.push(Arg::Ptr(self.model_ptr(w, "a weight")?));
        args.extend(self.gemv_tail(&output, (n, k), pf)?);
        let stem = if self.mode.pair_u2 {
            "gemvfs2"
        } else {
            "gemvfs"
        };
        let name = format!("{stem}_{}_{b}_1", self.sfx);
        self.paired = true;
        self.push(name, ((n as u32).div_ceil(8), 1, 1), 32 * 8, smem, args)
    }

    /// A quantized fused GEMV (`qgemvfp_*`, as `decode_ops::QuantGemv` launches
    /// `qgemvf_*`): up to three matrices `[n_i, k]` whose outputs lie side by side.
    pub fn quant_gemv(
        &mut self,
        segments: &[Arc<QTensor>],
        input: GemvIn<'_>,
        eps: f32,
        output: GemvOut<'_>,
        pf: L2Ranges,
    ) -> Result<()> {
        let Some(first) = segments.first() else {
            candle_core::bail!("static decode step: a quantized GEMV without weights");
        };
        let k = first.shape().dims2()?.1;
        let b = self.b;
        let segs = raw::quant_segments(segments)?;
        let n: usize = segs.iter().map(|s| s.2 as usize).sum();
        let name = format!("qgemvfp_{}_{b}_{}", self.sfx, input.pro);
        let (_, f) = raw::kernel(&self.dev, &name)?;
        let (blocks, warps, smem) = raw::quant_gemv_shape(&self.dev, &f, &name, (b, k), &segs)?;
        let mut args = self.gemv_head(&input, eps)?.to_vec();
        for s in &segs {
            args.extend([Arg::Ptr(s.0), Arg::I32(s.1), Arg::I32(s.2)]);
        }
        args.extend(self.gemv_tail(&output, (n, k), pf)?);
        self.push(name, (blocks, 1, 1), 32 * warps, smem as u32, args)
    }

    /// RoPE's leading kernel arguments: q|k|v, q norm, k norm, epsilon, cos, sin.
    fn rope_args(&self, rope: &RopeIn<'_>) -> Result<[Arg; 6]> {
        Ok([
            Arg::Ptr(rope.qkv),
            Arg::Ptr(self.opt_ptr(rope.norms.0, "the q norm")?),
            Arg::Ptr(self.opt_ptr(rope.norms.1, "the k norm")?),
            Arg::F32(rope.eps),
            Arg::Ptr(self.model_ptr(rope.table.0, "the RoPE table")?),
            Arg::Ptr(self.model_ptr(rope.table.1, "the RoPE table")?),
        ])
    }

    /// q/k norm + RoPE of the queries into `q`, keys and values into `attn`'s caches
    /// (`rope_qkv_pdl_*`, as `decode_ops::RopeRows`), for the attention launched after
    /// it: its query heads, caches and index buffer.
    pub fn rope(&mut self, rope: &RopeIn<'_>, q: u64, attn: &AttentionIn<'_>) -> Result<()> {
        let (kc, vc) = attn.caches;
        let (heads, (_, nkv, cap, hd)) = (attn.heads, kc.dims4()?);
        if kc.shape() != vc.shape() || !heads.is_multiple_of(nkv) {
            candle_core::bail!("static decode step: {heads} query heads over caches of {nkv}");
        }
        let mut args = self.rope_args(rope)?.to_vec();
        args.extend([
            Arg::Ptr(q),
            Arg::Ptr(self.model_ptr(kc, "the key cache")?),
            Arg::Ptr(self.model_ptr(vc, "the value cache")?),
            Arg::Ptr(attn.idx),
            Arg::I32(int(self.b)?),
            Arg::I32(int(heads)?),
            Arg::I32(int(nkv)?),
            Arg::I32(int(cap)?),
            Arg::I32(int(hd)?),
        ]);
        let name = format!("rope_qkv_pdl_{}", self.sfx);
        let grid = ((heads + 2 * nkv) as u32, self.b as u32, 1);
        self.push(name, grid, (hd / 2) as u32, 0, args)
    }

    /// [`Builder::rope`] and [`Builder::attention`] in one launch
    /// (`decode_attn_rope_pdl_*`): each attention block rotates its own query from the
    /// q|k|v rows and, where its keys include the new position, the new key and value,
    /// which the first query head of each kv head writes into the caches.
    pub fn rope_attention(&mut self, rope: &RopeIn<'_>, attn: &AttentionIn<'_>) -> Result<()> {
        let (kc, vc) = attn.caches;
        let (heads, nkv) = (attn.heads, kc.dims4()?.1);
        if kc.shape() != vc.shape() || !heads.is_multiple_of(nkv) {
            candle_core::bail!("static decode step: {heads} query heads over caches of {nkv}");
        }
        let l = self.attention_launch("decode_attn_rope_pdl", rope.qkv, attn)?;
        // RoPE's arguments, then the attention's from the caches on (its first, q, is
        // the q|k|v rows').
        let mut args = self.rope_args(rope)?.to_vec();
        args.extend_from_slice(&l.args[1..]);
        self.push(l.name, l.grid, 128, 0, args)
    }

    /// Decode attention of the queries at `q` (`decode_attn64_pdl_*`, as
    /// `decode_ops::DecodeAttention` for head size 64, 128 or 256).
    pub fn attention(&mut self, q: u64, attn: &AttentionIn<'_>) -> Result<()> {
        let l = self.attention_launch("decode_attn64_pdl", q, attn)?;
        self.push(l.name, l.grid, 128, 0, l.args)
    }

    /// The launch of [`Builder::attention`] as kernel family `stem`: kernel name, grid and
    /// arguments (allocating the partial results' scratch on first use).
    fn attention_launch(&mut self, stem: &str, q: u64, attn: &AttentionIn<'_>) -> Result<Launch> {
        let AttentionIn {
            heads,
            out,
            caches: (kc, vc),
            idx,
            counters,
            window,
            scale,
        } = *attn;
        let (_, nkv, cap, hd) = kc.dims4()?;
        let g = match hd {
            64 => 1,
            128 => 2,
            256 => 4,
            _ => candle_core::bail!("static decode step: no attention kernel for head size {hd}"),
        };
        let b = self.b;
        let (splits, split_keys) = crate::model::decode_ops::attention_splits(heads, b, cap);
        let parts = b * heads * splits;
        // One set of partial results serves every layer (each layer's kernel starts after
        // the previous one's ends).
        let (pm, pl, pa) = match self.attn_scratch {
            Some((p, h, pm, pl, pa)) if p == parts && h == hd => (pm, pl, pa),
            _ => {
                let mut scratch = |n: usize| -> Result<u64> {
                    let t = Tensor::zeros(n.max(1), DType::F32, &Device::Cuda(self.dev.clone()))?;
                    self.buffers.push(t.clone());
                    raw::device_ptr(&t)
                };
                let s = (scratch(parts)?, scratch(parts)?, scratch(parts * hd)?);
                self.attn_scratch = Some((parts, hd, s.0, s.1, s.2));
                s
            }
        };
        let counters = match counters {
            _ if splits == 1 => idx, // no block counts: the index buffer stands in
            Some(c) if c.elem_count() >= b * heads && c.dtype() == DType::U32 => {
                raw::device_ptr(c)?
            }
            _ => candle_core::bail!(
                "static decode step: {splits} attention splits need the cache's counters"
            ),
        };
        let args = vec![
            Arg::Ptr(q),
            Arg::Ptr(self.model_ptr(kc, "the key cache")?),
            Arg::Ptr(self.model_ptr(vc, "the value cache")?),
            Arg::Ptr(out),
            Arg::Ptr(pm),
            Arg::Ptr(pl),
            Arg::Ptr(pa),
            Arg::Ptr(counters),
            Arg::Ptr(idx),
            Arg::I32(int(b)?),
            Arg::I32(int(heads)?),
            Arg::I32(int(nkv)?),
            Arg::I32(int(cap)?),
            Arg::I32(int(window.unwrap_or(0))?),
            Arg::F32(scale),
            Arg::I32(int(split_keys)?),
        ];
        let name = format!("{stem}_{}_{g}", self.sfx);
        Ok(Launch {
            name,
            grid: (heads as u32, b as u32, splits as u32),
            args,
        })
    }

    /// The step, its output `logits` (a tensor of [`Builder::tensor`]).
    pub fn finish(self, logits: Tensor) -> StaticStep {
        StaticStep {
            calls: self.calls,
            logits,
            pdl: self.pdl,
            paired: self.paired,
            _buffers: self.buffers,
        }
    }
}
