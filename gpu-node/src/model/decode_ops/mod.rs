//! The two operations of a decode step that take the step's indices from device memory
//! instead of from the host: the write of the new keys and values into the padded KV
//! cache ([`KvWrite`]) and decode attention over each sequence's own length
//! ([`DecodeAttention`]). With every per-step value in one device buffer (`idx`: token
//! ids, positions and slots of the `b` rows, `[3 * b]` u32), a decode step has the same
//! shapes and pointers at every step of a batch bucket, so it can be captured once as a
//! CUDA graph and replayed (`cuda_graph.rs`).
//!
//! For a step of one or two rows the fused step uses two more: [`FusedGemv`] (a linear
//! layer with an RMSNorm or SwiGLU prologue and a bias/residual epilogue) and
//! [`RopeRows`] (q/k norm, RoPE and the cache write after a fused q|k|v projection);
//! [`argmax_rows`] picks greedy tokens.
//!
//! On CUDA they run our kernels (`gpu-node/cuda/decode.cu`, compiled by `build.rs` into a
//! fatbin: no JIT on the GPUs providers rent; launchers in `cuda.rs`); on the CPU the
//! same arithmetic in Rust, which is what the CPU tests compare against the eager path.
//! Two CUDA kernels do more than one candle operation can say: [`RopeRows`] returns the
//! queries and writes both caches in one launch, and [`DecodeAttention`] counts its
//! split blocks in a scratch buffer; both write those through the device pointers of
//! tensors they receive by shared reference, which is sound on one stream in stream order
//! (the engine's step), and their CPU forms keep to candle's in-place operations.

use candle_core::{
    CpuStorage, CustomOp3, DType, InplaceOp2, InplaceOp3, Layout, Result, Shape, Tensor,
};

/// The slot of a padding row (a batch filled up to its bucket): it writes nothing and
/// attends to nothing (its output is zeros).
pub const PAD_SLOT: u32 = u32::MAX;

/// The `[3 * b]` index buffer of a decode step: `rows` as (slot, position, token),
/// padded to `b` rows with [`PAD_SLOT`] rows.
pub fn index_buffer(rows: impl Iterator<Item = (u32, u32, u32)>, b: usize) -> Vec<u32> {
    let mut v = vec![0u32; 3 * b];
    v[2 * b..].fill(PAD_SLOT);
    for (r, (slot, pos, tok)) in rows.enumerate().take(b) {
        v[r] = tok;
        v[b + r] = pos;
        v[2 * b + r] = slot;
    }
    v
}

/// Largest absolute difference of two tensors of one shape (in f32).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()
}

/// Row `r`'s position and slot in the `[3 * b]` index buffer of a step (`None`: padding).
fn row(idx: &[u32], b: usize, r: usize) -> Option<(usize, usize)> {
    let slot = idx[2 * b + r];
    (slot != PAD_SLOT).then_some((idx[b + r] as usize, slot as usize))
}

/// The contiguous part of a CPU storage a layout addresses, or an error naming `what`.
fn contiguous<'a, T>(v: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, z)) => Ok(&v[a..z]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// The step's index buffer on the host.
fn host_idx(idx: &Tensor, b: usize) -> Result<Vec<u32>> {
    let v = idx.to_device(&candle_core::Device::Cpu)?.to_vec1::<u32>()?;
    if v.len() != 3 * b {
        candle_core::bail!("decode index buffer has {} entries, not 3 x {b}", v.len());
    }
    Ok(v)
}

/// Writes a step's keys (or values) `[b, kv_heads, head_dim]` into the cache
/// `[slots, kv_heads, cap, head_dim]` at each row's slot and position (applied in place
/// to the cache, with `(src, idx)` as operands).
pub struct KvWrite {
    /// Rows of the step.
    pub b: usize,
}

impl KvWrite {
    fn dims(&self, cache: &Layout, src: &Layout) -> Result<(usize, usize, usize)> {
        let (_, nkv, cap, hd) = cache.shape().dims4()?;
        if src.shape().elem_count() != self.b * nkv * hd {
            candle_core::bail!(
                "kv write: source {:?} is not [{}, {nkv}, {hd}]",
                src.shape(),
                self.b
            );
        }
        Ok((nkv, cap, hd))
    }
}

fn write_rows<T: Copy>(
    cache: &mut [T],
    src: &[T],
    idx: &[u32],
    b: usize,
    (nkv, cap, hd): (usize, usize, usize),
) -> Result<()> {
    for r in 0..b {
        let Some((pos, slot)) = row(idx, b, r) else {
            continue;
        };
        if pos >= cap {
            continue;
        }
        for h in 0..nkv {
            let dst = ((slot * nkv + h) * cap + pos) * hd;
            let s = (r * nkv + h) * hd;
            let Some(d) = cache.get_mut(dst..dst + hd) else {
                candle_core::bail!("kv write: slot {slot} is outside the cache");
            };
            d.copy_from_slice(&src[s..s + hd]);
        }
    }
    Ok(())
}

