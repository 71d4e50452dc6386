//! The fused decode step as a fixed list of kernel launches over buffers allocated once
//! (issue 17; how the node captures its decode graphs by default since session 17,
//! other modes for measurements by `DAYSHIFT_BENCH_STATIC_STEP`, see [`StaticStepMode`]).
//!
//! The decode graphs are normally captured from [`super::llama::Llama::forward_decode`]:
//! candle operations, each allocating its output inside the capture, so the graph holds an
//! allocation and a free node around every kernel. With those between them, programmatic
//! dependent launch (PDL, sm_90) cannot overlap one kernel's start with the previous one's
//! end (`bench/gpu/results/h200-s13/graph_nodes.txt`: a bare chain of kernels 1.04 → 0.73 µs
//! a kernel with PDL; with the memory nodes, no gain). Here the same kernels, in the same
//! order and with the same arguments as the fused step, write into buffers this step owns:
//! the graph is kernels only. With [`StaticStepMode::Pdl`] each is launched with
//! programmatic stream serialization: once a kernel has waited for the one before it, the
//! next kernel's blocks start, load their first weights while it computes, then wait
//! (`pdl_wait`, `pdl_launch_dependents` in `cuda/decode.cu`; at most one kernel ahead). Whether that is worth it is for `bench/gpu/step_variants.sh` to measure.
//!
//! The kernels' argument lists are written here a second time (the candle operations in
//! `decode_ops/cuda.rs` push their own): [`SIGNATURES`] lists each kernel's parameters,
//! every launch built here is checked against it, and a test checks it against the CUDA
//! sources.

/// How the decode graphs are built (`DAYSHIFT_BENCH_STATIC_STEP`): by default from the
/// static step's launches, with programmatic dependent launch (on sm_90 and newer), RoPE
/// inside the attention kernel, the GEMV launch shapes below and, for models at most
/// [`PAIR_MAX_HIDDEN`] wide, the SwiGLU moved into the gate|up GEMV; or as named: from
/// candle operations (`off`), or the static step with the flags given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticStepMode {
    /// The static step at all (else the graphs are captured from candle operations).
    pub on: bool,
    /// Each kernel launched with programmatic dependent launch (where the GPU has it:
    /// sm_90 and newer; launched plainly before).
    pub pdl: bool,
    /// Dense layers: the gate|up GEMV writes silu(gate) · up (`gemvfs_*`), and the down
    /// projection stages it as it is, instead of every one of its blocks computing it.
    /// `None`: where the hidden size is at most [`PAIR_MAX_HIDDEN`] ([`Self::pairs`]).
    pub pair: Option<bool>,
    /// RoPE, the q/k norms and the new token's key/value write done inside the decode
    /// attention kernel (`decode_attn_rope_pdl_*`) instead of a `rope_qkv` launch of
    /// their own before it: one launch per layer less. On by default where the attention
    /// kernel has it (head size 64): on the H100 Qwen2.5-0.5B's batch-1 decode went
    /// 1,212 → 1,306 tok/s with it and Llama-3.2-1B's 849 → 860
    /// (`bench/gpu/results/h100-s20/rope-ab/`).
    pub rope_in_attention: bool,
    /// Dense GEMVs with long rows (k ≥ [`SPLIT_MIN_K`] and k ≥ 4 n: a narrow model's
    /// down projection) take 4 warps a row (`gemvfk_*`) instead of one, so that a row is
    /// in flight at once instead of streamed by one warp in turns. Flag `ks`; on by
    /// default.
    pub split_rows: bool,
    /// Dense GEMVs of at most [`NARROW_MAX_N`] outputs in 4-warp blocks instead of 8 (a
    /// narrow model's q|k|v and o: 112 blocks of 8 warps leave 20 of an H100's 132 SMs
    /// idle). Flag `n4`; on by default (no gain alone, 1.003× with the other two).
    pub narrow_blocks: bool,
    /// The SwiGLU gate|up GEMV keeping 2 pieces a lane in flight instead of 4
    /// (`gemvfs2_*`): 48 registers instead of 64, so 5 of its 8-warp blocks fit an SM
    /// and Qwen2.5-0.5B's 608 blocks run in one wave on 132 SMs. Flag `u2`; on by
    /// default.
    pub pair_u2: bool,
}

