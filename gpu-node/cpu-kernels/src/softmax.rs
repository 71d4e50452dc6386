//! The masked softmax of a prompt chunk's attention on the CPU, in one pass: scale, causal
//! (and sliding-window) mask, softmax. candle's path builds an `[n, total]` mask tensor,
//! adds it, then runs `softmax_last_dim` with the C library's scalar `expf` on every
//! element, masked ones included; this op exponentiates only the keys a query sees, with
//! an exp the compiler vectorizes. Measured by `gpu-node/examples/prefill_speed.rs`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Softmax over the last dim of `scores` (`[.., n, total]`, f32 on the CPU; every group
/// of `n` rows is one head's queries at positions `start..start + n`, `total = start + n`)
/// of `scale * scores`, where query `p` sees keys `0..=p`, or with `window` only the last
/// `window` of them; keys it does not see get probability 0.
pub fn causal_softmax(
    scores: &Tensor,
    n: usize,
    start: usize,
    window: Option<usize>,
    scale: f32,
) -> Result<Tensor> {
    scores.apply_op1_no_bwd(&CausalSoftmax {
        n,
        start,
        window,
        scale,
    })
}

struct CausalSoftmax {
    n: usize,
    start: usize,
    window: Option<usize>,
    scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(src) = storage else {
            candle_core::bail!("causal-softmax: f32 only");
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal-softmax: input has to be contiguous");
        };
        let src = &src[o1..o2];
        let dims = layout.shape().dims();
        let total = dims.last().copied().unwrap_or(0);
        if total != self.start + self.n || self.n == 0 || !src.len().is_multiple_of(total) {
            candle_core::bail!(
                "causal-softmax: last dim {total} is not start {} + n {}",
                self.start,
                self.n
            );
        }
        let mut dst = vec![0f32; src.len()];
        src.par_chunks(total)
            .zip(dst.par_chunks_mut(total))
            .enumerate()
            .for_each(|(r, (s, d))| {
                let p = self.start + r % self.n;
                let first = self.window.map_or(0, |w| (p + 1).saturating_sub(w));
                softmax_row(&s[first..=p], &mut d[first..=p], self.scale);
            });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// `d = softmax(scale * s)` (`scale > 0`). Reductions run over 8 independent lanes so
/// that the compiler vectorizes them (a single float accumulator is a serial chain).
fn softmax_row(s: &[f32], d: &mut [f32], scale: f32) {
    let max = lanes(s, f32::NEG_INFINITY, |a, x| if x > a { x } else { a });
    let max = max.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
    for (x, y) in s.iter().zip(d.iter_mut()) {
        *y = exp_fast(x * scale - max);
    }
    let sum: f32 = lanes(d, 0.0, |a, x| a + x).iter().sum();
    let inv = 1.0 / sum;
    for y in d.iter_mut() {
        *y *= inv;
    }
}

/// Folds `v` into 8 lane accumulators (lane i takes elements i, i+8, …).
#[inline(always)]
fn lanes(v: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> [f32; 8] {
    let mut acc = [init; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] = f(acc[i], c[i]);
        }
    }
    for (i, &x) in chunks.remainder().iter().enumerate() {
        acc[i] = f(acc[i], x);
    }
    acc
}

/// `e^x` for `x ≤ 0` within 3e-7 relative, in plain arithmetic that the compiler
/// vectorizes: `x = n ln2 + f` with an integer `n` (exponent bits) and `|f| ≤ ln2/2`
/// (Cody–Waite split of ln2, so `f` stays exact for large `|x|`), `e^f` by its degree-7
/// Taylor polynomial.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 355.0 / 512.0; // 9 significant bits: n · LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4; // ln2 - LN2_HI
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    f32::from_bits(p.to_bits().wrapping_add(((n as i32) << 23) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_fast_matches_exp() {
        let mut worst = 0f32;
        let mut x = -80f32;
        while x <= 0.0 {
            let (a, b) = (exp_fast(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(-200.0) < 1e-37);
    }

    /// Equal to scale, causal (windowed) mask and softmax computed row by row in f64,
    /// with and without a window.
    #[test]
    fn matches_mask_then_softmax() {
        let (heads, n, start) = (3, 5, 4);
        let total = start + n;
        let s = Tensor::randn(0f32, 3.0, (1, heads, n, total), &Device::Cpu).unwrap();
        let scores = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for window in [None, Some(3)] {
            let got = causal_softmax(&s, n, start, window, 0.5)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut worst = 0f64;
            for (row, (g, x)) in got.chunks(total).zip(scores.chunks(total)).enumerate() {
                let p = start + row % n;
                let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
                let seen = |j: usize| j >= lo && j <= p;
                let max = (lo..=p).map(|j| 0.5 * x[j] as f64).fold(f64::MIN, f64::max);
                let sum: f64 = (lo..=p).map(|j| (0.5 * x[j] as f64 - max).exp()).sum();
                for j in 0..total {
                    let want = if seen(j) {
                        (0.5 * x[j] as f64 - max).exp() / sum
                    } else {
                        0.0
                    };
                    worst = worst.max((g[j] as f64 - want).abs());
                }
            }
            assert!(worst < 1e-6, "{window:?}: {worst}");
        }
    }
}