impl InplaceOp3 for KvWrite {
    fn name(&self) -> &'static str {
        "dayshift-kv-write"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        lc: &Layout,
        src: &CpuStorage,
        ls: &Layout,
        idx: &CpuStorage,
        li: &Layout,
    ) -> Result<()> {
        let dims = self.dims(lc, ls)?;
        if lc.start_offset() != 0 || !lc.is_contiguous() {
            candle_core::bail!("kv write: the cache must be a whole contiguous tensor");
        }
        let CpuStorage::U32(idx) = idx else {
            candle_core::bail!("kv write: the index buffer must be u32");
        };
        let idx = contiguous(idx, li, "the index buffer")?;
        match (cache, src) {
            (CpuStorage::F32(c), CpuStorage::F32(s)) => {
                write_rows(c, contiguous(s, ls, "keys")?, idx, self.b, dims)
            }
            (CpuStorage::BF16(c), CpuStorage::BF16(s)) => {
                write_rows(c, contiguous(s, ls, "keys")?, idx, self.b, dims)
            }
            (CpuStorage::F16(c), CpuStorage::F16(s)) => {
                write_rows(c, contiguous(s, ls, "keys")?, idx, self.b, dims)
            }
            _ => candle_core::bail!("kv write: cache and source must share a float dtype"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        cache: &mut candle_core::cuda_backend::CudaStorage,
        lc: &Layout,
        src: &candle_core::cuda_backend::CudaStorage,
        ls: &Layout,
        idx: &candle_core::cuda_backend::CudaStorage,
        li: &Layout,
    ) -> Result<()> {
        let dims = self.dims(lc, ls)?;
        cuda::kv_write(self.b, dims, cache, lc, src, ls, idx, li)
    }
}

/// Decode attention of `b` single-token rows over the padded cache: row `r`'s query
/// (`[b, heads, head_dim]`) attends to keys `0..=pos[r]` of its slot (or the last
/// `window` of them); the result is `[b, heads * head_dim]` in the query's dtype. Applied
/// to `(q, k_cache, v_cache)`; the index buffer rides along.
pub struct DecodeAttention {
    /// Rows of the step.
    pub b: usize,
    /// Query heads.
    pub heads: usize,
    /// Sliding window in keys (`None`: all keys).
    pub window: Option<usize>,
    /// Score scale.
    pub scale: f32,
    /// The step's `[3 * b]` index buffer (ids, positions, slots).
    pub idx: Tensor,
    /// On CUDA: a zeroed `u32` buffer of at least [`ATTN_COUNTERS`] elements that the
    /// kernel's split blocks count themselves in (see [`attention_splits`]); each launch
    /// leaves it zeroed again, so one buffer serves every layer and step of a cache.
    pub counters: Option<Tensor>,
}

/// Elements of [`DecodeAttention::counters`]: attention splits its rows' keys only where
/// rows times heads is below this ([`attention_splits`]).
pub const ATTN_COUNTERS: usize = 1024;

impl DecodeAttention {
    fn dims(&self, q: &Layout, k: &Layout) -> Result<(usize, usize, usize)> {
        let (_, nkv, cap, hd) = k.shape().dims4()?;
        if q.shape().elem_count() != self.b * self.heads * hd
            || nkv == 0
            || !self.heads.is_multiple_of(nkv)
        {
            candle_core::bail!(
                "decode attention: query {:?} does not match {} rows of {} heads over {nkv} kv heads of {hd}",
                q.shape(),
                self.b,
                self.heads
            );
        }
        Ok((nkv, cap, hd))
    }

    /// The CPU arithmetic (f32 accumulation, like the kernel).
    fn attend<T: candle_core::WithDType>(
        &self,
        q: &[T],
        kc: &[T],
        vc: &[T],
        idx: &[u32],
        (nkv, cap, hd): (usize, usize, usize),
    ) -> Vec<T> {
        let (b, nh) = (self.b, self.heads);
        let rep = nh / nkv;
        let mut out = vec![T::zero(); b * nh * hd];
        let mut scores = Vec::new();
        for r in 0..b {
            let Some((pos, slot)) = row(idx, b, r) else {
                continue; // padding: zeros
            };
            let len = (pos + 1).min(cap);
            let start = self.window.map_or(0, |w| len.saturating_sub(w));
            for h in 0..nh {
                let base = (slot * nkv + h / rep) * cap * hd;
                let qr: Vec<f32> = q[(r * nh + h) * hd..][..hd]
                    .iter()
                    .map(|x| x.to_f64() as f32 * self.scale)
                    .collect();
                scores.clear();
                for j in start..len {
                    let k = &kc[base + j * hd..][..hd];
                    scores.push(
                        qr.iter()
                            .zip(k)
                            .map(|(a, b)| a * b.to_f64() as f32)
                            .sum::<f32>(),
                    );
                }
                let mx = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - mx).exp();
                    total += *s;
                }
                let o = &mut out[(r * nh + h) * hd..][..hd];
                for (d, od) in o.iter_mut().enumerate() {
                    let v: f32 = scores
                        .iter()
                        .enumerate()
                        .map(|(i, p)| p * vc[base + (start + i) * hd + d].to_f64() as f32)
                        .sum();
                    *od = T::from_f64((v / total) as f64);
                }
            }
        }
        out
    }
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "dayshift-decode-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        lq: &Layout,
        k: &CpuStorage,
        lk: &Layout,
        v: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(lq, lk)?;
        let idx = host_idx(&self.idx, self.b)?;
        let shape = Shape::from((self.b, self.heads * dims.2));
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(self.attend(
                    contiguous(q, lq, "the query")?,
                    contiguous(k, lk, "the key cache")?,
                    contiguous(v, lv, "the value cache")?,
                    &idx,
                    dims,
                ))
            }
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                CpuStorage::BF16(self.attend(
                    contiguous(q, lq, "the query")?,
                    contiguous(k, lk, "the key cache")?,
                    contiguous(v, lv, "the value cache")?,
                    &idx,
                    dims,
                ))
            }
            (CpuStorage::F16(q), CpuStorage::F16(k), CpuStorage::F16(v)) => {
                CpuStorage::F16(self.attend(
                    contiguous(q, lq, "the query")?,
                    contiguous(k, lk, "the key cache")?,
                    contiguous(v, lv, "the value cache")?,
                    &idx,
                    dims,
                ))
            }
            _ => candle_core::bail!("decode attention: query and caches must share a float dtype"),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::cuda_backend::CudaStorage,
        lq: &Layout,
        k: &candle_core::cuda_backend::CudaStorage,
        lk: &Layout,
        v: &candle_core::cuda_backend::CudaStorage,
        lv: &Layout,
    ) -> Result<(candle_core::cuda_backend::CudaStorage, Shape)> {
        let dims = self.dims(lq, lk)?;
        cuda::decode_attention(self, dims, (q, lq), (k, lk), (v, lv))
    }
}

