//! Keeping the fused decode step's weight stream ahead in the GPU's L2 cache (issue 17,
//! an experiment behind `DAYSHIFT_BENCH_L2_PREFETCH_MIB`).
//!
//! A batch-1 decode step reads every weight once, GEMV after GEMV. Each GEMV starts its
//! weight stream only when it is launched, so DRAM idles while a kernel ramps up, while
//! a short GEMV drains, and during attention: qwen05's 24 layers of small matrices reach
//! 26 % of the bandwidth limit on an H200. With a window of `W` bytes, each GEMV kernel
//! of the step also asks the GPU (`cp.async.bulk.prefetch.L2`, sm_90) to bring into L2
//! the weight bytes that entered the window with it: the window is the `W` bytes of the
//! step's weight stream that follow the GEMV's own, so every byte is asked for once, `W`
//! bytes before the kernel that reads it. [`plan`] computes each GEMV's ranges once, from
//! the weights' device addresses (the model keeps them, so a captured graph may bake the
//! ranges in).

/// Most ranges one kernel prefetches (`L2Ranges` in `cuda/decode.cu`); bytes of the
/// window past them are not prefetched.
pub const RANGES: usize = 8;

/// The weight bytes one GEMV kernel asks the GPU to bring into L2: up to [`RANGES`]
/// ranges of device memory, each 16-byte aligned with a length that is a multiple of 16,
/// filled from the first (`bytes` 0: none; the kernel stops at an empty first range).
/// Passed to the kernel by value, as `cuda/decode.cu`'s `L2Ranges`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Ranges {
    /// Device address of each range.
    pub ptr: [u64; RANGES],
    /// Length of each range in bytes.
    pub bytes: [u64; RANGES],
}

impl L2Ranges {
    /// Total bytes asked for.
    pub fn total(&self) -> u64 {
        self.bytes.iter().sum()
    }

    /// Nothing to prefetch (ranges fill from the first): the kernel without the prefetch
    /// runs.
    pub fn is_empty(&self) -> bool {
        self.bytes[0] == 0
    }
}

/// One weight matrix (or quantized segment) of the step: device address and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Device address of its first byte.
    pub ptr: u64,
    /// Its length in bytes.
    pub bytes: u64,
}

/// Per GEMV of a decode step (in launch order; each GEMV reads the extents given for it,
/// in order), the ranges it prefetches to keep the next `window` bytes of the step's
/// weight stream in L2. The first GEMV fills the window; each later one asks for the
/// bytes that enter it as its own leave. Nothing past the step's last weight (the next
/// step's first layer would be evicted by the head's stream long before it is read).
pub fn plan(gemvs: &[Vec<Extent>], window: u64) -> Vec<L2Ranges> {
    // The stream: every extent with its offset, and each GEMV's end offset.
    let mut stream = Vec::new();
    let mut ends = Vec::with_capacity(gemvs.len());
    let mut at = 0u64;
    for g in gemvs {
        for e in g {
            stream.push((at, *e));
            at += e.bytes;
        }
        ends.push(at);
    }
    let total = at;
    let mut out = Vec::with_capacity(gemvs.len());
    let mut start = 0u64;
    for &end in &ends {
        let lo = if start == 0 {
            end
        } else {
            (start.saturating_add(window)).max(end)
        };
        let hi = end.saturating_add(window).min(total);
        out.push(if window == 0 {
            L2Ranges::default()
        } else {
            ranges(&stream, lo, hi)
        });
        start = end;
    }
    out
}

/// The stream bytes `[lo, hi)` as device ranges: at most [`RANGES`], each trimmed
/// inward to 16-byte boundaries.
fn ranges(stream: &[(u64, Extent)], lo: u64, hi: u64) -> L2Ranges {
    let mut r = L2Ranges::default();
    let mut n = 0;
    for &(off, e) in stream {
        if n == RANGES || off >= hi {
            break;
        }
        let (a, b) = (lo.max(off), hi.min(off + e.bytes));
        if a >= b {
            continue;
        }
        let start = (e.ptr + (a - off)).next_multiple_of(16);
        let end = (e.ptr + (b - off)) & !15;
        if end > start {
            r.ptr[n] = start;
            r.bytes[n] = end - start;
            n += 1;
        }
    }
    r
}

