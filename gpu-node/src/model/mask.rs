//! Attention masks of a batched step: causal, and causal within a sliding window
//! (transformers' `sliding_window_overlay`: a query at position q sees keys `kv > q - w`,
//! `w` keys itself included).

use candle_core::{DType, Device, Result, Tensor};

/// `[n, start + n]` mask: row i (position p = start+i) sees columns `0..=p`, or with a
/// window of `w` keys only `p+1-w..=p` (transformers: `kv > q - w`).
pub(crate) fn causal_mask(
    n: usize,
    start: usize,
    window: Option<usize>,
    dev: &Device,
    dt: DType,
) -> Result<Tensor> {
    let total = start + n;
    let mut m = vec![0f32; n * total];
    for i in 0..n {
        let p = start + i;
        let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
        for (j, x) in m[i * total..(i + 1) * total].iter_mut().enumerate() {
            if j < first || j > p {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (n, total), dev)?.to_dtype(dt)
}

/// `[slots * lmax]` decode mask: slot s (holding `lens[s]` tokens, its query the last)
/// sees keys `0..lens[s]`, or with a window of `w` keys only the last `w` of them; `None`
/// when nothing is masked.
pub(crate) fn decode_mask(lens: &[usize], lmax: usize, window: Option<usize>) -> Option<Vec<f32>> {
    let mut mask = vec![0f32; lens.len() * lmax];
    let mut any = false;
    for (s, &l) in lens.iter().enumerate() {
        let first = window.map_or(0, |w| l.saturating_sub(w));
        for (j, x) in mask[s * lmax..(s + 1) * lmax].iter_mut().enumerate() {
            if j < first || j >= l {
                *x = f32::NEG_INFINITY;
                any = true;
            }
        }
    }
    any.then_some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row i of the prefill mask sees `p + 1 - w ..= p`; decode sees the last `w` keys.
    #[test]
    fn window_masks() {
        let m: Vec<Vec<f32>> = causal_mask(3, 2, Some(2), &Device::Cpu, DType::F32)
            .unwrap()
            .to_vec2()
            .unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(
            m,
            [
                [inf, 0.0, 0.0, inf, inf],
                [inf, inf, 0.0, 0.0, inf],
                [inf, inf, inf, 0.0, 0.0]
            ]
        );
        assert_eq!(decode_mask(&[3, 3], 3, None), None);
        assert_eq!(decode_mask(&[3, 3], 3, Some(3)), None);
        assert_eq!(
            decode_mask(&[3, 1], 3, Some(2)).unwrap(),
            [inf, 0.0, 0.0, 0.0, inf, inf]
        );
    }
}
