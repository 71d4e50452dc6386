//! The tokenizer of a GGUF file (`tokenizer.ggml.*`), built with the `tokenizers` crate
//! so that it encodes as llama.cpp's `llama-vocab.cpp` does:
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE from `tokens` + `merges`, with the
//!   pre-tokenizer `tokenizer.ggml.pre` names (`gpt-2`, `smollm`, Llama 3's, Qwen2's,
//!   Tekken's). A value this node does not know, or none, is refused: llama.cpp itself
//!   only warns and falls back to its `default` pre-tokenizer, whose tokens differ.
//! - `tokenizer.ggml.model = "llama"`: SentencePiece (Llama 2, Mistral 7B, Gemma) from
//!   `tokens` + `scores` + `token_type`, no merges. llama.cpp's SPM tokenizer escapes
//!   spaces as `▁`, prepends one `▁` to each run of text that starts the input or follows
//!   a special token (`add_space_prefix`, default on), then merges adjacent symbols
//!   greedily, the pair whose merged text is the token with the highest score first (the
//!   leftmost on a tie), and writes symbols that are no token as `<0xNN>` byte tokens.
//!   Here that is a BPE model with byte fallback whose merges are every split of every
//!   token into two tokens, ranked by the score of the whole (what transformers'
//!   `SentencePieceExtractor` does for a tokenizer.model), with the normalizer and
//!   decoder of Llama 2's tokenizer.json (`Prepend("▁")` + `Replace(" ", "▁")`;
//!   `▁` → space, byte fallback, fuse, strip the prepended space).
//!
//! In both, control (type 3) and unknown (type 2) tokens are special tokens and
//! user-defined ones (type 4) are matched in the raw text too, as llama.cpp's
//! `tokenizer_st_partition` does (the caller decides whether special tokens in text are
//! parsed; this node always does, like Hugging Face tokenizers and llama.cpp with
//! `parse_special`). Checked token for token against llama.cpp on mixed text:
//! `gpu-node/tests/it/tokenizers_reference.rs`.

use std::collections::HashMap;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// Llama 3's pre-tokenizer regex (its tokenizer.json; llama.cpp's `llama-bpe`).
pub(crate) const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (llama.cpp's `qwen2`).
pub(crate) const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral's Tekken regex as Mistral-Nemo's and Mistral-Small-3.1's tokenizer.json have it
/// (`quantize` recognises a Tekken tokenizer by it and writes `tokenizer.ggml.pre = "tekken"`).
pub const TEKKEN_REGEX: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// What llama.cpp runs for `tekken` (llama-vocab.cpp, `LLAMA_VOCAB_PRE_TYPE_TEKKEN`): its
/// regex engine has no `\p{Lu}`/`\p{Ll}`, so "upper" is "a letter but not a-z" and "lower"
/// "a letter but not A-Z", and marks (`\p{M}`) are no letters. Tokens therefore differ
/// from the tokenizer.json's where a non-ASCII capital follows a small letter (`aÜb`) or
/// a combining mark follows a letter (`e` + U+0301); a GGUF file must give llama.cpp's.
pub(crate) const TEKKEN_LLAMA_CPP_REGEX: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
pub mod token_type {
    /// An ordinary piece.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A special (control) token.
    pub const CONTROL: i32 = 3;
    /// A user-defined token, matched in the text before anything else.
    pub const USER_DEFINED: i32 = 4;
    /// An unused id (placeholder).
    pub const UNUSED: i32 = 5;
    /// A byte `<0xNN>` of SentencePiece's byte fallback.
    pub const BYTE: i32 = 6;
}

/// The `tokenizer.ggml.*` values a tokenizer is built from.
pub(crate) struct GgufVocab<'a> {
    /// `tokenizer.ggml.model`.
    pub model: &'a str,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<&'a str>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: &'a [String],
    /// `tokenizer.ggml.scores` (SentencePiece).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`.
    pub types: Vec<i64>,
    /// `tokenizer.ggml.merges` (byte-level BPE).
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u64>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
}

/// The BOS id llama.cpp uses when the file names none (`llama`: 1).
pub(crate) fn default_bos(model: &str) -> Option<u64> {
    (model == "llama").then_some(1)
}

