//! With the `cuda` feature: compiles `cuda/*.cu` with nvcc into fatbins (SASS for the GPUs
//! providers rent, plus PTX for newer ones) that `src/model/decode_ops.rs` embeds, so a
//! fresh server loads them without JIT. Without the feature it does nothing.
//!
//! nvcc comes from `PATH` (or `NVCC`); `scripts/build-cuda-node.sh` puts nvcc 13.0 there.

use std::path::PathBuf;
use std::process::Command;

/// SASS for A100 (sm_80), A10/A40 (sm_86), L4/L40S (sm_89), H100/H200 (sm_90); PTX of
/// compute_90 for anything newer (JIT there).
const GENCODE: &[&str] = &[
    "arch=compute_80,code=sm_80",
    "arch=compute_86,code=sm_86",
    "arch=compute_89,code=sm_89",
    "arch=compute_90,code=sm_90",
    "arch=compute_90,code=compute_90",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    for name in ["decode"] {
        let src = format!("cuda/{name}.cu");
        let dst = out.join(format!("{name}.fatbin"));
        let mut cmd = Command::new(&nvcc);
        cmd.args(["--fatbin", "-O3", "-std=c++17", "-o"])
            .arg(&dst)
            .arg(&src);
        for g in GENCODE {
            cmd.args(["-gencode", g]);
        }
        let status = cmd.status().unwrap_or_else(|e| {
            panic!("cannot run {nvcc} for {src}: {e} (a CUDA build needs nvcc 13.0 on PATH: use scripts/build-cuda-node.sh)")
        });
        if !status.success() {
            panic!("{nvcc} failed on {src} ({status})");
        }
    }
}