/// What [`FusedGemv`] does to its input before the product.
#[derive(Debug, Clone)]
pub enum Prologue {
    /// The input as it is (`[b, in]`).
    None,
    /// RMSNorm with these weights `[in]` (`[b, in]`).
    Norm(Tensor),
    /// SwiGLU: `silu(x[:, :in]) * x[:, in:]` (`[b, 2 in]`, gate then up).
    SiluMul,
}

/// A decode step's fused linear layer: `y = epilogue(prologue(x) w^T)`, the prologue an
/// RMSNorm or SwiGLU of the input, the epilogue a bias and a residual add, each rounded
/// to the dtype where the separate candle operations round. On CUDA one kernel (the
/// activation staged in shared memory, one warp per output column); on the CPU the same
/// arithmetic.
pub struct FusedGemv {
    /// Applied to the input first.
    pub prologue: Prologue,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Optional bias `[out]`.
    pub bias: Option<Tensor>,
    /// Optional residual `[b, out]` added last.
    pub res: Option<Tensor>,
    /// Weight bytes the CUDA kernel asks to bring into L2 for the step's next kernels
    /// (none by default; [`crate::model::l2_prefetch`]). The CPU ignores it.
    pub prefetch: crate::model::l2_prefetch::L2Ranges,
}

/// Most rows [`FusedGemv`] takes.
pub const GEMV_MAX_ROWS: usize = 8;

/// How decode attention with head size 64/128/256 splits each row's keys over blocks:
/// `(splits, keys per split)`. Enough splits that a step has about 1,024 blocks (one
/// head of one row with a 4k context otherwise leaves most of the GPU idle), but no split
/// shorter than 256 keys; `splits * keys >= cap`. Fixed by the step's shape, so a
/// captured graph keeps it.
pub fn attention_splits(heads: usize, rows: usize, cap: usize) -> (usize, usize) {
    const TARGET_BLOCKS: usize = ATTN_COUNTERS;
    const MIN_KEYS: usize = 256;
    let most = (cap / MIN_KEYS).max(1);
    let splits = TARGET_BLOCKS.div_ceil((heads * rows).max(1)).clamp(1, most);
    (splits, cap.div_ceil(splits).max(1))
}

/// The kernel families of `cuda/decode.cu` (and `qgemv.cuh`), each a name stem that the
/// kernels' names start with (checked against the sources by a test).
#[cfg(test)]
const KERNEL_STEMS: &[&str] = &[
    "argmax_final",
    "gemvf",
    "gemvfp",
    "qgemvf",
    "qgemvfp",
    "decode_attn64",
    "rope_qkv",
    "kv_write",
    "decode_attn",
    "argmax_part",
    "rope_qkv_pdl",
    "decode_attn64_pdl",
    "decode_attn_rope_pdl",
    "embed_rows",
    "gemvfs",
    "gemvfs2",
    "gemvfk",
];

/// Every kernel name of `cuda/decode.cu` the launchers may ask for (built from dtype,
/// rows, prologue and head-size group); the CUDA side looks kernels up in this list.
#[cfg_attr(not(any(feature = "cuda", test)), allow(dead_code))]
pub(crate) fn kernel_names() -> Vec<String> {
    let mut v: Vec<String> = vec!["argmax_final".into()];
    for t in ["f32", "f16", "bf16"] {
        for b in 1..=GEMV_MAX_ROWS {
            for pro in 0..3 {
                v.push(format!("gemvf_{t}_{b}_{pro}"));
                v.push(format!("gemvfp_{t}_{b}_{pro}"));
            }
            v.push(format!("gemvfs_{t}_{b}_1"));
            v.push(format!("gemvfs2_{t}_{b}_1"));
            v.push(format!("gemvfk_{t}_{b}_0"));
            v.push(format!("gemvfk_{t}_{b}_2"));
        }
        for b in 1..=QuantGemv::MAX_ROWS {
            for pro in 0..3 {
                v.push(format!("qgemvf_{t}_{b}_{pro}"));
                v.push(format!("qgemvfp_{t}_{b}_{pro}"));
            }
        }
        for g in [1, 2, 4] {
            v.push(format!("decode_attn64_{t}_{g}"));
            v.push(format!("decode_attn64_pdl_{t}_{g}"));
            v.push(format!("decode_attn_rope_pdl_{t}_{g}"));
        }
        for k in [
            "rope_qkv",
            "rope_qkv_pdl",
            "kv_write",
            "decode_attn",
            "argmax_part",
            "embed_rows",
        ] {
            v.push(format!("{k}_{t}"));
        }
    }
    v
}

/// Shared memory the fused kernel may stage activations in (bytes): the opt-in limit of
/// the smallest GPU we ship for (sm_86/sm_89: 99 KiB), rounded down.
pub const FUSED_SMEM_BYTES: usize = 96 << 10;

impl FusedGemv {
    /// Whether the fused kernel takes `b` rows of `k` inputs of `dtype` (the activation
    /// fits its shared memory, whole 16-byte vectors).
    pub fn takes(b: usize, k: usize, dtype: DType) -> bool {
        let size = dtype.size_in_bytes();
        (1..=GEMV_MAX_ROWS).contains(&b)
            && matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
            && k.is_multiple_of(16 / size)
            && b * k * size <= FUSED_SMEM_BYTES
    }

