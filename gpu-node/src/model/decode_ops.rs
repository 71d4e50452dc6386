//! The two operations of a decode step that take the step's indices from device memory
//! instead of from the host: the write of the new keys and values into the padded KV
//! cache ([`KvWrite`]) and decode attention over each sequence's own length
//! ([`DecodeAttention`]). With every per-step value in one device buffer (`idx`: token
//! ids, positions and slots of the `b` rows, `[3 * b]` u32), a decode step has the same
//! shapes and pointers at every step of a batch bucket, so it can be captured once as a
//! CUDA graph and replayed (`cuda_graph.rs`).
//!
//! On CUDA they run our kernels (`gpu-node/cuda/decode.cu`, compiled by `build.rs` into a
//! fatbin: no JIT on the GPUs providers rent); on the CPU the same arithmetic in Rust,
//! which is what the CPU tests compare against the eager path.

use candle_core::{
    CpuStorage, CustomOp3, DType, InplaceOp2, InplaceOp3, Layout, Result, Shape, Tensor,
};

/// The slot of a padding row (a batch filled up to its bucket): it writes nothing and
/// attends to nothing (its output is zeros).
pub const PAD_SLOT: u32 = u32::MAX;

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
}

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

/// `y = x w^T (+ bias)` for a decode step's few rows (`x` `[b, in]`, `w` `[out, in]`,
/// `b <= 8`): on CUDA one warp per output column streams the weight row (candle's cuBLAS
/// GEMM reaches ~40 % of the memory bandwidth on these shapes, the bound of a decode
/// step); on the CPU the same sums. f32 accumulation, the product rounded to the dtype
/// before the bias is added (like a GEMM then a bias add).
pub struct Gemv {
    /// Optional bias `[out]`.
    pub bias: Option<Tensor>,
}

/// Most rows [`Gemv`] takes.
pub const GEMV_MAX_ROWS: usize = 8;

impl Gemv {
    /// Whether [`Gemv`] takes `x` `[b, in]` times `w` `[out, in]`: both contiguous, a float
    /// dtype, `b <= 8`, and every weight row 16-byte aligned on the device.
    pub fn takes(x: &Tensor, w: &Tensor) -> bool {
        let (Ok((b, k)), Ok((_, k2))) = (x.dims2(), w.dims2()) else {
            return false;
        };
        let vec = 16 / x.dtype().size_in_bytes().max(1);
        (1..=GEMV_MAX_ROWS).contains(&b)
            && k == k2
            && k.is_multiple_of(vec)
            && x.dtype() == w.dtype()
            && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
            && x.is_contiguous()
            && w.is_contiguous()
            && w.layout().start_offset().is_multiple_of(vec)
            && x.layout().start_offset().is_multiple_of(vec)
    }

    fn product<T: candle_core::WithDType>(
        &self,
        x: &[T],
        w: &[T],
        bias: Option<&[f32]>,
        (b, n, k): (usize, usize, usize),
    ) -> Vec<T> {
        let mut y = vec![T::zero(); b * n];
        for r in 0..b {
            let xr = &x[r * k..][..k];
            for j in 0..n {
                let s: f32 = xr
                    .iter()
                    .zip(&w[j * k..][..k])
                    .map(|(a, c)| a.to_f64() as f32 * c.to_f64() as f32)
                    .sum();
                let mut v = T::from_f64(s as f64);
                if let Some(bias) = bias {
                    v = T::from_f64(v.to_f64() + bias[j] as f64);
                }
                y[r * n + j] = v;
            }
        }
        y
    }
}

