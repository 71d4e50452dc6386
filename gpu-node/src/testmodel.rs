//! `dayshift-node make-test-model DIR [--arch qwen3|gemma3_text|mistral] [--tokenizer
//! FILE]`: a deterministic tiny Llama (or Qwen3, Gemma 3 text, Mistral) in the Hugging
//! Face layout (random weights from a fixed seed, a byte-level BPE tokenizer trained on a
//! built-in text and written with the `tokenizers` crate, or the given tokenizer.json, a
//! ChatML chat template).

use anyhow::Context;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Seed of the weights; changing it changes the committed reference values.
pub const SEED: u64 = 20_261_123;
/// Vocabulary size the tokenizer is trained to (bytes + merges + special tokens).
pub const VOCAB: usize = 512;
/// Special tokens, in id order after the merges.
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// The ChatML template shipped in `tokenizer_config.json`.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A tool-capable ChatML template in Qwen2.5's Hermes format (its instructions
/// shortened to fit the tiny model's 512-token context): `tools` go into the
/// system turn, assistant `tool_calls` become `<tool_call>` blocks and `tool` messages
/// `<tool_response>` blocks. Without tools it renders like [`CHAT_TEMPLATE`].
pub const TOOL_CHAT_TEMPLATE: &str = r##"{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\n\n' }}{%- endif %}
{{- "# Tools\n<tools>" }}
{%- for tool in tools %}{{- "\n" }}{{- tool | tojson }}{%- endfor %}
{{- "\n</tools>\nCall one as <tool_call>{\"name\": …, \"arguments\": {…}}</tool_call><|im_end|>\n" }}
{%- endif %}
{%- for message in messages %}
{%- if tools and loop.first and message.role == 'system' %}
{%- elif message.role == 'assistant' and message.tool_calls %}
{{- '<|im_start|>assistant' }}{%- if message.content %}{{- '\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}{{- tool_call.arguments | tojson }}{{- '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>user\n<tool_response>\n' + message.content + '\n</tool_response><|im_end|>\n' }}
{%- else %}
{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"##;

const CORPUS: &str = "The quick brown fox jumps over the lazy dog. A server that is rented only while \
people work costs far less than one that runs all day and all night. The scheduler starts the \
nodes before the working day begins, and stops them when the evening comes. Each node loads its \
model, registers with the ingress, and answers requests for chat completions, completions and \
embeddings. What is the capital of France? The capital of France is Paris. What is the capital \
of Germany? The capital of Germany is Berlin. Hello! How are you today? I am fine, thank you. \
Tell me a story about a small robot who learned to paint the sky in the colours of the morning. \
Once upon a time there was a little model with random weights, and it said many strange things, \
but the tests were happy because the things it said were always the same. Numbers: 0 1 2 3 4 5 6 \
7 8 9 10 100 1000. Code: fn main() { println!(\"hello, world\"); } def f(x): return x + 1. \
The weather is nice, the sun is shining, the birds are singing in the trees of the garden.";

/// GPT-2's byte → printable character map used by byte-level BPE.
fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut map = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        map[*b as usize] = char::from_u32(c).unwrap_or('?');
    }
    map
}

/// Deterministic byte-level BPE training: most frequent pair first, ties by the pair itself.
fn train_merges(corpus: &str, max_merges: usize, b2u: &[char]) -> Vec<(String, String)> {
    let mut words: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut piece = String::new();
    let flush = |p: &mut String, words: &mut BTreeMap<Vec<String>, usize>| {
        if !p.is_empty() {
            let syms = p.bytes().map(|b| b2u[b as usize].to_string()).collect();
            *words.entry(syms).or_default() += 1;
            p.clear();
        }
    };
    for ch in corpus.chars() {
        if ch == ' ' || (!ch.is_alphanumeric() && !piece.trim().is_empty()) {
            flush(&mut piece, &mut words);
        }
        piece.push(ch);
    }
    flush(&mut piece, &mut words);
    let mut merges = Vec::new();
    while merges.len() < max_merges {
        let mut pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (w, c) in &words {
            for p in w.windows(2) {
                *pairs.entry((p[0].clone(), p[1].clone())).or_default() += c;
            }
        }
        let mut best: Option<(&(String, String), usize)> = None;
        for (p, &c) in &pairs {
            if best.is_none_or(|(_, bc)| c > bc) {
                best = Some((p, c));
            }
        }
        let Some((pair, count)) = best else { break };
        if count < 2 {
            break;
        }
        let pair = pair.clone();
        let merged = format!("{}{}", pair.0, pair.1);
        let mut next = BTreeMap::new();
        for (w, c) in words {
            let mut out = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && w[i] == pair.0 && w[i + 1] == pair.1 {
                    out.push(merged.clone());
                    i += 2;
                } else {
                    out.push(w[i].clone());
                    i += 1;
                }
            }
            *next.entry(out).or_default() += c;
        }
        words = next;
        merges.push(pair);
    }
    merges
}