/// The EOS id llama.cpp uses when the file names none (`llama`: 2).
pub(crate) fn default_eos(model: &str) -> Option<u64> {
    (model == "llama").then_some(2)
}

/// Byte-level BPE pre-tokenizer names (`tokenizer.ggml.pre`) this node reads.
pub const KNOWN_PRE: &str =
    "gpt-2, smollm, llama-bpe (llama3, llama-v3, pixtral), qwen2 (deepseek-r1-qwen), tekken";

/// Builds the tokenizer; the error says what is wrong with the file's metadata.
pub(crate) fn build(v: &GgufVocab) -> Result<Tokenizer, String> {
    let (mut tok, add_bos_default) = match v.model {
        "gpt2" => byte_level_bpe(v)?,
        "llama" => (sentencepiece(v)?, true),
        other => {
            return Err(format!(
                "tokenizer.ggml.model {other:?} is not supported: this node reads byte-level BPE (\"gpt2\": Llama 3, Qwen2, SmolLM, Mistral's Tekken) and SentencePiece (\"llama\": Llama 2, Mistral 7B, Gemma); use the model's safetensors directory instead"
            ));
        }
    };
    add_special_tokens(&mut tok, v)?;
    let bos = v.bos_id.or_else(|| default_bos(v.model));
    if v.add_bos.unwrap_or(add_bos_default)
        && let Some(b) = bos
        && let Some(s) = v.tokens.get(b as usize)
    {
        let mut tb = TemplateProcessing::builder();
        tb.try_single(format!("{s} $A"))
            .map_err(|e| format!("cannot set up the BOS token: {e}"))?;
        tb.special_tokens(vec![(s.clone(), b as u32)]);
        let tp = tb
            .build()
            .map_err(|e| format!("cannot set up the BOS token: {e}"))?;
        tok.with_post_processor(Some(tp));
    }
    Ok(tok)
}

