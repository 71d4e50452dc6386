//! Attention masks of a batched step: causal, and causal within a sliding window
//! (transformers' `sliding_window_overlay`: a query at position q sees keys `kv > q - w`,
//! `w` keys itself included).

use candle_core::{DType, Device, Result, Tensor};

/// `[n, start + n]` mask: row i (position p = start+i) sees columns `0..=p`, or with a
/// window of `w` keys only `p+1-w..=p` (transformers: `kv > q - w`). Built with tensor
/// operations on `dev` (no host buffer, no upload: a long prompt's chunk at 32k keys is
/// 134 M entries).
pub(crate) fn causal_mask(
    n: usize,
    start: usize,
    window: Option<usize>,
    dev: &Device,
    dt: DType,
) -> Result<Tensor> {
    let total = start + n;
    let rows = Tensor::arange(start as u32, total as u32, dev)?.reshape((n, 1))?;
    let cols = Tensor::arange(0u32, total as u32, dev)?.reshape((1, total))?;
    // Masked: a later key (j > p), or with a window one before it (j + w <= p).
    let mut hidden = cols.broadcast_gt(&rows)?;
    if let Some(w) = window {
        let shifted = cols.broadcast_add(&Tensor::new(w as u32, dev)?)?;
        hidden = (hidden + shifted.broadcast_le(&rows)?)?;
    }
    let on = Tensor::zeros((n, total), dt, dev)?;
    let off = Tensor::full(f32::NEG_INFINITY, (n, total), dev)?.to_dtype(dt)?;
    hidden.where_cond(&off, &on)
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
        // Against the rule written out entry by entry, with and without windows.
        for (n, start, window) in [
            (1, 0, None),
            (4, 0, None),
            (5, 7, None),
            (6, 3, Some(4)),
            (9, 20, Some(1)),
        ] {
            let total = start + n;
            let want: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    let p: usize = start + i;
                    let first = window.map_or(0, |w: usize| (p + 1).saturating_sub(w));
                    (0..total)
                        .map(|j| if j < first || j > p { inf } else { 0.0 })
                        .collect()
                })
                .collect();
            for dt in [DType::F32, DType::BF16] {
                let got: Vec<Vec<f32>> = causal_mask(n, start, window, &Device::Cpu, dt)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec2()
                    .unwrap();
                assert_eq!(got, want, "n {n} start {start} window {window:?} {dt:?}");
            }
        }
        assert_eq!(decode_mask(&[3, 3], 3, None), None);
        assert_eq!(decode_mask(&[3, 3], 3, Some(3)), None);
        assert_eq!(
            decode_mask(&[3, 1], 3, Some(2)).unwrap(),
            [inf, 0.0, 0.0, 0.0, inf, inf]
        );
    }
}