    /// Whether [`FusedGemv`] with no prologue takes `x` `[b, in]` times `w` `[out, in]`:
    /// same float dtype, both contiguous, and both 16-byte aligned (the kernel reads
    /// them in 16-byte pieces).
    pub fn takes_matrix(x: &Tensor, w: &Tensor) -> bool {
        let (Ok((b, k)), Ok((_, k2))) = (x.dims2(), w.dims2()) else {
            return false;
        };
        let vec = 16 / x.dtype().size_in_bytes().max(1);
        k == k2
            && x.dtype() == w.dtype()
            && Self::takes(b, k, x.dtype())
            && x.is_contiguous()
            && w.is_contiguous()
            && w.layout().start_offset().is_multiple_of(vec)
            && x.layout().start_offset().is_multiple_of(vec)
    }

    fn host<T: candle_core::WithDType>(
        &self,
        x: &[T],
        w: &[T],
        side: &FusedHost,
        dims: (usize, usize, usize),
    ) -> Vec<T> {
        host_gemv(&self.prologue, self.eps, x, w, side, dims)
    }
}

/// The CPU form of the fused GEMVs (dense and quantized, the latter on its dequantized
/// weight): the prologue's activation times `w` `[n, k]` in f32, then the epilogue.
fn host_gemv<T: candle_core::WithDType, W: candle_core::WithDType>(
    prologue: &Prologue,
    eps: f32,
    x: &[T],
    w: &[W],
    side: &FusedHost,
    (b, n, k): (usize, usize, usize),
) -> Vec<T> {
    let a = activation(prologue, eps, x, &side.norm, b, k);
    finish(side, b, n, |r, j| {
        a[r * k..][..k]
            .iter()
            .zip(&w[j * k..][..k])
            .map(|(p, c)| p * c.to_f64() as f32)
            .sum()
    })
}

/// The activation `[b, k]` a fused GEMV multiplies with: its prologue applied to `x`,
/// each value rounded to `T` where candle's separate operations round.
fn activation<T: candle_core::WithDType>(
    prologue: &Prologue,
    eps: f32,
    x: &[T],
    norm: &[f32],
    b: usize,
    k: usize,
) -> Vec<f32> {
    let round = |v: f32| T::from_f64(v as f64).to_f64() as f32;
    let mut a = vec![0f32; b * k];
    for r in 0..b {
        match prologue {
            Prologue::None => {
                for (i, v) in x[r * k..][..k].iter().enumerate() {
                    a[r * k + i] = v.to_f64() as f32;
                }
            }
            Prologue::Norm(_) => {
                let row = &x[r * k..][..k];
                let ss: f32 = row.iter().map(|v| (v.to_f64() as f32).powi(2)).sum();
                let rinv = 1.0 / (ss / k as f32 + eps).sqrt();
                for (i, v) in row.iter().enumerate() {
                    a[r * k + i] = round(v.to_f64() as f32 * rinv * norm[i]);
                }
            }
            Prologue::SiluMul => {
                let row = &x[r * 2 * k..][..2 * k];
                for i in 0..k {
                    let g = row[i].to_f64() as f32;
                    let u = row[k + i].to_f64() as f32;
                    a[r * k + i] = round(round(g / (1.0 + (-g).exp())) * u);
                }
            }
        }
    }
    a
}

/// `y[r, j]` = the epilogue (bias, residual; each rounded to `T`) of `dot(r, j)`.
fn finish<T: candle_core::WithDType>(
    side: &FusedHost,
    b: usize,
    n: usize,
    dot: impl Fn(usize, usize) -> f32,
) -> Vec<T> {
    let round = |v: f32| T::from_f64(v as f64).to_f64() as f32;
    let mut y = vec![T::zero(); b * n];
    for r in 0..b {
        for j in 0..n {
            let mut v = round(dot(r, j));
            if let Some(bias) = &side.bias {
                v = round(v + bias[j]);
            }
            if let Some(res) = &side.res {
                v = round(v + res[r * n + j]);
            }
            y[r * n + j] = T::from_f64(v as f64);
        }
    }
    y
}

/// The side inputs of a [`FusedGemv`] on the host, as f32.
struct FusedHost {
    norm: Vec<f32>,
    bias: Option<Vec<f32>>,
    res: Option<Vec<f32>>,
}