/// Control and unknown tokens as special tokens, user-defined ones as added tokens, all
/// matched in the raw (not normalized) text, as llama.cpp matches them.
fn add_special_tokens(tok: &mut Tokenizer, v: &GgufVocab) -> Result<(), String> {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (i, t) in v.tokens.iter().enumerate() {
        match v.types.get(i).map(|&x| x as i32) {
            Some(token_type::CONTROL | token_type::UNKNOWN) => {
                special.push(AddedToken::from(t.clone(), true).normalized(false))
            }
            Some(token_type::USER_DEFINED) => {
                user.push(AddedToken::from(t.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    tok.add_special_tokens(special)
        .map_err(|e| format!("cannot add special tokens: {e}"))?;
    tok.add_tokens(user)
        .map_err(|e| format!("cannot add user-defined tokens: {e}"))?;
    Ok(())
}

fn regex_split(re: &str) -> Result<PreTokenizerWrapper, String> {
    Ok(Split::new(
        SplitPattern::Regex(re.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| format!("bad pre-tokenizer regex: {e}"))?
    .into())
}

fn regex_then_bytes(re: &str) -> Result<PreTokenizerWrapper, String> {
    let bl = ByteLevel::default()
        .add_prefix_space(false)
        .use_regex(false);
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        regex_split(re)?,
        bl.into(),
    ])))
}

fn vocab_of(tokens: &[String]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

/// `tokenizer.ggml.model = "gpt2"`; also whether llama.cpp adds BOS by default for its
/// pre-tokenizer.
fn byte_level_bpe(v: &GgufVocab) -> Result<(Tokenizer, bool), String> {
    let merges: Vec<(String, String)> = v
        .merges
        .as_deref()
        .ok_or("metadata tokenizer.ggml.merges is missing: a byte-level BPE tokenizer needs it")?
        .iter()
        .filter_map(|s| {
            s.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let byte_level = ByteLevel::default().add_prefix_space(false);
    // (pre-tokenizer, ignore_merges, add BOS by default): llama.cpp's settings per name.
    let (pre_tok, ignore_merges, add_bos): (PreTokenizerWrapper, bool, bool) = match v.pre {
        Some("gpt-2") => (byte_level.into(), false, false),
        Some("smollm") => (
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])),
            false,
            false,
        ),
        Some("llama3" | "llama-bpe" | "llama-v3" | "pixtral") => {
            (regex_then_bytes(LLAMA3_REGEX)?, true, true)
        }
        Some("qwen2" | "deepseek-r1-qwen") => (regex_then_bytes(QWEN2_REGEX)?, false, false),
        Some("tekken") => (regex_then_bytes(TEKKEN_LLAMA_CPP_REGEX)?, true, true),
        Some(other) => {
            return Err(format!(
                "tokenizer.ggml.pre {other:?} is not a pre-tokenizer this node reads ({KNOWN_PRE}); its tokens would differ from llama.cpp's (which falls back to its \"default\" pre-tokenizer with a warning); use the model's safetensors directory instead"
            ));
        }
        None => {
            return Err(format!(
                "metadata tokenizer.ggml.pre is missing (a GGUF file from before May 2024?): llama.cpp falls back to its \"default\" pre-tokenizer with a warning, this node refuses rather than guess; convert the model again with a current llama.cpp, or use its safetensors directory (pre-tokenizers read: {KNOWN_PRE})"
            ));
        }
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_of(v.tokens), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| format!("cannot build the BPE tokenizer: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok((tok, add_bos))
}

/// Merges of llama.cpp's SPM tokenizer for a vocabulary with scores: every split of a
/// token into two tokens, best score of the whole first; on equal scores the lower token
/// id, then the lower ids of the halves (transformers' `SentencePieceExtractor` order).
pub(crate) fn spm_merges(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let ids: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let mut found: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        // llama.cpp maps a text to the last id that has it.
        if ids.get(t.as_str()) != Some(&(id as u32)) {
            continue;
        }
        for (at, _) in t.char_indices().skip(1) {
            let (a, b) = t.split_at(at);
            if let (Some(&ia), Some(&ib)) = (ids.get(a), ids.get(b)) {
                let score = scores.get(id).copied().unwrap_or(0.0);
                found.push((score, id as u32, ia, ib));
            }
        }
    }
    found.sort_by(|x, y| {
        y.0.total_cmp(&x.0)
            .then(x.1.cmp(&y.1))
            .then(x.2.cmp(&y.2))
            .then(x.3.cmp(&y.3))
    });
    found
        .into_iter()
        .map(|(_, _, a, b)| (tokens[a as usize].clone(), tokens[b as usize].clone()))
        .collect()
}

/// `tokenizer.ggml.model = "llama"` (SentencePiece).
fn sentencepiece(v: &GgufVocab) -> Result<Tokenizer, String> {
    let scores = v
        .scores
        .as_deref()
        .ok_or("metadata tokenizer.ggml.scores is missing: a SentencePiece tokenizer needs it")?;
    if scores.len() != v.tokens.len() {
        return Err(format!(
            "tokenizer.ggml.scores has {} values for {} tokens",
            scores.len(),
            v.tokens.len()
        ));
    }
    let merges = spm_merges(v.tokens, scores);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_of(v.tokens), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = v
        .tokens
        .iter()
        .zip(&v.types)
        .find(|(_, t)| **t as i32 == token_type::UNKNOWN)
        .map(|(s, _)| s.clone())
    {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| format!("cannot build the SentencePiece tokenizer: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let prefix = v.add_space_prefix.unwrap_or(true);
    let space = Replace::new(" ", "▁").map_err(|e| format!("cannot set up ▁: {e}"))?;
    let normalizer: NormalizerWrapper = if prefix {
        tokenizers::normalizers::Sequence::new(vec![
            Prepend::new("▁".to_string()).into(),
            space.into(),
        ])
        .into()
    } else {
        space.into()
    };
    tok.with_normalizer(Some(normalizer))
        .map_err(|e| format!("cannot set up the normalizer: {e}"))?;
    let mut steps: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ")
            .map_err(|e| format!("cannot set up ▁: {e}"))?
            .into(),
        ByteFallback::default().into(),
        Fuse::default().into(),
    ];
    if prefix {
        steps.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(steps)));
    Ok(tok)
}
