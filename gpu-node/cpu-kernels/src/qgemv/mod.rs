//! Decode GEMV on the CPU over GGML-quantized weights in the file's own block layout
//! (issue 18): `y[r, n] = Σ_k x[r, k] · w[n, k]` for a step's few rows `r`, with `w` in
//! Q4_K or Q6_K blocks read straight from the loaded tensor; also Q4_1 (the embedded
//! default's type, which candle has no SIMD product for) and Q8_0 rows whose width is not
//! a multiple of 256 (which candle's tiles do not take), against the input quantized per
//! 32 values.
//!
//! Why our own: a decode step on the CPU streams every weight byte once, so its speed is
//! the memory's. candle's x86 kernels first repack Q4_K into 16-row tiles with f32 scales
//! and mins (0.75 bytes a weight instead of the file's 0.5625, kept beside the file's
//! blocks), take one GGML type per fused call (Q4_K_M files mix Q4_K and Q6_K inside q|k|v),
//! and leave Q6_K at one row to a dot product per block and row. Here both types are read
//! as stored, and every matrix on one input (q|k|v, gate|up) shares one parallel region.
//!
//! How: the input rows are quantized once per call to GGML's Q8_K form (per 256 values
//! one f32 scale, 256 int8, 16 sums of 16), as llama.cpp does; each weight block is loaded
//! once for all (at most [`MAX_ROWS`]) input rows; products are AVX2 `maddubs` (u8 × i8
//! pairs) then `madd` with the block's sub-scales, one float multiply-add per block, and
//! the weights 1 KiB ahead are prefetched (without it the loads wait on memory: half the
//! speed). Work is split in units of [`UNIT_ROWS`] output rows over candle's barrier pool
//! (the threads every other CPU op of the step runs on). Needs AVX2, FMA and F16C
//! ([`available`]); the caller falls back to candle otherwise.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// Values per quantized activation block (GGML's `QK_K`).
const QK: usize = 256;
/// Output rows per unit of work handed to a thread.
const UNIT_ROWS: usize = 16;

static ENABLED: AtomicBool = AtomicBool::new(true);
static AVX512: AtomicBool = AtomicBool::new(true);

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Turns the AVX-512 form of the Q4_1 kernel off (`false`, leaving the AVX2 one) or on
/// where the CPU has it, so that a benchmark compares both in one run.
pub fn set_avx512(on: bool) {
    AVX512.store(on, Ordering::Relaxed);
}

/// Whether Q4_1 rows go through the AVX-512 kernel (the CPU has AVX-512 F, BW, VNNI and
/// VBMI, and [`set_avx512`] left it on).
fn use_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::supported() && AVX512.load(Ordering::Relaxed)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Turns the kernel off (`false`) or on for this process, so that a benchmark can compare
/// it with candle's path in one run (dayshift-node's `gpu-node/examples/decode_speed.rs`).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether this CPU runs the kernel (x86-64 with AVX2, FMA and F16C) and it is enabled.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        }) && ENABLED.load(Ordering::Relaxed)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Values per block of the 32-value types (Q4_1, Q8_0) and of their quantized input.
const QK32: usize = 32;

/// The GGML types the kernel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4K,
    Q6K,
    /// Q4_1: 20-byte blocks of 32 (f16 d, f16 min, 16 bytes of nibbles).
    Q41,
    /// Q8_0: 34-byte blocks of 32 (f16 d, 32 int8), only where candle's tiles do not take
    /// it (rows not a multiple of 256 wide: SmolLM2's 576).
    Q80,
}

impl Kind {
    fn of(t: GgmlDType) -> Option<Kind> {
        match t {
            GgmlDType::Q4K => Some(Kind::Q4K),
            GgmlDType::Q6K => Some(Kind::Q6K),
            GgmlDType::Q4_1 => Some(Kind::Q41),
            GgmlDType::Q8_0 => Some(Kind::Q80),
            _ => None,
        }
    }

    /// Bytes of one weight row of `k` values.
    fn row_bytes(self, k: usize) -> usize {
        match self {
            Kind::Q4K => k / QK * 144,
            Kind::Q6K => k / QK * 210,
            Kind::Q41 => k / QK32 * 20,
            Kind::Q80 => k / QK32 * 34,
        }
    }

    /// Whether its input is quantized per 32 values ([`Act32`]) rather than per 256.
    fn per32(self) -> bool {
        matches!(self, Kind::Q41 | Kind::Q80)
    }