impl FusedHost {
    fn new(prologue: &Prologue, bias: &Option<Tensor>, res: &Option<Tensor>) -> Result<Self> {
        Ok(FusedHost {
            norm: match prologue {
                Prologue::Norm(t) => host_f32(t)?,
                _ => Vec::new(),
            },
            bias: bias.as_ref().map(host_f32).transpose()?,
            res: res.as_ref().map(host_f32).transpose()?,
        })
    }
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&candle_core::Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

impl candle_core::CustomOp2 for FusedGemv {
    fn name(&self) -> &'static str {
        "dayshift-fused-gemv"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, _) = lx.shape().dims2()?;
        let (n, k) = lw.shape().dims2()?;
        let side = FusedHost::new(&self.prologue, &self.bias, &self.res)?;
        let dims = (b, n, k);
        let out = match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(self.host(
                contiguous(x, lx, "x")?,
                contiguous(w, lw, "w")?,
                &side,
                dims,
            )),
            (CpuStorage::BF16(x), CpuStorage::BF16(w)) => CpuStorage::BF16(self.host(
                contiguous(x, lx, "x")?,
                contiguous(w, lw, "w")?,
                &side,
                dims,
            )),
            (CpuStorage::F16(x), CpuStorage::F16(w)) => CpuStorage::F16(self.host(
                contiguous(x, lx, "x")?,
                contiguous(w, lw, "w")?,
                &side,
                dims,
            )),
            _ => candle_core::bail!("fused gemv: x and w must share a float dtype"),
        };
        Ok((out, Shape::from((b, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::cuda_backend::CudaStorage,
        lx: &Layout,
        w: &candle_core::cuda_backend::CudaStorage,
        lw: &Layout,
    ) -> Result<(candle_core::cuda_backend::CudaStorage, Shape)> {
        cuda::fused_gemv(self, (x, lx), (w, lw))
    }
}

/// [`FusedGemv`] over GGML-quantized weights (Q4_K, Q6_K, Q8_0): `y = epilogue(prologue(x)
/// w^T)` for a decode step of up to [`QuantGemv::MAX_ROWS`] rows, where `w` is up to three
/// quantized matrices of one input width (a layer's q, k and v projections, whose types
/// may differ) whose outputs lie side by side in `y`. Applied to `x` `[b, in]` (`[b, 2
/// in]` for SwiGLU). On CUDA one kernel (`cuda/qgemv.cuh`: the activation rounded to 8
/// bits per 32 values in shared memory, int8 dot products, as llama.cpp and candle's own
/// quantized kernels do); on the CPU the activation times the dequantized weights in f32.
pub struct QuantGemv {
    /// Applied to the input first.
    pub prologue: Prologue,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// The weight matrices `[rows_i, in]`, their outputs side by side.
    pub segments: Vec<std::sync::Arc<candle_core::quantized::QTensor>>,
    /// Optional bias `[sum of rows_i]`.
    pub bias: Option<Tensor>,
    /// Optional residual `[b, sum of rows_i]` added last.
    pub res: Option<Tensor>,
    /// As [`FusedGemv::prefetch`].
    pub prefetch: crate::model::l2_prefetch::L2Ranges,
}

impl QuantGemv {
    /// Most rows the kernel takes.
    pub const MAX_ROWS: usize = 2;
    /// Most matrices one launch takes.
    pub const MAX_SEGMENTS: usize = 3;

    /// Whether the kernel reads this GGML type.
    pub fn takes_type(t: candle_core::quantized::GgmlDType) -> bool {
        use candle_core::quantized::GgmlDType as G;
        matches!(t, G::Q4K | G::Q6K | G::Q8_0)
    }

    /// Whether the kernel takes a step of `b` rows times these matrices: 1 to
    /// [`Self::MAX_SEGMENTS`] 2-D matrices of types it reads and one input width, whole
    /// blocks per row, and the quantized activation (1.25 bytes per input) fitting its
    /// shared memory.
    pub fn takes(b: usize, segments: &[&candle_core::quantized::QTensor]) -> bool {
        let Some(first) = segments.first() else {
            return false;
        };
        let Ok((_, k)) = first.shape().dims2() else {
            return false;
        };
        (1..=Self::MAX_ROWS).contains(&b)
            && segments.len() <= Self::MAX_SEGMENTS
            && k.is_multiple_of(32)
            && Self::act_smem_bytes(b, k) <= FUSED_SMEM_BYTES
            && segments.iter().all(|q| {
                Self::takes_type(q.dtype())
                    && q.shape().dims2().is_ok_and(|(_, kk)| kk == k)
                    && k.is_multiple_of(q.dtype().block_size())
            })
    }

    /// Warps of a block of the kernel for `b` rows (`QG_WARPS1` and `QG_BOUNDS` in
    /// qgemv.cuh: 16 at 1 row, so each SM computes the prologue twice, not 4 times).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn warps(b: usize) -> usize {
        if b == 1 { 16 } else { 8 }
    }

    /// Shared memory of a block's quantized activation for `b` rows of `k` inputs: int8
    /// values, an f32 scale and sum per 32.
    fn act_smem_bytes(b: usize, k: usize) -> usize {
        b * k + 8 * b * (k / 32)
    }

    /// Shared memory of a block for `b` rows of `k` inputs: the activation and, where it
    /// fits beside it, each warp's staging buffer for Q8_0 and Q6_K rows (`QG_STAGE_BYTES`
    /// in qgemv.cuh: two steps of up to 1,680 bytes; the kernel stages rows only when its
    /// launch has room for it).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn smem_bytes(b: usize, k: usize) -> usize {
        const STAGE_BYTES: usize = 2 * 1680;
        let act = Self::act_smem_bytes(b, k);
        let staged = act + Self::warps(b) * STAGE_BYTES;
        if staged <= FUSED_SMEM_BYTES {
            staged
        } else {
            act
        }
    }

    /// Output width: the matrices' rows together.
    fn width(&self) -> Result<usize> {
        let mut n = 0;
        for q in &self.segments {
            n += q.shape().dims2()?.0;
        }
        Ok(n)
    }

    /// Input width, checked against `x` `[b, in]` (`[b, 2 in]` for SwiGLU).
    fn dims(&self, x: &Layout) -> Result<(usize, usize, usize)> {
        let (b, xk) = x.shape().dims2()?;
        let Some(first) = self.segments.first() else {
            candle_core::bail!("quantized gemv: no weights");
        };
        let (_, k) = first.shape().dims2()?;
        let want = if matches!(self.prologue, Prologue::SiluMul) {
            2 * k
        } else {
            k
        };
        if xk != want {
            candle_core::bail!("quantized gemv: input width {xk}, the weights take {want}");
        }
        let segs: Vec<&candle_core::quantized::QTensor> =
            self.segments.iter().map(|q| q.as_ref()).collect();
        if !Self::takes(b, &segs) {
            candle_core::bail!("quantized gemv: {b} rows of these weights are not taken");
        }
        Ok((b, self.width()?, k))
    }
}

