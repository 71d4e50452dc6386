//! CPU decode GEMV speed per GGML type: our kernel (`model::cpu_qgemv`) beside candle's
//! `QMatMul` on the same quantized weight, one process, alternating, on a Qwen3-0.6B
//! layer's shapes (1024 → 3072 and 3072 → 1024, as gate/up and down) at 1, 2 and 4 input
//! rows (the rows it takes). Prints GB/s of the file's weight bytes for each; candle's
//! first pass includes packing its tiles.
//!
//!     cargo run --release -p dayshift-node --example qgemv_speed [REPEATS]

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use dayshift_node::model::cpu_qgemv;
use std::sync::Arc;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let reps: usize = std::env::args().nth(1).map_or(Ok(200), |s| s.parse())?;
    let dev = Device::Cpu;
    // 24 matrices of each shape, so that the weights do not fit any cache (~40-140 MB).
    // Qwen3-0.6B's MLP shapes in the K-quants; SmolLM2-135M's (the embedded default: Q4_1
    // layers, a 576-wide Q8_0 head) in the 32-value types, which only our kernel reads
    // with SIMD (candle's column is its scalar path).
    let cases = [
        (GgmlDType::Q4K, 3072, 1024),
        (GgmlDType::Q4K, 1024, 3072),
        (GgmlDType::Q6K, 3072, 1024),
        (GgmlDType::Q6K, 1024, 3072),
        (GgmlDType::Q4_1, 1536, 576),
        (GgmlDType::Q4_1, 576, 1536),
        (GgmlDType::Q8_0, 8192, 576),
    ];
    // MATS=1 (default 24) keeps one matrix of each shape: it then fits the L2 cache, which
    // shows the kernels' compute limit; ONLY=Q4_1 (a GGML type's name) runs one type.
    let mats: usize = std::env::var("MATS").map_or(Ok(24), |v| v.parse())?;
    let only = std::env::var("ONLY").ok();
    for (t, n, k) in cases {
        if only.as_ref().is_some_and(|o| *o != format!("{t:?}")) {
            continue;
        }
        {
            let ws: Vec<Arc<QTensor>> = (0..mats)
                .map(|_| {
                    QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev)?, t).map(Arc::new)
                })
                .collect::<candle_core::Result<_>>()?;
            let bytes: usize = ws.iter().map(|w| w.storage_size_in_bytes()).sum();
            let mms: Vec<QMatMul> = ws
                .iter()
                .map(|w| QMatMul::from_arc(w.clone()))
                .collect::<candle_core::Result<_>>()?;
            // Q4_1: our AVX-512 and AVX2 forms (candle has only a scalar loop for it).
            let variants = if t == GgmlDType::Q4_1 {
                vec![("cpu_qgemv", true, true), ("cpu_qgemv avx2", true, false)]
            } else {
                vec![("cpu_qgemv", true, true), ("candle", false, true)]
            };
            for m in [1, 2, 4] {
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
                let mut line = format!("{t:?} {n}x{k} rows {m}:");
                for &(name, ours, avx512) in variants.iter().chain(&variants) {
                    cpu_qgemv::set_enabled(ours);
                    cpu_qgemv::set_avx512(avx512);
                    let t0 = Instant::now();
                    for _ in 0..reps.div_ceil(mats) {
                        for (w, mm) in ws.iter().zip(&mms) {
                            if ours {
                                cpu_qgemv::gemv(&[w], &x)?;
                            } else {
                                mm.forward(&x)?;
                            }
                        }
                    }
                    let dt = t0.elapsed().as_secs_f64();
                    let gbs = (bytes * reps.div_ceil(mats)) as f64 / dt / 1e9;
                    line += &format!("  {name} {gbs:.1} GB/s");
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}
