//! The Q4_1 row kernel on AVX-512 with VNNI and VBMI (Ice Lake, Sapphire Rapids, Zen 4 and
//! later), four 32-value blocks per step, reading the file's blocks as stored.
//!
//! Why: the AVX2 kernel ([`super::avx2::q41`]) spends about 16 instructions on each block
//! of 32 weights (two scalar f16 conversions, a scalar multiply and broadcast, a scalar
//! minimum term, then `maddubs` + `madd` + convert + FMA); on SmolLM2's layers, which sit
//! in this machine's L3 cache, that, not memory, bounds it (7–8 GB/s against 19–25 GB/s
//! for the K-quants, `gpu-node/examples/qgemv_speed.rs`). Here two masked loads take four blocks
//! (80 bytes), one two-register byte permute (`vpermt2b`) gathers their 64 nibble bytes,
//! a shift and two ANDs yield the 128 values, two `vpdpbusd` form their products with
//! the input's 128 int8, and a second permute + two `vcvtph2ps` give the 4 blocks' scales
//! and minimums as vectors: about 16 instructions per 128 weights at one input row.
//!
//! The input is laid out per group of 4 blocks once per call ([`GroupInput`]), so the loop
//! reads it in the weights' order and multiplies whole vectors.

use super::{Act32, QK32};
use core::arch::x86_64::*;

/// Bytes of one Q4_1 block (f16 d, f16 min, 16 bytes of nibbles).
const Q41_BYTES: usize = 20;
/// Blocks per step of the kernel: 128 weights, 80 bytes.
const GROUP: usize = 4;
/// Bytes of one group's input values in the kernel's order ([`GroupInput`]).
const GROUP_QS: usize = GROUP * QK32;

/// Output byte `o` of the nibble permute over a group's 80 bytes (two registers: indices
/// from 64 pick the second): block `o / 16`'s nibble byte `o % 16` (byte `i` of a block's
/// 16 holds value `i` low and value `16 + i` high).
static NIB_IDX: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut o = 0;
    while o < 64 {
        t[o] = ((o / 16) * Q41_BYTES + 4 + o % 16) as u8;
        o += 1;
    }
    t
};

/// f16 lane `t` of the scale permute: lanes 0–15 the blocks' `d` (4 lanes each: the
/// lanes their products land in), lanes 16–31 their minimums the same way.
static SCALE_IDX: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut lane = 0;
    while lane < 32 {
        let src = ((lane % 16) / 4) * Q41_BYTES + (lane / 16) * 2;
        t[2 * lane] = src as u8;
        t[2 * lane + 1] = src as u8 + 1;
        lane += 1;
    }
    t
};

/// Whether this CPU has what the kernel needs (AVX-512 F, BW, VNNI and VBMI).
pub(super) fn supported() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
    })
}

/// The input rows laid out per group of 4 blocks as the kernel reads them, once per call:
/// `qs` = the 4 blocks' first 16 values, then their last 16 (the order of the weights' low
/// and high nibbles); `dx` = `[d₀ × 4, d₁ × 4, d₂ × 4, d₃ × 4]` and `sx` = `[s₀, 0, 0, 0,
/// s₁, …]` as the kernel's 16 float lanes. Blocks past the row's last are zeros.
pub(super) struct GroupInput {
    groups: usize,
    qs: Vec<i8>,
    dx: Vec<f32>,
    sx: Vec<f32>,
}

impl GroupInput {
    /// For the `m` rows of `act`.
    pub(super) fn new(act: &Act32, m: usize) -> GroupInput {
        let nb = act.nb();
        let groups = nb.div_ceil(GROUP);
        let mut g = GroupInput {
            groups,
            qs: vec![0; m * groups * GROUP_QS],
            dx: vec![0.0; m * groups * 16],
            sx: vec![0.0; m * groups * 16],
        };
        for r in 0..m {
            for b in 0..nb {
                let (gi, i) = (r * groups + b / GROUP, b % GROUP);
                let src = &act.qs[(r * nb + b) * QK32..][..QK32];
                let dst = &mut g.qs[gi * GROUP_QS..][..GROUP_QS];
                dst[i * 16..][..16].copy_from_slice(&src[..16]);
                dst[64 + i * 16..][..16].copy_from_slice(&src[16..]);
                g.dx[gi * 16 + i * 4..][..4].fill(act.d[r * nb + b]);
                g.sx[gi * 16 + i * 4] = act.s[r * nb + b];
            }
        }
        g
    }
}