impl candle_core::CustomOp1 for QuantGemv {
    fn name(&self) -> &'static str {
        "dayshift-quant-gemv"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, n, k) = self.dims(lx)?;
        let side = FusedHost::new(&self.prologue, &self.bias, &self.res)?;
        let mut w = Vec::with_capacity(n * k);
        for q in &self.segments {
            let d = q.dequantize(&candle_core::Device::Cpu)?;
            w.extend(d.flatten_all()?.to_vec1::<f32>()?);
        }
        let (dims, pro, eps) = ((b, n, k), &self.prologue, self.eps);
        let out = match x {
            CpuStorage::F32(v) => CpuStorage::F32(host_gemv(
                pro,
                eps,
                contiguous(v, lx, "x")?,
                &w,
                &side,
                dims,
            )),
            CpuStorage::BF16(v) => CpuStorage::BF16(host_gemv(
                pro,
                eps,
                contiguous(v, lx, "x")?,
                &w,
                &side,
                dims,
            )),
            CpuStorage::F16(v) => CpuStorage::F16(host_gemv(
                pro,
                eps,
                contiguous(v, lx, "x")?,
                &w,
                &side,
                dims,
            )),
            _ => candle_core::bail!("quantized gemv: x must be f32, bf16 or f16"),
        };
        Ok((out, Shape::from((b, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::cuda_backend::CudaStorage,
        lx: &Layout,
    ) -> Result<(candle_core::cuda_backend::CudaStorage, Shape)> {
        let dims = self.dims(lx)?;
        cuda::quant_gemv(self, dims, (x, lx))
    }
}

/// A part of a fused `q|k|v` projection (the CPU forms of [`RopeRows`] take one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QkvPart {
    /// Queries: q/k norm and RoPE, into a new `[b, heads * head_dim]` tensor.
    Q,
    /// Keys: q/k norm and RoPE, written into the key cache (in place).
    K,
    /// Values: written into the value cache (in place).
    V,
}

/// The step after a fused `q|k|v` projection `[b, (heads + 2 kv_heads) * head_dim]`:
/// per-head RMSNorm (Qwen3, Gemma 3) and RoPE (rotate-half) at each row's position for
/// q and k, and the cache write of k and v at each row's slot and position
/// ([`RopeRows::apply`]: one kernel on CUDA).
pub struct RopeRows {
    /// Rows of the step.
    pub b: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// RoPE tables `[positions, head_dim / 2]`.
    pub cos: Tensor,
    /// See `cos`.
    pub sin: Tensor,
    /// Per-head RMSNorm weights `[head_dim]` of the queries, if any.
    pub q_norm: Option<Tensor>,
    /// Per-head RMSNorm weights `[head_dim]` of the keys, if any.
    pub k_norm: Option<Tensor>,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// The step's `[3 * b]` index buffer (ids, positions, slots).
    pub idx: Tensor,
}

/// One part of [`RopeRows`] as a candle operation (the CPU form).
struct RopePart<'a>(&'a RopeRows, QkvPart);

impl RopeRows {
    /// Whether the kernel takes this head size (whole warps of rotated pairs).
    pub fn takes(head_dim: usize) -> bool {
        head_dim.is_multiple_of(64) && head_dim <= 256
    }

    /// The queries `[b, heads * head_dim]` of `qkv`, after writing its keys and values
    /// into the caches `kc` and `vc` `[slots, kv_heads, cap, head_dim]`. On CUDA one
    /// kernel does all three parts (the caches are written through the launch's device
    /// pointers, in stream order); on the CPU, three operations, one per part, with the
    /// caches written in place.
    pub fn apply(&self, qkv: &Tensor, kc: &Tensor, vc: &Tensor) -> Result<Tensor> {
        if qkv.device().is_cuda() {
            return qkv.apply_op3_no_bwd(kc, vc, self);
        }
        let q = qkv.apply_op1_no_bwd(&RopePart(self, QkvPart::Q))?;
        kc.inplace_op2(qkv, &RopePart(self, QkvPart::K))?;
        vc.inplace_op2(qkv, &RopePart(self, QkvPart::V))?;
        Ok(q)
    }

    /// The part's heads, each `[head_dim]` after norm and RoPE, as (row, head, values).
    fn host_heads(&self, part: QkvPart, qkv: &[f32]) -> Result<Vec<(usize, usize, Vec<f32>)>> {
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let half = hd / 2;
        let idx = host_idx(&self.idx, self.b)?;
        let cos = host_f32(&self.cos)?;
        let sin = host_f32(&self.sin)?;
        let norm = match part {
            QkvPart::Q => self.q_norm.as_ref(),
            QkvPart::K => self.k_norm.as_ref(),
            QkvPart::V => None,
        };
        let norm = norm.map(host_f32).transpose()?;
        let round = |v: f32| -> f32 {
            match self.cos.dtype() {
                DType::BF16 => half_round_bf16(v),
                DType::F16 => half_round_f16(v),
                _ => v,
            }
        };
        let (first, count) = match part {
            QkvPart::Q => (0, nh),
            QkvPart::K => (nh, nkv),
            QkvPart::V => (nh + nkv, nkv),
        };
        let mut out = Vec::new();
        for r in 0..self.b {
            let pos = idx[self.b + r] as usize;
            for h in 0..count {
                let src = &qkv[(r * (nh + 2 * nkv) + first + h) * hd..][..hd];
                let mut x: Vec<f32> = src.to_vec();
                if part != QkvPart::V {
                    if let Some(w) = &norm {
                        let ss: f32 = x.iter().map(|v| v * v).sum();
                        let rs = 1.0 / (ss / hd as f32 + self.eps).sqrt();
                        for (i, v) in x.iter_mut().enumerate() {
                            *v = round(*v * rs * w[i]);
                        }
                    }
                    let mut o = vec![0f32; hd];
                    for i in 0..half {
                        let (c, s) = (cos[pos * half + i], sin[pos * half + i]);
                        o[i] = round(x[i] * c - x[i + half] * s);
                        o[i + half] = round(x[i] * s + x[i + half] * c);
                    }
                    x = o;
                }
                out.push((r, h, x));
            }
        }
        Ok(out)
    }
}

fn half_round_bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

fn half_round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

impl CustomOp3 for RopeRows {
    fn name(&self) -> &'static str {
        "dayshift-rope-qkv"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("dayshift-rope-qkv runs on CUDA; RopeRows::apply takes the CPU parts")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::cuda_backend::CudaStorage,
        l: &Layout,
        kc: &candle_core::cuda_backend::CudaStorage,
        lk: &Layout,
        vc: &candle_core::cuda_backend::CudaStorage,
        lv: &Layout,
    ) -> Result<(candle_core::cuda_backend::CudaStorage, Shape)> {
        cuda::rope_qkv(self, (s, l), (kc, lk), (vc, lv))
    }
}

