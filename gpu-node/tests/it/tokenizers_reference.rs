//! GGUF tokenizers token for token against llama.cpp, and tokenizer.json files against
//! Hugging Face `tokenizers`: `reference/tokenizers/tokenizer_reference.json`, made by
//! `reference/tokenizers/make_tokenizer_reference.py` (llama-cpp-python, tokenizers,
//! sentencepiece) from the committed files next to it (sha256 checked), on mixed text of
//! a few thousand characters (German, English, Rust/Python code with indentation and
//! tabs, numbers, emoji, CJK, runs of spaces and newlines, characters that need byte
//! fallback) and edge cases (empty text, leading spaces, special tokens in the text).
//! - `spm/spm.gguf`: SentencePiece (`tokenizer.ggml.model = "llama"`) as llama.cpp's
//!   converter writes it from a tokenizer.model.
//! - `tekken/tekken.gguf`: byte-level BPE with `tokenizer.ggml.pre = "tekken"`.
//! - The same two tokenizers as tokenizer.json, through `dayshift-node make-test-model
//!   --tokenizer` and `quantize`: the files quantize writes, read by llama.cpp (sha256 of
//!   the written bytes checked).
//! - Unknown or missing `tokenizer.ggml.pre` and what quantize cannot carry are refused.

use crate::common::{self, BIN};
use candle_core::quantized::gguf_file::{Content, Value as GValue};
use dayshift_node::model::gguf;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokenizers::Tokenizer;

fn reference() -> Value {
    serde_json::from_str(include_str!(
        "../../reference/tokenizers/tokenizer_reference.json"
    ))
    .unwrap()
}

fn ref_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/tokenizers")
}

/// A committed input file, checked against the sha256 the reference was made from.
fn input(entry: &Value) -> PathBuf {
    let p = ref_dir().join(entry["file"].as_str().unwrap());
    assert_eq!(
        common::sha(&p),
        entry["sha256"].as_str().unwrap(),
        "{} is not the file the reference was made from: run make_tokenizer_reference.py",
        p.display()
    );
    p
}