/// Q4_1 row `w` (value = d · q + min) against the `MT` rows of `act`, into `out[..MT]`.
///
/// # Safety
/// The CPU has AVX-512 F, BW, VNNI and VBMI ([`supported`]); `w` holds `nb` blocks, the
/// count `g` was made for; `g` holds at least `MT` rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
pub(super) unsafe fn q41<const MT: usize>(w: &[u8], nb: usize, g: &GroupInput, out: &mut [f32]) {
    debug_assert!(w.len() >= nb * Q41_BYTES && g.groups == nb.div_ceil(GROUP));
    // SAFETY: the statics are 64 bytes each.
    let (nib_idx, scale_idx) = unsafe {
        (
            _mm512_loadu_si512(NIB_IDX.as_ptr() as *const _),
            _mm512_loadu_si512(SCALE_IDX.as_ptr() as *const _),
        )
    };
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); MT];
    let mut accm = [_mm512_setzero_ps(); MT];
    for j in 0..g.groups {
        // A last group of fewer blocks reads zeros past them (weights and input alike),
        // which add nothing.
        let bytes = (nb - j * GROUP).min(GROUP) * Q41_BYTES;
        let lo_mask = if bytes >= 64 {
            !0u64
        } else {
            (1u64 << bytes) - 1
        };
        let hi_mask = (1u64 << bytes.saturating_sub(64)) - 1;
        let p = unsafe { w.as_ptr().add(j * GROUP * Q41_BYTES) };
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(1024) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(1024 + 64) as *const i8);
        // SAFETY: the masks keep both loads inside the row's blocks.
        let (z0, z1) = unsafe {
            (
                _mm512_maskz_loadu_epi8(lo_mask, p as *const i8),
                _mm512_maskz_loadu_epi8(hi_mask, p.add(64) as *const i8),
            )
        };
        let raw = _mm512_permutex2var_epi8(z0, nib_idx, z1);
        let q_lo = _mm512_and_si512(raw, m4);
        let q_hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), m4);
        let sc = _mm512_permutex2var_epi8(z0, scale_idx, z1);
        let d = _mm512_cvtph_ps(_mm512_castsi512_si256(sc));
        let mn = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(sc));
        for r in 0..MT {
            // SAFETY: group j of row r lies in g.
            unsafe {
                let gi = r * g.groups + j;
                let a = g.qs.as_ptr().add(gi * GROUP_QS);
                let prod = _mm512_dpbusd_epi32(
                    _mm512_dpbusd_epi32(
                        _mm512_setzero_si512(),
                        q_lo,
                        _mm512_loadu_si512(a as *const _),
                    ),
                    q_hi,
                    _mm512_loadu_si512(a.add(64) as *const _),
                );
                let dx = _mm512_loadu_ps(g.dx.as_ptr().add(gi * 16));
                let sx = _mm512_loadu_ps(g.sx.as_ptr().add(gi * 16));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(prod), _mm512_mul_ps(d, dx), acc[r]);
                accm[r] = _mm512_fmadd_ps(mn, sx, accm[r]);
            }
        }
    }
    for r in 0..MT {
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r], accm[r]));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Act32, avx2};
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Every row of random Q4_1 weights at widths that leave 0–3 blocks in the last group,
    /// at 1–8 input rows: the AVX-512 kernel against the AVX2 one on the same quantized
    /// input (they differ only in the order of the float sums).
    #[test]
    fn q41_matches_the_avx2_kernel_at_every_group_remainder() {
        if !supported() {
            // The dispatch then never reaches this kernel; the AVX2 one has its own tests.
            eprintln!("avx512::q41: this CPU lacks AVX-512 VNNI/VBMI, kernel not run");
            return;
        }
        let dev = Device::Cpu;
        for k in [32, 64, 96, 128, 160, 224, 576, 1536] {
            let (n, nb) = (5, k / QK32);
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
            let data = q.data().unwrap();
            for m in 1..=8 {
                let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &dev)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let act = Act32::quantize(&x, m, k);
                let g = GroupInput::new(&act, m);
                for row in 0..n {
                    let wr = &data[row * nb * Q41_BYTES..(row + 1) * nb * Q41_BYTES];
                    let (mut got, mut want) = ([0f32; 8], [0f32; 8]);
                    // SAFETY: supported() above; whole blocks; m rows in act and g.
                    unsafe {
                        match m {
                            1 => q41::<1>(wr, nb, &g, &mut got),
                            2 => q41::<2>(wr, nb, &g, &mut got),
                            3 => q41::<3>(wr, nb, &g, &mut got),
                            4 => q41::<4>(wr, nb, &g, &mut got),
                            5 => q41::<5>(wr, nb, &g, &mut got),
                            6 => q41::<6>(wr, nb, &g, &mut got),
                            7 => q41::<7>(wr, nb, &g, &mut got),
                            _ => q41::<8>(wr, nb, &g, &mut got),
                        }
                        avx2::q41::<8>(wr, &Act32::quantize(&pad(&x, m, k), 8, k), &mut want);
                    }
                    for r in 0..m {
                        let tol = 1e-4 * (1.0 + want[r].abs());
                        assert!(
                            (got[r] - want[r]).abs() <= tol,
                            "k {k}, m {m}, weight row {row}, input row {r}: {} vs {}",
                            got[r],
                            want[r]
                        );
                    }
                }
            }
        }
    }

    /// `x`'s `m` rows followed by zero rows up to 8.
    fn pad(x: &[f32], m: usize, k: usize) -> Vec<f32> {
        let mut v = x.to_vec();
        v.resize(8 * k, 0.0);
        debug_assert!(m <= 8);
        v
    }
}