/// The window in bytes: `DAYSHIFT_BENCH_L2_PREFETCH_MIB` (MiB; read once), 0 (off) when
/// unset or not a number. A benchmark switch until the GPU figures decide a default.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub fn window_bytes() -> u64 {
    static W: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *W.get_or_init(|| {
        std::env::var("DAYSHIFT_BENCH_L2_PREFETCH_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(0, |m| m.saturating_mul(1 << 20))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(ptr: u64, bytes: u64) -> Extent {
        Extent { ptr, bytes }
    }

    /// The bytes each plan asks for, as (stream offset, length) pieces, given the
    /// extents (ptr = stream offset + a base per extent).
    fn asked(gemvs: &[Vec<Extent>], plan: &[L2Ranges]) -> Vec<(u64, u64)> {
        let mut map = Vec::new();
        let mut at = 0;
        for e in gemvs.iter().flatten() {
            map.push((e.ptr, e.bytes, at));
            at += e.bytes;
        }
        let mut v = Vec::new();
        for r in plan {
            for i in 0..RANGES {
                if r.bytes[i] == 0 {
                    continue;
                }
                let &(p, _, off) = map
                    .iter()
                    .find(|(p, b, _)| r.ptr[i] >= *p && r.ptr[i] + r.bytes[i] <= p + b)
                    .expect("every range lies in one extent");
                v.push((off + r.ptr[i] - p, r.bytes[i]));
            }
        }
        v
    }

    /// Sorted (offset, length) pieces as merged [start, end) ranges; panics on overlap.
    fn merged(pieces: &[(u64, u64)]) -> Vec<(u64, u64)> {
        merged_ranges(pieces.iter().map(|&(o, l)| (o, o + l)).collect())
    }

    fn merged_ranges(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        r.sort();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (a, b) in r {
            match out.last_mut() {
                Some(last) if last.1 == a => last.1 = b,
                Some(last) => {
                    assert!(last.1 < a, "overlap at {a}");
                    out.push((a, b));
                }
                None => out.push((a, b)),
            }
        }
        out
    }

    #[test]
    fn every_byte_is_asked_for_once_and_ahead_of_its_gemv() {
        // A layer like qwen05's (q|k|v, o, gate|up, down; KiB) twice, then a head,
        // each extent at its own 256-aligned address.
        let sizes = [1_152u64, 896, 4_864 * 2, 896 * 2];
        let mut gemvs = Vec::new();
        let mut base = 1u64 << 30;
        for _ in 0..2 {
            for s in sizes {
                gemvs.push(vec![ext(base, s << 10)]);
                base += (s << 10) + 4096;
            }
        }
        gemvs.push(vec![ext(base, 50_000 << 10)]);
        let total: u64 = gemvs.iter().flatten().map(|e| e.bytes).sum();
        for window in [4u64 << 20, 16 << 20, 1 << 40] {
            let plan = plan(&gemvs, window);
            assert_eq!(plan.len(), gemvs.len());
            let mut pieces = asked(&gemvs, &plan);
            pieces.sort();
            // No byte twice, and exactly the bytes of each later GEMV that lie within
            // the window from its own start (the rest of a GEMV longer than the window
            // is read by its own kernel); every length here is a multiple of 16.
            let mut expected = Vec::new();
            let mut start = 0;
            for (j, g) in gemvs.iter().enumerate() {
                let len: u64 = g.iter().map(|e| e.bytes).sum();
                if j > 0 {
                    expected.push((start, start + len.min(window)));
                }
                start += len;
            }
            assert_eq!(start, total);
            assert_eq!(merged(&pieces), merged_ranges(expected), "window {window}");
            // Each GEMV asks only for bytes after its own and within the window.
            let mut end = 0;
            for (g, r) in gemvs.iter().zip(&plan) {
                end += g.iter().map(|e| e.bytes).sum::<u64>();
                for (off, len) in asked(&gemvs, std::slice::from_ref(r)) {
                    assert!(off >= end && off + len <= end + window);
                }
            }
        }
    }

    #[test]
    fn a_gemv_of_several_extents_and_the_range_limit() {
        // q, k, v as separate quantized segments: the window crosses them in order.
        let gemvs = vec![
            vec![ext(0x1000, 64)],
            vec![ext(0x2000, 32), ext(0x3000, 32), ext(0x4000, 32)],
            vec![ext(0x5000, 32), ext(0x6000, 32)],
        ];
        let p = plan(&gemvs, 128);
        assert_eq!(p[0].ptr[..4], [0x2000, 0x3000, 0x4000, 0x5000]);
        assert_eq!(p[0].bytes[..5], [32, 32, 32, 32, 0]);
        // The second GEMV's own bytes leave the window: the last extent enters it.
        assert_eq!((p[1].ptr[0], p[1].bytes[0], p[1].total()), (0x6000, 32, 32));
        assert_eq!(p[2].total(), 0);
        // Nine extents in one window: a kernel takes eight ranges, the ninth is not
        // prefetched by anyone.
        let many: Vec<Vec<Extent>> = (0..10).map(|i| vec![ext(0x1000 * (i + 1), 32)]).collect();
        let p = plan(&many, 9 * 32);
        assert_eq!(
            p[0].ptr,
            [
                0x2000, 0x3000, 0x4000, 0x5000, 0x6000, 0x7000, 0x8000, 0x9000
            ]
        );
        assert!(p[1..].iter().all(|r| r.total() == 0));
        // Off: nothing anywhere.
        assert!(
            plan(&gemvs, 0)
                .iter()
                .all(|r| r.total() == 0 && r.is_empty())
        );
        // Unaligned edges are trimmed inward.
        let odd = vec![vec![ext(0x1000, 40)], vec![ext(0x2008, 100)]];
        let p = plan(&odd, 1 << 20);
        assert_eq!((p[0].ptr[0], p[0].bytes[0]), (0x2010, 0x50));
    }
}