fn ids_of(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The tokens around the first difference, for the failure message.
fn first_difference(tok: &Tokenizer, got: &[u32], want: &[u32]) -> String {
    let at = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    let show = |ids: &[u32]| -> Vec<String> {
        ids[at.saturating_sub(3)..(at + 6).min(ids.len())]
            .iter()
            .map(|&i| tok.id_to_token(i).unwrap_or_else(|| format!("#{i}")))
            .collect()
    };
    format!(
        "first difference at token {at} of {}/{}: ours {:?}, reference {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    )
}

/// Texts that decode back to themselves: no special tokens in them, no literal `▁`
/// (SentencePiece's space).
fn round_trips(text: &str) -> bool {
    !["<s>", "</s>", "<unk>", "[INST]", "[/INST]", "▁"]
        .iter()
        .any(|s| text.contains(s))
}

/// `tok` encodes every case to `want["ids"]` (without BOS) and the BOS cases to
/// `want["bos_ids"]`, and decodes the round-trip cases back to their text. Returns the
/// number of tokens compared.
fn compare(label: &str, tok: &Tokenizer, r: &Value, want: &Value) -> usize {
    let cases = strings(&r["cases"]);
    let want_ids = ids_of(&want["ids"]);
    assert_eq!(cases.len(), want_ids.len());
    let mut n = 0;
    for (text, want) in cases.iter().zip(&want_ids) {
        let got = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert!(
            &got == want,
            "{label}: tokens of {:?}: {}",
            text.chars().take(60).collect::<String>(),
            first_difference(tok, &got, want)
        );
        n += got.len();
        if round_trips(text) {
            let back = tok.decode(&got, false).unwrap();
            assert_eq!(&back, text, "{label}: decoding gives the text back");
        }
    }
    for (text, want) in strings(&r["bos_cases"])
        .iter()
        .zip(ids_of(&want["bos_ids"]))
    {
        let got = tok.encode(text.as_str(), true).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "{label}: tokens of {text:?} with BOS");
    }
    n
}

#[test]
fn sentencepiece_gguf_tokenizes_like_llama_cpp() {
    let r = reference();
    let file = input(&r["spm"]["gguf"]);
    let tok = gguf::read_tokenizer(&file).unwrap();
    let n = compare("spm.gguf", &tok, &r, &r["spm"]["gguf"]);
    eprintln!("spm.gguf: {n} tokens equal to llama.cpp's");
    // Constrained decoding reads each token's bytes from the same tokenizer: ▁ is a
    // space, <0xNN> one byte.
    let eos = tok.token_to_id("</s>").unwrap();
    let bytes = dayshift_node::engine::grammar::Guide::default()
        .token_bytes(&tok, eos)
        .unwrap();
    let id = |t: &str| tok.token_to_id(t).unwrap() as usize;
    assert_eq!(bytes[id("<0x41>")], b"A");
    assert_eq!(bytes[id("▁the")], b" the");
    // The SentencePiece library itself gives the same ids where the text holds no
    // special tokens (it does not parse them).
    let cases = strings(&r["cases"]);
    for (text, want) in cases.iter().zip(ids_of(&r["spm"]["sentencepiece_ids"])) {
        if round_trips(text) {
            let got = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
            assert_eq!(got, want, "sentencepiece's ids of {text:?}");
        }
    }
}

#[test]
fn tekken_gguf_tokenizes_like_llama_cpp() {
    let r = reference();
    let file = input(&r["tekken"]["gguf"]);
    let tok = gguf::read_tokenizer(&file).unwrap();
    let n = compare("tekken.gguf", &tok, &r, &r["tekken"]["gguf"]);
    eprintln!("tekken.gguf: {n} tokens equal to llama.cpp's");
}

#[test]
fn tokenizer_json_files_tokenize_like_hf_tokenizers() {
    let r = reference();
    for kind in ["spm", "tekken"] {
        let want = &r[kind]["hf"];
        let tok = Tokenizer::from_file(input(want)).unwrap();
        let n = compare(&format!("{kind}/tokenizer.json"), &tok, &r, want);
        let cases = strings(&r["cases"]);
        for (text, dec) in cases.iter().zip(strings(&want["decoded"])) {
            let ids = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
            assert_eq!(
                tok.decode(&ids, false).unwrap(),
                dec,
                "{kind}: decoded {text:?}"
            );
        }
        eprintln!("{kind}/tokenizer.json: {n} tokens equal to Hugging Face tokenizers'");
    }
}

/// GGUF metadata as (key, value) pairs.
type Metadata = Vec<(String, GValue)>;

/// Writes `file`'s metadata with `edit` applied (no tensors) to `out`.
fn rewrite_gguf(file: &Path, out: &Path, edit: &dyn Fn(&mut Metadata)) {
    let mut reader = std::fs::File::open(file).unwrap();
    let content = Content::read(&mut reader).unwrap();
    let mut md: Metadata = content.metadata.into_iter().collect();
    md.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut md);
    let refs: Vec<(&str, &GValue)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(out).unwrap();
    candle_core::quantized::gguf_file::write(&mut f, &refs, &[]).unwrap();
}

#[test]
fn an_unknown_or_missing_pre_tokenizer_is_refused_by_name() {
    let r = reference();
    let tekken = input(&r["tekken"]["gguf"]);
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("odd.gguf");
    rewrite_gguf(&tekken, &odd, &|md| {
        for (k, v) in md.iter_mut() {
            if k == "tokenizer.ggml.pre" {
                *v = GValue::String("jais".into());
            }
        }
    });
    let e = gguf::read_tokenizer(&odd).unwrap_err().to_string();
    assert!(
        e.contains("\"jais\"") && e.contains("odd.gguf") && e.contains("tekken"),
        "{e}"
    );
    let none = dir.path().join("none.gguf");
    rewrite_gguf(&tekken, &none, &|md| {
        md.retain(|(k, _)| k != "tokenizer.ggml.pre")
    });
    let e = gguf::read_tokenizer(&none).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.ggml.pre is missing") && e.contains("none.gguf"),
        "{e}"
    );
    // A SentencePiece file without scores cannot be read either.
    let spm = input(&r["spm"]["gguf"]);
    let bare = dir.path().join("bare.gguf");
    rewrite_gguf(&spm, &bare, &|md| {
        md.retain(|(k, _)| k != "tokenizer.ggml.scores")
    });
    let e = gguf::read_tokenizer(&bare).unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.scores is missing"), "{e}");
}

