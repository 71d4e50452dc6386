//! Whether a model fits the device: its weight files' size (scaled to the dtype or
//! quantized type it will run in) against the device's free memory, checked before loading so a node on a too
//! small GPU says so at once instead of failing somewhere inside the load.

use std::path::Path;

/// Memory kept free besides the weights: CUDA context, kernels, activations, a first
/// slice of KV cache.
pub const HEADROOM_BYTES: u64 = 512 << 20;

/// Bytes of one element of a dtype name (`f32`, `float32`, `bf16`, `bfloat16`, ...).
fn dtype_bytes(name: &str) -> Option<u64> {
    match name {
        "f32" | "float32" => Some(4),
        "bf16" | "bfloat16" | "f16" | "float16" => Some(2),
        _ => None,
    }
}

/// Total size of the weight files of a model directory (`*.safetensors`, `*.gguf`,
/// `*.bin`), or of a single `.gguf` file.
pub fn weight_file_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return path.metadata().map(|m| m.len()).unwrap_or(0);
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(".safetensors") || n.ends_with(".gguf") || n.ends_with(".bin")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Bits per weight of a `quantize` type: its GGUF block's bytes over its weights (e.g.
/// Q4_K stores 256 weights in 144 bytes: 4.5).
fn quantized_bits(name: &str) -> Option<f64> {
    match crate::model::quantize::Scheme::parse(name)? {
        crate::model::quantize::Scheme::Uniform(t) => {
            Some(t.type_size() as f64 * 8.0 / t.block_size() as f64)
        }
        _ => None,
    }
}

/// The bytes the weights will take on the device: the files' size, scaled when `dtype`
/// (the node config's override) differs from `torch_dtype` of the directory's
/// `config.json`; with `quantize`, the matrices at that type's bits per weight and the
/// embedding matrix (kept dense) in f32.
pub fn weight_bytes(path: &Path, dtype: Option<&str>, quantize: Option<&str>) -> u64 {
    let files = weight_file_bytes(path);
    let config = std::fs::read_to_string(path.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let saved = config.as_ref().and_then(|v| {
        v.get("torch_dtype")
            .or_else(|| v.get("dtype"))
            .and_then(|d| d.as_str())
            .and_then(dtype_bytes)
    });
    if let Some(bits) = quantize.and_then(quantized_bits) {
        let params = files / saved.unwrap_or(2);
        let dim = |k: &str| {
            config
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(|x| x.as_u64())
                .unwrap_or(0)
        };
        let embed = (dim("vocab_size") * dim("hidden_size")).min(params);
        return ((params - embed) as f64 * bits / 8.0) as u64 + embed * 4;
    }
    match (saved, dtype.and_then(dtype_bytes)) {
        (Some(from), Some(to)) if from != to => files / from * to,
        _ => files,
    }
}

/// `Ok` when `weights` bytes plus [`HEADROOM_BYTES`] fit in `free` bytes; else the
/// message for the operator.
pub fn check_fits(model: &str, weights: u64, free: u64, device: &str) -> Result<(), String> {
    let need = weights.saturating_add(HEADROOM_BYTES);
    if need <= free {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(format!(
        "model {model:?} does not fit on {device}: its weights need {:.2} GiB (+{:.2} GiB \
         headroom), {:.2} GiB is free; pick a server type with more memory, a smaller \
         dtype (bf16) or a quantized GGUF file",
        gib(weights),
        gib(HEADROOM_BYTES),
        gib(free)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_too_large_for_the_device_is_refused_with_figures() {
        let gib = 1u64 << 30;
        assert!(check_fits("m", 10 * gib, 24 * gib, "NVIDIA L4").is_ok());
        let e = check_fits("llama-70b", 140 * gib, 23 * gib, "NVIDIA L4").unwrap_err();
        assert!(e.contains("does not fit on NVIDIA L4"), "{e}");
        assert!(e.contains("140.00 GiB"), "{e}");
        assert!(e.contains("23.00 GiB is free"), "{e}");
        // The headroom counts: weights that fill the device exactly do not fit.
        assert!(check_fits("m", 24 * gib, 24 * gib, "gpu").is_err());
    }

    #[test]
    fn weight_bytes_follow_the_dtype_override() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), vec![0u8; 4000]).unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), vec![0u8; 999]).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"torch_dtype": "float32"}"#,
        )
        .unwrap();
        assert_eq!(weight_bytes(dir.path(), None, None), 4000);
        assert_eq!(weight_bytes(dir.path(), Some("bf16"), None), 2000);
        assert_eq!(weight_bytes(dir.path(), Some("f32"), None), 4000);
    }

    #[test]
    fn weight_bytes_follow_quantize_at_load() {
        let dir = tempfile::tempdir().unwrap();
        // 1,000 bf16 weights, 100 of them the embedding matrix (kept dense, f32).
        std::fs::write(dir.path().join("model.safetensors"), vec![0u8; 2000]).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"torch_dtype": "bfloat16", "vocab_size": 10, "hidden_size": 10}"#,
        )
        .unwrap();
        assert_eq!(
            weight_bytes(dir.path(), None, Some("q8_0")),
            900 * 85 / 80 + 400
        );
        assert_eq!(
            weight_bytes(dir.path(), None, Some("q4_k")),
            900 * 45 / 80 + 400
        );
    }
}