/// Builds the tokenizer; returns it with the ids of the special tokens.
pub fn build_tokenizer() -> anyhow::Result<Tokenizer> {
    let b2u = bytes_to_unicode();
    let merges = train_merges(CORPUS, VOCAB - 256 - SPECIALS.len(), &b2u);
    let mut vocab: Vec<(String, u32)> = Vec::new();
    for (b, c) in b2u.iter().enumerate() {
        vocab.push((c.to_string(), b as u32));
    }
    for (a, b) in &merges {
        let id = vocab.len() as u32;
        vocab.push((format!("{a}{b}"), id));
    }
    for s in SPECIALS {
        let id = vocab.len() as u32;
        vocab.push((s.to_string(), id));
    }
    let vocab: Vocab = vocab.into_iter().collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build BPE: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let bl = ByteLevel::default().add_prefix_space(false);
    tok.with_pre_tokenizer(Some(bl));
    tok.with_decoder(Some(bl));
    tok.with_post_processor(Some(bl));
    let specials: Vec<AddedToken> = SPECIALS
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| anyhow::anyhow!("cannot add special tokens: {e}"))?;
    Ok(tok)
}

/// Sizes of a random test Llama.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Hidden width.
    pub hidden: usize,
    /// MLP width.
    pub inter: usize,
    /// Blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

impl Dims {
    /// The tiny model of [`make_test_model`].
    pub const TINY: Dims = Dims {
        hidden: 64,
        inter: 128,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
    };
    /// A wider one whose matrices fit GGUF's 256-wide K-quant blocks.
    pub const WIDE: Dims = Dims {
        hidden: 256,
        inter: 512,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
    };
    /// The 256-wide Gemma 3 of [`make_test_model_gemma3_llama_cpp`]: 7 layers, so that
    /// llama.cpp's fixed pattern (every 6th layer global) has sliding layers on both
    /// sides of a global one.
    pub const GEMMA3_WIDE: Dims = Dims {
        hidden: 256,
        inter: 512,
        layers: 7,
        heads: 4,
        kv_heads: 1,
        head_dim: 64,
    };
}

/// Architecture of a test model; each exercises what its family adds to Llama.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// [`Dims::TINY`] Llama.
    Llama,
    /// Qwen3: per-head q/k norms, `head_dim` 32 ≠ hidden / heads.
    Qwen3,
    /// Gemma 3 text: two sliding-window layers (window 6, shorter than the test
    /// prompts plus their continuations) and one global, local RoPE base 500, global
    /// base 20000 with linear scaling ×2, `query_pre_attn_scalar` 24, final logit
    /// soft-capping 8, tied embeddings, one KV head.
    Gemma3,
    /// Mistral-Nemo's shape (`head_dim` 32 ≠ hidden / heads) with a sliding window of 7.
    Mistral,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 4] = [
        Family::Llama,
        Family::Qwen3,
        Family::Gemma3,
        Family::Mistral,
    ];
    /// Its `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen3 => "qwen3",
            Family::Gemma3 => "gemma3_text",
            Family::Mistral => "mistral",
        }
    }
    /// The family of a `model_type`.
    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.model_type() == s)
    }
    /// Its sizes.
    pub fn dims(self) -> Dims {
        match self {
            Family::Llama => Dims::TINY,
            Family::Qwen3 | Family::Mistral => Dims {
                head_dim: 32,
                ..Dims::TINY
            },
            Family::Gemma3 => Dims {
                layers: 3,
                kv_heads: 1,
                head_dim: 32,
                ..Dims::TINY
            },
        }
    }
}