    /// Whether the kernel takes a row of `k` values of this type at `m` input rows: the
    /// K-quants 256-aligned at up to [`MAX_ROWS`] rows; Q4_1 and (not 256-aligned) Q8_0 at
    /// any count, [`ROWS32_PER_PASS`] rows per pass over the weights (candle has no SIMD
    /// Q4_1 product, and runs those Q8_0 rows one dot product per row and block).
    fn takes(self, k: usize, m: usize) -> bool {
        match self {
            Kind::Q4K | Kind::Q6K => k.is_multiple_of(QK) && (1..=MAX_ROWS).contains(&m),
            Kind::Q41 => k.is_multiple_of(QK32) && m >= 1,
            Kind::Q80 => k.is_multiple_of(QK32) && !k.is_multiple_of(QK) && m >= 1,
        }
    }
}

/// Most input rows [`gemv`] takes, all in one pass over the weights. Per row it spends
/// about ten instructions per 64 weights, where candle's 16-row tiles (AVX-512 VNNI) need
/// two: from 2 rows on candle's kernels are as fast (`gpu-node/examples/qgemv_speed.rs`: Q4_K at 2
/// rows 12–15 GB/s both), and at 4 rows and more faster (a prompt's 60 rows: 3×).
pub const MAX_ROWS: usize = 2;

/// Input rows per pass over the weights for Q4_1 and Q8_0 ([`Kind::per32`]): a CPU node's
/// decode step carries one row per running sequence, and each pass streams every weight
/// byte again (at 2 rows a pass, 6 concurrent chats read SmolLM2's weights 3 times a step).
const ROWS32_PER_PASS: usize = 8;

/// Whether [`gemv`] takes the weight `w` (`[n, k]`) for `m` input rows `k` wide: Q4_K or
/// Q6_K at most [`MAX_ROWS`] rows with `k` a multiple of 256; Q4_1, and Q8_0 whose `k` is
/// not a multiple of 256, at any number of rows (the callers send prompt chunks of
/// `dayshift_node::model::llama::CPU_GEMM_MIN_ROWS` rows and more to a GEMM first); the tensor on the
/// CPU.
///
/// Measured on the 2-core Xeon dev machine (`gpu-node/examples/qgemv_speed.rs`, Qwen3-0.6B shapes,
/// GB/s of the file's bytes): Q4_K at 1 row 17.5 vs candle's 17–19 (candle reads its
/// 0.75-byte tiles, 33 % more bytes), Q6_K 17–22 vs 18–20 at 1 row and 14–16 vs 12–13 at
/// 2. Q8_0 is left to candle: its tiles hold the file's bytes and its dot product is
/// cheaper than this row-wise one (16–24 vs 13–18 GB/s).
pub fn takes(w: &QTensor, k: usize, m: usize) -> bool {
    available()
        && k > 0
        && w.device().is_cpu()
        && Kind::of(w.dtype()).is_some_and(|t| t.takes(k, m))
        && w.shape().dims() == [w.shape().dims()[0], k]
}

/// Whether [`gemv`] on a prompt chunk's rows (any count, [`ROWS32_PER_PASS`] a pass over
/// the weight) beats dequantizing the weight for one f32 GEMM: Q4_1 on the AVX-512
/// kernel. SmolLM2-135M Q4_1 on the 2-core dev machine (`gpu-node/examples/prefill_speed.rs`,
/// chunks of 256, tok/s against the GEMM's in the same session): 64 tokens 526 vs 150–190,
/// 128 tokens 496 vs 208–216, 256 tokens 389 vs 355, 1,024 tokens 340 vs 314. (Measured
/// where the weights fit the L3 cache, as SmolLM2's do; Q4_1 is the embedded default's
/// type. The AVX2 kernel stays below 64 rows: it is half as fast.)
pub fn beats_gemm(w: &QTensor) -> bool {
    available() && use_avx512() && w.dtype() == GgmlDType::Q4_1 && w.device().is_cpu()
}

/// Whether candle's x86 tile kernels take the quantized weight `w` (`[n, k]`) at `m` input
/// rows: 16-row tiles of int8 dot products (AVX-512 VNNI, AVX-VNNI or AVX2), the same
/// rule as candle 0.11's `repack_x86::select` (private there): Q4_K at any level, Q6_K
/// from 2 rows, Q8_0 with VNNI; `k` a multiple of 256 and `n` of 16. Where they do, they
/// beat dequantizing the weight to f32 for one GEMM at every prompt-chunk size
/// (`gpu-node/examples/prefill_speed.rs` on this machine, 1536 × 768 at 256 rows: Q4_K 3.25 vs
/// 7.80 ms, Q8_0 1.89 vs 7.55).
pub fn candle_tiles_take(w: &QTensor, m: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let Ok((n, k)) = w.shape().dims2() else {
            return false;
        };
        let vnni = (has!("avx512f") && has!("avx512vnni")) || (has!("avxvnni") && has!("avx2"));
        let any = vnni || (has!("avx2") && has!("fma"));
        any && w.device().is_cpu()
            && k > 0
            && k.is_multiple_of(QK)
            && n.is_multiple_of(16)
            && match w.dtype() {
                GgmlDType::Q4K => true,
                GgmlDType::Q6K => m > 1,
                GgmlDType::Q8_0 => vnni,
                _ => false,
            }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, m);
        false
    }
}