impl candle_core::CustomOp1 for RopePart<'_> {
    fn name(&self) -> &'static str {
        "dayshift-rope-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let RopePart(op, part) = self;
        let (nh, hd) = (op.heads, op.head_dim);
        let qkv = cpu_f32(s, l)?;
        let mut q = vec![0f32; op.b * nh * hd];
        for (r, h, x) in op.host_heads(*part, &qkv)? {
            q[(r * nh + h) * hd..][..hd].copy_from_slice(&x);
        }
        let t = Tensor::from_vec(q, (op.b, nh * hd), &candle_core::Device::Cpu)?
            .to_dtype(op.cos.dtype())?;
        let (st, _) = t.storage_and_layout();
        match &*st {
            candle_core::Storage::Cpu(c) => Ok((c.clone(), Shape::from((op.b, nh * hd)))),
            _ => candle_core::bail!("rope rows: expected a CPU tensor"),
        }
    }
}

impl InplaceOp2 for RopePart<'_> {
    fn name(&self) -> &'static str {
        "dayshift-rope-rows-cache"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        lc: &Layout,
        s: &CpuStorage,
        l: &Layout,
    ) -> Result<()> {
        let RopePart(op, part) = self;
        let (_, nkv, cap, hd) = lc.shape().dims4()?;
        let qkv = cpu_f32(s, l)?;
        let idx = host_idx(&op.idx, op.b)?;
        let heads = op.host_heads(*part, &qkv)?;
        fn put<T: candle_core::WithDType>(c: &mut [T], at: usize, x: &[f32]) {
            for (d, v) in c[at..at + x.len()].iter_mut().zip(x) {
                *d = T::from_f64(*v as f64);
            }
        }
        for (r, h, x) in heads {
            let Some((pos, slot)) = row(&idx, op.b, r) else {
                continue;
            };
            if pos >= cap {
                continue;
            }
            let at = ((slot * nkv + h) * cap + pos) * hd;
            match cache {
                CpuStorage::F32(c) => put(c, at, &x),
                CpuStorage::BF16(c) => put(c, at, &x),
                CpuStorage::F16(c) => put(c, at, &x),
                _ => candle_core::bail!("rope rows: the cache must be a float dtype"),
            }
        }
        Ok(())
    }
}

/// A contiguous CPU storage as f32 values.
fn cpu_f32(s: &CpuStorage, l: &Layout) -> Result<Vec<f32>> {
    Ok(match s {
        CpuStorage::F32(v) => contiguous(v, l, "input")?.to_vec(),
        CpuStorage::BF16(v) => contiguous(v, l, "input")?
            .iter()
            .map(|x| x.to_f32())
            .collect(),
        CpuStorage::F16(v) => contiguous(v, l, "input")?
            .iter()
            .map(|x| x.to_f32())
            .collect(),
        _ => candle_core::bail!("expected a float tensor"),
    })
}

/// The index of each row's largest value of `logits` `[rows, vocab]` (the first on
/// ties), as u32 `[rows]`: our two-stage kernel on CUDA (candle's argmax runs one block
/// per row: 137 µs for a 128k vocabulary on an H200, 6 % of a batch-1 decode step),
/// candle's argmax elsewhere.
pub fn argmax_rows(logits: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if logits.device().is_cuda() && logits.rank() == 2 {
        let logits = logits.contiguous()?;
        return logits.apply_op1_no_bwd(&cuda::ArgmaxRows);
    }
    logits.argmax(candle_core::D::Minus1)
}