impl candle_core::CustomOp2 for Gemv {
    fn name(&self) -> &'static str {
        "dayshift-gemv"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, k) = lx.shape().dims2()?;
        let (n, _) = lw.shape().dims2()?;
        let bias = match &self.bias {
            Some(t) => Some(
                t.to_device(&candle_core::Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?,
            ),
            None => None,
        };
        let bias = bias.as_deref();
        let out = match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(self.product(
                contiguous(x, lx, "x")?,
                contiguous(w, lw, "w")?,
                bias,
                (b, n, k),
            )),
            (CpuStorage::BF16(x), CpuStorage::BF16(w)) => CpuStorage::BF16(self.product(
                contiguous(x, lx, "x")?,
                contiguous(w, lw, "w")?,
                bias,
                (b, n, k),
            )),
            (CpuStorage::F16(x), CpuStorage::F16(w)) => CpuStorage::F16(self.product(
                contiguous(x, lx, "x")?,
                contiguous(w, lw, "w")?,
                bias,
                (b, n, k),
            )),
            _ => candle_core::bail!("gemv: x and w must share a float dtype"),
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
        cuda::gemv(self, (x, lx), (w, lw))
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

    fn host<T: candle_core::WithDType>(
        &self,
        x: &[T],
        w: &[T],
        side: &FusedHost,
        (b, n, k): (usize, usize, usize),
    ) -> Vec<T> {
        let round = |v: f32| T::from_f64(v as f64).to_f64() as f32;
        let mut a = vec![0f32; b * k];
        for r in 0..b {
            match &self.prologue {
                Prologue::None => {
                    for (i, v) in x[r * k..][..k].iter().enumerate() {
                        a[r * k + i] = v.to_f64() as f32;
                    }
                }
                Prologue::Norm(_) => {
                    let row = &x[r * k..][..k];
                    let ss: f32 = row.iter().map(|v| (v.to_f64() as f32).powi(2)).sum();
                    let rinv = 1.0 / (ss / k as f32 + self.eps).sqrt();
                    for (i, v) in row.iter().enumerate() {
                        a[r * k + i] = round(v.to_f64() as f32 * rinv * side.norm[i]);
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
        let mut y = vec![T::zero(); b * n];
        for r in 0..b {
            let ar = &a[r * k..][..k];
            for j in 0..n {
                let acc: f32 = ar
                    .iter()
                    .zip(&w[j * k..][..k])
                    .map(|(p, c)| p * c.to_f64() as f32)
                    .sum();
                let mut v = round(acc);
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
}

/// The side inputs of a [`FusedGemv`] on the host, as f32.
struct FusedHost {
    norm: Vec<f32>,
    bias: Option<Vec<f32>>,
    res: Option<Vec<f32>>,
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
        let side = FusedHost {
            norm: match &self.prologue {
                Prologue::Norm(t) => host_f32(t)?,
                _ => Vec::new(),
            },
            bias: self.bias.as_ref().map(host_f32).transpose()?,
            res: self.res.as_ref().map(host_f32).transpose()?,
        };
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

/// Which part of a fused `q|k|v` projection [`RopeRows`] handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkvPart {
    /// Queries: q/k norm and RoPE, into a new `[b, heads * head_dim]` tensor.
    Q,
    /// Keys: q/k norm and RoPE, written into the key cache (in place).
    K,
    /// Values: written into the value cache (in place).
    V,
}

/// The step after a fused `q|k|v` projection `[b, (heads + 2 kv_heads) * head_dim]`:
/// per-head RMSNorm (Qwen3, Gemma 3) and RoPE (rotate-half) at each row's position for
/// q and k, and the cache write of k and v at each row's slot and position. Applied to
/// the projection output (part `Q`, returns the queries) or in place to a cache (parts
/// `K` and `V`, with the projection as operand).
pub struct RopeRows {
    /// Which part.
    pub part: QkvPart,
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
    /// Per-head RMSNorm weights `[head_dim]` of this part (q or k), if any.
    pub norm: Option<Tensor>,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// The step's `[3 * b]` index buffer (ids, positions, slots).
    pub idx: Tensor,
}

impl RopeRows {
    /// Whether the kernel takes this head size (whole warps of rotated pairs).
    pub fn takes(head_dim: usize) -> bool {
        head_dim.is_multiple_of(64) && head_dim <= 256
    }

    /// The part's heads, each `[head_dim]` after norm and RoPE, as (row, head, values).
    fn host_heads(&self, qkv: &[f32]) -> Result<Vec<(usize, usize, Vec<f32>)>> {
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let half = hd / 2;
        let idx = host_idx(&self.idx, self.b)?;
        let cos = host_f32(&self.cos)?;
        let sin = host_f32(&self.sin)?;
        let norm = self.norm.as_ref().map(host_f32).transpose()?;
        let round = |v: f32| -> f32 {
            match self.cos.dtype() {
                DType::BF16 => half_round_bf16(v),
                DType::F16 => half_round_f16(v),
                _ => v,
            }
        };
        let (first, count) = match self.part {
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
                if self.part != QkvPart::V {
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

impl candle_core::CustomOp1 for RopeRows {
    fn name(&self) -> &'static str {
        "dayshift-rope-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (nh, hd) = (self.heads, self.head_dim);
        let qkv = cpu_f32(s, l)?;
        let mut q = vec![0f32; self.b * nh * hd];
        for (r, h, x) in self.host_heads(&qkv)? {
            q[(r * nh + h) * hd..][..hd].copy_from_slice(&x);
        }
        let t = Tensor::from_vec(q, (self.b, nh * hd), &candle_core::Device::Cpu)?
            .to_dtype(self.cos.dtype())?;
        let (st, _) = t.storage_and_layout();
        match &*st {
            candle_core::Storage::Cpu(c) => Ok((c.clone(), Shape::from((self.b, nh * hd)))),
            _ => candle_core::bail!("rope rows: expected a CPU tensor"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::cuda_backend::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::cuda_backend::CudaStorage, Shape)> {
        cuda::rope_q(self, s, l)
    }
}

impl InplaceOp2 for RopeRows {
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
        let (_, nkv, cap, hd) = lc.shape().dims4()?;
        let qkv = cpu_f32(s, l)?;
        let idx = host_idx(&self.idx, self.b)?;
        let heads = self.host_heads(&qkv)?;
        fn put<T: candle_core::WithDType>(c: &mut [T], at: usize, x: &[f32]) {
            for (d, v) in c[at..at + x.len()].iter_mut().zip(x) {
                *d = T::from_f64(*v as f64);
            }
        }
        for (r, h, x) in heads {
            let Some((pos, slot)) = row(&idx, self.b, r) else {
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        cache: &mut candle_core::cuda_backend::CudaStorage,
        lc: &Layout,
        s: &candle_core::cuda_backend::CudaStorage,
        l: &Layout,
    ) -> Result<()> {
        cuda::rope_cache(self, cache, lc, s, l)
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

#[cfg(feature = "cuda")]
mod cuda {
    use super::DecodeAttention;
    use candle_core::cuda_backend::cudarc::driver as cudarc_launch;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaFunction, CudaModule, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
    use candle_core::cuda_backend::{CudaDevice, CudaStorage, CudaStorageSlice as S, DeviceId};
    use candle_core::{Layout, Result, Shape, Storage};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    /// The fatbin `build.rs` made from `cuda/decode.cu`.
    static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/decode.fatbin"));

    type Functions = HashMap<(DeviceId, &'static str), CudaFunction>;
    /// Loaded modules and functions, per device.
    type Loaded = Mutex<(HashMap<DeviceId, Arc<CudaModule>>, Functions)>;

    fn err(what: &str, e: impl std::fmt::Display) -> candle_core::Error {
        candle_core::Error::Msg(format!("{what}: {e}"))
    }

    /// The kernel `name` on `dev`, loaded from the fatbin once per device.
    fn function(dev: &CudaDevice, name: &'static str) -> Result<CudaFunction> {
        static MODULES: OnceLock<Loaded> = OnceLock::new();
        let lock = MODULES.get_or_init(|| Mutex::new((HashMap::new(), HashMap::new())));
        let mut g = lock
            .lock()
            .map_err(|_| err("decode kernels", "a thread panicked while loading them"))?;
        if let Some(f) = g.1.get(&(dev.id(), name)) {
            return Ok(f.clone());
        }
        let module = match g.0.get(&dev.id()) {
            Some(m) => m.clone(),
            None => {
                let ctx = dev.cuda_stream().context().clone();
                let m = ctx
                    .load_module(Ptx::from_binary(FATBIN.to_vec()))
                    .map_err(|e| {
                        err(
                            "cannot load the decode kernels (gpu-node/cuda/decode.cu)",
                            e,
                        )
                    })?;
                g.0.insert(dev.id(), m.clone());
                m
            }
        };
        let f = module
            .load_function(name)
            .map_err(|e| err(&format!("decode kernel {name}"), e))?;
        g.1.insert((dev.id(), name), f.clone());
        Ok(f)
    }

    /// Every kernel name of decode.cu that is chosen at run time (by dtype, rows, head
    /// size), as the `&'static str` the function cache keys on.
    fn kernel_name(name: &str) -> Result<&'static str> {
        static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
        let names = NAMES.get_or_init(|| {
            let mut v: Vec<String> = Vec::new();
            for t in ["f32", "f16", "bf16"] {
                for b in 1..=8 {
                    for pro in 0..3 {
                        v.push(format!("gemvf_{t}_{b}_{pro}"));
                    }
                }
                for g in [1, 2, 4] {
                    v.push(format!("decode_attn64_{t}_{g}"));
                }
                v.push(format!("rope_rows_{t}"));
            }
            v.into_iter()
                .map(|s| &*Box::leak(s.into_boxed_str()))
                .collect()
        });
        names
            .iter()
            .find(|n| **n == name)
            .copied()
            .ok_or_else(|| err("decode kernels", format!("no kernel {name}")))
    }

    fn contiguous_start(l: &Layout, what: &str) -> Result<usize> {
        match l.contiguous_offsets() {
            Some((a, _)) => Ok(a),
            None => candle_core::bail!("{what} must be contiguous"),
        }
    }

    fn int(x: usize) -> Result<i32> {
        i32::try_from(x).map_err(|_| err("decode kernels", format!("{x} exceeds i32")))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn kv_write(
        b: usize,
        (nkv, cap, hd): (usize, usize, usize),
        cache: &mut CudaStorage,
        lc: &Layout,
        src: &CudaStorage,
        ls: &Layout,
        idx: &CudaStorage,
        li: &Layout,
    ) -> Result<()> {
        fn run<T: DeviceRepr>(
            dev: &CudaDevice,
            name: &'static str,
            b: usize,
            (nkv, cap, hd): (usize, usize, usize),
            c: &mut CudaSlice<T>,
            s: &CudaSlice<T>,
            ls: &Layout,
            i: &CudaView<'_, u32>,
        ) -> Result<()> {
            let f = function(dev, name)?;
            let s = s.slice(contiguous_start(ls, "keys")?..);
            let n = b * nkv * hd;
            let threads = 256u32;
            let blocks = n.div_ceil(threads as usize).max(1) as u32;
            let (bi, nkvi, capi, hdi) = (int(b)?, int(nkv)?, int(cap)?, int(hd)?);
            let stream = dev.cuda_stream();
            let mut lb = stream.launch_builder(&f);
            lb.arg(&s)
                .arg(c)
                .arg(i)
                .arg(&bi)
                .arg(&nkvi)
                .arg(&capi)
                .arg(&hdi);
            let cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the argument list matches `kv_write_*` in decode.cu; the cache is a
            // whole contiguous [slots, nkv, cap, hd] tensor and every slot index the host
            // put in `idx` is below `slots` or PAD_SLOT (checked by the caller).
            unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
            Ok(())
        }
        if lc.start_offset() != 0 || !lc.is_contiguous() {
            candle_core::bail!("kv write: the cache must be a whole contiguous tensor");
        }
        let dims = (nkv, cap, hd);
        let dev = cache.device.clone();
        let i = idx
            .as_cuda_slice::<u32>()?
            .slice(contiguous_start(li, "the index buffer")?..);
        match (&mut cache.slice, &src.slice) {
            (S::F32(c), S::F32(s)) => run(&dev, "kv_write_f32", b, dims, c, s, ls, &i),
            (S::F16(c), S::F16(s)) => run(&dev, "kv_write_f16", b, dims, c, s, ls, &i),
            (S::BF16(c), S::BF16(s)) => run(&dev, "kv_write_bf16", b, dims, c, s, ls, &i),
            _ => candle_core::bail!("kv write: cache and keys must share a float dtype"),
        }
    }

    pub(super) fn gemv(
        op: &super::Gemv,
        (x, lx): (&CudaStorage, &Layout),
        (w, lw): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        #[allow(clippy::too_many_arguments)]
        fn run<T: DeviceRepr>(
            dev: &CudaDevice,
            suffix: &str,
            (b, n, k): (usize, usize, usize),
            xs: CudaView<'_, T>,
            ws: CudaView<'_, T>,
            bias: Option<CudaView<'_, T>>,
        ) -> Result<CudaSlice<T>> {
            let name: &'static str = match (suffix, b) {
                ("f32", 1) => "gemv_f32_1",
                ("f32", 2) => "gemv_f32_2",
                ("f32", 3) => "gemv_f32_3",
                ("f32", 4) => "gemv_f32_4",
                ("f32", 5) => "gemv_f32_5",
                ("f32", 6) => "gemv_f32_6",
                ("f32", 7) => "gemv_f32_7",
                ("f32", 8) => "gemv_f32_8",
                ("f16", 1) => "gemv_f16_1",
                ("f16", 2) => "gemv_f16_2",
                ("f16", 3) => "gemv_f16_3",
                ("f16", 4) => "gemv_f16_4",
                ("f16", 5) => "gemv_f16_5",
                ("f16", 6) => "gemv_f16_6",
                ("f16", 7) => "gemv_f16_7",
                ("f16", 8) => "gemv_f16_8",
                ("bf16", 1) => "gemv_bf16_1",
                ("bf16", 2) => "gemv_bf16_2",
                ("bf16", 3) => "gemv_bf16_3",
                ("bf16", 4) => "gemv_bf16_4",
                ("bf16", 5) => "gemv_bf16_5",
                ("bf16", 6) => "gemv_bf16_6",
                ("bf16", 7) => "gemv_bf16_7",
                ("bf16", 8) => "gemv_bf16_8",
                _ => candle_core::bail!("gemv: no kernel for {b} rows of {suffix}"),
            };
            let f = function(dev, name)?;
            // SAFETY: every element is written by the kernel.
            let mut out = unsafe { dev.alloc::<T>(b * n) }?;
            let (ni, ki) = (int(n)?, int(k)?);
            let warps = 8u32;
            let stream = dev.cuda_stream();
            let mut lb = stream.launch_builder(&f);
            let null = 0u64;
            lb.arg(&xs).arg(&ws);
            match &bias {
                Some(bv) => lb.arg(bv),
                None => lb.arg(&null),
            };
            lb.arg(&mut out).arg(&ni).arg(&ki);
            let cfg = LaunchConfig {
                grid_dim: ((n as u32).div_ceil(warps), 1, 1),
                block_dim: (32 * warps, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match `gemv_*` in decode.cu; `Gemv::takes` checked
            // the shapes, contiguity and 16-byte alignment of the rows.
            unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
            Ok(out)
        }
        let (b, k) = lx.shape().dims2()?;
        let (n, _) = lw.shape().dims2()?;
        let dev = x.device.clone();
        let (ox, ow) = (contiguous_start(lx, "x")?, contiguous_start(lw, "w")?);
        let guard = op.bias.as_ref().map(|t| t.storage_and_layout());
        let (bias_store, bias_off) = match &guard {
            Some((st, l)) => match &**st {
                Storage::Cuda(c) => (Some(&c.slice), contiguous_start(l, "bias")?),
                _ => candle_core::bail!("gemv: the bias is not on the GPU"),
            },
            None => (None, 0),
        };
        let dims = (b, n, k);
        let slice = match (&x.slice, &w.slice, bias_store) {
            (S::F32(x), S::F32(w), bs) => {
                let bias = match bs {
                    Some(S::F32(v)) => Some(v.slice(bias_off..)),
                    Some(_) => candle_core::bail!("gemv: bias dtype differs"),
                    None => None,
                };
                S::F32(run(&dev, "f32", dims, x.slice(ox..), w.slice(ow..), bias)?)
            }
            (S::F16(x), S::F16(w), bs) => {
                let bias = match bs {
                    Some(S::F16(v)) => Some(v.slice(bias_off..)),
                    Some(_) => candle_core::bail!("gemv: bias dtype differs"),
                    None => None,
                };
                S::F16(run(&dev, "f16", dims, x.slice(ox..), w.slice(ow..), bias)?)
            }
            (S::BF16(x), S::BF16(w), bs) => {
                let bias = match bs {
                    Some(S::BF16(v)) => Some(v.slice(bias_off..)),
                    Some(_) => candle_core::bail!("gemv: bias dtype differs"),
                    None => None,
                };
                S::BF16(run(&dev, "bf16", dims, x.slice(ox..), w.slice(ow..), bias)?)
            }
            _ => candle_core::bail!("gemv: x and w must share a float dtype"),
        };
        Ok((CudaStorage { slice, device: dev }, Shape::from((b, n))))
    }

    /// A float slice of a storage (by dtype suffix) from a layout's contiguous start, for
    /// passing as a kernel argument.
    fn view<'a>(s: &'a S, l: &Layout, what: &str) -> Result<(&'static str, Arg<'a>)> {
        let o = contiguous_start(l, what)?;
        Ok(match s {
            S::F32(v) => ("f32", Arg::F32(v.slice(o..))),
            S::F16(v) => ("f16", Arg::F16(v.slice(o..))),
            S::BF16(v) => ("bf16", Arg::BF16(v.slice(o..))),
            _ => candle_core::bail!("{what}: the decode kernels take f32, f16 or bf16"),
        })
    }

    /// A device view of one of the float dtypes.
    enum Arg<'a> {
        F32(CudaView<'a, f32>),
        F16(CudaView<'a, half::f16>),
        BF16(CudaView<'a, half::bf16>),
    }

    fn push<'a>(lb: &mut cudarc_launch::LaunchArgs<'a>, a: &'a Arg<'_>) {
        match a {
            Arg::F32(v) => lb.arg(v),
            Arg::F16(v) => lb.arg(v),
            Arg::BF16(v) => lb.arg(v),
        };
    }

    /// A side tensor (norm weights, bias, residual, RoPE tables) on the device.
    fn side<'a>(
        t: &'a Option<candle_core::Tensor>,
    ) -> Option<(candle_core::StorageRef<'a>, &'a Layout)> {
        t.as_ref().map(|t| t.storage_and_layout())
    }

    fn side_arg<'a>(
        g: &'a Option<(candle_core::StorageRef<'_>, &Layout)>,
        what: &str,
    ) -> Result<Option<Arg<'a>>> {
        match g {
            None => Ok(None),
            Some((st, l)) => match &**st {
                Storage::Cuda(c) => Ok(Some(view(&c.slice, l, what)?.1)),
                _ => candle_core::bail!("{what} is not on the GPU"),
            },
        }
    }

    fn alloc_like(dev: &CudaDevice, like: &str, n: usize) -> Result<S> {
        // SAFETY: every element is written by the kernel that receives it.
        Ok(unsafe {
            match like {
                "f32" => S::F32(dev.alloc::<f32>(n)?),
                "f16" => S::F16(dev.alloc::<half::f16>(n)?),
                _ => S::BF16(dev.alloc::<half::bf16>(n)?),
            }
        })
    }

    fn push_out<'a>(lb: &mut cudarc_launch::LaunchArgs<'a>, s: &'a mut S) {
        match s {
            S::F32(v) => lb.arg(v),
            S::F16(v) => lb.arg(v),
            S::BF16(v) => lb.arg(v),
            _ => lb.arg(&0u64),
        };
    }

    pub(super) fn fused_gemv(
        op: &super::FusedGemv,
        (x, lx): (&CudaStorage, &Layout),
        (w, lw): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let (b, _) = lx.shape().dims2()?;
        let (n, k) = lw.shape().dims2()?;
        let dev = x.device.clone();
        let (sfx, xa) = view(&x.slice, lx, "x")?;
        let (_, wa) = view(&w.slice, lw, "w")?;
        let norm_t = match &op.prologue {
            super::Prologue::Norm(t) => Some(t.clone()),
            _ => None,
        };
        let (ng, bg, rg) = (side(&norm_t), side(&op.bias), side(&op.res));
        let (na, ba, ra) = (
            side_arg(&ng, "norm weights")?,
            side_arg(&bg, "bias")?,
            side_arg(&rg, "residual")?,
        );
        let pro = match op.prologue {
            super::Prologue::None => 0,
            super::Prologue::Norm(_) => 1,
            super::Prologue::SiluMul => 2,
        };
        let name = kernel_name(&format!("gemvf_{sfx}_{b}_{pro}"))?;
        let f = function(&dev, name)?;
        let mut out = alloc_like(&dev, sfx, b * n)?;
        let smem = (b * k * (if sfx == "f32" { 4 } else { 2 })) as u32;
        if smem > 48 << 10 {
            f.set_attribute(
                candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                super::FUSED_SMEM_BYTES as i32,
            )
            .map_err(|e| err(name, e))?;
        }
        let (ni, ki) = (int(n)?, int(k)?);
        let null = 0u64;
        let stream = dev.cuda_stream();
        let mut lb = stream.launch_builder(&f);
        push(&mut lb, &xa);
        match &na {
            Some(a) => push(&mut lb, a),
            None => {
                lb.arg(&null);
            }
        }
        lb.arg(&op.eps);
        push(&mut lb, &wa);
        for a in [&ba, &ra] {
            match a {
                Some(a) => push(&mut lb, a),
                None => {
                    lb.arg(&null);
                }
            }
        }
        push_out(&mut lb, &mut out);
        lb.arg(&ni).arg(&ki);
        let warps = 8u32;
        let cfg = LaunchConfig {
            grid_dim: ((n as u32).div_ceil(warps), 1, 1),
            block_dim: (32 * warps, 1, 1),
            shared_mem_bytes: smem,
        };
        // SAFETY: the arguments match `gemvf_*` in decode.cu; `FusedGemv::takes` checked
        // rows, alignment and the shared memory; side tensors are [k], [n] and [b, n].
        unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
        drop(lb);
        Ok((
            CudaStorage {
                slice: out,
                device: dev,
            },
            Shape::from((b, n)),
        ))
    }

    /// Launches `rope_rows_*` for one part, writing into `out`.
    fn rope_launch(
        op: &super::RopeRows,
        dev: &CudaDevice,
        (qkv, l): (&CudaStorage, &Layout),
        out: &mut S,
        cap: usize,
    ) -> Result<()> {
        let (sfx, qa) = view(&qkv.slice, l, "qkv")?;
        let (cos_t, sin_t) = (Some(op.cos.clone()), Some(op.sin.clone()));
        let (cg, sg, ng) = (side(&cos_t), side(&sin_t), side(&op.norm));
        let (ca, sa, na) = (
            side_arg(&cg, "RoPE cos")?,
            side_arg(&sg, "RoPE sin")?,
            side_arg(&ng, "q/k norm")?,
        );
        let (Some(ca), Some(sa)) = (ca, sa) else {
            candle_core::bail!("rope rows: no RoPE tables");
        };
        let (istore, il) = op.idx.storage_and_layout();
        let Storage::Cuda(istore) = &*istore else {
            candle_core::bail!("rope rows: the index buffer is not on the GPU");
        };
        let i = istore
            .as_cuda_slice::<u32>()?
            .slice(contiguous_start(il, "the index buffer")?..);
        let name = kernel_name(&format!("rope_rows_{sfx}"))?;
        let f = function(dev, name)?;
        let (part, heads) = match op.part {
            super::QkvPart::Q => (0i32, op.heads),
            super::QkvPart::K => (1, op.kv_heads),
            super::QkvPart::V => (2, op.kv_heads),
        };
        let (bi, nhi, nkvi, capi, hdi) = (
            int(op.b)?,
            int(op.heads)?,
            int(op.kv_heads)?,
            int(cap)?,
            int(op.head_dim)?,
        );
        let null = 0u64;
        let stream = dev.cuda_stream();
        let mut lb = stream.launch_builder(&f);
        push(&mut lb, &qa);
        match &na {
            Some(a) => push(&mut lb, a),
            None => {
                lb.arg(&null);
            }
        }
        lb.arg(&op.eps);
        push(&mut lb, &ca);
        push(&mut lb, &sa);
        push_out(&mut lb, out);
        lb.arg(&i)
            .arg(&part)
            .arg(&bi)
            .arg(&nhi)
            .arg(&nkvi)
            .arg(&capi)
            .arg(&hdi);
        let cfg = LaunchConfig {
            grid_dim: (heads as u32, op.b as u32, 1),
            block_dim: ((op.head_dim / 2) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match `rope_rows_*` in decode.cu; `RopeRows::takes`
        // checked the head size; slots in `idx` are below the cache's or PAD_SLOT.
        unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
        Ok(())
    }

    pub(super) fn rope_q(
        op: &super::RopeRows,
        s: &CudaStorage,
        l: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = s.device.clone();
        let (sfx, _) = view(&s.slice, l, "qkv")?;
        let mut out = alloc_like(&dev, sfx, op.b * op.heads * op.head_dim)?;
        rope_launch(op, &dev, (s, l), &mut out, 1)?;
        Ok((
            CudaStorage {
                slice: out,
                device: dev,
            },
            Shape::from((op.b, op.heads * op.head_dim)),
        ))
    }

    pub(super) fn rope_cache(
        op: &super::RopeRows,
        cache: &mut CudaStorage,
        lc: &Layout,
        s: &CudaStorage,
        l: &Layout,
    ) -> Result<()> {
        if lc.start_offset() != 0 || !lc.is_contiguous() {
            candle_core::bail!("rope rows: the cache must be a whole contiguous tensor");
        }
        let (_, _, cap, _) = lc.shape().dims4()?;
        let dev = cache.device.clone();
        rope_launch(op, &dev, (s, l), &mut cache.slice, cap)
    }

    /// Two-stage argmax over the last dim of a contiguous `[rows, n]` tensor.
    pub(super) struct ArgmaxRows;

    impl candle_core::CustomOp1 for ArgmaxRows {
        fn name(&self) -> &'static str {
            "dayshift-argmax"
        }

        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &Layout,
        ) -> Result<(candle_core::CpuStorage, Shape)> {
            candle_core::bail!("dayshift-argmax runs on CUDA only")
        }

        fn cuda_fwd(&self, x: &CudaStorage, lx: &Layout) -> Result<(CudaStorage, Shape)> {
            fn run<T: DeviceRepr>(
                dev: &CudaDevice,
                name: &'static str,
                xs: CudaView<'_, T>,
                rows: usize,
                n: usize,
            ) -> Result<CudaSlice<u32>> {
                let parts = 128usize.min(n.div_ceil(256)).max(1);
                // SAFETY: every element is written by the first kernel before the second reads it.
                let mut pv = unsafe { dev.alloc::<f32>(rows * parts) }?;
                let mut pi = unsafe { dev.alloc::<u32>(rows * parts) }?;
                let mut out = unsafe { dev.alloc::<u32>(rows) }?;
                let (ni, pn) = (int(n)?, int(parts)?);
                let stream = dev.cuda_stream();
                let f = function(dev, name)?;
                let mut lb = stream.launch_builder(&f);
                lb.arg(&xs).arg(&mut pv).arg(&mut pi).arg(&ni).arg(&pn);
                let cfg = LaunchConfig {
                    grid_dim: (parts as u32, rows as u32, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: the arguments match `argmax_part_*` in decode.cu.
                unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
                let g = function(dev, "argmax_final")?;
                let mut lb = stream.launch_builder(&g);
                lb.arg(&pv).arg(&pi).arg(&mut out).arg(&pn);
                let cfg = LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: (32, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: the arguments match `argmax_final` in decode.cu.
                unsafe { lb.launch(cfg) }.map_err(|e| err("argmax_final", e))?;
                Ok(out)
            }
            let (rows, n) = lx.shape().dims2()?;
            let o = contiguous_start(lx, "logits")?;
            let dev = x.device.clone();
            let out = match &x.slice {
                S::F32(v) => run(&dev, "argmax_part_f32", v.slice(o..), rows, n)?,
                S::F16(v) => run(&dev, "argmax_part_f16", v.slice(o..), rows, n)?,
                S::BF16(v) => run(&dev, "argmax_part_bf16", v.slice(o..), rows, n)?,
                _ => candle_core::bail!("argmax: logits must be a float dtype"),
            };
            Ok((
                CudaStorage {
                    slice: S::U32(out),
                    device: dev,
                },
                Shape::from(rows),
            ))
        }
    }

    pub(super) fn decode_attention(
        op: &DecodeAttention,
        (nkv, cap, hd): (usize, usize, usize),
        (q, lq): (&CudaStorage, &Layout),
        (k, lk): (&CudaStorage, &Layout),
        (v, lv): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        #[allow(clippy::too_many_arguments)]
        fn run<T: DeviceRepr>(
            dev: &CudaDevice,
            name: &'static str,
            op: &DecodeAttention,
            (nkv, cap, hd): (usize, usize, usize),
            qs: CudaView<'_, T>,
            ks: CudaView<'_, T>,
            vs: CudaView<'_, T>,
            i: &CudaView<'_, u32>,
        ) -> Result<CudaSlice<T>> {
            // head_dim 64, 128 or 256: the block-wide kernel (decode_attn64_*_G).
            let wide = match hd {
                64 => Some("1"),
                128 => Some("2"),
                256 => Some("4"),
                _ => None,
            };
            let f = match wide {
                Some(g) => function(
                    dev,
                    kernel_name(&format!("decode_attn64_{}_{g}", &name[12..]))?,
                )?,
                None => function(dev, name)?,
            };
            let n = op.b * op.heads * hd;
            // SAFETY: every element is written by the kernel before it is read.
            let mut out = unsafe { dev.alloc::<T>(n) }?;
            let warps = 4u32;
            let (bi, nhi, nkvi, capi, hdi) =
                (int(op.b)?, int(op.heads)?, int(nkv)?, int(cap)?, int(hd)?);
            let window = int(op.window.unwrap_or(0))?;
            let scale = op.scale;
            let stream = dev.cuda_stream();
            let mut lb = stream.launch_builder(&f);
            lb.arg(&qs)
                .arg(&ks)
                .arg(&vs)
                .arg(&mut out)
                .arg(i)
                .arg(&bi)
                .arg(&nhi)
                .arg(&nkvi)
                .arg(&capi)
                .arg(&hdi)
                .arg(&window)
                .arg(&scale);
            let cfg = LaunchConfig {
                grid_dim: (op.heads as u32, op.b as u32, 1),
                block_dim: (32 * warps, 1, 1),
                shared_mem_bytes: if wide.is_some() {
                    0
                } else {
                    warps * hd as u32 * 4
                },
            };
            // SAFETY: the argument list matches `decode_attn_*` in decode.cu; shapes were
            // checked by `DecodeAttention::dims`; head_dim <= 256 (`supported`).
            unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
            Ok(out)
        }
        let dev = q.device.clone();
        let (istore, il) = op.idx.storage_and_layout();
        let Storage::Cuda(istore) = &*istore else {
            candle_core::bail!("decode attention: the index buffer is not on the GPU");
        };
        let i = istore
            .as_cuda_slice::<u32>()?
            .slice(contiguous_start(il, "the index buffer")?..);
        let (oq, ok, ov) = (
            contiguous_start(lq, "the query")?,
            contiguous_start(lk, "the key cache")?,
            contiguous_start(lv, "the value cache")?,
        );
        let dims = (nkv, cap, hd);
        let slice = match (&q.slice, &k.slice, &v.slice) {
            (S::F32(q), S::F32(k), S::F32(v)) => S::F32(run(
                &dev,
                "decode_attn_f32",
                op,
                dims,
                q.slice(oq..),
                k.slice(ok..),
                v.slice(ov..),
                &i,
            )?),
            (S::F16(q), S::F16(k), S::F16(v)) => S::F16(run(
                &dev,
                "decode_attn_f16",
                op,
                dims,
                q.slice(oq..),
                k.slice(ok..),
                v.slice(ov..),
                &i,
            )?),
            (S::BF16(q), S::BF16(k), S::BF16(v)) => S::BF16(run(
                &dev,
                "decode_attn_bf16",
                op,
                dims,
                q.slice(oq..),
                k.slice(ok..),
                v.slice(ov..),
                &i,
            )?),
            _ => candle_core::bail!("decode attention: query and caches must share a float dtype"),
        };
        Ok((
            CudaStorage { slice, device: dev },
            Shape::from((op.b, op.heads * hd)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// [`Gemv`] (with and without a bias, 1 to 8 rows, f32 and bf16) gives candle's
    /// `x w^T + b`; shapes it does not take are refused by [`Gemv::takes`].
    #[test]
    fn gemv_matches_a_matmul_and_bias() {
        let dev = Device::Cpu;
        for dt in [DType::F32, DType::BF16] {
            for b in 1..=GEMV_MAX_ROWS {
                let x = Tensor::randn(0f32, 1., (b, 64), &dev)
                    .unwrap()
                    .to_dtype(dt)
                    .unwrap();
                let w = Tensor::randn(0f32, 1., (24, 64), &dev)
                    .unwrap()
                    .to_dtype(dt)
                    .unwrap();
                let bias = Tensor::randn(0f32, 1., 24, &dev)
                    .unwrap()
                    .to_dtype(dt)
                    .unwrap();
                assert!(Gemv::takes(&x, &w));
                for bias in [None, Some(bias)] {
                    let got = x
                        .apply_op2_no_bwd(&w, &Gemv { bias: bias.clone() })
                        .unwrap();
                    let mut want = x.matmul(&w.t().unwrap()).unwrap();
                    if let Some(bias) = &bias {
                        want = want.broadcast_add(bias).unwrap();
                    }
                    let d = (got.to_dtype(DType::F32).unwrap()
                        - want.to_dtype(DType::F32).unwrap())
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                    let tol = if dt == DType::F32 { 1e-4 } else { 0.1 };
                    assert!(d < tol, "{dt:?} b={b}: {d}");
                }
            }
        }
        let x = Tensor::zeros((9, 64), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((24, 64), DType::F32, &dev).unwrap();
        assert!(!Gemv::takes(&x, &w), "more than 8 rows");
        assert!(!Gemv::takes(
            &x.narrow(0, 0, 2).unwrap(),
            &w.narrow(1, 0, 62).unwrap()
        ));
    }
}
