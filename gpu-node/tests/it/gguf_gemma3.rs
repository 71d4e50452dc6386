//! Gemma 3 through GGUF (`general.architecture = "gemma3"`), both ways:
//! - `quantize` writes a Gemma 3 directory as llama.cpp's converter would (names, norms
//!   stored as `1 + w`, metadata), and the file loads back tracking the safetensors model
//!   (f32 exactly, f16 and Q4_K within the bounds below); the multimodal `gemma3` layout
//!   writes the same model;
//! - llama.cpp reads those files alike: `reference/gguf/gemma3_quantize_reference.json`,
//!   made by `reference/gguf/make_quantize_reference.py` (llama-cpp-python) from the same
//!   bytes (sha256 checked) of `make-test-model --arch gemma3_text --wide`;
//! - what a file cannot say, or says against llama.cpp's fixed Gemma 3 rules, is refused
//!   with the key in the message.

use crate::common::{self, BIN};
use crate::gguf_quantize::{Bounds, compare_with_llama_cpp, load, quantize_cli};
use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Content, Value as GValue};
use candle_core::quantized::{GgmlDType, QTensor};
use dayshift_node::model::llama::full_logits;
use dayshift_node::model::quantize::{self, Scheme};
use dayshift_node::model::{self, GenerationModel};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The 256-wide, 7-layer Gemma 3 whose config llama.cpp's `gemma3` can express (layers
/// 0–4 and 6 sliding with a window of 6, layer 5 global), made by the real binary in
/// `<tmp>/gemma3`.
fn gemma_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(BIN)
        .arg("make-test-model")
        .arg(dir.path().join("gemma3"))
        .args(["--arch", "gemma3_text", "--wide"])
        .status()
        .unwrap();
    assert!(st.success());
    dir
}