/// Whether the decode kernels handle a model of this head size and dtype (the kernel keeps
/// up to 8 dimensions per lane).
pub fn supported(head_dim: usize, dtype: DType) -> bool {
    head_dim <= 256 && matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// The device memory a dense CUDA tensor's elements occupy, for
/// [`crate::model::l2_prefetch::plan`].
#[cfg(feature = "cuda")]
pub(crate) fn dense_extent(t: &Tensor) -> Result<crate::model::l2_prefetch::Extent> {
    cuda::dense_extent(t)
}

#[cfg(feature = "cuda")]
mod cuda;

/// What [`crate::model::static_step`] launches with: the kernel `name` of the decode
/// fatbin on `dev`, a tensor's device address, the quantized GEMV's segments and launch.
#[cfg(feature = "cuda")]
pub(crate) mod raw {
    pub(crate) use super::cuda::{
        device_ptr, named_kernel as kernel, quant_gemv_shape, quant_segments,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Largest difference relative to the largest magnitude of `b` (at least 1).
    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let scale = max_abs_diff(b, &b.zeros_like().unwrap()).unwrap().max(1.0);
        max_abs_diff(a, b).unwrap() / scale
    }

    /// Attention splits: ~1,024 blocks for a few rows, one split for many, never a split
    /// under 256 keys, and always every key of the cache covered.
    #[test]
    fn attention_splits_cover_the_cache() {
        assert_eq!(attention_splits(32, 1, 4096), (16, 256));
        assert_eq!(attention_splits(32, 1, 512), (2, 256));
        assert_eq!(attention_splits(32, 32, 4096), (1, 4096));
        assert_eq!(attention_splits(14, 2, 100), (1, 100));
        assert_eq!(attention_splits(8, 1, 131072), (128, 1024));
        for heads in [1, 8, 14, 32, 64] {
            for rows in [1, 2, 3, 8, 128] {
                for cap in [1, 255, 256, 257, 4096, 5000, 131072] {
                    let (s, k) = attention_splits(heads, rows, cap);
                    assert!(
                        s >= 1 && s * k >= cap && (s == 1 || k >= 256),
                        "{heads} {rows} {cap}"
                    );
                }
            }
        }
    }

    /// The kernel names the launchers ask for and the kernels `cuda/decode.cu` defines
    /// agree, family by family (the CUDA build is not part of CI, and a name missing on
    /// either side fails only at run time on a GPU).
    #[test]
    fn kernel_names_match_the_cuda_sources() {
        let src = concat!(
            include_str!("../../../cuda/decode.cu"),
            include_str!("../../../cuda/qgemv.cuh")
        );
        // the family of each `__global__ void [QG_BOUNDS(B)] name...` in the sources
        let mut defined = Vec::new();
        for part in src.split("__global__ void ").skip(1) {
            let part = part.trim_start_matches("QG_BOUNDS(B) ");
            let end = part.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            let ident = &part[..end.unwrap_or(part.len())];
            let stem = ident.strip_suffix('_').unwrap_or(ident);
            if part[stem.len()..].starts_with("_##") || part[stem.len()..].starts_with('(') {
                defined.push(stem.to_string());
            }
        }
        for stem in KERNEL_STEMS {
            assert!(
                defined.iter().any(|d| d == stem),
                "{stem}: no such kernel in cuda/"
            );
        }
        for d in &defined {
            assert!(
                KERNEL_STEMS.contains(&d.as_str()),
                "{d}: a kernel the launchers never name"
            );
        }
        for name in kernel_names() {
            assert!(
                KERNEL_STEMS
                    .iter()
                    .any(|s| name == *s || name.starts_with(&format!("{s}_"))),
                "{name}"
            );
        }
    }

    /// The quantized GEMV's shared memory: the staging buffers (3,360 bytes a warp; 16
    /// warps at 1 row, 8 at 2) where they fit beside the activation, none where a wide
    /// activation leaves no room (Mistral-Small's 32,768-wide down projection at 2 rows),
    /// and never over the limit.
    #[test]
    fn quant_gemv_stages_rows_only_where_they_fit() {
        assert_eq!(QuantGemv::smem_bytes(1, 4096), 4096 + 1024 + 16 * 3360);
        assert_eq!(QuantGemv::smem_bytes(2, 12288), 24576 + 6144 + 8 * 3360);
        assert_eq!(QuantGemv::smem_bytes(1, 32768), 32768 + 8192 + 16 * 3360);
        assert_eq!(QuantGemv::smem_bytes(2, 32768), 65536 + 16384);
        for b in 1..=QuantGemv::MAX_ROWS {
            for k in [256, 896, 4096, 14336, 25600, 32768] {
                let s = QuantGemv::smem_bytes(b, k);
                assert!(s >= QuantGemv::act_smem_bytes(b, k) && s <= FUSED_SMEM_BYTES);
            }
        }
    }

    /// [`FusedGemv`] with each prologue (none, RMSNorm, SwiGLU) and epilogue (bias,
    /// residual), 1 to 8 rows, f32 and bf16, gives candle's separate operations;
    /// shapes it does not take are refused.
    #[test]
    fn fused_gemv_matches_the_separate_operations() {
        let dev = Device::Cpu;
        let rnd = |shape: &[usize], dt| {
            Tensor::randn(0f32, 1., shape, &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap()
        };
        for dt in [DType::F32, DType::BF16] {
            // bf16: the RMSNorm's sum of squares in another order can flip the rounding
            // of a few normalised inputs.
            let tol = if dt == DType::F32 { 1e-5 } else { 2e-2 };
            for b in 1..=GEMV_MAX_ROWS {
                let x = rnd(&[b, 64], dt);
                let xx = rnd(&[b, 128], dt);
                let w = rnd(&[24, 64], dt);
                let nw = rnd(&[64], dt);
                let bias = rnd(&[24], dt);
                let res = rnd(&[b, 24], dt);
                assert!(FusedGemv::takes_matrix(&x, &w));
                let mm = |a: &Tensor| a.matmul(&w.t().unwrap()).unwrap();
                let op = |prologue, bias: Option<&Tensor>, res: Option<&Tensor>| FusedGemv {
                    prologue,
                    eps: 1e-5,
                    bias: bias.cloned(),
                    res: res.cloned(),
                    prefetch: Default::default(),
                };
                // None + bias + residual.
                let got = x
                    .apply_op2_no_bwd(&w, &op(Prologue::None, Some(&bias), Some(&res)))
                    .unwrap();
                let want = (mm(&x).broadcast_add(&bias).unwrap() + &res).unwrap();
                assert!(max_diff(&got, &want) < tol, "{dt:?} b={b} none");
                // RMSNorm.
                let got = x
                    .apply_op2_no_bwd(&w, &op(Prologue::Norm(nw.clone()), None, None))
                    .unwrap();
                let want = mm(&candle_nn::ops::rms_norm(&x, &nw, 1e-5).unwrap());
                assert!(max_diff(&got, &want) < tol, "{dt:?} b={b} norm");
                // SwiGLU over [gate | up].
                let got = xx
                    .apply_op2_no_bwd(&w, &op(Prologue::SiluMul, None, None))
                    .unwrap();
                let g = candle_nn::ops::silu(&xx.narrow(1, 0, 64).unwrap()).unwrap();
                let h = (g * xx.narrow(1, 64, 64).unwrap()).unwrap();
                assert!(max_diff(&got, &mm(&h)) < tol, "{dt:?} b={b} swiglu");
            }
        }
        let x = Tensor::zeros((9, 64), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((24, 64), DType::F32, &dev).unwrap();
        assert!(!FusedGemv::takes_matrix(&x, &w), "more than 8 rows");
        assert!(!FusedGemv::takes_matrix(
            &x.narrow(0, 0, 2).unwrap(),
            &w.narrow(1, 0, 62).unwrap()
        ));
        assert!(
            !FusedGemv::takes(1, 1 << 20, DType::F32),
            "beyond shared memory"
        );
    }
}