/// The tiny model's `config.json` for a vocabulary of `vocab` tokens.
pub fn config_json(vocab: usize, eos: u32) -> serde_json::Value {
    config_json_dims(vocab, eos, Dims::TINY)
}

/// `config.json` of a test model of sizes `d`.
pub fn config_json_dims(vocab: usize, eos: u32, d: Dims) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": d.hidden,
        "intermediate_size": d.inter,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "attention_bias": false,
        "mlp_bias": false,
        "vocab_size": vocab,
        "torch_dtype": "float32",
        "eos_token_id": eos,
        "bos_token_id": null,
        "pad_token_id": null
    })
}

fn uniform(rng: &mut StdRng, shape: &[usize], scale: f32, offset: f32) -> anyhow::Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| offset + rng.random_range(-scale..scale))
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// `config.json` of the tiny model of `family`.
pub fn family_config_json(vocab: usize, eos: u32, family: Family) -> serde_json::Value {
    family_config_json_dims(vocab, eos, family, family.dims())
}

/// [`family_config_json`] with sizes `d`.
fn family_config_json_dims(vocab: usize, eos: u32, family: Family, d: Dims) -> serde_json::Value {
    let mut v = config_json_dims(vocab, eos, d);
    let arch = match family {
        Family::Llama => return v,
        Family::Qwen3 => {
            v["rope_theta"] = 1_000_000.0.into();
            v["rms_norm_eps"] = 1e-6.into();
            v["use_sliding_window"] = false.into();
            "Qwen3ForCausalLM"
        }
        Family::Mistral => {
            v["sliding_window"] = 7.into();
            v["rope_theta"] = 1_000_000.0.into();
            "MistralForCausalLM"
        }
        Family::Gemma3 => {
            if let Some(m) = v.as_object_mut() {
                m.remove("hidden_act");
                m.remove("mlp_bias");
            }
            v["hidden_activation"] = "gelu_pytorch_tanh".into();
            v["rms_norm_eps"] = 1e-6.into();
            v["rope_theta"] = 20_000.0.into();
            v["rope_local_base_freq"] = 500.0.into();
            v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 2.0});
            v["query_pre_attn_scalar"] = 24.into();
            v["sliding_window"] = 6.into();
            v["sliding_window_pattern"] = 3.into();
            // Every 3rd layer global (the tiny model: sliding, sliding, full).
            v["layer_types"] = (0..d.layers)
                .map(|i| {
                    if (i + 1) % 3 == 0 {
                        "full_attention"
                    } else {
                        "sliding_attention"
                    }
                })
                .collect::<Vec<_>>()
                .into();
            v["final_logit_softcapping"] = 8.0.into();
            v["attn_logit_softcapping"] = serde_json::Value::Null;
            v["tie_word_embeddings"] = true.into();
            "Gemma3ForCausalLM"
        }
    };
    v["model_type"] = family.model_type().into();
    v["architectures"] = serde_json::json!([arch]);
    v
}