fn logits(m: &GenerationModel, ids: &[u32]) -> Vec<f32> {
    full_logits(&m.llama, ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// 43 tokens: past the sliding window of 6 many times over.
const TEXT: &str =
    "The capital of France is Paris. The quick brown fox jumps over the lazy dog. Hello!";

#[test]
fn gemma3_gguf_tracks_the_safetensors_model() {
    let dir = gemma_model();
    let src = dir.path().join("gemma3");
    let dense = load(&src);
    let ids = dense
        .tokenizer
        .encode(TEXT, false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert!(ids.len() > 30, "{}", ids.len());
    eprintln!("{} tokens", ids.len());
    let want = logits(&dense, &ids);

    // f32: the same numbers, so the layout, norms, scales, windows and RoPE all match.
    let f32_file = dir.path().join("g.F32.gguf");
    quantize::write_gguf(
        &src,
        &f32_file,
        Scheme::Uniform(GgmlDType::F32),
        &mut |_, _, _| {},
    )
    .unwrap();
    let g = load(&f32_file);
    assert_eq!(g.architecture, "gemma3");
    let a = &g.llama.config();
    assert_eq!(
        a.layer_types.as_deref().unwrap(),
        dense.llama.config().layer_types.as_deref().unwrap()
    );
    let (cos, max) = common::cos_max(&logits(&g, &ids), &want);
    assert!(
        max < 1e-4,
        "f32 GGUF vs safetensors: max |diff| {max}, cosine {cos}"
    );

    // What the file holds: llama.cpp's names, norms as 1 + w, no output matrix (tied).
    let c = Content::read(&mut std::fs::File::open(&f32_file).unwrap()).unwrap();
    for n in [
        "token_embd.weight",
        "blk.5.attn_norm.weight",
        "blk.5.attn_q_norm.weight",
        "blk.5.attn_k_norm.weight",
        "blk.5.post_attention_norm.weight",
        "blk.5.ffn_norm.weight",
        "blk.5.post_ffw_norm.weight",
        "blk.6.ffn_down.weight",
        "output_norm.weight",
    ] {
        assert!(c.tensor_infos.contains_key(n), "{n} missing");
    }
    assert!(!c.tensor_infos.contains_key("output.weight"));
    let st = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let hf: Vec<f32> = st["model.layers.5.pre_feedforward_layernorm.weight"]
        .to_vec1()
        .unwrap();
    let mut r = std::fs::File::open(&f32_file).unwrap();
    let gg: Vec<f32> = c
        .tensor(&mut r, "blk.5.ffn_norm.weight", &Device::Cpu)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(hf.iter().zip(&gg).all(|(h, g)| (h + 1.0 - g).abs() < 1e-6));
    let md = |k: &str| c.metadata.get(k).cloned();
    assert!(matches!(
        md("gemma3.attention.sliding_window"),
        Some(GValue::U32(6))
    ));
    assert!(matches!(md("gemma3.rope.scaling.type"), Some(GValue::String(s)) if s == "linear"));
    assert!(matches!(md("gemma3.rope.scaling.factor"), Some(GValue::F32(f)) if f == 2.0));
    assert!(md("gemma3.final_logit_softcapping").is_none());

    // f16 and Q4_K, through the CLI, against the dense model. f16 rounds every matrix
    // to 11 bits: its logits stay within 2e-3 of the largest |logit| (measured 1.1e-3);
    // Q4_K: logit cosine, as for the Llama files.
    let peak = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    // (This random 7-layer model is more sensitive than the 2-layer Llama: Q4_K 0.950.)
    for (ty, min_cos, max_rel) in [("f16", 0.99999, 2e-3), ("q4_k", 0.94, 1.0)] {
        let s = quantize_cli(&src, ty);
        assert!(s["fell_back"].as_array().unwrap().is_empty(), "{s}");
        let file = dir
            .path()
            .join(format!("gemma3.{}.gguf", ty.to_ascii_uppercase()));
        let (cos, max) = common::cos_max(&logits(&load(&file), &ids), &want);
        eprintln!(
            "{ty}: cosine {cos:.7}, max |diff| {max:.5} = {:.2e} of the largest |logit| {peak:.3}",
            max / peak
        );
        assert!(cos >= min_cos, "{ty}: cosine {cos} < {min_cos}");
        assert!(
            max / peak <= max_rel,
            "{ty}: max |diff| {max} vs peak {peak}"
        );
    }

    // The multimodal layout (`gemma3` config with `text_config`, weights under
    // `language_model.model.`): the same text model, the same file contents.
    let mm = dir.path().join("mm");
    std::fs::create_dir(&mm).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(src.join(f), mm.join(f)).unwrap();
    }
    let text: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let mut top = serde_json::json!({"model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "eos_token_id": text["eos_token_id"].clone(), "text_config": text.clone(),
        "vision_config": {"model_type": "siglip_vision_model"}});
    top["text_config"]["model_type"] = "gemma3_text".into();
    std::fs::write(mm.join("config.json"), top.to_string()).unwrap();
    let renamed: std::collections::HashMap<String, candle_core::Tensor> = st
        .into_iter()
        .map(|(k, v)| (k.replacen("model.", "language_model.model.", 1), v))
        .collect();
    candle_core::safetensors::save(&renamed, mm.join("model.safetensors")).unwrap();
    let mm_file = dir.path().join("mm.gguf");
    quantize::write_gguf(
        &mm,
        &mm_file,
        Scheme::Uniform(GgmlDType::F32),
        &mut |_, _, _| {},
    )
    .unwrap();
    let (_, max) = common::cos_max(&logits(&load(&mm_file), &ids), &want);
    assert!(max < 1e-4, "multimodal layout: {max}");
}

#[test]
fn gemma3_gguf_files_load_in_llama_cpp_alike() {
    let reference: Value = serde_json::from_str(include_str!(
        "../../reference/gguf/gemma3_quantize_reference.json"
    ))
    .unwrap();
    let dir = gemma_model();
    // f16: llama.cpp's CPU matmul rounds the activations to f16 (ggml's `vec_dot_type`
    // of F16 is F16), the node keeps them f32 (measured ≤ 0.0024); every step's best two
    // logits are ≥ 0.06 apart there, so all 16 greedy tokens are equal. Q4_K: both
    // quantize activations to Q8_K, but from slightly different f32 values (f16 rounding
    // inside llama.cpp's CPU ops, e.g. its GELU, is the suspect), and this random 7-layer
    // model amplifies each flipped Q8_K step (its Q4_K file is only 0.95 cosine from the
    // dense model): measured ≤ 0.06.
    compare_with_llama_cpp(&reference, &dir.path().join("gemma3"), "gemma3", |name| {
        let f16 = name.contains("F16");
        Bounds {
            tol: if f16 { 5e-3 } else { 0.1 },
            min_cos: 0.999,
            exact: f16,
        }
    });
}

/// A GGUF file's metadata, as a list.
type Md = Vec<(String, GValue)>;
/// A change to it.
type Edit = dyn Fn(&mut Md);

/// Rewrites the GGUF file `src` into `out` with `edit` applied to its metadata.
fn rewrite(src: &Path, out: &Path, edit: &Edit) {
    let mut r = std::fs::File::open(src).unwrap();
    let c = Content::read(&mut r).unwrap();
    let mut md: Md = c
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut md);
    let mut names: Vec<(&String, u64)> =
        c.tensor_infos.iter().map(|(n, i)| (n, i.offset)).collect();
    names.sort_by_key(|(_, o)| *o);
    let tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|(n, _)| (n.clone(), c.tensor(&mut r, n, &Device::Cpu).unwrap()))
        .collect();
    let mut f = std::fs::File::create(out).unwrap();
    let m: Vec<(&str, &GValue)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &m, &t).unwrap();
}

