//! `dayshift-node quantize`: safetensors → GGUF.
//! - The files it writes load in llama.cpp alike: `reference/gguf/quantize_reference.json`
//!   (made by `reference/gguf/make_quantize_reference.py` with llama-cpp-python from the
//!   same bytes, sha256 checked) holds llama.cpp's token ids, logits after the prompt and
//!   16 greedy tokens for Q4_K_M, Q5_K_M and Q8_0 files of the 256-wide test model.
//! - The `_M` mixes follow llama.cpp's recipe; each type tracks the dense model.
//! - Llama 3.1's rope scaling travels as `rope_freqs.weight`; Qwen3 round-trips.
//! - What cannot be written is refused by name.

use crate::common::{self, BIN};
use candle_core::Device;
use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;
use dayshift_node::engine::sampling::argmax;
use dayshift_node::model::llama::{SeqCache, SeqChunk, WantLogits, full_logits};
use dayshift_node::model::quantize::{self, Scheme};
use dayshift_node::model::{self, GenerationModel, LoadedModel};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

pub(crate) fn load(p: &Path) -> Box<GenerationModel> {
    match model::load(p, None, &Device::Cpu).unwrap() {
        LoadedModel::Generation(g) => g,
        LoadedModel::Embedding(_) => panic!("expected a generation model"),
    }
}

/// The 256-wide test Llama, made by the real binary.
fn wide_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(BIN)
        .arg("make-test-model")
        .arg(dir.path().join("wide"))
        .arg("--wide")
        .status()
        .unwrap();
    assert!(st.success());
    dir
}

