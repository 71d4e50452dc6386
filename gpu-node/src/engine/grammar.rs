//! Constrained decoding with `llguidance`: a JSON schema (or any JSON object) becomes a
//! [`Constraint`] that gives, before each step, the set of tokens the sequence may take.
//!
//! The token table (each id's bytes) is read from the tokenizer's own JSON, so GGUF
//! models (whose tokenizer is built from the file's metadata) get it the same way as
//! Hugging Face directories. It also gives the `bytes` of logprobs entries.

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use std::sync::{Arc, OnceLock};
use tokenizers::Tokenizer;

/// The model's tokens as bytes plus the parser factory (built on first use: the
/// factory's token slices take a few hundred milliseconds for a large vocabulary).
#[derive(Default)]
pub struct Guide {
    state: OnceLock<Result<GuideState, String>>,
}

struct GuideState {
    bytes: Arc<Vec<Vec<u8>>>,
    factory: Arc<ParserFactory>,
}

/// A tokenizer environment over the model's `tokenizers::Tokenizer` (its `encode` is
/// used when the grammar forces text).
struct HfEnv {
    trie: TokTrie,
    tok: Tokenizer,
}

impl TokenizerEnv for HfEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        let text = String::from_utf8_lossy(s);
        match self.tok.encode(text.as_ref(), false) {
            Ok(e) => e.get_ids().to_vec(),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

impl Guide {
    fn state(&self, tok: &Tokenizer, eos: u32) -> Result<&GuideState, String> {
        self.state
            .get_or_init(|| build(tok, eos))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Each token id's bytes (special tokens start with 0xFF, llguidance's marker).
    pub fn token_bytes(&self, tok: &Tokenizer, eos: u32) -> Result<Arc<Vec<Vec<u8>>>, String> {
        Ok(self.state(tok, eos)?.bytes.clone())
    }

    /// A constraint for `schema` (`None`: any JSON object). The error says what in the
    /// schema is not supported.
    pub fn json(
        &self,
        tok: &Tokenizer,
        eos: u32,
        schema: Option<&serde_json::Value>,
    ) -> Result<Constraint, String> {
        let st = self.state(tok, eos)?;
        let mut schema = match schema {
            Some(s) => s.clone(),
            None => serde_json::json!({"type": "object"}),
        };
        if let Some(o) = schema.as_object_mut() {
            // No free whitespace: a small model would otherwise emit newlines forever.
            o.insert(
                "x-guidance".into(),
                serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
            );
        }
        let grammar = TopLevelGrammar::from_json_schema(schema);
        let parser = st
            .factory
            .create_parser(grammar)
            .map_err(|e| format!("the JSON schema cannot be used for constrained decoding: {e}"))?;
        let m = Matcher::new(Ok(parser));
        if let Some(e) = m.get_error() {
            return Err(format!("the JSON schema cannot be used: {e}"));
        }
        Ok(Constraint { m })
    }
}

fn build(tok: &Tokenizer, eos: u32) -> Result<GuideState, String> {
    let json: serde_json::Value = serde_json::from_str(
        &tok.to_string(false)
            .map_err(|e| format!("cannot serialise the tokenizer: {e}"))?,
    )
    .map_err(|e| format!("cannot read the tokenizer's JSON: {e}"))?;
    let mut bytes = llguidance::token_bytes_from_tokenizer_json(&json)
        .map_err(|e| format!("cannot read token bytes from the tokenizer: {e}"))?;
    let n = tok.get_vocab_size(true).max(bytes.len());
    bytes.resize(n, Vec::new());
    let mut info = TokRxInfo::new(n as u32, eos);
    info.tok_eos = eos;
    let trie = TokTrie::from(&info, &bytes);
    let env: TokEnv = Arc::new(HfEnv {
        trie,
        tok: tok.clone(),
    });
    let mut factory = ParserFactory::new_simple(&env)
        .map_err(|e| format!("cannot start the grammar engine: {e}"))?;
    factory.quiet();
    Ok(GuideState {
        bytes: Arc::new(bytes),
        factory: Arc::new(factory),
    })
}

/// One sequence's grammar state.
pub struct Constraint {
    m: Matcher,
}

impl Constraint {
    /// The tokens allowed next (EOS only once the grammar is complete and nothing
    /// else fits).
    pub fn mask(&mut self) -> Result<SimpleVob, String> {
        let r = self.m.compute_mask_or_eos().map_err(|e| e.to_string());
        if let Some(e) = self.m.get_error() {
            return Err(e);
        }
        r
    }
    /// Advances over a sampled token.
    pub fn commit(&mut self, tok: u32) -> Result<(), String> {
        self.m.consume_token(tok).map_err(|e| e.to_string())
    }
    /// True when the grammar is complete and takes no more tokens.
    pub fn stopped(&self) -> bool {
        self.m.is_stopped()
    }
}

/// Sets every logit the mask forbids to -inf (ids past the mask are forbidden too).
pub fn apply_mask(logits: &mut [f32], mask: &SimpleVob) {
    let n = mask.len();
    for (i, l) in logits.iter_mut().enumerate() {
        if i >= n || !mask.get(i) {
            *l = f32::NEG_INFINITY;
        }
    }
}