#[test]
fn gemma3_keys_llama_cpp_would_read_differently_are_refused_by_name() {
    let dir = gemma_model();
    let src = dir.path().join("gemma3");
    let good = dir.path().join("good.gguf");
    quantize::write_gguf(
        &src,
        &good,
        Scheme::Uniform(GgmlDType::F16),
        &mut |_, _, _| {},
    )
    .unwrap();
    let err = |edit: &Edit| -> String {
        let f = dir.path().join("edited.gguf");
        rewrite(&good, &f, edit);
        match model::load(&f, None, &Device::Cpu) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected the edited file to be refused"),
        }
    };
    let set = |k: &'static str, v: GValue| {
        move |md: &mut Md| {
            md.retain(|(x, _)| x != k);
            md.push((k.to_string(), v.clone()));
        }
    };
    let cases: Vec<(&str, Box<Edit>)> = vec![
        (
            "gemma3.attention.layer_norm_rms_epsilon",
            Box::new(|md: &mut Md| {
                md.retain(|(k, _)| k != "gemma3.attention.layer_norm_rms_epsilon")
            }),
        ),
        (
            "gemma3.attention.sliding_window_pattern",
            Box::new(set(
                "gemma3.attention.sliding_window_pattern",
                GValue::U32(3),
            )),
        ),
        (
            "gemma3.rope.freq_base_swa",
            Box::new(set("gemma3.rope.freq_base_swa", GValue::F32(500.0))),
        ),
        (
            "gemma3.rope.scaling.type",
            Box::new(set(
                "gemma3.rope.scaling.type",
                GValue::String("yarn".into()),
            )),
        ),
        (
            "gemma3.final_logit_softcapping",
            Box::new(set("gemma3.final_logit_softcapping", GValue::F32(30.0))),
        ),
        (
            "gemma3.attention.scale",
            Box::new(set("gemma3.attention.scale", GValue::F32(0.5))),
        ),
        (
            "gemma3.attn_logit_softcapping",
            Box::new(set("gemma3.attn_logit_softcapping", GValue::F32(50.0))),
        ),
    ];
    for (key, edit) in cases {
        let e = err(&*edit);
        assert!(e.contains(key) && e.contains("edited.gguf"), "{key}: {e}");
        eprintln!("{key}: {e}");
    }
    // Keys that agree with llama.cpp's fixed rules load.
    let f = dir.path().join("agree.gguf");
    rewrite(&good, &f, &|md| {
        md.push((
            "gemma3.attention.sliding_window_pattern".into(),
            GValue::U32(6),
        ));
        md.push(("gemma3.rope.freq_base_swa".into(), GValue::F32(10_000.0)));
    });
    assert!(model::load(&f, None, &Device::Cpu).is_ok());

    // What quantize cannot write as gemma3 is refused naming the config field.
    let cfg_path = src.join("config.json");
    let orig = std::fs::read_to_string(&cfg_path).unwrap();
    for (field, value, needle) in [
        (
            "query_pre_attn_scalar",
            serde_json::json!(24),
            "query_pre_attn_scalar",
        ),
        (
            "rope_local_base_freq",
            serde_json::json!(500.0),
            "rope_local_base_freq",
        ),
        (
            "final_logit_softcapping",
            serde_json::json!(30.0),
            "final_logit_softcapping",
        ),
    ] {
        let mut v: Value = serde_json::from_str(&orig).unwrap();
        v[field] = value;
        std::fs::write(&cfg_path, v.to_string()).unwrap();
        let e = format!(
            "{:#}",
            quantize::write_gguf(
                &src,
                &dir.path().join("x.gguf"),
                Scheme::Q4KM,
                &mut |_, _, _| {}
            )
            .unwrap_err()
        );
        assert!(e.contains(needle), "{field}: {e}");
    }
}