/// `dayshift-node make-test-model DIR/NAME --tokenizer TOKENIZER` then `quantize -t q8_0`
/// into `DIR/NAME.q8_0.gguf` (the reference's names: they are in the file's bytes);
/// returns the GGUF file, or quantize's error output.
fn quantize_with(dir: &Path, name: &str, tokenizer: &Path) -> Result<PathBuf, String> {
    let model = dir.join(name);
    let st = Command::new(BIN)
        .arg("make-test-model")
        .arg(&model)
        .arg("--tokenizer")
        .arg(tokenizer)
        .status()
        .unwrap();
    assert!(st.success(), "make-test-model --tokenizer failed");
    let out = dir.join(format!("{name}.q8_0.gguf"));
    let run = Command::new(BIN)
        .arg("quantize")
        .arg(&model)
        .args(["-t", "q8_0", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    if run.status.success() {
        Ok(out)
    } else {
        Err(String::from_utf8_lossy(&run.stderr).into_owned())
    }
}

#[test]
fn quantize_writes_sentencepiece_and_tekken_tokenizers_that_llama_cpp_reads_alike() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    for kind in ["spm", "tekken"] {
        let want = &r[kind]["quantized"];
        // quantize's own check (the written file encodes its sample like tokenizer.json)
        // passed, or there would be no file.
        let file = quantize_with(dir.path(), kind, &input(&r[kind]["hf"])).unwrap();
        assert_eq!(
            common::sha(&file),
            want["sha256"].as_str().unwrap(),
            "{kind}: quantize no longer writes the bytes the llama.cpp reference was made from: run make_tokenizer_reference.py --node"
        );
        let tok = gguf::read_tokenizer(&file).unwrap();
        let n = compare(&format!("quantized {kind}"), &tok, &r, want);
        // What llama.cpp makes of the written file equals what it makes of the file its
        // own converter writes.
        assert_eq!(want["ids"], r[kind]["gguf"]["ids"], "{kind}");
        eprintln!("quantized {kind}: {n} tokens equal to llama.cpp's");
    }
    // SentencePiece: llama.cpp reads the written file exactly as tokenizer.json encodes,
    // all cases. (llama.cpp's converter, given only tokenizer.json, writes every score as
    // -1000: llama.cpp's tokens then differ from tokenizer.json's on most cases.)
    assert_eq!(r["spm"]["quantized"]["ids"], r["spm"]["hf"]["ids"]);
    let off = &r["spm"]["convert_hf_to_gguf_without_tokenizer_model"]["cases_differing_from_hf"];
    assert!(off.as_array().unwrap().len() > 5, "{off}");
    // Tekken: llama.cpp's form of the regex splits where tokenizer.json's does not (a
    // combining mark after a letter, a non-ASCII capital after a small letter); only the
    // mixed text has such words (`cafe` + U+0301), and the GGUF file follows llama.cpp.
    let cases = strings(&r["cases"]);
    for (i, (a, b)) in ids_of(&r["tekken"]["quantized"]["ids"])
        .iter()
        .zip(ids_of(&r["tekken"]["hf"]["ids"]))
        .enumerate()
    {
        if *a != b {
            assert!(cases[i].contains("e\u{301}"), "case {i}");
        }
    }
}

#[test]
fn quantize_refuses_a_metaspace_sentencepiece_tokenizer_by_name() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    // transformers 5 writes Llama-style tokenizers with a Metaspace pre-tokenizer and no
    // normalizer: "  x" gets no extra ▁ there, but one in llama.cpp.
    let mut tj: Value =
        serde_json::from_str(&std::fs::read_to_string(input(&r["spm"]["hf"])).unwrap()).unwrap();
    tj["normalizer"] = Value::Null;
    tj["pre_tokenizer"] = serde_json::json!({
        "type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false
    });
    let path = dir.path().join("metaspace.json");
    std::fs::write(&path, serde_json::to_string(&tj).unwrap()).unwrap();
    let e = quantize_with(dir.path(), "metaspace", &path).unwrap_err();
    assert!(
        e.contains("Metaspace")
            && e.contains("prepend_scheme \"first\"")
            && e.contains("Llama 2's layout"),
        "{e}"
    );
    assert!(!dir.path().join("metaspace.q8_0.gguf").exists());
}