/// The shortest row [`StaticStepMode::split_rows`] splits.
pub const SPLIT_MIN_K: usize = 2048;
/// The most outputs [`StaticStepMode::narrow_blocks`] launches in 4-warp blocks.
pub const NARROW_MAX_N: usize = 2048;

/// The widest hidden size for which the default mode moves the SwiGLU into the gate|up
/// GEMV. Measured on the H200 (`bench/gpu/results/h200-s17/`, graph_speed, µs a step,
/// with programmatic dependent launch): Qwen2.5-0.5B (896) 835 → 808 with it, Llama-3.2-1B
/// (2,048) 988 → 1,028, Llama-3.1-8B (4,096) 4,348 → 4,365.
pub const PAIR_MAX_HIDDEN: usize = 1024;

impl Default for StaticStepMode {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl StaticStepMode {
    /// Graphs captured from candle operations (`off`).
    pub const OFF: Self = StaticStepMode {
        on: false,
        pdl: false,
        pair: Some(false),
        rope_in_attention: false,
        split_rows: false,
        narrow_blocks: false,
        pair_u2: false,
    };

    /// The default: the static step with programmatic dependent launch, the SwiGLU in
    /// the gate|up GEMV of narrow models (session 17, `bench/gpu/results/h200-s17/`),
    /// RoPE inside the attention kernel (session 20, `bench/gpu/results/h100-s20/rope-ab/`)
    /// and the launch shapes `u2`, `ks` and `n4` (session 20, `bench/gpu/results/h100-s20/`:
    /// Qwen2.5-0.5B's batch 1 on the H100 1,240 → 1,327 tok/s with all three, 46.2 % of its
    /// limit in the benchmark run; they change nothing for models 4,096 wide).
    pub const DEFAULT: Self = StaticStepMode {
        on: true,
        pdl: true,
        pair: None,
        rope_in_attention: true,
        split_rows: true,
        narrow_blocks: true,
        pair_u2: true,
    };

    /// Whether a dense model `hidden` wide gets the SwiGLU in its gate|up GEMV.
    pub fn pairs(&self, hidden: usize) -> bool {
        self.pair.unwrap_or(hidden <= PAIR_MAX_HIDDEN)
    }

    /// The mode a value of `DAYSHIFT_BENCH_STATIC_STEP` names: unset or empty: the
    /// default; `0` or `off`: candle operations; else flags joined by `+`, from the
    /// default where the first is `default`, else from none: `plain` (the
    /// static step), `pdl` (or `1`: with programmatic dependent launch), `pair` (SwiGLU
    /// in the gate|up GEMV), `rope` (RoPE inside the attention kernel), `ks`, `n4`, `u2`
    /// (the GEMV launch shapes of [`StaticStepMode::split_rows`],
    /// [`StaticStepMode::narrow_blocks`], [`StaticStepMode::pair_u2`]), e.g.
    /// `pdl+pair+rope`. An error names any other value.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        let v = v.map(str::trim).unwrap_or("");
        if v.is_empty() {
            return Ok(Self::DEFAULT);
        }
        if matches!(v, "0" | "off") {
            return Ok(Self::OFF);
        }
        let mut m = StaticStepMode {
            on: true,
            ..Self::OFF
        };
        for (i, flag) in v.split('+').map(str::trim).enumerate() {
            match flag {
                "default" if i == 0 => m = Self::DEFAULT,
                "plain" => {}
                "pdl" | "1" => m.pdl = true,
                "pair" => m.pair = Some(true),
                "rope" => m.rope_in_attention = true,
                "ks" => m.split_rows = true,
                "n4" => m.narrow_blocks = true,
                "u2" => m.pair_u2 = true,
                _ => {
                    return Err(format!(
                        "DAYSHIFT_BENCH_STATIC_STEP={v:?}: expected off, or plain, pdl, pair, rope, ks, n4 and u2 joined by + (first: default, to start from the default)"
                    ));
                }
            }
        }
        Ok(m)
    }

