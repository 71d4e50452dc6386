//! CPU decode GEMV speed per GGML type: our kernel (`model::cpu_qgemv`) beside candle's
//! `QMatMul` on the same quantized weight, one process, alternating, on a Qwen3-0.6B
//! layer's shapes (1024 → 3072 and 3072 → 1024, as gate/up and down) at 1 and 2 input
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
    for t in [GgmlDType::Q4K, GgmlDType::Q6K] {
        for (n, k) in [(3072, 1024), (1024, 3072)] {
            let ws: Vec<Arc<QTensor>> = (0..24)
                .map(|_| {
                    QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev)?, t).map(Arc::new)
                })
                .collect::<candle_core::Result<_>>()?;
            let bytes: usize = ws.iter().map(|w| w.storage_size_in_bytes()).sum();
            let mms: Vec<QMatMul> = ws
                .iter()
                .map(|w| QMatMul::from_arc(w.clone()))
                .collect::<candle_core::Result<_>>()?;
            for m in [1, 2] {
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
                let mut line = format!("{t:?} {n}x{k} rows {m}:");
                for (name, ours) in [
                    ("cpu_qgemv", true),
                    ("candle", false),
                    ("cpu_qgemv", true),
                    ("candle", false),
                ] {
                    cpu_qgemv::set_enabled(ours);
                    let t0 = Instant::now();
                    for _ in 0..reps.div_ceil(24) {
                        for (w, mm) in ws.iter().zip(&mms) {
                            if ours {
                                cpu_qgemv::gemv(&[w], &x)?;
                            } else {
                                mm.forward(&x)?;
                            }
                        }
                    }
                    let dt = t0.elapsed().as_secs_f64();
                    let gbs = (bytes * reps.div_ceil(24)) as f64 / 24.0 * 24.0 / dt / 1e9;
                    line += &format!("  {name} {gbs:.1} GB/s");
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}
