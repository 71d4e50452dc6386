//! dayshift-node's hand-written CPU kernels: the decode GEMV over GGML-quantized weights
//! ([`qgemv`]) and the one-pass causal softmax of a prompt chunk's attention
//! ([`softmax`]).
//!
//! They are a crate of their own for the build: SIMD intrinsics run about 100x slower
//! unoptimised, and the end-to-end tests serve the embedded default through them, so the
//! workspace's `Cargo.toml` builds this crate at `opt-level = 2` in the dev profile too,
//! while the rest of `dayshift-node` (most of its code: the server, the engine, the
//! CUDA launchers, its tests) compiles unoptimised, several times faster
//! (`tests/README.md`, "Suite figures").

pub mod qgemv;
pub mod softmax;