/// One block of the input `xb` as int8 `qb` at 1/127 of its largest magnitude (rounded
/// half away from zero; `f32::round` is a library call here); returns the scale. A block
/// of zeros gets scale 0, a non-finite one NaN (the model's output shows it anyway), and
/// both keep their int8 values at 0.
fn quantize_block(xb: &[f32], qb: &mut [i8]) -> f32 {
    let amax = xb.iter().fold(0f32, |s, v| s.max(v.abs()));
    if amax == 0.0 || !amax.is_finite() {
        return if amax.is_finite() { 0.0 } else { f32::NAN };
    }
    let iscale = 127.0 / amax;
    for (q, v) in qb.iter_mut().zip(xb) {
        let r = v * iscale;
        *q = (r + 0.5f32.copysign(r)) as i8;
    }
    amax / 127.0
}

/// The input rows in Q8_K form: per row `k / 256` blocks of a scale, 256 int8 values and
/// 16 sums of 16 values.
struct Act {
    k: usize,
    d: Vec<f32>,
    qs: Vec<i8>,
    bsums: Vec<i16>,
}

impl Act {
    fn quantize(x: &[f32], m: usize, k: usize) -> Act {
        let nb = k / QK;
        let mut a = Act {
            k,
            d: vec![0.0; m * nb],
            qs: vec![0; m * k],
            bsums: vec![0; m * k / 16],
        };
        for ((xb, qb), (d, sums)) in x
            .chunks_exact(QK)
            .zip(a.qs.chunks_exact_mut(QK))
            .zip(a.d.iter_mut().zip(a.bsums.chunks_exact_mut(QK / 16)))
        {
            *d = quantize_block(xb, qb);
            for (s, q16) in sums.iter_mut().zip(qb.chunks_exact(16)) {
                *s = q16.iter().map(|&q| q as i16).sum();
            }
        }
        a
    }

    fn nb(&self) -> usize {
        self.k / QK
    }
}

/// The input rows quantized per 32 values for Q4_1 and Q8_0 (GGML's Q8_1 form): per block
/// a scale `d`, 32 int8 and `s` = d · Σ q (the term Q4_1's per-block minimum multiplies).
struct Act32 {
    k: usize,
    d: Vec<f32>,
    s: Vec<f32>,
    qs: Vec<i8>,
}

impl Act32 {
    fn quantize(x: &[f32], m: usize, k: usize) -> Act32 {
        let nb = k / QK32;
        let mut a = Act32 {
            k,
            d: vec![0.0; m * nb],
            s: vec![0.0; m * nb],
            qs: vec![0; m * k],
        };
        for ((xb, qb), (d, s)) in x
            .chunks_exact(QK32)
            .zip(a.qs.chunks_exact_mut(QK32))
            .zip(a.d.iter_mut().zip(a.s.iter_mut()))
        {
            *d = quantize_block(xb, qb);
            *s = *d * qb.iter().map(|&q| q as i32).sum::<i32>() as f32;
        }
        a
    }

    fn nb(&self) -> usize {
        self.k / QK32
    }
}

/// The input of one pass in the forms its weights need.
struct Acts {
    k256: Option<Act>,
    k32: Option<Act32>,
    /// `k32` per group of 4 blocks, where Q4_1 rows take the AVX-512 kernel.
    #[cfg(target_arch = "x86_64")]
    groups41: Option<avx512::GroupInput>,
}

