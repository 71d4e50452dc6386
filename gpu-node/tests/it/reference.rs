//! The tiny Llama against PyTorch/transformers reference values
//! (gpu-node/reference/tiny_reference.json, made by reference/make_reference.py):
//! same files (sha256), same token ids, same chat prompt, logits within 1e-4,
//! same greedy tokens — through the full pass, the KV cache and chunked prefill.

use crate::common;

use candle_core::Device;
use dayshift_node::engine::sampling::argmax;
use dayshift_node::model::llama::{SeqCache, SeqChunk, WantLogits, full_logits};
use dayshift_node::model::{self, LoadedModel, chat::ChatMessage};
use serde_json::Value;

#[test]
fn tiny_llama_matches_transformers() {
    let reference: Value =
        serde_json::from_str(include_str!("../../reference/tiny_reference.json")).unwrap();
    let dir = common::tiny_model();
    assert_eq!(
        common::sha(&dir.path().join("model.safetensors")),
        reference["model_sha256"],
        "make-test-model is no longer deterministic"
    );
    assert_eq!(
        common::sha(&dir.path().join("tokenizer.json")),
        reference["tokenizer_sha256"]
    );
    let LoadedModel::Generation(m) = model::load(dir.path(), None, &Device::Cpu).unwrap() else {
        panic!("tiny model must load as a generation model")
    };
    let mut worst = 0f32;
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = m.tokenizer.encode(text, true).unwrap().get_ids().to_vec();
        let want_ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(ids, want_ids, "tokenization of {text:?}");
        // Full pass: every position's logits.
        let got: Vec<Vec<f32>> = full_logits(&m.llama, &ids).unwrap().to_vec2().unwrap();
        let want: Vec<Vec<f32>> = serde_json::from_value(case["logits"].clone()).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.len(), w.len());
            for (a, b) in g.iter().zip(w) {
                worst = worst.max((a - b).abs());
            }
        }
        // Chunked prefill (3 tokens a step) then greedy decode through the KV cache.
        let mut cache = SeqCache::default();
        let mut last = None;
        for chunk in ids.chunks(3) {
            let mut c = [SeqChunk {
                tokens: chunk,
                cache: &mut cache,
                want: WantLogits::Last,
            }];
            last = m.llama.forward(&mut c).unwrap().pop().flatten();
        }
        let greedy_want: Vec<u32> = serde_json::from_value(case["greedy"].clone()).unwrap();
        let mut greedy = Vec::new();
        for _ in 0..greedy_want.len() {
            let row: Vec<f32> = last.take().unwrap().squeeze(0).unwrap().to_vec1().unwrap();
            let t = argmax(&row);
            greedy.push(t);
            let tk = [t];
            let mut c = [SeqChunk {
                tokens: &tk,
                cache: &mut cache,
                want: WantLogits::Last,
            }];
            last = m.llama.forward(&mut c).unwrap().pop().flatten();
        }
        assert_eq!(greedy, greedy_want, "greedy tokens for {text:?}");
    }
    eprintln!("largest |logit difference| vs transformers: {worst:e}");
    assert!(worst <= 1e-4, "logits differ by {worst} > 1e-4");
    // The chat template renders like transformers' apply_chat_template.
    let chat = &reference["chat"];
    let msgs: Vec<ChatMessage> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage {
            role: m["role"].as_str().unwrap().into(),
            content: Some(m["content"].as_str().unwrap().into()),
            ..Default::default()
        })
        .collect();
    let text = m.chat.as_ref().unwrap().render(&msgs, None).unwrap();
    assert_eq!(text, chat["text"].as_str().unwrap());
    let ids: Vec<u32> = m
        .tokenizer
        .encode(text.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    let want_ids: Vec<u32> = serde_json::from_value(chat["ids"].clone()).unwrap();
    assert_eq!(ids, want_ids);
}

#[test]
fn clear_errors_for_broken_model_dirs() {
    let dir = common::tiny_model();
    let p = dir.path();
    // Unsupported architecture.
    let cfg = std::fs::read_to_string(p.join("config.json")).unwrap();
    std::fs::write(p.join("config.json"), cfg.replace("\"llama\"", "\"gpt2\"")).unwrap();
    let e = model::load(p, None, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unsupported architecture \"gpt2\""), "{e}");
    // Shape mismatch.
    std::fs::write(
        p.join("config.json"),
        cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let e = model::load(p, None, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("do not match its config.json") && e.contains("shape"),
        "{e}"
    );
    // Missing file.
    std::fs::write(p.join("config.json"), &cfg).unwrap();
    std::fs::remove_file(p.join("model.safetensors")).unwrap();
    let e = model::load(p, None, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing model.safetensors"), "{e}");
    std::fs::remove_file(p.join("tokenizer.json")).unwrap();
    let e = model::load(p, None, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing tokenizer.json"), "{e}");
}

#[test]
fn sharded_weights_load_like_one_file() {
    let dir = common::tiny_model();
    let p = dir.path();
    let one = match model::load(p, None, &Device::Cpu).unwrap() {
        LoadedModel::Generation(m) => full_logits(&m.llama, &[1, 2, 3])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        _ => unreachable!(),
    };
    // Split model.safetensors into two shards with an index.
    let all = candle_core::safetensors::load(p.join("model.safetensors"), &Device::Cpu).unwrap();
    let (mut a, mut b) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in all.into_iter().enumerate() {
        let shard = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(k.clone(), Value::String(shard.into()));
        if i % 2 == 0 {
            a.insert(k, v)
        } else {
            b.insert(k, v)
        };
    }
    candle_core::safetensors::save(&a, p.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, p.join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::remove_file(p.join("model.safetensors")).unwrap();
    std::fs::write(
        p.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let two = match model::load(p, None, &Device::Cpu).unwrap() {
        LoadedModel::Generation(m) => full_logits(&m.llama, &[1, 2, 3])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(one, two);
}