/// Random weights of a `family` model of sizes `d`, drawn in a fixed order from [`SEED`]:
/// Llama's draws in Llama's order, then
/// per layer the family's extra tensors; Gemma's norm weights are centred on 0 (applied
/// as `1 + w`) and it has no `lm_head` (tied).
fn family_weights(
    vocab: usize,
    d: Dims,
    family: Family,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let gemma = family == Family::Gemma3;
    let norm_offset = if gemma { 0.0 } else { 1.0 };
    let (h, inter, layers, heads, kv, hd) =
        (d.hidden, d.inter, d.layers, d.heads, d.kv_heads, d.head_dim);
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut w = HashMap::new();
    let lin = |rng: &mut StdRng, out: usize, inp: usize| {
        uniform(rng, &[out, inp], (3.0 / inp as f32).sqrt(), 0.0)
    };
    w.insert(
        "model.embed_tokens.weight".into(),
        uniform(&mut rng, &[vocab, h], 1.0, 0.0)?,
    );
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        w.insert(
            format!("{p}.self_attn.q_proj.weight"),
            lin(&mut rng, heads * hd, h)?,
        );
        w.insert(
            format!("{p}.self_attn.k_proj.weight"),
            lin(&mut rng, kv * hd, h)?,
        );
        w.insert(
            format!("{p}.self_attn.v_proj.weight"),
            lin(&mut rng, kv * hd, h)?,
        );
        w.insert(
            format!("{p}.self_attn.o_proj.weight"),
            lin(&mut rng, h, heads * hd)?,
        );
        w.insert(
            format!("{p}.mlp.gate_proj.weight"),
            lin(&mut rng, inter, h)?,
        );
        w.insert(format!("{p}.mlp.up_proj.weight"), lin(&mut rng, inter, h)?);
        w.insert(
            format!("{p}.mlp.down_proj.weight"),
            lin(&mut rng, h, inter)?,
        );
        w.insert(
            format!("{p}.input_layernorm.weight"),
            uniform(&mut rng, &[h], 0.2, norm_offset)?,
        );
        w.insert(
            format!("{p}.post_attention_layernorm.weight"),
            uniform(&mut rng, &[h], 0.2, norm_offset)?,
        );
        if matches!(family, Family::Qwen3 | Family::Gemma3) {
            for n in ["q_norm", "k_norm"] {
                w.insert(
                    format!("{p}.self_attn.{n}.weight"),
                    uniform(&mut rng, &[hd], 0.2, norm_offset)?,
                );
            }
        }
        if gemma {
            for n in ["pre_feedforward_layernorm", "post_feedforward_layernorm"] {
                w.insert(
                    format!("{p}.{n}.weight"),
                    uniform(&mut rng, &[h], 0.2, norm_offset)?,
                );
            }
        }
    }
    w.insert(
        "model.norm.weight".into(),
        uniform(&mut rng, &[h], 0.2, norm_offset)?,
    );
    if !gemma {
        w.insert("lm_head.weight".into(), lin(&mut rng, vocab, h)?);
    }
    Ok(w)
}

fn write_json(path: &Path, v: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces the chat template in `dir`'s `tokenizer_config.json`.
pub fn set_chat_template(dir: &Path, template: &str) -> anyhow::Result<()> {
    let p = dir.join("tokenizer_config.json");
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?,
    )
    .with_context(|| format!("{} is not JSON", p.display()))?;
    v["chat_template"] = serde_json::Value::String(template.to_string());
    write_json(&p, &v)
}

/// Writes the tiny model into `dir` (created if needed).
pub fn make_test_model(dir: &Path) -> anyhow::Result<()> {
    make_test_model_dims(dir, Dims::TINY)
}

/// Writes a random test model of sizes `d` (same tokenizer and template) into `dir`.
pub fn make_test_model_dims(dir: &Path, d: Dims) -> anyhow::Result<()> {
    make_model(dir, d, Family::Llama)
}

/// Writes the tiny model of `family` (same tokenizer and template) into `dir`.
pub fn make_test_model_family(dir: &Path, family: Family) -> anyhow::Result<()> {
    make_model(dir, family.dims(), family)
}

/// Writes a random model of `family` with sizes `d` instead of the family's own.
pub fn make_test_model_family_dims(dir: &Path, family: Family, d: Dims) -> anyhow::Result<()> {
    make_model(dir, d, family)
}

/// Writes the tiny model of `family` with the tokenizer.json at `tokenizer` instead of
/// the built-in one (the tokenizer tests make GGUF files of SentencePiece and Tekken
/// tokenizers with `quantize`): its vocabulary sets the embedding's rows; EOS is the
/// first of `</s>`, `<|im_end|>`, `<|endoftext|>` it has, BOS `<s>` if it has it.
pub fn make_test_model_with_tokenizer(
    dir: &Path,
    family: Family,
    tokenizer: &Path,
) -> anyhow::Result<()> {
    make_model_with(dir, family.dims(), family, Some(tokenizer))
}

