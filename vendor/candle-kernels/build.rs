use cudaforge::{KernelBuilder, Result};
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const CUTILE_FEATURE: &str = "CARGO_FEATURE_CUTILE";

fn main() -> Result<()> {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=src/compatibility.cuh");
    println!("cargo::rerun-if-changed=src/cuda_utils.cuh");
    println!("cargo::rerun-if-changed=src/binary_op_macros.cuh");

    // Build for PTX
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let ptx_path = out_dir.join("ptx.rs");
    let bindings = KernelBuilder::new()
        .source_dir("src") // Scan src/ for .cu files
        .exclude(&["moe_*.cu", "mmvq_gguf.cu", "mmq_*.cu"]) // Exclude statically compiled kernels from ptx build
        .arg("--expt-relaxed-constexpr")
        .arg("-std=c++17")
        .arg("-O3")
        .build_ptx()?;

    bindings.write(&ptx_path)?;
    write_images(&out_dir);

    let mut moe_sources = vec![
        "src/moe/moe_gguf.cu",
        "src/moe/moe_wmma.cu",
        "src/moe/moe_wmma_gguf.cu",
        "src/mmvq_gguf.cu",
        "src/mmq_gguf/mmq_quantize.cu",
        "src/mmq_gguf/mmq_instance_q4_0.cu",
        "src/mmq_gguf/mmq_instance_q4_1.cu",
        "src/mmq_gguf/mmq_instance_q5_0.cu",
        "src/mmq_gguf/mmq_instance_q5_1.cu",
        "src/mmq_gguf/mmq_instance_q8_0.cu",
        "src/mmq_gguf/mmq_instance_q2_k.cu",
        "src/mmq_gguf/mmq_instance_q3_k.cu",
        "src/mmq_gguf/mmq_instance_q4_k.cu",
        "src/mmq_gguf/mmq_instance_q5_k.cu",
        "src/mmq_gguf/mmq_instance_q6_k.cu",
    ];
    if env::var_os(CUTILE_FEATURE).is_some() {
        moe_sources.push("src/moe/moe_align.cu");
    }

    let mut moe_builder = KernelBuilder::default()
        .source_files(moe_sources)
        .arg("--expt-relaxed-constexpr")
        .arg("-std=c++17")
        .arg("-O3");

    // Disable bf16 WMMA kernels on GPUs older than sm_80 (Ampere).
    // bf16 WMMA fragments require compute capability >= 8.0.
    let compute_cap = cudaforge::detect_compute_cap()
        .map(|arch| arch.base())
        .unwrap_or(80);
    if compute_cap < 80 {
        moe_builder = moe_builder.arg("-DNO_BF16_KERNEL");
    }
    // dayshift: these statically linked kernels (the quantized matmuls MMVQ and MMQ among
    // them) were built for CUDA_COMPUTE_CAP only — sm_80 SASS and no PTX in our builds —,
    // so on an H100/H200 (sm_90) every launch failed silently and left its output
    // unwritten. Add SASS for each CANDLE_KERNELS_SASS architecture, and the PTX of the
    // newest for later GPUs (vendor/README.md).
    for arg in extra_gencode(compute_cap as u32) {
        moe_builder = moe_builder.arg(&arg);
    }

    let mut is_target_msvc = false;
    if let Ok(target) = std::env::var("TARGET") {
        if target.contains("msvc") {
            is_target_msvc = true;
            moe_builder = moe_builder.arg("-D_USE_MATH_DEFINES");
        }
    }

    if !is_target_msvc {
        moe_builder = moe_builder.arg("-Xcompiler").arg("-fPIC");
    }

    moe_builder.build_lib(out_dir.join("libmoe.a"))?;
    println!("cargo:rustc-link-search={}", out_dir.display());
    println!("cargo:rustc-link-lib=moe");
    println!("cargo:rustc-link-lib=dylib=cudart");
    if !is_target_msvc {
        println!("cargo:rustc-link-lib=stdc++");
    }
    Ok(())
}

/// dayshift: `-gencode` arguments for the statically linked kernels: SASS for every
/// `CANDLE_KERNELS_SASS` architecture other than `built` (cudaforge adds that one), and
/// the PTX of the newest, so a GPU newer than all of them can JIT it.
fn extra_gencode(built: u32) -> Vec<String> {
    let archs = env::var("CANDLE_KERNELS_SASS").unwrap_or_else(|_| "80,90".into());
    if archs.trim() == "none" {
        return Vec::new();
    }
    let mut sass: Vec<u32> = archs.split(',').filter_map(|a| a.trim().parse().ok()).collect();
    sass.sort_unstable();
    let mut args: Vec<String> = sass
        .iter()
        .filter(|&&a| a != built)
        .map(|a| format!("-gencode=arch=compute_{a},code=sm_{a}"))
        .collect();
    if let Some(newest) = sass.last().copied().filter(|&n| n >= built) {
        args.push(format!("-gencode=arch=compute_{newest},code=compute_{newest}"));
    }
    args
}

/// dayshift: the PTX modules of `lib.rs`, in its order.
const MODULES: [&str; 11] = [
    "affine", "binary", "cast", "conv", "fill", "indexing", "quantized", "reduce", "sort",
    "ternary", "unary",
];

/// dayshift: compiles each PTX module into a fatbin with SASS for the architectures in
/// `CANDLE_KERNELS_SASS` (default `80,90`: sm_80 SASS runs on every 8.x GPU — A100, A10,
/// L4, L40S —, sm_90 on H100/H200) plus the PTX itself (newer GPUs JIT it), and writes
/// `images.rs`, one `&[u8]` per module (empty with `CANDLE_KERNELS_SASS=none`). Without
/// this the driver JIT-compiles every module on a fresh server (~20 s). Panics, naming
/// the command, when nvcc fails.
fn write_images(out_dir: &Path) {
    println!("cargo::rerun-if-env-changed=CANDLE_KERNELS_SASS");
    let archs = env::var("CANDLE_KERNELS_SASS").unwrap_or_else(|_| "80,90".into());
    let virt: u32 = env::var("CUDA_COMPUTE_CAP")
        .ok()
        .and_then(|c| c.trim().trim_end_matches(['a', 'f']).parse().ok())
        .unwrap_or(80);
    let sass: Vec<u32> = if archs.trim() == "none" {
        Vec::new()
    } else {
        archs
            .split(',')
            .filter_map(|a| a.trim().parse().ok())
            .filter(|&a| a >= virt)
            .collect()
    };
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let mut rs = String::new();
    for m in MODULES {
        let name = m.to_uppercase();
        if sass.is_empty() {
            rs.push_str(&format!("pub const {name}: &[u8] = &[];\n"));
            continue;
        }
        let ptx = out_dir.join(format!("{m}.ptx"));
        let fatbin = out_dir.join(format!("{m}.fatbin"));
        let mut cmd = Command::new(&nvcc);
        cmd.arg("--fatbin").arg("-o").arg(&fatbin);
        for a in &sass {
            cmd.arg("-gencode").arg(format!("arch=compute_{virt},code=sm_{a}"));
        }
        cmd.arg("-gencode").arg(format!("arch=compute_{virt},code=compute_{virt}"));
        cmd.arg(&ptx);
        match cmd.status() {
            Ok(s) if s.success() => {}
            other => panic!("candle-kernels: {cmd:?} failed ({other:?}); set CANDLE_KERNELS_SASS=none to ship PTX only"),
        }
        rs.push_str(&format!(
            "pub const {name}: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{m}.fatbin\"));\n"
        ));
    }
    std::fs::write(out_dir.join("images.rs"), rs).expect("candle-kernels: cannot write images.rs");
}