/// `x @ w.t()` for each weight of `ws` on the same input `x` (`[.., rows, k]`, any float
/// dtype, on the CPU) in one parallel region; `None` when [`takes`] refuses one of them
/// (the caller then uses candle's matmul). The outputs are f32, `[.., rows, n_i]`.
pub fn gemv(ws: &[&QTensor], x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    let k = x.dim(candle_core::D::Minus1)?;
    let m = x.elem_count() / k.max(1);
    if !x.device().is_cpu() || ws.is_empty() || !ws.iter().all(|w| takes(w, k, m)) {
        return Ok(None);
    }
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut parts = Vec::with_capacity(ws.len());
    for w in ws {
        let Some(kind) = Kind::of(w.dtype()) else {
            return Ok(None);
        };
        let n = w.shape().dims()[0];
        let data = w.data()?;
        if data.len() != n * kind.row_bytes(k) {
            candle_core::bail!(
                "cpu_qgemv: {:?} weight [{n}, {k}] holds {} bytes, expected {}",
                w.dtype(),
                data.len(),
                n * kind.row_bytes(k)
            );
        }
        parts.push((kind, n, data));
    }
    let mut outs: Vec<Vec<f32>> = parts.iter().map(|(_, n, _)| vec![0f32; m * n]).collect();
    let mut starts = Vec::with_capacity(parts.len());
    let mut units = 0;
    for (_, n, _) in &parts {
        starts.push(units);
        units += n.div_ceil(UNIT_ROWS);
    }
    let (any256, any32) = (
        parts.iter().any(|p| !p.0.per32()),
        parts.iter().any(|p| p.0.per32()),
    );
    // Input rows per pass over the weights: all of them for the K-quants (at most
    // MAX_ROWS, `takes`), ROWS32_PER_PASS for the 32-value types.
    let per_pass = if any256 { MAX_ROWS } else { ROWS32_PER_PASS };
    for r0 in (0..m).step_by(per_pass) {
        let mc = (m - r0).min(per_pass);
        let xc = &xs[r0 * k..(r0 + mc) * k];
        let k32 = any32.then(|| Act32::quantize(xc, mc, k));
        let acts = Acts {
            k256: any256.then(|| Act::quantize(xc, mc, k)),
            #[cfg(target_arch = "x86_64")]
            groups41: k32
                .as_ref()
                .filter(|_| use_avx512() && parts.iter().any(|p| p.0 == Kind::Q41))
                .map(|a| avx512::GroupInput::new(a, mc)),
            k32,
        };
        let dsts: Vec<usize> = outs
            .iter_mut()
            .zip(&parts)
            .map(|(o, (_, n, _))| o[r0 * n..].as_mut_ptr() as usize)
            .collect();
        let run = |range: std::ops::Range<usize>| {
            for u in range {
                let i = starts.partition_point(|&s| s <= u) - 1;
                let (kind, n, data) = &parts[i];
                let rows = (u - starts[i]) * UNIT_ROWS..((u - starts[i] + 1) * UNIT_ROWS).min(*n);
                // SAFETY: each unit writes only its own output rows (columns of `outs[i]`,
                // rows r0..r0 + mc), and `outs` outlives the parallel region.
                unsafe { rows_into(*kind, data, rows, *n, &acts, mc, dsts[i] as *mut f32) };
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(units, run);
    }
    let mut lead: Vec<usize> = x.dims().to_vec();
    lead.pop();
    parts
        .iter()
        .zip(outs)
        .map(|((_, n, _), o)| {
            let mut dims = lead.clone();
            dims.push(*n);
            Tensor::from_vec(o, dims, &candle_core::Device::Cpu)
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Output rows `rows` of one weight for all `m` input rows, into `dst` (`[m, n]`).
///
/// # Safety
/// `dst` points to `m * n` f32 that no other thread writes in `rows`; `m` ≤ [`MAX_ROWS`]
/// for the K-quants, ≤ [`ROWS32_PER_PASS`] for the 32-value types;
/// the CPU has AVX2, FMA and F16C; `data` holds `n` rows of `kind` blocks `k` wide, and
/// `acts` holds the form `kind` reads.
unsafe fn rows_into(
    kind: Kind,
    data: &[u8],
    rows: std::ops::Range<usize>,
    n: usize,
    acts: &Acts,
    m: usize,
    dst: *mut f32,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let k = match (&acts.k256, &acts.k32) {
            (Some(a), _) => a.k,
            (_, Some(a)) => a.k,
            _ => return,
        };
        let rb = kind.row_bytes(k);
        for row in rows {
            let w = &data[row * rb..(row + 1) * rb];
            let mut out = [0f32; ROWS32_PER_PASS];
            // SAFETY: the caller's contract (AVX2, FMA, F16C; whole blocks); m ≤ MAX_ROWS
            // for the K-quants, ≤ ROWS32_PER_PASS for the others (each kernel reads MT rows).
            unsafe {
                match (kind, m, &acts.k256, &acts.k32) {
                    (Kind::Q4K, 1, Some(a), _) => avx2::q4k::<1>(w, a, &mut out),
                    (Kind::Q4K, _, Some(a), _) => avx2::q4k::<2>(w, a, &mut out),
                    (Kind::Q6K, 1, Some(a), _) => avx2::q6k::<1>(w, a, &mut out),
                    (Kind::Q6K, _, Some(a), _) => avx2::q6k::<2>(w, a, &mut out),
                    (Kind::Q41, _, _, Some(a)) => match &acts.groups41 {
                        Some(ps) => q41_avx512(m, w, a, ps, &mut out),
                        None => per32_rows(avx2::Q41, m, w, a, &mut out),
                    },
                    (Kind::Q80, _, _, Some(a)) => per32_rows(avx2::Q80, m, w, a, &mut out),
                    _ => return,
                }
            }
            for (r, v) in out[..m].iter().enumerate() {
                // SAFETY: row < n and r < m.
                unsafe { *dst.add(r * n + row) = *v };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kind, data, rows, n, acts, m, dst);
    }
}

/// One Q4_1 weight row against `m` (1 to [`ROWS32_PER_PASS`]) input rows on AVX-512.
///
/// # Safety
/// The CPU has AVX-512 F, BW, VNNI and VBMI; `w` whole blocks of `act.k` values; `act`
/// and `ps` hold `m` rows.
#[cfg(target_arch = "x86_64")]
unsafe fn q41_avx512(m: usize, w: &[u8], act: &Act32, ps: &avx512::GroupInput, out: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe {
        match m {
            1 => avx512::q41::<1>(w, act.nb(), ps, out),
            2 => avx512::q41::<2>(w, act.nb(), ps, out),
            3 => avx512::q41::<3>(w, act.nb(), ps, out),
            4 => avx512::q41::<4>(w, act.nb(), ps, out),
            5 => avx512::q41::<5>(w, act.nb(), ps, out),
            6 => avx512::q41::<6>(w, act.nb(), ps, out),
            7 => avx512::q41::<7>(w, act.nb(), ps, out),
            _ => avx512::q41::<8>(w, act.nb(), ps, out),
        }
    }
}

/// One weight row of a 32-value type against `m` (1 to [`ROWS32_PER_PASS`]) input rows.
///
/// # Safety
/// As [`rows_into`]: AVX2, FMA and F16C; `w` whole blocks of `act.k` values; `act` holds
/// `m` rows.
#[cfg(target_arch = "x86_64")]
unsafe fn per32_rows(t: avx2::Per32, m: usize, w: &[u8], act: &Act32, out: &mut [f32]) {
    use avx2::Per32::*;
    // SAFETY: the caller's contract.
    unsafe {
        match (t, m) {
            (Q41, 1) => avx2::q41::<1>(w, act, out),
            (Q41, 2) => avx2::q41::<2>(w, act, out),
            (Q41, 3) => avx2::q41::<3>(w, act, out),
            (Q41, 4) => avx2::q41::<4>(w, act, out),
            (Q41, 5) => avx2::q41::<5>(w, act, out),
            (Q41, 6) => avx2::q41::<6>(w, act, out),
            (Q41, 7) => avx2::q41::<7>(w, act, out),
            (Q41, _) => avx2::q41::<8>(w, act, out),
            (Q80, 1) => avx2::q80::<1>(w, act, out),
            (Q80, 2) => avx2::q80::<2>(w, act, out),
            (Q80, 3) => avx2::q80::<3>(w, act, out),
            (Q80, 4) => avx2::q80::<4>(w, act, out),
            (Q80, 5) => avx2::q80::<5>(w, act, out),
            (Q80, 6) => avx2::q80::<6>(w, act, out),
            (Q80, 7) => avx2::q80::<7>(w, act, out),
            (Q80, _) => avx2::q80::<8>(w, act, out),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Act, Act32, QK, QK32};
    use core::arch::x86_64::*;

    /// The 32-value types' kernels ([`super::per32_rows`]).
    #[derive(Clone, Copy)]
    pub(super) enum Per32 {
        Q41,
        Q80,
    }
    pub(super) use Per32::{Q41, Q80};

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load(p: *const u8) -> __m256i {
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }

    /// Bytes ahead of the block being read that the kernels ask the cache for: the
    /// hardware prefetcher alone leaves the loads waiting on memory (measured with
    /// `gpu-node/examples/qgemv_speed.rs`).
    const PREFETCH_AHEAD: usize = 1024;

    /// Asks for the cache lines of `len` bytes at `p + PREFETCH_AHEAD`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn prefetch(p: *const u8, len: usize) {
        let mut o = 0;
        while o < len {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + o) as *const i8);
            o += 64;
        }
    }

    /// An f16 at `p` (2-byte aligned or not) as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_at(p: *const u8) -> f32 {
        let h = unsafe { (p as *const u16).read_unaligned() };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }

    /// Q4_K (144-byte blocks: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128
    /// bytes of nibbles; byte i of qs[32 j..] holds value 64 j + i low and 64 j + 32 + i
    /// high): value = d · scale · q − dmin · min per sub-block of 32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4k<const MT: usize>(w: &[u8], act: &Act, out: &mut [f32]) {
        let nb = act.nb();
        debug_assert!(w.len() >= nb * 144);
        let m4 = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); MT];
        let aq: [*const u8; MT] =
            std::array::from_fn(|r| act.qs[r * act.k..].as_ptr() as *const u8);
        let bsums: [*const i16; MT] = std::array::from_fn(|r| act.bsums[r * nb * 16..].as_ptr());
        let ds: [*const f32; MT] = std::array::from_fn(|r| act.d[r * nb..].as_ptr());
        for b in 0..nb {
            let blk = unsafe { w.as_ptr().add(b * 144) };
            prefetch(blk, 144);
            let (d, dmin) = unsafe { (f16_at(blk), f16_at(blk.add(2))) };
            // GGML's 6-bit scales and mins, unpacked as llama.cpp does: u[0..2] the 8
            // scales, u[2..4] the 8 mins, a byte each.
            let raw: [u32; 3] = std::array::from_fn(|i| unsafe {
                (blk.add(4 + 4 * i) as *const u32).read_unaligned()
            });
            let (k1, k2, k3) = (0x3f3f_3f3f_u32, 0x0f0f_0f0f_u32, 0x0303_0303_u32);
            let u = [
                raw[0] & k1,
                (raw[2] & k2) | (((raw[0] >> 6) & k3) << 4),
                raw[1] & k1,
                ((raw[2] >> 4) & k2) | (((raw[1] >> 6) & k3) << 4),
            ];
            let sc = |j: usize| ((u[j / 4] >> (8 * (j % 4))) & 0xff) as i16;
            // The mins, each twice (one per 16-value sum of the input), as 16 i16.
            let m8 = _mm_set_epi32(0, 0, u[3] as i32, u[2] as i32);
            let mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
            let qs = unsafe { blk.add(16) };
            let mut sumi = [_mm256_setzero_si256(); MT];
            for j in 0..4 {
                let q = unsafe { load(qs.add(32 * j)) };
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                let s_lo = _mm256_set1_epi16(sc(2 * j));
                let s_hi = _mm256_set1_epi16(sc(2 * j + 1));
                for (s, a) in sumi.iter_mut().zip(aq) {
                    let a = unsafe { a.add(b * QK + 64 * j) };
                    let (alo, ahi) = unsafe { (load(a), load(a.add(32))) };
                    let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, alo), s_lo);
                    let phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, ahi), s_hi);
                    *s = _mm256_add_epi32(*s, _mm256_add_epi32(plo, phi));
                }
            }
            for r in 0..MT {
                let ad = unsafe { *ds[r].add(b) };
                let bs = unsafe { load(bsums[r].add(16 * b) as *const u8) };
                let mins = _mm256_cvtepi32_ps(_mm256_madd_epi16(mins16, bs));
                acc[r] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), _mm256_set1_ps(d * ad), acc[r]);
                acc[r] = _mm256_fnmadd_ps(mins, _mm256_set1_ps(dmin * ad), acc[r]);
            }
        }
        for r in 0..MT {
            out[r] = hsum(acc[r]);
        }
    }

    /// Q6_K (210-byte blocks: ql[128] low nibbles, qh[64] high 2 bits, 16 int8 scales, f16
    /// d): value = d · scale · (q − 32) per sub-block of 16.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q6k<const MT: usize>(w: &[u8], act: &Act, out: &mut [f32]) {
        let nb = act.nb();
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x03);
        let mut acc = [_mm256_setzero_ps(); MT];
        let aq: [*const u8; MT] =
            std::array::from_fn(|r| act.qs[r * act.k..].as_ptr() as *const u8);
        for b in 0..nb {
            let blk = &w[b * 210..(b + 1) * 210];
            prefetch(blk.as_ptr(), 210);
            let d = unsafe { f16_at(blk.as_ptr().add(208)) };
            let scales = &blk[192..208];
            let ql = blk.as_ptr();
            let qh = blk[128..].as_ptr();
            let mut sumi = [_mm256_setzero_si256(); MT];
            for h in 0..2 {
                let (ql0, ql1, qhv) = unsafe {
                    (
                        load(ql.add(64 * h)),
                        load(ql.add(64 * h + 32)),
                        load(qh.add(32 * h)),
                    )
                };
                let hb = |s: i32| match s {
                    0 => _mm256_slli_epi16(_mm256_and_si256(qhv, m2), 4),
                    2 => _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qhv, 2), m2), 4),
                    4 => _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qhv, 4), m2), 4),
                    _ => _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qhv, 6), m2), 4),
                };
                let qv = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), hb(0)),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), hb(2)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), hb(4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), hb(6)),
                ];
                for (i, q) in qv.iter().enumerate() {
                    let s = 8 * h + 2 * i;
                    let scv = _mm256_set_m128i(
                        _mm_set1_epi16(scales[s + 1] as i8 as i16),
                        _mm_set1_epi16(scales[s] as i8 as i16),
                    );
                    for (acc_i, a) in sumi.iter_mut().zip(aq) {
                        let a = unsafe { load(a.add(b * QK + 128 * h + 32 * i)) };
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*q, a), scv);
                        *acc_i = _mm256_add_epi32(*acc_i, p);
                    }
                }
            }
            // The −32 offset: 32 · Σ scale_s · (sum of the input's 16 values of s).
            let sc16 =
                _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(scales.as_ptr() as *const __m128i) });
            for r in 0..MT {
                let ab = r * nb + b;
                let bs =
                    unsafe { _mm256_loadu_si256(act.bsums[ab * 16..].as_ptr() as *const __m256i) };
                let off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);
                acc[r] = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[r], off)),
                    _mm256_set1_ps(d * act.d[ab]),
                    acc[r],
                );
            }
        }
        for r in 0..MT {
            out[r] = hsum(acc[r]);
        }
    }

    /// Q4_1 (20-byte blocks of 32: f16 d, f16 min, 16 bytes whose low nibbles are values
    /// 0..16 and high nibbles 16..32): value = d · q + min, so a block's product with the
    /// input is d · dx · Σ q·xq + min · (dx · Σ xq).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q41<const MT: usize>(w: &[u8], act: &Act32, out: &mut [f32]) {
        let nb = act.nb();
        debug_assert!(w.len() >= nb * 20);
        let m4 = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); MT];
        let mut accm = [0f32; MT];
        for b in 0..nb {
            let blk = unsafe { w.as_ptr().add(b * 20) };
            prefetch(blk, 20);
            let (d, mn) = unsafe { (f16_at(blk), f16_at(blk.add(2))) };
            let raw = unsafe { _mm_loadu_si128(blk.add(4) as *const __m128i) };
            let q = _mm256_set_m128i(
                _mm_and_si128(_mm_srli_epi16(raw, 4), m4),
                _mm_and_si128(raw, m4),
            );
            for r in 0..MT {
                let ab = r * nb + b;
                let a = unsafe { load(act.qs[ab * QK32..].as_ptr() as *const u8) };
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), ones);
                acc[r] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * act.d[ab]), acc[r]);
                accm[r] += mn * act.s[ab];
            }
        }
        for r in 0..MT {
            out[r] = hsum(acc[r]) + accm[r];
        }
    }

    /// Q8_0 (34-byte blocks of 32: f16 d, 32 int8): value = d · q; the signed products
    /// as |q| · (x with q's sign) through `maddubs`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q80<const MT: usize>(w: &[u8], act: &Act32, out: &mut [f32]) {
        let nb = act.nb();
        debug_assert!(w.len() >= nb * 34);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); MT];
        for b in 0..nb {
            let blk = unsafe { w.as_ptr().add(b * 34) };
            prefetch(blk, 34);
            let d = unsafe { f16_at(blk) };
            let q = unsafe { load(blk.add(2)) };
            let aq = _mm256_sign_epi8(q, q);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let ab = r * nb + b;
                let a = unsafe { load(act.qs[ab * QK32..].as_ptr() as *const u8) };
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(a, q)), ones);
                *acc_r =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * act.d[ab]), *acc_r);
            }
        }
        for r in 0..MT {
            out[r] = hsum(acc[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Random weights quantized to `t`, inputs of `m` rows: the kernel against the f32
    /// product of the dequantized weight, relative to the largest output.
    fn check(t: GgmlDType, n: usize, k: usize, m: usize) -> f32 {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, t).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let want = x.matmul(&q.dequantize(&dev).unwrap().t().unwrap()).unwrap();
        let got = gemv(&[&q], &x)
            .unwrap()
            .expect("the kernel takes it")
            .remove(0);
        max_abs(&(got - &want).unwrap()) / max_abs(&want)
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Every x86-64 CPU the node is deployed on has AVX2, FMA and F16C (2013 on): the
    /// tests run the kernel rather than skip it.
    fn assert_available() {
        assert!(
            !cfg!(target_arch = "x86_64") || available(),
            "cpu_qgemv: this x86-64 CPU lacks AVX2, FMA or F16C"
        );
    }

    #[test]
    fn each_type_tracks_the_dequantized_product_at_every_row_count() {
        assert_available();
        if !available() {
            return; // not x86-64: the kernel is not built
        }
        for t in [GgmlDType::Q4K, GgmlDType::Q6K] {
            for m in 1..=MAX_ROWS {
                let e = check(t, 40, 512, m);
                // Only the input's 8-bit rounding differs: under 1 % here.
                assert!(e < 0.02, "{t:?} at {m} rows: error {e}");
            }
        }
        // The 32-value types at SmolLM2's width (576, not a multiple of 256), at every row
        // count of one pass and at more (ROWS32_PER_PASS per pass over the weights).
        for t in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            for m in [1, 2, 3, 4, 5, 6, 7, 8, 11] {
                let e = check(t, 40, 576, m);
                assert!(e < 0.02, "{t:?} at {m} rows: error {e}");
            }
        }
    }

    #[test]
    fn several_weights_of_mixed_types_share_one_call() {
        assert_available();
        if !available() {
            return; // not x86-64: the kernel is not built
        }
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 256), &dev).unwrap();
        let ws: Vec<QTensor> = [
            (GgmlDType::Q4K, 48),
            (GgmlDType::Q4K, 17),
            (GgmlDType::Q6K, 33),
        ]
        .iter()
        .map(|&(t, n)| {
            QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, 256), &dev).unwrap(), t).unwrap()
        })
        .collect();
        let refs: Vec<&QTensor> = ws.iter().collect();
        let outs = gemv(&refs, &x).unwrap().expect("taken");
        for (w, y) in ws.iter().zip(&outs) {
            let alone = gemv(&[w], &x).unwrap().expect("taken").remove(0);
            assert_eq!(y.dims(), alone.dims());
            assert_eq!(max_abs(&(y - &alone).unwrap()), 0.0);
        }
    }

    #[test]
    fn candle_tiles_take_the_k_quants_and_q8_0_at_multiples_of_256() {
        let dev = Device::Cpu;
        let q = |t, n, k| QTensor::quantize(&Tensor::zeros((n, k), DType::F32, &dev).unwrap(), t);
        let on_x86 = cfg!(target_arch = "x86_64");
        let q4k = q(GgmlDType::Q4K, 32, 512).unwrap();
        assert_eq!(candle_tiles_take(&q4k, 64), on_x86);
        let q6k = q(GgmlDType::Q6K, 32, 512).unwrap();
        assert_eq!(candle_tiles_take(&q6k, 64), on_x86);
        assert!(
            !candle_tiles_take(&q6k, 1),
            "Q6_K at one row stays on compact blocks"
        );
        // SmolLM2's 576-wide Q8_0 layers and the legacy types: no tiles (dequantize + GEMM).
        assert!(!candle_tiles_take(
            &q(GgmlDType::Q8_0, 32, 576).unwrap(),
            64
        ));
        assert!(!candle_tiles_take(
            &q(GgmlDType::Q4_1, 32, 512).unwrap(),
            64
        ));
        assert!(!candle_tiles_take(&q(GgmlDType::Q4K, 24, 512).unwrap(), 64));
    }

    #[test]
    fn other_types_and_more_rows_are_left_to_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 256), &dev).unwrap();
        for t in [
            GgmlDType::Q4_0,
            GgmlDType::Q8_0,
            GgmlDType::Q5K,
            GgmlDType::Q5_0,
        ] {
            let q =
                QTensor::quantize(&Tensor::randn(0f32, 1.0, (8, 256), &dev).unwrap(), t).unwrap();
            assert!(gemv(&[&q], &x).unwrap().is_none(), "{t:?}");
        }
        let q = QTensor::quantize(
            &Tensor::randn(0f32, 1.0, (8, 256), &dev).unwrap(),
            GgmlDType::Q4K,
        )
        .unwrap();
        let rows = Tensor::randn(0f32, 1.0, (MAX_ROWS + 1, 256), &dev).unwrap();
        assert!(gemv(&[&q], &rows).unwrap().is_none());
        assert_eq!(gemv(&[&q], &x).unwrap().is_some(), available());
        // Q4_1 at any width of whole blocks; Q8_0 only where candle's tiles cannot take it.
        let q41 = QTensor::quantize(
            &Tensor::randn(0f32, 1.0, (8, 256), &dev).unwrap(),
            GgmlDType::Q4_1,
        )
        .unwrap();
        assert_eq!(gemv(&[&q41], &rows).unwrap().is_some(), available());
    }
}