/// Runs `dayshift-node quantize DIR -t TYPE --json`; returns the summary.
pub(crate) fn quantize_cli(dir: &Path, ty: &str) -> Value {
    let out = Command::new(BIN)
        .arg("quantize")
        .arg(dir)
        .args(["-t", ty, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Logits after `ids` and `steps` greedy tokens, through one cache (prefill, then decode).
pub(crate) fn greedy(m: &GenerationModel, ids: &[u32], steps: usize) -> (Vec<f32>, Vec<u32>) {
    let mut cache = SeqCache::default();
    let mut first = None;
    let mut out = Vec::new();
    let mut feed = ids.to_vec();
    for _ in 0..steps {
        let mut c = [SeqChunk {
            tokens: &feed,
            cache: &mut cache,
            want: WantLogits::Last,
        }];
        let l = m.llama.forward(&mut c).unwrap().remove(0).unwrap();
        let row: Vec<f32> = l.to_vec2::<f32>().unwrap().remove(0);
        if first.is_none() {
            first = Some(row.clone());
        }
        let t = argmax(&row);
        out.push(t);
        feed = vec![t];
    }
    (first.unwrap_or_default(), out)
}

/// How one reference file is compared ([`compare_with_llama_cpp`]).
pub(crate) struct Bounds {
    /// Largest logit difference allowed.
    pub tol: f32,
    /// Smallest logit cosine allowed.
    pub min_cos: f32,
    /// Every greedy token must be equal (else: up to a near-tie of llama.cpp's top two).
    pub exact: bool,
}

/// Quantizes `src` to each file of a llama.cpp reference (`reference/gguf/*.json`, made
/// by `make_quantize_reference.py`), checks that the bytes are the ones the reference was
/// made from, and compares each case's tokens, first logits and greedy tokens with
/// llama.cpp's within `bounds(file name)`. Files are named `PREFIX.TYPE.gguf`. Returns
/// the greedy tokens equal in all.
pub(crate) fn compare_with_llama_cpp(
    reference: &Value,
    src: &Path,
    prefix: &str,
    bounds: impl Fn(&str) -> Bounds,
) -> usize {
    let dir = src.parent().unwrap();
    let mut compared = 0;
    for f in reference["files"].as_array().unwrap() {
        let name = f["file"].as_str().unwrap();
        let ty = name
            .trim_start_matches(&format!("{prefix}."))
            .trim_end_matches(".gguf")
            .to_ascii_lowercase();
        let summary = quantize_cli(src, &ty);
        let file = dir.join(name);
        assert_eq!(summary["file"].as_str().unwrap(), file.to_str().unwrap());
        assert_eq!(
            common::sha(&file),
            f["sha256"].as_str().unwrap(),
            "{name}: quantize no longer writes the bytes the llama.cpp reference was made from"
        );
        let Bounds {
            tol,
            min_cos,
            exact,
        } = bounds(name);
        let m = load(&file);
        for case in f["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let ids = m.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
            let want_ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            assert_eq!(ids, want_ids, "{name}: tokens of {text:?}");
            let want_logits: Vec<f32> = serde_json::from_value(case["logits"].clone()).unwrap();
            let want: Vec<u32> = serde_json::from_value(case["greedy"].clone()).unwrap();
            let margins: Vec<f32> = serde_json::from_value(case["margins"].clone()).unwrap();
            let (logits, got) = greedy(&m, &ids, want.len());
            let (cos, max) = common::cos_max(&logits, &want_logits);
            assert!(
                cos > min_cos && max < tol,
                "{name} {text:?}: cosine {cos}, max |diff| {max} (bound {tol})"
            );
            let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            eprintln!(
                "{name} {text:?}: logits cosine {cos:.7}, max |diff| {max:.6}; greedy equal for {same}/{}",
                want.len()
            );
            if exact {
                assert_eq!(got, want, "{name} {text:?}: greedy tokens");
            } else if same < want.len() {
                // Greedy tokens equal up to a step where llama.cpp's top two logits are
                // within twice the bound (a near-tie; the sequences part there).
                assert!(
                    margins[same] < 2.0 * tol,
                    "{name} {text:?}: token {same} differs ({} vs llama.cpp's {}) where llama.cpp's margin is {}",
                    got[same],
                    want[same],
                    margins[same]
                );
            }
            compared += same;
        }
    }
    compared
}

#[test]
fn quantized_files_load_in_llama_cpp_alike() {
    let reference: Value =
        serde_json::from_str(include_str!("../../reference/gguf/quantize_reference.json")).unwrap();
    let dir = wide_model();
    // K-quants: llama.cpp and candle both multiply Q8_K-quantized activations with the
    // same blocks: equal to ~1e-5. Q8_0: the two quantize the activations differently;
    // how much that moves these logits is shown by the same file run with f32
    // activations (CANDLE_DEQUANTIZE_ALL=1), which differs from either by ~0.05, hence
    // the looser bound.
    let compared = compare_with_llama_cpp(&reference, &dir.path().join("wide"), "wide", |name| {
        Bounds {
            tol: if name.contains("Q8_0") { 0.1 } else { 1e-3 },
            min_cos: 0.9995,
            exact: false,
        }
    });
    // Near-ties aside, the tokens agree.
    assert!(
        compared >= 3 * 4 * 16 * 3 / 4,
        "only {compared} tokens equal"
    );
}

#[test]
fn the_m_mixes_follow_llama_cpp_and_every_type_tracks_the_dense_model() {
    let dir = wide_model();
    let src = dir.path().join("wide");
    let dense = load(&src);
    let prompt = dense
        .tokenizer
        .encode("The capital of France is Paris. The quick brown fox", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let want = full_logits(&dense.llama, &prompt).unwrap();
    let want_v: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    // (scheme, least cosine of all logits vs the dense model)
    for (ty, min_cos) in [
        ("q4_k_m", 0.98),
        ("q5_k_m", 0.99),
        ("q4_k", 0.98),
        ("q6_k", 0.998),
        ("f16", 0.99999),
    ] {
        let file = dir
            .path()
            .join(format!("wide.{}.gguf", ty.to_ascii_uppercase()));
        let s = quantize_cli(&src, ty);
        assert!(s["fell_back"].as_array().unwrap().is_empty());
        let got = full_logits(&load(&file).llama, &prompt).unwrap();
        let got_v: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let (cos, max) = common::cos_max(&got_v, &want_v);
        eprintln!("{ty}: cosine {cos:.6}, max |diff| {max:.4}");
        assert!(cos >= min_cos, "{ty}: cosine {cos} < {min_cos}");
    }
    // Q4_K_M: Q4_K, but attn_v and ffn_down of llama.cpp's "more bits" layers (of 2
    // layers: layer 1) and the output matrix in Q6_K.
    let file = dir.path().join("wide.Q4_K_M.gguf");
    let c = Content::read(&mut std::fs::File::open(&file).unwrap()).unwrap();
    let ty = |n: &str| c.tensor_infos[n].ggml_dtype;
    assert_eq!(ty("output.weight"), GgmlDType::Q6K);
    assert_eq!(ty("token_embd.weight"), GgmlDType::Q4K);
    assert_eq!(ty("blk.0.attn_v.weight"), GgmlDType::Q4K);
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlDType::Q6K);
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlDType::Q4K);
    assert_eq!(ty("blk.1.ffn_down.weight"), GgmlDType::Q6K);
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlDType::Q4K);
    assert_eq!(ty("blk.1.attn_norm.weight"), GgmlDType::F32);
}

#[test]
fn llama31_rope_scaling_travels_as_rope_freqs() {
    let dir = wide_model();
    let src = dir.path().join("wide");
    let cfg_path = src.join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let plain = load(&src);
    // Small original context so that the 64-wide heads' wavelengths fall on all three
    // sides of llama3's thresholds.
    cfg["rope_theta"] = 500000.0.into();
    cfg["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let dense = load(&src);
    let file = dir.path().join("scaled.gguf");
    let r = quantize::write_gguf(
        &src,
        &file,
        Scheme::Uniform(GgmlDType::F32),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(r.by_type["f32"], 22, "{:?}", r.by_type);
    let c = Content::read(&mut std::fs::File::open(&file).unwrap()).unwrap();
    assert!(c.tensor_infos.contains_key("rope_freqs.weight"));
    let g = load(&file);
    let ids: Vec<u32> = (0..200).map(|i| (i * 37 % 370) as u32).collect();
    let a: Vec<f32> = full_logits(&dense.llama, &ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = full_logits(&g.llama, &ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (cos, max) = common::cos_max(&a, &b);
    assert!(
        max < 1e-4,
        "scaled GGUF vs scaled safetensors: max |diff| {max} (cosine {cos})"
    );
    // And the scaling matters here: without it the logits are far off.
    let p: Vec<f32> = full_logits(&plain.llama, &ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (_, max_plain) = common::cos_max(&a, &p);
    assert!(max_plain > 100.0 * max.max(1e-6), "{max_plain} vs {max}");
}

#[test]
fn qwen3_round_trips_and_unwritable_models_are_refused() {
    let q = common::tiny_model_arch("qwen3");
    let file = q.path().join("q.gguf");
    quantize::write_gguf(
        q.path(),
        &file,
        Scheme::Uniform(GgmlDType::F32),
        &mut |_, _, _| {},
    )
    .unwrap();
    let (a, b) = (load(q.path()), load(&file));
    assert_eq!(b.architecture, "qwen3");
    let ids = a
        .tokenizer
        .encode("Grüße aus Köln! fn main() {}", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let la: Vec<f32> = full_logits(&a.llama, &ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let lb: Vec<f32> = full_logits(&b.llama, &ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (_, max) = common::cos_max(&la, &lb);
    assert!(max < 1e-4, "qwen3 GGUF vs safetensors: {max}");

    let err = |dir: &Path| {
        format!(
            "{:#}",
            quantize::write_gguf(dir, &dir.join("x.gguf"), Scheme::Q4KM, &mut |_, _, _| {})
                .unwrap_err()
        )
    };
    // The tiny Gemma 3 slides layers 0 and 1 of 3: llama.cpp's gemma3 (every 6th layer
    // global, no key for it) cannot express that (`gguf_gemma3` writes one it can).
    let g = common::tiny_model_arch("gemma3_text");
    let e = err(g.path());
    assert!(e.contains("layer_types") && e.contains("sliding"), "{e}");
    // Byte fallback on a byte-level BPE (pre-tokenizer ByteLevel) is neither kind: refused.
    let t = common::tiny_model();
    let tj = t.path().join("tokenizer.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&tj).unwrap()).unwrap();
    v["model"]["byte_fallback"] = true.into();
    std::fs::write(&tj, v.to_string()).unwrap();
    let e = err(t.path());
    assert!(e.contains("byte fallback"), "{e}");
    assert!(!t.path().join("x.gguf").exists() && !t.path().join("x.gguf.partial").exists());
    // Mistral with a sliding window shorter than its context: llama.cpp's `llama` has none.
    let m = common::tiny_model_arch("mistral");
    let e = err(m.path());
    assert!(e.contains("sliding_window"), "{e}");
    // Type names.
    assert_eq!(Scheme::parse("Q4_K_M"), Some(Scheme::Q4KM));
    assert_eq!(
        Scheme::parse("q8_0"),
        Some(Scheme::Uniform(GgmlDType::Q8_0))
    );
    assert_eq!(Scheme::parse("q3_k"), None);
}

#[test]
fn quantize_at_load_tracks_the_written_file_and_the_node_serves_it() {
    let dir = wide_model();
    let src = dir.path().join("wide");
    let file = dir.path().join("wide.Q4_K.gguf");
    quantize::write_gguf(
        &src,
        &file,
        Scheme::Uniform(GgmlDType::Q4K),
        &mut |_, _, _| {},
    )
    .unwrap();
    let LoadedModel::Generation(at_load) =
        model::load_quantized(&src, None, Some("q4_k"), &Device::Cpu).unwrap()
    else {
        panic!("a generation model")
    };
    let from_file = load(&file);
    let ids = from_file
        .tokenizer
        .encode("The capital of France is Paris. The quick brown fox", false)
        .unwrap()
        .get_ids()
        .to_vec();
    // The same Q4_K matrices (the file's Q/K rows are permuted and permuted back whole);
    // only the embedding differs: the file quantizes it, at load it stays dense.
    let a: Vec<f32> = full_logits(&at_load.llama, &ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = full_logits(&from_file.llama, &ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let d: Vec<f32> = full_logits(&load(&src).llama, &ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (cos_file, _) = common::cos_max(&a, &b);
    let (cos_dense, _) = common::cos_max(&a, &d);
    let (cos_file_dense, _) = common::cos_max(&b, &d);
    eprintln!(
        "q4_k at load: cosine {cos_file:.5} vs the file, {cos_dense:.5} vs dense (file vs dense {cos_file_dense:.5})"
    );
    assert!(cos_file > 0.99 && cos_dense > 0.98 && cos_dense >= cos_file_dense - 1e-3);
    let (_, want) = greedy(&at_load, &ids, 8);
    let want_text = at_load.tokenizer.decode(&want, false).unwrap();

    // Refused: a mix at load, quantize on a GGUF file, a non-f32 dtype.
    let e = |r: Result<LoadedModel, model::files::ModelError>| match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    };
    assert!(
        e(model::load_quantized(
            &src,
            None,
            Some("q4_k_m"),
            &Device::Cpu
        ))
        .contains("mixes")
    );
    assert!(
        e(model::load_quantized(
            &file,
            None,
            Some("q8_0"),
            &Device::Cpu
        ))
        .contains("GGUF")
    );
    assert!(
        e(model::load_quantized(
            &src,
            Some("bf16"),
            Some("q8_0"),
            &Device::Cpu
        ))
        .contains("f32")
    );

    // A node whose config says `quantize = "q4_k"` serves exactly that.
    let source = format!(
        "source = {{ type = \"local\", path = {:?} }}\n",
        src.display().to_string()
    );
    let cfg = common::config(&src, false, "", "")
        .replace(&source, &format!("{source}quantize = \"q4_k\"\n"));
    assert!(cfg.contains("\nquantize = \"q4_k\""), "{cfg}");
    let node = common::Node::start(&cfg);
    let r: Value = common::client()
        .post(node.url("/v1/completions"))
        .json(&serde_json::json!({"model": "tiny",
            "prompt": "The capital of France is Paris. The quick brown fox",
            "max_tokens": 8, "temperature": 0}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["choices"][0]["text"].as_str().unwrap(), want_text, "{r}");
}

#[test]
fn every_quantize_type_of_the_node_config_is_a_scheme() {
    for t in dayshift_config::node::QUANTIZE_TYPES {
        assert!(
            matches!(Scheme::parse(t), Some(Scheme::Uniform(_))),
            "{t} is accepted by the node config but not by the loader"
        );
    }
}

#[test]
fn llama_qk_biases_survive_the_rotary_permutation() {
    // The 256-wide Llama with `attention_bias`: random q/k/v/o biases added.
    let dir = wide_model();
    let src = dir.path().join("wide");
    let st = src.join("model.safetensors");
    let mut w = candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
    let cfg_path = src.join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["attention_bias"] = true.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    for i in 0..2 {
        for (p, n) in [("q", 256), ("k", 128), ("v", 128), ("o", 256)] {
            let b = candle_core::Tensor::randn(0f32, 0.5, n, &Device::Cpu).unwrap();
            w.insert(format!("model.layers.{i}.self_attn.{p}_proj.bias"), b);
        }
    }
    candle_core::safetensors::save(&w, &st).unwrap();
    let dense = load(&src);
    let file = dir.path().join("bias.gguf");
    quantize::write_gguf(
        &src,
        &file,
        Scheme::Uniform(GgmlDType::F32),
        &mut |_, _, _| {},
    )
    .unwrap();
    let g = load(&file);
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 % 370) as u32).collect();
    let v = |m: &GenerationModel| -> Vec<f32> {
        full_logits(&m.llama, &ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (_, max) = common::cos_max(&v(&dense), &v(&g));
    assert!(
        max < 1e-4,
        "llama with q/k biases, GGUF vs safetensors: {max}"
    );
}