    /// `DAYSHIFT_BENCH_STATIC_STEP` of this process (read once; a bad value is logged
    /// and the default used).
    pub fn from_env() -> Self {
        static MODE: std::sync::OnceLock<StaticStepMode> = std::sync::OnceLock::new();
        *MODE.get_or_init(|| {
            let v = std::env::var("DAYSHIFT_BENCH_STATIC_STEP").ok();
            Self::parse(v.as_deref()).unwrap_or_else(|e| {
                tracing::warn!("{e}; the default is used");
                Self::DEFAULT
            })
        })
    }
}

/// A kernel parameter's kind, as `cuda/decode.cu` declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A device pointer.
    Ptr,
    /// `int`.
    I32,
    /// `float`.
    F32,
    /// `L2Ranges` (by value).
    L2,
}

use ArgKind::{F32, I32, L2, Ptr};

/// The parameters of each kernel family the static step launches (by the name stem
/// before the dtype suffix), in order.
pub const SIGNATURES: &[(&str, &[ArgKind])] = &[
    ("embed_rows", &[Ptr, Ptr, Ptr, I32, I32]),
    ("gemvfp", &[Ptr, Ptr, F32, Ptr, Ptr, Ptr, Ptr, I32, I32, L2]),
    ("gemvfs", &[Ptr, Ptr, F32, Ptr, Ptr, Ptr, Ptr, I32, I32, L2]),
    (
        "gemvfs2",
        &[Ptr, Ptr, F32, Ptr, Ptr, Ptr, Ptr, I32, I32, L2],
    ),
    ("gemvfk", &[Ptr, Ptr, F32, Ptr, Ptr, Ptr, Ptr, I32, I32, L2]),
    (
        "qgemvfp",
        &[
            Ptr, Ptr, F32, Ptr, I32, I32, Ptr, I32, I32, Ptr, I32, I32, Ptr, Ptr, Ptr, I32, I32, L2,
        ],
    ),
    (
        "rope_qkv_pdl",
        &[
            Ptr, Ptr, Ptr, F32, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, I32, I32, I32, I32, I32,
        ],
    ),
    (
        "decode_attn64_pdl",
        &[
            Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, I32, I32, I32, I32, I32, F32, I32,
        ],
    ),
    (
        "decode_attn_rope_pdl",
        &[
            Ptr, Ptr, Ptr, F32, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, I32, I32, I32,
            I32, I32, F32, I32,
        ],
    ),
];

/// The signature of kernel `name` (its stem followed by `_`), if the static step launches it.
pub fn signature(name: &str) -> Option<&'static [ArgKind]> {
    SIGNATURES
        .iter()
        .filter(|(stem, _)| {
            name.strip_prefix(stem)
                .is_some_and(|rest| rest.starts_with('_'))
        })
        // the longest stem: `decode_attn64_pdl` before a shorter one sharing its start
        .max_by_key(|(stem, _)| stem.len())
        .map(|(_, s)| *s)
}

#[cfg(feature = "cuda")]
pub use launch::{AttentionIn, Builder, GemvIn, GemvOut, RopeIn, StaticStep};

