//! The memory figure the node checks before loading and the ingress checks each pool
//! against (`dayshift_config::memory`, one calculation for both) agrees with what the
//! node really loads: its GGML type table with candle's, its GGUF header reader with
//! candle's, and the KV bytes per token and context with the loaded model's.

use candle_core::Device;
use candle_core::quantized::{GgmlDType, gguf_file};
use dayshift_config::gguf_header::GgufHeader;
use dayshift_config::memory::{GgmlType, ModelMemory, Target};
use dayshift_config::node::EngineConfig;
use dayshift_node::model::{self, GenerationModel, LoadedModel, quantize};
use dayshift_node::testmodel;
use std::path::Path;

fn load(p: &Path, dtype: Option<&str>, quant: Option<&str>) -> Box<GenerationModel> {
    match model::load_quantized(p, dtype, quant, &Device::Cpu).unwrap() {
        LoadedModel::Generation(g) => g,
        LoadedModel::Embedding(_) => panic!("expected a generation model"),
    }
}

#[test]
fn fit_ggml_type_table_matches_candle() {
    let pairs = [
        (0, GgmlDType::F32),
        (1, GgmlDType::F16),
        (2, GgmlDType::Q4_0),
        (3, GgmlDType::Q4_1),
        (6, GgmlDType::Q5_0),
        (7, GgmlDType::Q5_1),
        (8, GgmlDType::Q8_0),
        (9, GgmlDType::Q8_1),
        (10, GgmlDType::Q2K),
        (11, GgmlDType::Q3K),
        (12, GgmlDType::Q4K),
        (13, GgmlDType::Q5K),
        (14, GgmlDType::Q6K),
        (15, GgmlDType::Q8K),
        (30, GgmlDType::BF16),
    ];
    for (id, dt) in pairs {
        let t = GgmlType::by_id(id).unwrap_or_else(|| panic!("type {id} missing"));
        assert_eq!(t.block, dt.block_size() as u64, "{dt:?}");
        assert_eq!(t.bytes, dt.type_size() as u64, "{dt:?}");
    }
    // Every type `quantize` takes is in the table.
    for q in dayshift_config::node::QUANTIZE_TYPES {
        assert!(GgmlType::by_name(q).is_some(), "{q}");
    }
}

#[test]
fn fit_figures_agree_with_the_loaded_model() {
    let dir = tempfile::tempdir().unwrap();
    testmodel::make_test_model(dir.path()).unwrap();
    let engine = EngineConfig::default();
    // Safetensors in f32 (the CPU's dtype), in bf16 (an override), quantized at load.
    for (dtype, quant) in [(None, None), (Some("bf16"), None), (None, Some("q8_0"))] {
        let g = load(dir.path(), dtype, quant);
        let m = ModelMemory::of(dir.path(), dtype, quant, Target::Cpu).unwrap();
        assert_eq!(
            m.kv_bytes_per_token,
            g.llama.kv_bytes_per_token() as u64,
            "{dtype:?} {quant:?}"
        );
        assert_eq!(m.kv_dtype, model::dtype_name(g.llama.dtype()));
        assert_eq!(m.context, g.llama.config().max_position_embeddings as u64);
        let need = m.need(&engine);
        assert_eq!(
            need.kv_tokens, m.context,
            "unset kv_cache_tokens: one full context"
        );
    }
    // A GGUF file: its header as candle reads it, and the loaded model's KV figures.
    let file = dir.path().join("tiny.Q4_1.gguf");
    quantize::write_from_dir(dir.path(), &file, GgmlDType::Q4_1).unwrap();
    let ours = GgufHeader::read(&file).unwrap();
    let mut f = std::fs::File::open(&file).unwrap();
    let theirs = gguf_file::Content::read(&mut f).unwrap();
    assert_eq!(ours.tensors.len(), theirs.tensor_infos.len());
    for t in &ours.tensors {
        let c = &theirs.tensor_infos[&t.name];
        let mut dims: Vec<u64> = c.shape.dims().iter().map(|&d| d as u64).collect();
        dims.reverse(); // candle lists them outermost first
        assert_eq!(t.dims, dims, "{}", t.name);
        assert_eq!(
            GgmlType::by_id(t.ggml_type).map(|x| x.bytes_for(t.elements())),
            Some(
                (c.shape.elem_count() / c.ggml_dtype.block_size() * c.ggml_dtype.type_size())
                    as u64
            ),
            "{}",
            t.name
        );
    }
    for (k, v) in &theirs.metadata {
        if let (false, Ok(n)) = (matches!(v, gguf_file::Value::Bool(_)), v.to_u64()) {
            assert_eq!(ours.uint(k), Some(n), "{k}");
        }
    }
    let g = load(&file, None, None);
    let cpu = ModelMemory::of(&file, None, None, Target::Cpu).unwrap();
    let gpu = ModelMemory::of(&file, Some("f32"), None, Target::Gpu).unwrap();
    assert_eq!(cpu.kv_bytes_per_token, g.llama.kv_bytes_per_token() as u64);
    assert_eq!(cpu.kv_dtype, "f32");
    assert_eq!(cpu.context, g.llama.config().max_position_embeddings as u64);
    // The CPU holds Q4_1 matrices as Q8_0 (34 bytes per 32 weights instead of 20).
    assert!(
        cpu.weights > gpu.weights,
        "{} vs {}",
        cpu.weights,
        gpu.weights
    );
    // bf16 (a GPU's default, as `dtype = "bf16"`): the KV cache and the dense tensors
    // (embeddings, norms) at 2 bytes; the quantized matrices unchanged. Refused on the
    // CPU, by the memory check and by the loader alike, naming the reason.
    let bf16 = ModelMemory::of(&file, None, None, Target::Gpu).unwrap();
    assert_eq!(
        bf16.weights,
        ModelMemory::of(&file, Some("bf16"), None, Target::Gpu)
            .unwrap()
            .weights
    );
    assert_eq!(bf16.kv_dtype, "bf16");
    assert_eq!(bf16.kv_bytes_per_token * 2, gpu.kv_bytes_per_token);
    let embd = ours
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert!(
        gpu.weights - bf16.weights >= embd.elements() * 2,
        "{} vs {}",
        gpu.weights,
        bf16.weights
    );
    let e = ModelMemory::of(&file, Some("bf16"), None, Target::Cpu).unwrap_err();
    assert!(e.contains("f32 on the CPU"), "{e}");
    let e = match model::load(&file, Some("bf16"), &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a bf16 GGUF model loaded on the CPU"),
    };
    assert!(e.contains("f32 on the CPU"), "{e}");
}
