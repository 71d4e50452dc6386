//! The fused decode step as a fixed list of kernel launches over buffers allocated once
//! (an experiment of issue 17, off by default: `DAYSHIFT_BENCH_STATIC_STEP`).
//!
//! The decode graphs are normally captured from [`super::llama::Llama::forward_decode`]:
//! candle operations, each allocating its output inside the capture, so the graph holds an
//! allocation and a free node around every kernel. With those between them, programmatic
//! dependent launch (PDL, sm_90) cannot overlap one kernel's start with the previous one's
//! end (`bench/gpu/results/h200-s13/graph_nodes.txt`: a bare chain of kernels 1.04 → 0.73 µs
//! a kernel with PDL; with the memory nodes, no gain). Here the same kernels, in the same
//! order and with the same arguments as the fused step, write into buffers this step owns:
//! the graph is kernels only. With [`StaticStepMode::Pdl`] each is launched with
//! programmatic stream serialization: the next GEMV's blocks start while the previous
//! kernel ends and load their first weights, then wait (`pdl_wait` in `cuda/decode.cu`)
//! for its output. Whether that is worth it is for `bench/gpu/l2_prefetch.sh` to measure.
//!
//! The kernels' argument lists are written here a second time (the candle operations in
//! `decode_ops/cuda.rs` push their own): [`SIGNATURES`] lists each kernel's parameters,
//! every launch built here is checked against it, and a test checks it against the CUDA
//! sources.

/// How the decode graphs are built (`DAYSHIFT_BENCH_STATIC_STEP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticStepMode {
    /// Captured from candle operations (the default).
    Off,
    /// The static step, plain launches (no memory nodes).
    Plain,
    /// The static step, each kernel launched with programmatic dependent launch.
    Pdl,
}

impl StaticStepMode {
    /// The mode a value of `DAYSHIFT_BENCH_STATIC_STEP` names: unset, empty, `0` or `off`:
    /// off; `plain`; `pdl` or `1`. An error names any other value.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v.map(str::trim) {
            None | Some("" | "0" | "off") => Ok(Self::Off),
            Some("plain") => Ok(Self::Plain),
            Some("pdl" | "1") => Ok(Self::Pdl),
            Some(other) => Err(format!(
                "DAYSHIFT_BENCH_STATIC_STEP={other:?}: expected off, plain or pdl"
            )),
        }
    }

    /// `DAYSHIFT_BENCH_STATIC_STEP` of this process (read once; a bad value is logged
    /// and taken as off).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub fn from_env() -> Self {
        static MODE: std::sync::OnceLock<StaticStepMode> = std::sync::OnceLock::new();
        *MODE.get_or_init(|| {
            let v = std::env::var("DAYSHIFT_BENCH_STATIC_STEP").ok();
            Self::parse(v.as_deref()).unwrap_or_else(|e| {
                tracing::warn!("{e}; the decode graphs are captured from candle operations");
                Self::Off
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
pub use launch::{Builder, GemvIn, GemvOut, StaticStep};

#[cfg(feature = "cuda")]
mod launch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_is_off_unless_named() {
        assert_eq!(StaticStepMode::parse(None), Ok(StaticStepMode::Off));
        assert_eq!(StaticStepMode::parse(Some("off")), Ok(StaticStepMode::Off));
        assert_eq!(StaticStepMode::parse(Some(" 0 ")), Ok(StaticStepMode::Off));
        assert_eq!(
            StaticStepMode::parse(Some("plain")),
            Ok(StaticStepMode::Plain)
        );
        assert_eq!(StaticStepMode::parse(Some("pdl")), Ok(StaticStepMode::Pdl));
        assert_eq!(StaticStepMode::parse(Some("1")), Ok(StaticStepMode::Pdl));
        let e = StaticStepMode::parse(Some("fast")).unwrap_err();
        assert!(
            e.contains("DAYSHIFT_BENCH_STATIC_STEP") && e.contains("\"fast\""),
            "{e}"
        );
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
        assert_eq!(signature("embed_rows_f32").map(<[_]>::len), Some(5));
    }
}