/// Writes a random Gemma 3 text model ([`Dims::GEMMA3_WIDE`], same tokenizer and
/// template) whose config is one llama.cpp's `gemma3` architecture can express, so that
/// `quantize` writes it and llama.cpp runs it alike: every 6th layer global
/// (`sliding_window_pattern` 6; llama.cpp hard-codes it), sliding window 6, local RoPE
/// base 10000 (hard-coded there too), global base 20000 with linear scaling ×2,
/// `query_pre_attn_scalar` = `head_dim` (llama.cpp's attention scale), no final
/// soft-capping (llama.cpp's sliding-window Gemma 3 graph has none), tied embeddings.
pub fn make_test_model_gemma3_llama_cpp(dir: &Path) -> anyhow::Result<()> {
    let d = Dims::GEMMA3_WIDE;
    make_model(dir, d, Family::Gemma3)?;
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?,
    )?;
    v["sliding_window_pattern"] = 6.into();
    v["layer_types"] = (0..d.layers)
        .map(|i| {
            if (i + 1) % 6 == 0 {
                "full_attention"
            } else {
                "sliding_attention"
            }
        })
        .collect::<Vec<_>>()
        .into();
    v["rope_local_base_freq"] = 10_000.0.into();
    v["query_pre_attn_scalar"] = d.head_dim.into();
    v["final_logit_softcapping"] = serde_json::Value::Null;
    write_json(&p, &v)?;
    // Embeddings of ±1/16 (× √256 at the input: ±1), as small as a trained Gemma's:
    // at ±1 the tied output matrix only echoes the last input token.
    let st = dir.join("model.safetensors");
    let mut w = candle_core::safetensors::load(&st, &Device::Cpu)?;
    let name = "model.embed_tokens.weight";
    if let Some(e) = w.get(name) {
        let e = e.affine(1.0 / 16.0, 0.0)?;
        w.insert(name.into(), e);
    }
    candle_core::safetensors::save(&w, &st).context("cannot write model.safetensors")
}

fn make_model(dir: &Path, d: Dims, family: Family) -> anyhow::Result<()> {
    make_model_with(dir, d, family, None)
}

fn make_model_with(
    dir: &Path,
    d: Dims,
    family: Family,
    tokenizer: Option<&Path>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tok = match tokenizer {
        Some(p) => Tokenizer::from_file(p)
            .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", p.display()))?,
        None => build_tokenizer()?,
    };
    let vocab = tok.get_vocab_size(true);
    let (eos_str, eot_str, bos_str) = match tokenizer {
        None => ("<|im_end|>", "<|endoftext|>", None),
        Some(p) => {
            let eos = ["</s>", "<|im_end|>", "<|endoftext|>"]
                .into_iter()
                .find(|s| tok.token_to_id(s).is_some())
                .with_context(|| {
                    format!(
                        "{} has none of </s>, <|im_end|>, <|endoftext|> for EOS",
                        p.display()
                    )
                })?;
            (eos, eos, tok.token_to_id("<s>").map(|_| "<s>"))
        }
    };
    let id = |s: &str| {
        tok.token_to_id(s)
            .context("special token missing from the tokenizer")
    };
    let (eot, im_end) = (id(eot_str)?, id(eos_str)?);
    let bos = bos_str.map(id).transpose()?;
    tok.save(dir.join("tokenizer.json"), true)
        .map_err(|e| anyhow::anyhow!("cannot write tokenizer.json: {e}"))?;
    let mut config = family_config_json_dims(vocab, im_end, family, d);
    if let Some(b) = bos {
        config["bos_token_id"] = b.into();
    }
    write_json(&dir.join("config.json"), &config)?;
    let mut eos_ids = vec![im_end];
    if eot != im_end {
        eos_ids.push(eot);
    }
    write_json(
        &dir.join("generation_config.json"),
        &serde_json::json!({"eos_token_id": eos_ids, "do_sample": false}),
    )?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": CHAT_TEMPLATE,
            "bos_token": bos_str,
            "eos_token": eos_str,
            "pad_token": eot_str,
            "model_max_length": 512,
            "clean_up_tokenization_spaces": false
        }),
    )?;
    let w = family_weights(vocab, d, family)?;
    candle_core::safetensors::save(&w, dir.join("model.safetensors"))
        .context("cannot write model.safetensors")?;
    Ok(())
}