#[cfg(feature = "cuda")]
mod launch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_is_the_default_unless_named() {
        let m = StaticStepMode::parse;
        for default in [None, Some(""), Some("  ")] {
            assert_eq!(m(default), Ok(StaticStepMode::DEFAULT));
        }
        for off in [Some("off"), Some(" 0 ")] {
            assert_eq!(m(off), Ok(StaticStepMode::OFF));
        }
        let d = StaticStepMode::DEFAULT;
        assert!(d.on && d.pdl && d.rope_in_attention);
        assert!(d.pairs(896) && d.pairs(PAIR_MAX_HIDDEN) && !d.pairs(2048));
        assert!(!StaticStepMode::OFF.pairs(896));
        let mode = |on, pdl, pair| {
            Ok(StaticStepMode {
                on,
                pdl,
                pair: Some(pair),
                ..StaticStepMode::OFF
            })
        };
        assert_eq!(m(Some("plain")), mode(true, false, false));
        assert_eq!(m(Some("pdl")), mode(true, true, false));
        assert_eq!(m(Some("1")), mode(true, true, false));
        assert_eq!(m(Some("pdl+pair")), mode(true, true, true));
        assert_eq!(m(Some("pair")), mode(true, false, true));
        assert_eq!(m(Some("plain + pair")), mode(true, false, true));
        let with_rope = |m: Result<StaticStepMode, String>| {
            m.map(|m| StaticStepMode {
                rope_in_attention: true,
                ..m
            })
        };
        assert_eq!(m(Some("pdl+pair+rope")), with_rope(mode(true, true, true)));
        assert_eq!(m(Some("rope")), with_rope(mode(true, false, false)));
        let shapes = m(Some("pdl+ks+n4+u2")).unwrap();
        assert!(shapes.split_rows && shapes.narrow_blocks && shapes.pair_u2 && shapes.pdl);
        assert!(d.split_rows && d.narrow_blocks && d.pair_u2);
        assert_eq!(m(Some("default+u2+ks+n4")), Ok(d));
        let plain_shapes = StaticStepMode {
            pair: Some(false),
            split_rows: false,
            narrow_blocks: false,
            pair_u2: false,
            ..d
        };
        assert_eq!(m(Some("pdl+rope")), Ok(plain_shapes));
        assert!(m(Some("pdl+default")).is_err());
        for bad in ["fast", "pdl+fast", "pdl+"] {
            let e = m(Some(bad)).unwrap_err();
            assert!(
                e.contains("DAYSHIFT_BENCH_STATIC_STEP") && e.contains(bad),
                "{e}"
            );
        }
    }

    /// The kinds of a C parameter list (`const T *x, int n, L2Ranges pf`, ...).
    fn kinds(params: &str) -> Vec<ArgKind> {
        params
            .split(',')
            .map(|p| {
                let p = p.trim();
                if p.contains('*') {
                    ArgKind::Ptr
                } else if p.starts_with("int ") {
                    ArgKind::I32
                } else if p.starts_with("float ") {
                    ArgKind::F32
                } else if p.starts_with("L2Ranges ") {
                    ArgKind::L2
                } else {
                    panic!("parameter {p:?}: unknown kind")
                }
            })
            .collect()
    }

    /// Each signature the static step launches with is the parameter list of its kernel
    /// in `cuda/` (a mismatch would pass arguments the kernel reads as something else,
    /// which only a GPU run shows).
    #[test]
    fn signatures_match_the_cuda_sources() {
        let src = concat!(
            include_str!("../../cuda/decode.cu"),
            include_str!("../../cuda/qgemv.cuh")
        );
        for (stem, sig) in SIGNATURES {
            // `void stem_##SUFFIX...(params)` in the instantiation macros.
            let at = src
                .find(&format!(" {stem}_##"))
                .unwrap_or_else(|| panic!("{stem}: no kernel in cuda/"));
            let open = at + src[at..].find('(').expect("(");
            let close = open + src[open..].find(')').expect(")");
            let params: String = src[open + 1..close]
                .lines()
                .map(|l| l.trim_end_matches('\\'))
                .collect();
            assert_eq!(kinds(&params), sig.to_vec(), "{stem}: {params}");
        }
        assert_eq!(
            signature("decode_attn64_pdl_bf16_2").map(<[_]>::len),
            Some(16)
        );
        assert_eq!(signature("gemvfp_bf16_1_2").map(<[_]>::len), Some(10));
        assert_eq!(signature("qgemvfp_f16_2_0").map(<[_]>::len), Some(18));
        assert_eq!(signature("gemvf_bf16_1_2"), None);
        assert_eq!(signature("gemvfs_bf16_3_1").map(<[_]>::len), Some(10));
        assert_eq!(signature("gemvfs2_bf16_1_1").map(<[_]>::len), Some(10));
        assert_eq!(signature("gemvfk_f16_2_0").map(<[_]>::len), Some(10));
        assert_eq!(signature("embed_rows_f32").map(<[_]>::len), Some(5));
        assert_eq!(
            signature("decode_attn_rope_pdl_f16_1").map(<[_]>::len),
            Some(21)
        );
    }
}
