//! `dayshift-node quantize`: a Hugging Face safetensors directory (config.json,
//! model*.safetensors, tokenizer.json, tokenizer_config.json) → one GGUF file laid out
//! as llama.cpp's converter and `llama-quantize` lay it out, so that the file loads in
//! this node and in llama.cpp alike.
//!
//! - Architectures: `llama` and `mistral` (written as GGUF `llama`, Q/K rows interleaved
//!   for the GPT-J rotary layout like llama.cpp's converter), `qwen2` (biases, rows as
//!   they are), `qwen3` (per-head q/k norms `attn_q_norm`/`attn_k_norm`, rows as they are).
//! - Types ([`Scheme`]): one type for every matrix (`q8_0`, `q6_k`, `q5_k`, `q4_k`,
//!   `q5_0`, `q5_1`, `q4_0`, `q4_1`, `f16`, `f32`) or llama.cpp's mixes `q4_k_m` and
//!   `q5_k_m` (the `attn_v` and `ffn_down` matrices of some layers and the output matrix
//!   in Q6_K). Norms and biases stay f32. A matrix whose input width is not a multiple
//!   of 256 cannot hold K-quant blocks; it falls back as llama.cpp does (Q4_K → Q5_0,
//!   Q5_K → Q5_1, Q6_K → Q8_0) and the report counts it.
//!   `gemma3_text` and `gemma3` (its text part: `language_model.*` weights, the vision
//!   tower is skipped) as GGUF `gemma3`, as llama.cpp's `Gemma3Model` converter writes
//!   it: its names (`post_attention_norm`, `ffn_norm` for the norm before the MLP,
//!   `post_ffw_norm`, `attn_q_norm`/`attn_k_norm`), every norm stored as applied
//!   (`1 + w`), rows as they are, no `output` tensor when tied; `sliding_window`,
//!   linear `rope.scaling.*`. What llama.cpp's `gemma3` cannot express is refused
//!   ([`refuse_gemma3`]).
//! - Llama 3.1's `rope_scaling` becomes the `rope_freqs.weight` tensor (llama.cpp's form).
//! - Tokenizer ([`tokenizer_kind`]): byte-level BPE (tokens, merges, token types,
//!   BOS/EOS, the pre-tokenizer's llama.cpp name found from `tokenizer.json`: GPT-2,
//!   SmolLM, Llama 3, Qwen2, Tekken), or a SentencePiece-style BPE with byte fallback
//!   (Llama 2's layout) as `tokenizer.ggml.model = "llama"` with scores derived from the
//!   merge ranks ([`spm_scores`]), with the chat template.
//!   After writing, the file is read back and its tokenizer must encode a sample of mixed
//!   text (German, code, emoji) to the same ids as the directory's, or the file is removed.

use super::arch::{Arch, Rope, RopeKind, inv_freqs};
use super::chat;
use super::config::LlamaConfig;
use super::files::read_json;
use super::gguf::{GEMMA3_LOCAL_ROPE_BASE, GEMMA3_SWA_PATTERN, gemma3_query_pre_attn_scalar};
use super::gguf_tokenizer::token_type;
use anyhow::{Context, bail, ensure};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::time::Instant;
use tokenizers::Tokenizer;

/// The weight types a GGUF file is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Every matrix in one type.
    Uniform(GgmlDType),
    /// llama.cpp's `Q4_K_M`: Q4_K, with some layers' `attn_v`/`ffn_down` and the output in Q6_K.
    Q4KM,
    /// llama.cpp's `Q5_K_M`: Q5_K, with the same matrices in Q6_K.
    Q5KM,
}

/// Names [`Scheme::parse`] accepts, for error messages and `--help`.
pub const SCHEME_NAMES: &str =
    "q4_k_m, q5_k_m, q4_k, q5_k, q6_k, q8_0, q4_0, q4_1, q5_0, q5_1, f16, f32";

impl Scheme {
    /// Parses a type name (`q4_k_m`, `Q8_0`, `q4k`, …); `None` for an unknown one.
    pub fn parse(s: &str) -> Option<Scheme> {
        let k = s.to_ascii_lowercase().replace(['_', '-'], "");
        Some(match k.as_str() {
            "q4km" => Scheme::Q4KM,
            "q5km" => Scheme::Q5KM,
            "q4k" | "q4ks" => Scheme::Uniform(GgmlDType::Q4K),
            "q5k" | "q5ks" => Scheme::Uniform(GgmlDType::Q5K),
            "q6k" => Scheme::Uniform(GgmlDType::Q6K),
            "q80" => Scheme::Uniform(GgmlDType::Q8_0),
            "q40" => Scheme::Uniform(GgmlDType::Q4_0),
            "q41" => Scheme::Uniform(GgmlDType::Q4_1),
            "q50" => Scheme::Uniform(GgmlDType::Q5_0),
            "q51" => Scheme::Uniform(GgmlDType::Q5_1),
            "f16" => Scheme::Uniform(GgmlDType::F16),
            "f32" => Scheme::Uniform(GgmlDType::F32),
            _ => return None,
        })
    }

    /// The type of most matrices.
    fn base(self) -> GgmlDType {
        match self {
            Scheme::Uniform(t) => t,
            Scheme::Q4KM => GgmlDType::Q4K,
            Scheme::Q5KM => GgmlDType::Q5K,
        }
    }

    /// llama.cpp's `general.file_type` (`llama_ftype`) for this scheme.
    fn file_type(self) -> u32 {
        match self {
            Scheme::Q4KM => 15,
            Scheme::Q5KM => 17,
            Scheme::Uniform(t) => match t {
                GgmlDType::F32 => 0,
                GgmlDType::F16 => 1,
                GgmlDType::Q4_0 => 2,
                GgmlDType::Q4_1 => 3,
                GgmlDType::Q8_0 => 7,
                GgmlDType::Q5_0 => 8,
                GgmlDType::Q5_1 => 9,
                GgmlDType::Q4K => 14,
                GgmlDType::Q5K => 16,
                GgmlDType::Q6K => 18,
                _ => 0,
            },
        }
    }

    /// The type of matrix `role` of layer `layer` (of `layers`), before any fallback;
    /// llama.cpp's `llama_tensor_get_type` for these schemes.
    fn matrix_type(self, role: Role, layer: usize, layers: usize) -> GgmlDType {
        let mixed = matches!(self, Scheme::Q4KM | Scheme::Q5KM);
        match role {
            Role::Output if mixed => GgmlDType::Q6K,
            Role::AttnV | Role::FfnDown if mixed && use_more_bits(layer, layers) => GgmlDType::Q6K,
            _ => self.base(),
        }
    }
}

/// llama.cpp's choice of the layers that get more bits in the `_M` mixes.
fn use_more_bits(layer: usize, layers: usize) -> bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
}

/// What a matrix is, for the mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `output.weight`, or `token_embd.weight` when the model ties them.
    Output,
    /// `attn_v`.
    AttnV,
    /// `ffn_down`.
    FfnDown,
    /// Any other matrix.
    Other,
}

impl Role {
    /// The role of the GGUF tensor `name` (`tied`: the file has no `output.weight`, so
    /// `token_embd.weight` is also the output matrix).
    fn of(name: &str, tied: bool) -> Role {
        if name == "output.weight" || (tied && name == "token_embd.weight") {
            Role::Output
        } else if name.contains(".attn_v.") {
            Role::AttnV
        } else if name.contains(".ffn_down.") {
            Role::FfnDown
        } else {
            Role::Other
        }
    }
}

/// The type the GGUF tensor `name` of shape `dims` is written in, as (wanted, written):
/// 1-D tensors (norms, biases, `rope_freqs`) stay f32; a matrix gets the scheme's type for
/// its role and layer (both read from the name; llama.cpp's `llama_tensor_get_type`),
/// then [`fit_type`] for its input width.
fn tensor_type(
    scheme: Scheme,
    name: &str,
    dims: &[usize],
    tied: bool,
    layers: usize,
) -> (GgmlDType, GgmlDType) {
    if dims.len() < 2 {
        return (GgmlDType::F32, GgmlDType::F32);
    }
    let layer = name
        .strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    let want = scheme.matrix_type(Role::of(name, tied), layer, layers);
    (want, fit_type(want, dims.last().copied().unwrap_or(0)))
}

/// The type a matrix of input width `width` can hold: K-quants need whole 256-wide
/// super-blocks; llama.cpp's fallbacks otherwise.
pub(crate) fn fit_type(want: GgmlDType, width: usize) -> GgmlDType {
    if width.is_multiple_of(want.block_size()) {
        return want;
    }
    match want {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        other => other,
    }
}

/// What [`write_gguf`] wrote.
#[derive(Debug, Default)]
pub struct Report {
    /// Tensors written, by GGUF type name.
    pub by_type: BTreeMap<String, usize>,
    /// Matrices written in a fallback type: (name, wanted, written).
    pub fell_back: Vec<(String, GgmlDType, GgmlDType)>,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Parameters written.
    pub params: usize,
    /// GGUF architecture name.
    pub architecture: String,
    /// llama.cpp's name of the pre-tokenizer.
    pub pre_tokenizer: String,
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub tokenizer_model: String,
}

impl Report {
    /// The type tensor `name` is written in ([`tensor_type`]), counted in the report.
    fn plan(
        &mut self,
        scheme: Scheme,
        name: &str,
        dims: &[usize],
        tied: bool,
        layers: usize,
    ) -> GgmlDType {
        let (want, got) = tensor_type(scheme, name, dims, tied, layers);
        if got != want {
            self.fell_back.push((name.to_string(), want, got));
        }
        self.params += dims.iter().product::<usize>();
        *self.by_type.entry(type_name(got).into()).or_default() += 1;
        got
    }
}

/// One tensor to write: its GGUF name, and how to make it.
struct Plan {
    gguf: String,
    hf: String,
    /// Q/K projection of a `llama` file: interleave rows of this many heads.
    interleave: Option<usize>,
    /// Added to every value (Gemma 3's norms: 1).
    shift: f64,
}

/// Text the written tokenizer must encode exactly as the directory's does.
pub const TOKENIZER_SAMPLE: &str = "Grüße aus Köln! Die Straße ist schön, Übermaß an Öl.\n\
    fn main() { let x: Vec<u32> = (0..10).collect(); println!(\"{x:?}\"); }\n\
    def f(a, b):\n    return a ** 2 + b  # 12345 678\n\
    Emoji: 🙂🚀👩‍💻 — “quotes”, 'apostrophes' and\ttabs.  Double  spaces.\n\
    It's, we'll, they're, I'd; 3.14159 1,000,000 0x1F.";

/// Converts the safetensors model in `dir` to a GGUF file `out` in `scheme`; `progress`
/// is called after each tensor with (done, total, name). Verifies the written tokenizer.
pub fn write_gguf(
    dir: &Path,
    out: &Path,
    scheme: Scheme,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> anyhow::Result<Report> {
    let raw: serde_json::Value = read_json(&dir.join("config.json"))?;
    let mut cfg: LlamaConfig = serde_json::from_value(super::text_config(raw))
        .with_context(|| format!("{}", dir.join("config.json").display()))?;
    cfg.normalize();
    cfg.check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("config.json").display()))?;
    let arch = match cfg.model_type.as_str() {
        "llama" | "mistral" => "llama",
        "qwen2" => "qwen2",
        "qwen3" => "qwen3",
        "gemma3_text" => "gemma3",
        other => bail!(
            "{}: model_type {other:?} cannot be quantized yet (supported: llama, mistral, qwen2, qwen3, gemma3_text, gemma3)",
            dir.join("config.json").display()
        ),
    };
    refuse_unwritable(&cfg, dir)?;
    // The engine's reading of the config (refuses what it would not run) and, from it,
    // Llama 3.1's scaling as llama.cpp stores it and Gemma 3's layer choices.
    let choices = Arch::from_config(&cfg)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("config.json").display()))?;
    if arch == "gemma3" {
        refuse_gemma3(&cfg, &choices, dir)?;
    }
    let tok = super::load_tokenizer(dir)?;
    let tc = chat::TokenizerConfig::load(&dir.join("tokenizer_config.json"))?;
    let tj: serde_json::Value = serde_json::from_str(
        &tok.to_string(false)
            .map_err(|e| anyhow::anyhow!("cannot serialise the tokenizer: {e}"))?,
    )?;
    let kind = tokenizer_kind(&tj).with_context(|| {
        format!(
            "{}: this tokenizer cannot be written as GGUF",
            dir.join("tokenizer.json").display()
        )
    })?;
    let mut md = tokenizer_metadata(&tok, &tj, &tc, &cfg, kind)?;
    md.extend(model_metadata(&cfg, arch, scheme, dir));
    if arch == "gemma3" {
        md.extend(gemma3_metadata(&cfg, &choices));
    }

    let vb = super::load_weights(dir, DType::F32, &Device::Cpu)?;
    let has = |n: &str| vb.contains_tensor(n);
    let (prefix, head) = super::llama::weight_prefixes(&vb);
    let tied = !has(&format!("{head}.weight"));
    let plans = plan_tensors(&cfg, arch, tied, &prefix, &head, &has);
    let freqs = choices
        .ropes
        .first()
        .and_then(|r| rope_freqs(cfg.head_dim(), r));
    let total = plans.len() + usize::from(freqs.is_some());
    let mut report = Report {
        architecture: arch.into(),
        pre_tokenizer: kind.pre().into(),
        tokenizer_model: kind.model().into(),
        ..Default::default()
    };
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(total);
    for (done, p) in plans.iter().enumerate() {
        let w = vb
            .get_unchecked(&p.hf)
            .with_context(|| format!("tensor {} missing in {}", p.hf, dir.display()))?;
        let w = match p.interleave {
            Some(h) => interleave(&w, h)?,
            None => w,
        };
        // Gemma 3's norms as applied (`1 + w`), as llama.cpp's converter stores them.
        let w = if p.shift != 0.0 {
            w.affine(1.0, p.shift)?
        } else {
            w
        };
        let dt = report.plan(scheme, &p.gguf, w.dims(), tied, cfg.num_hidden_layers);
        let qt = quantize_parallel(&w, dt)
            .with_context(|| format!("cannot quantize {} as {dt:?}", p.gguf))?;
        tensors.push((p.gguf.clone(), qt));
        progress(done + 1, total, &p.gguf);
    }
    if let Some(f) = freqs {
        let n = f.len();
        let t = Tensor::from_vec(f, n, &Device::Cpu)?;
        report.plan(scheme, "rope_freqs.weight", &[n], tied, 0);
        tensors.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&t, GgmlDType::F32)?,
        ));
        progress(total, total, "rope_freqs.weight");
    }
    write_file(out, &md, &tensors, &|tmp| check_tokenizer(tmp, &tok))?;
    report.bytes = std::fs::metadata(out)?.len();
    Ok(report)
}

/// [`QTensor::quantize`] of a CPU tensor, spread over the rayon pool: the rows are cut
/// into one chunk per thread (whole rows, so whole blocks), each chunk quantized alone,
/// and the blocks joined in order — the same bytes as one call, since every block is
/// quantized from its own values only (unit test below). Vectors, types without blocks
/// and small matrices take the single call.
pub(crate) fn quantize_parallel(w: &Tensor, dt: GgmlDType) -> candle_core::Result<QTensor> {
    use rayon::prelude::*;
    const MIN_CHUNK_ELEMS: usize = 1 << 20;
    let dims = w.dims().to_vec();
    let threads = rayon::current_num_threads();
    let rows = dims.first().copied().unwrap_or(0);
    let blocked = !matches!(dt, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
    if dims.len() != 2 || !blocked || threads < 2 || w.elem_count() < 2 * MIN_CHUNK_ELEMS {
        return QTensor::quantize(w, dt);
    }
    let per = rows
        .div_ceil(threads)
        .max(MIN_CHUNK_ELEMS.div_ceil(dims[1].max(1)));
    let parts: Vec<candle_core::Result<Vec<u8>>> = (0..rows.div_ceil(per))
        .into_par_iter()
        .map(|i| {
            let n = per.min(rows - i * per);
            // A copy of its own: the quantizer reads the whole storage, ignoring the
            // view's offset.
            let q = QTensor::quantize(&w.narrow(0, i * per, n)?.force_contiguous()?, dt)?;
            Ok(q.data()?.into_owned())
        })
        .collect();
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(&p?);
    }
    candle_core::quantized::ggml_file::qtensor_from_ggml(dt, &bytes, dims, &Device::Cpu)
}

/// Refuses what a GGUF file of these architectures cannot carry (rather than drop it).
fn refuse_unwritable(cfg: &LlamaConfig, dir: &Path) -> anyhow::Result<()> {
    let file = dir.join("config.json");
    if let Some(s) = &cfg.rope_scaling
        && s.rope_type.as_deref() != Some("llama3")
        && s.rope_type.as_deref() != Some("default")
        && cfg.model_type != "gemma3_text"
    {
        bail!(
            "{}: rope_scaling type {:?} cannot be written yet (only llama3, as rope_freqs.weight)",
            file.display(),
            s.rope_type.as_deref().unwrap_or("missing")
        );
    }
    if let Some(w) = cfg.sliding_window
        && w < cfg.max_position_embeddings
        && cfg.use_sliding_window != Some(false)
        && cfg.model_type == "mistral"
    {
        bail!(
            "{}: sliding_window {w} (< max_position_embeddings {}) would be lost: llama.cpp's `llama` architecture has no sliding window",
            file.display(),
            cfg.max_position_embeddings
        );
    }
    Ok(())
}

/// Refuses a Gemma 3 config that llama.cpp's `gemma3` architecture cannot express (it
/// reads no key for these: see [`super::gguf`]'s `gemma3_config` for the sources), each
/// error naming the config field: sliding layers other than every
/// [`GEMMA3_SWA_PATTERN`]-th layer global (or none), a local RoPE base other than
/// [`GEMMA3_LOCAL_ROPE_BASE`] or a scaled local RoPE, a `query_pre_attn_scalar` other
/// than the one llama.cpp implies, and final-logit soft-capping together with sliding
/// layers (llama.cpp's sliding-window graph has none).
fn refuse_gemma3(cfg: &LlamaConfig, a: &Arch, dir: &Path) -> anyhow::Result<()> {
    let file = dir.join("config.json");
    let n = cfg.num_hidden_layers;
    let any_sliding = a.sliding.iter().any(|&s| s);
    let llama_cpp: Vec<bool> = (0..n).map(|i| (i + 1) % GEMMA3_SWA_PATTERN != 0).collect();
    if any_sliding && a.sliding != llama_cpp {
        bail!(
            "{}: layer_types / sliding_window_pattern make layers {:?} sliding; llama.cpp's gemma3 has no key for this and slides every layer but each {GEMMA3_SWA_PATTERN}th ({:?}), so the GGUF file would run differently",
            file.display(),
            a.sliding
                .iter()
                .enumerate()
                .filter(|(_, s)| **s)
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
            llama_cpp
                .iter()
                .enumerate()
                .filter(|(_, s)| **s)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        );
    }
    if let Some(local) = a.ropes.get(1)
        && any_sliding
        && (local.theta != GEMMA3_LOCAL_ROPE_BASE || local.kind != RopeKind::Default)
    {
        bail!(
            "{}: rope_local_base_freq {} ({:?}) cannot be written: llama.cpp's gemma3 gives sliding layers base {GEMMA3_LOCAL_ROPE_BASE}, unscaled, and reads no key for it",
            file.display(),
            local.theta,
            local.kind
        );
    }
    let hd = cfg.head_dim() as u64;
    let want = gemma3_query_pre_attn_scalar(
        n as u64,
        cfg.hidden_size as u64,
        cfg.num_attention_heads as u64,
        hd,
    );
    let have = cfg.query_pre_attn_scalar.unwrap_or(256.0);
    if have != want as f64 {
        bail!(
            "{}: query_pre_attn_scalar {have} cannot be written: llama.cpp's gemma3 scales queries by 1/√{want} ({}), with no key for it",
            file.display(),
            if n == 62 {
                "hidden_size / num_attention_heads, its 27B rule"
            } else {
                "head_dim"
            }
        );
    }
    if let Some(c) = cfg.final_logit_softcapping
        && any_sliding
    {
        bail!(
            "{}: final_logit_softcapping {c} cannot be written for a model with sliding-window layers: llama.cpp's gemma3 applies it only without them",
            file.display()
        );
    }
    if !matches!(
        a.ropes.first().map(|r| &r.kind),
        Some(RopeKind::Default | RopeKind::Linear(_))
    ) {
        bail!(
            "{}: rope_scaling of the global layers must be linear or none for gemma3",
            file.display()
        );
    }
    Ok(())
}

/// The `gemma3.*` keys llama.cpp's converter adds for Gemma 3: `attention.sliding_window`
/// when some layer slides, `rope.scaling.type` / `rope.scaling.factor` for linear
/// scaling (global layers only), `final_logit_softcapping` when set (only without
/// sliding layers; [`refuse_gemma3`]).
fn gemma3_metadata(cfg: &LlamaConfig, a: &Arch) -> Vec<(String, Value)> {
    let mut md = Vec::new();
    if let (Some(w), true) = (a.window, a.sliding.iter().any(|&s| s)) {
        md.push((
            "gemma3.attention.sliding_window".into(),
            Value::U32(w as u32),
        ));
    }
    if let Some(RopeKind::Linear(f)) = a.ropes.first().map(|r| &r.kind) {
        md.push((
            "gemma3.rope.scaling.type".into(),
            Value::String("linear".into()),
        ));
        md.push(("gemma3.rope.scaling.factor".into(), Value::F32(*f as f32)));
    }
    if let Some(c) = cfg.final_logit_softcapping {
        md.push((
            "gemma3.final_logit_softcapping".into(),
            Value::F32(c as f32),
        ));
    }
    md
}

/// Re-quantizes the GGUF file `src` into `out` in `scheme` (every matrix dequantized and
/// quantized again; 1-D tensors, metadata and tensor order kept, `general.file_type`
/// updated). A matrix already in a lower-bit type gains nothing from a higher one: this
/// moves a file between types (e.g. a Q4_1 download to Q8_0 or Q4_K_M), not up in quality.
pub fn requantize_gguf(
    src: &Path,
    out: &Path,
    scheme: Scheme,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> anyhow::Result<Report> {
    use candle_core::quantized::gguf_file::Content;
    let mut reader = std::io::BufReader::new(
        File::open(src).with_context(|| format!("cannot open {}", src.display()))?,
    );
    let content = Content::read(&mut reader)
        .map_err(|e| anyhow::anyhow!("{}: not a readable GGUF file: {e}", src.display()))?;
    let arch = match content.metadata.get("general.architecture") {
        Some(Value::String(a)) => a.clone(),
        _ => bail!("{}: no general.architecture", src.display()),
    };
    let layers = match content.metadata.get(&format!("{arch}.block_count")) {
        Some(Value::U32(n)) => *n as usize,
        Some(Value::U64(n)) => *n as usize,
        _ => bail!("{}: no {arch}.block_count", src.display()),
    };
    let tied = !content.tensor_infos.contains_key("output.weight");
    let mut md: Vec<(String, Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.file_type")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.sort_by(|a, b| a.0.cmp(&b.0));
    md.push(("general.file_type".into(), Value::U32(scheme.file_type())));
    let mut names: Vec<(&String, u64)> = content
        .tensor_infos
        .iter()
        .map(|(n, i)| (n, i.offset))
        .collect();
    names.sort_by_key(|(_, off)| *off);
    let total = names.len();
    let mut report = Report {
        architecture: arch,
        pre_tokenizer: match content.metadata.get("tokenizer.ggml.pre") {
            Some(Value::String(p)) => p.clone(),
            _ => "(none)".into(),
        },
        tokenizer_model: match content.metadata.get("tokenizer.ggml.model") {
            Some(Value::String(p)) => p.clone(),
            _ => "(none)".into(),
        },
        ..Default::default()
    };
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(total);
    for (done, (name, _)) in names.into_iter().enumerate() {
        let q = content.tensor(&mut reader, name, &Device::Cpu)?;
        let dims = q.shape().dims().to_vec();
        let qt = if dims.len() < 2 {
            report.plan(scheme, name, &dims, tied, layers);
            q
        } else {
            let got = report.plan(scheme, name, &dims, tied, layers);
            quantize_parallel(&q.dequantize(&Device::Cpu)?, got)
                .with_context(|| format!("cannot quantize {name} as {got:?}"))?
        };
        tensors.push((name.clone(), qt));
        progress(done + 1, total, name);
    }
    write_file(out, &md, &tensors, &|_| Ok(()))?;
    report.bytes = std::fs::metadata(out)?.len();
    Ok(report)
}

/// Writes metadata and tensors as a GGUF file: into `<out>.partial`, which `check` must
/// accept before it is renamed to `out` (else it is removed).
fn write_file(
    out: &Path,
    md: &[(String, Value)],
    tensors: &[(String, QTensor)],
    check: &dyn Fn(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tmp = out.with_extension("gguf.partial");
    {
        let mut f = std::io::BufWriter::new(
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
        );
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        candle_core::quantized::gguf_file::write(&mut f, &md_refs, &t_refs)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::io::Write::flush(&mut f)?;
    }
    if let Err(e) = check(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))
}

/// Writes every matrix of `dir` in one type (tests and the tiny model's GGUF files).
pub fn write_from_dir(dir: &Path, out: &Path, dtype: GgmlDType) -> anyhow::Result<Report> {
    write_gguf(dir, out, Scheme::Uniform(dtype), &mut |_, _, _| {})
}

/// The tensors of the file, in llama.cpp's order and names; `prefix` is where the
/// decoder's weights live (`model`, or Gemma 3's multimodal `language_model.model` /
/// `model.language_model`), `head` the name of the untied output matrix.
fn plan_tensors(
    cfg: &LlamaConfig,
    arch: &str,
    tied: bool,
    prefix: &str,
    head: &str,
    has: &dyn Fn(&str) -> bool,
) -> Vec<Plan> {
    let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
    let rot = |h: usize| (arch == "llama").then_some(h);
    let gemma = arch == "gemma3";
    // Gemma3RMSNorm scales by `1 + w`; llama.cpp's converter stores `1 + w`.
    let norm_shift = if gemma { 1.0 } else { 0.0 };
    let mut v = vec![Plan {
        gguf: "token_embd.weight".into(),
        hf: format!("{prefix}.embed_tokens.weight"),
        interleave: None,
        shift: 0.0,
    }];
    // (HF name, GGUF name, only some architectures have it: Qwen3's per-head q/k
    // norms, `[head_dim]`, written as they are)
    let norms: &[(&str, &str, bool)] = if gemma {
        &[
            ("input_layernorm", "attn_norm", false),
            ("post_attention_layernorm", "post_attention_norm", false),
            ("pre_feedforward_layernorm", "ffn_norm", false),
            ("post_feedforward_layernorm", "post_ffw_norm", false),
            ("self_attn.q_norm", "attn_q_norm", false),
            ("self_attn.k_norm", "attn_k_norm", false),
        ]
    } else {
        &[
            ("input_layernorm", "attn_norm", false),
            ("post_attention_layernorm", "ffn_norm", false),
            ("self_attn.q_norm", "attn_q_norm", true),
            ("self_attn.k_norm", "attn_k_norm", true),
        ]
    };
    for i in 0..cfg.num_hidden_layers {
        let p = format!("{prefix}.layers.{i}");
        let b = format!("blk.{i}");
        let mats = [
            ("self_attn.q_proj", "attn_q", rot(nh)),
            ("self_attn.k_proj", "attn_k", rot(nkv)),
            ("self_attn.v_proj", "attn_v", None),
            ("self_attn.o_proj", "attn_output", None),
            ("mlp.gate_proj", "ffn_gate", None),
            ("mlp.up_proj", "ffn_up", None),
            ("mlp.down_proj", "ffn_down", None),
        ];
        for (hf, gg, il) in mats {
            v.push(Plan {
                gguf: format!("{b}.{gg}.weight"),
                hf: format!("{p}.{hf}.weight"),
                interleave: il,
                shift: 0.0,
            });
            let bias = format!("{p}.{hf}.bias");
            if has(&bias) {
                v.push(Plan {
                    gguf: format!("{b}.{gg}.bias"),
                    hf: bias,
                    interleave: il,
                    shift: 0.0,
                });
            }
        }
        for &(hf, gg, optional) in norms {
            if optional && !has(&format!("{p}.{hf}.weight")) {
                continue;
            }
            v.push(Plan {
                gguf: format!("{b}.{gg}.weight"),
                hf: format!("{p}.{hf}.weight"),
                interleave: None,
                shift: norm_shift,
            });
        }
    }
    v.push(Plan {
        gguf: "output_norm.weight".into(),
        hf: format!("{prefix}.norm.weight"),
        interleave: None,
        shift: norm_shift,
    });
    if !tied {
        v.push(Plan {
            gguf: "output.weight".into(),
            hf: format!("{head}.weight"),
            interleave: None,
            shift: 0.0,
        });
    }
    v
}

/// GGUF type name as llama.cpp prints it.
fn type_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "f32",
        GgmlDType::F16 => "f16",
        GgmlDType::BF16 => "bf16",
        GgmlDType::Q4_0 => "q4_0",
        GgmlDType::Q4_1 => "q4_1",
        GgmlDType::Q5_0 => "q5_0",
        GgmlDType::Q5_1 => "q5_1",
        GgmlDType::Q8_0 => "q8_0",
        GgmlDType::Q8_1 => "q8_1",
        GgmlDType::Q2K => "q2_k",
        GgmlDType::Q3K => "q3_k",
        GgmlDType::Q4K => "q4_k",
        GgmlDType::Q5K => "q5_k",
        GgmlDType::Q6K => "q6_k",
        GgmlDType::Q8K => "q8_k",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// Moves rows of `[heads * head_dim, in]` (or a bias `[heads * head_dim]`) from "rotate
/// half" to the interleaved layout (what llama.cpp's converter does to Q and K of
/// `llama` models).
fn interleave(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    let hd = rows / heads;
    let inp: usize = dims[1..].iter().product();
    w.reshape((heads, 2, hd / 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// llama.cpp's `rope_freqs.weight` for a rotary embedding with Llama 3.1's scaling
/// (`llama3`): per frequency, the divisor that turns the plain frequency into the scaled
/// one (both from [`inv_freqs`], the engine's own); `None` for other kinds.
fn rope_freqs(head_dim: usize, rope: &Rope) -> Option<Vec<f32>> {
    if !matches!(rope.kind, RopeKind::Llama3 { .. }) {
        return None;
    }
    let plain = Rope {
        theta: rope.theta,
        kind: RopeKind::Default,
    };
    let scaled = inv_freqs(head_dim, rope);
    Some(
        inv_freqs(head_dim, &plain)
            .iter()
            .zip(&scaled)
            .map(|(p, s)| p / s)
            .collect(),
    )
}

/// How a tokenizer.json is written as GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokKind {
    /// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with llama.cpp's name of its
    /// pre-tokenizer.
    Bpe(&'static str),
    /// SentencePiece-style BPE with byte fallback (`tokenizer.ggml.model = "llama"`).
    Spm {
        /// A `▁` is prepended to the text (`tokenizer.ggml.add_space_prefix`).
        add_space_prefix: bool,
    },
}

impl TokKind {
    /// `tokenizer.ggml.model`.
    fn model(self) -> &'static str {
        match self {
            TokKind::Bpe(_) => "gpt2",
            TokKind::Spm { .. } => "llama",
        }
    }
    /// `tokenizer.ggml.pre`.
    fn pre(self) -> &'static str {
        match self {
            TokKind::Bpe(p) => p,
            TokKind::Spm { .. } => "default",
        }
    }
}

/// How the tokenizer in `tokenizer.json` is written, for those this node and llama.cpp
/// both read alike.
fn tokenizer_kind(tj: &serde_json::Value) -> anyhow::Result<TokKind> {
    let model = &tj["model"];
    ensure!(
        model["type"].as_str() == Some("BPE"),
        "the tokenizer's model is {:?}; only BPE can be written (byte-level: Llama 3, Qwen2, SmolLM, Tekken; with byte fallback: SentencePiece-style, Llama 2, Mistral 7B)",
        model["type"].as_str().unwrap_or("missing")
    );
    if model["byte_fallback"].as_bool() == Some(true) {
        return sentencepiece_kind(tj);
    }
    let pt = &tj["pre_tokenizer"];
    let kind = pt["type"].as_str().unwrap_or("");
    let regex_of = |p: &serde_json::Value| {
        p["pattern"]["Regex"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_default()
    };
    if kind == "ByteLevel" && pt["use_regex"].as_bool() != Some(false) {
        return Ok(TokKind::Bpe("gpt-2"));
    }
    if kind == "Sequence" {
        let parts = pt["pretokenizers"].as_array().cloned().unwrap_or_default();
        let types: Vec<&str> = parts
            .iter()
            .map(|p| p["type"].as_str().unwrap_or(""))
            .collect();
        match types.as_slice() {
            ["Digits", "ByteLevel"] if parts[0]["individual_digits"].as_bool() == Some(true) => {
                return Ok(TokKind::Bpe("smollm"));
            }
            ["Split", "ByteLevel"] => {
                let re = regex_of(&parts[0]);
                if re == super::gguf_tokenizer::LLAMA3_REGEX {
                    return Ok(TokKind::Bpe("llama-bpe"));
                }
                if re == super::gguf_tokenizer::QWEN2_REGEX {
                    return Ok(TokKind::Bpe("qwen2"));
                }
                if re == super::gguf_tokenizer::TEKKEN_REGEX {
                    return Ok(TokKind::Bpe("tekken"));
                }
                bail!("its pre-tokenizer regex is not Llama 3's, Qwen2's or Tekken's: {re}");
            }
            _ => {}
        }
    }
    bail!(
        "its pre-tokenizer ({}) is not one this node writes (GPT-2 byte-level, SmolLM's digits + byte-level, Llama 3's, Qwen2's or Tekken's regex)",
        serde_json::to_string(pt).unwrap_or_default()
    )
}

/// A BPE with byte fallback as llama.cpp's SentencePiece tokenizer runs it: no
/// pre-tokenizer, spaces replaced by `▁` and (optionally) one `▁` prepended, by the
/// normalizer (the layout of Llama 2's tokenizer.json).
fn sentencepiece_kind(tj: &serde_json::Value) -> anyhow::Result<TokKind> {
    let pt = &tj["pre_tokenizer"];
    if pt["type"].as_str() == Some("Metaspace") {
        let scheme = pt["prepend_scheme"].as_str().unwrap_or("always");
        bail!(
            "it is a SentencePiece-style BPE whose Metaspace pre-tokenizer (prepend_scheme {scheme:?}) prepends no ▁ to text that already starts with a space{}; llama.cpp's SentencePiece tokenizer always prepends one, so the GGUF file would tokenize such text differently from tokenizer.json. A tokenizer.json in Llama 2's layout (normalizer Prepend(\"▁\") + Replace(\" \", \"▁\"), no pre-tokenizer) can be written",
            if scheme == "first" {
                " nor to text after a special token"
            } else {
                ""
            }
        );
    }
    ensure!(
        pt.is_null(),
        "it is a SentencePiece-style BPE (byte fallback) with a pre-tokenizer ({}); llama.cpp's SentencePiece tokenizer has none",
        serde_json::to_string(pt).unwrap_or_default()
    );
    let norm = &tj["normalizer"];
    let parts: Vec<&serde_json::Value> = match norm["type"].as_str() {
        Some("Sequence") => norm["normalizers"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        Some(_) => vec![norm],
        None => Vec::new(),
    };
    let prepend = |p: &serde_json::Value| {
        p["type"].as_str() == Some("Prepend") && p["prepend"].as_str() == Some("▁")
    };
    let replace = |p: &serde_json::Value| {
        p["type"].as_str() == Some("Replace")
            && p["pattern"]["String"].as_str() == Some(" ")
            && p["content"].as_str() == Some("▁")
    };
    match parts.as_slice() {
        [p, r] if prepend(p) && replace(r) => Ok(TokKind::Spm {
            add_space_prefix: true,
        }),
        [r] if replace(r) => Ok(TokKind::Spm {
            add_space_prefix: false,
        }),
        _ => bail!(
            "it is a SentencePiece-style BPE whose normalizer ({}) is not SentencePiece's as llama.cpp runs it (Prepend(\"▁\") + Replace(\" \", \"▁\"), or Replace alone)",
            serde_json::to_string(norm).unwrap_or_default()
        ),
    }
}

/// `tokenizer.json`'s merges as (left, right).
fn merge_pairs(tj: &serde_json::Value) -> anyhow::Result<Vec<(String, String)>> {
    Ok(tj["model"]["merges"]
        .as_array()
        .context("tokenizer.json has no BPE merges")?
        .iter()
        .filter_map(|m| match m {
            serde_json::Value::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string())),
            serde_json::Value::Array(p) => Some((
                p.first()?.as_str()?.to_string(),
                p.get(1)?.as_str()?.to_string(),
            )),
            _ => None,
        })
        .collect())
}

/// SentencePiece scores that make llama.cpp's SPM tokenizer (merge the adjacent pair
/// whose merged text is the token with the highest score) pick merges in the order of
/// the BPE's ranks: a token made by a merge scores minus the rank of the first merge
/// that makes it; other ordinary tokens score below every merge; control, unknown,
/// user-defined and byte tokens 0 and placeholders -10000 (as llama.cpp's converter
/// writes them from a tokenizer.model). llama.cpp's converter, given only a
/// tokenizer.json (`LlamaHfVocab`), writes -1000 for every token instead, so llama.cpp
/// merges left to right and its tokens differ from the model's; this does not.
fn spm_scores(merges: &[(String, String)], tokens: &[Option<String>], types: &[i32]) -> Vec<f32> {
    let mut first: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (rank, (a, b)) in merges.iter().enumerate() {
        first.entry(format!("{a}{b}")).or_insert(rank);
    }
    let below = merges.len();
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .map(|(id, (t, ty))| match (*ty, t) {
            (token_type::NORMAL, Some(t)) => match first.get(t) {
                Some(&rank) => -(rank as f32),
                None => -((below + id) as f32),
            },
            (token_type::UNUSED, _) => -10_000.0,
            _ => 0.0,
        })
        .collect()
}

/// Whether `t` is a SentencePiece byte token `<0xNN>`.
fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

/// The `tokenizer.*` metadata of the file.
fn tokenizer_metadata(
    tok: &Tokenizer,
    tj: &serde_json::Value,
    tc: &chat::TokenizerConfig,
    cfg: &LlamaConfig,
    kind: TokKind,
) -> anyhow::Result<Vec<(String, Value)>> {
    let merges = merge_pairs(tj)?;
    // Rows of the embedding matrix, which may be more than the tokenizer's ids; the
    // unused ids get placeholder names as llama.cpp's converter writes them.
    let n = cfg.vocab_size.max(tok.get_vocab_size(true));
    let mut tokens: Vec<Option<String>> = vec![None; n];
    for (t, id) in tok.get_vocab(true) {
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some(t);
        }
    }
    let added = tok.get_added_tokens_decoder();
    let spm = matches!(kind, TokKind::Spm { .. });
    let unk = tj["model"]["unk_token"].as_str();
    let types: Vec<i32> = (0..n as u32)
        .map(|i| {
            let t = tokens[i as usize].as_deref();
            match added.get(&i) {
                Some(a) if spm && unk == Some(a.content.as_str()) => token_type::UNKNOWN,
                Some(a) if a.special => token_type::CONTROL,
                Some(_) => token_type::USER_DEFINED,
                None => match t {
                    None => token_type::UNUSED,
                    Some(t) if spm && unk == Some(t) => token_type::UNKNOWN,
                    Some(t) if spm && is_byte_token(t) => token_type::BYTE,
                    Some(_) => token_type::NORMAL,
                },
            }
        })
        .collect();
    let scores = spm.then(|| spm_scores(&merges, &tokens, &types));
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| Value::String(t.unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    let id_of = |s: &str| (!s.is_empty()).then(|| tok.token_to_id(s)).flatten();
    let eos = cfg
        .eos_ids()
        .first()
        .copied()
        .or_else(|| id_of(&tc.eos_token))
        .context("the model names no EOS token (config.json eos_token_id, tokenizer_config.json eos_token)")?;
    let bos = cfg.bos_token_id.or_else(|| id_of(&tc.bos_token));
    // Whether encoding adds BOS: the directory's tokenizer decides.
    let adds_bos = match bos {
        Some(b) => tok
            .encode("a", true)
            .map(|e| e.get_ids().first() == Some(&b))
            .unwrap_or(false),
        None => false,
    };
    let types = types.into_iter().map(Value::I32).collect();
    let mut md: Vec<(String, Value)> = vec![
        (
            "tokenizer.ggml.model".into(),
            Value::String(kind.model().into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            Value::String(kind.pre().into()),
        ),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
    ];
    match (kind, scores) {
        (TokKind::Spm { add_space_prefix }, Some(scores)) => {
            md.push((
                "tokenizer.ggml.scores".into(),
                Value::Array(scores.into_iter().map(Value::F32).collect()),
            ));
            md.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
            md.push((
                "tokenizer.ggml.add_space_prefix".into(),
                Value::Bool(add_space_prefix),
            ));
            if let Some(u) = unk.and_then(|u| tok.token_to_id(u)) {
                md.push(("tokenizer.ggml.unknown_token_id".into(), Value::U32(u)));
            }
        }
        _ => {
            md.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
            md.push((
                "tokenizer.ggml.merges".into(),
                Value::Array(
                    merges
                        .into_iter()
                        .map(|(a, b)| Value::String(format!("{a} {b}")))
                        .collect(),
                ),
            ));
        }
    }
    md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)));
    md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(adds_bos)));
    if let Some(b) = bos {
        md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
    }
    if let Some(t) = &tc.chat_template {
        md.push(("tokenizer.chat_template".into(), Value::String(t.clone())));
    }
    Ok(md)
}

/// The `general.*` and `<arch>.*` metadata of the file.
fn model_metadata(
    cfg: &LlamaConfig,
    arch: &str,
    scheme: Scheme,
    dir: &Path,
) -> Vec<(String, Value)> {
    let u32v = |x: usize| Value::U32(x as u32);
    let k = |s: &str| format!("{arch}.{s}");
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(name)),
        ("general.file_type".into(), Value::U32(scheme.file_type())),
        ("general.quantization_version".into(), Value::U32(2)),
        (k("block_count"), u32v(cfg.num_hidden_layers)),
        (k("context_length"), u32v(cfg.max_position_embeddings)),
        (k("embedding_length"), u32v(cfg.hidden_size)),
        (k("feed_forward_length"), u32v(cfg.intermediate_size)),
        (k("attention.head_count"), u32v(cfg.num_attention_heads)),
        (k("attention.head_count_kv"), u32v(cfg.kv_heads())),
        (k("attention.key_length"), u32v(cfg.head_dim())),
        (k("attention.value_length"), u32v(cfg.head_dim())),
        (k("rope.dimension_count"), u32v(cfg.head_dim())),
        (k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        (k("vocab_size"), u32v(cfg.vocab_size)),
    ]
}

/// Reads the tokenizer back from the written file and checks it against the directory's.
fn check_tokenizer(file: &Path, want: &Tokenizer) -> anyhow::Result<()> {
    let got = super::gguf::read_tokenizer(file)?;
    for text in TOKENIZER_SAMPLE.split('\n').chain([TOKENIZER_SAMPLE]) {
        let a = want
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("the directory's tokenizer fails on {text:?}: {e}"))?;
        let b = got
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("the written tokenizer fails on {text:?}: {e}"))?;
        ensure!(
            a.get_ids() == b.get_ids(),
            "the GGUF tokenizer encodes {text:?} differently from tokenizer.json ({:?} vs {:?}); the file was not kept",
            b.get_ids(),
            a.get_ids()
        );
    }
    Ok(())
}

/// Quantization time and the throughput a [`Report`] stands for (CLI summary).
pub fn summary(r: &Report, started: Instant) -> String {
    let types: Vec<String> = r.by_type.iter().map(|(t, n)| format!("{t} ×{n}")).collect();
    let mut s = format!(
        "{arch}, {params} parameters → {mb:.1} MB ({bpw:.2} bits per weight) in {secs:.1} s; tensors: {types}; tokenizer {model}, pre-tokenizer {pre}",
        arch = r.architecture,
        params = if r.params >= 1_000_000_000 {
            format!("{:.2} B", r.params as f64 / 1e9)
        } else {
            format!("{:.1} M", r.params as f64 / 1e6)
        },
        mb = r.bytes as f64 / 1e6,
        bpw = r.bytes as f64 * 8.0 / r.params.max(1) as f64,
        secs = started.elapsed().as_secs_f64(),
        types = types.join(", "),
        pre = r.pre_tokenizer,
        model = r.tokenizer_model,
    );
    if !r.fell_back.is_empty() {
        s.push_str(&format!(
            "; {} matrices too narrow for K-quant blocks (input width not a multiple of 256) written as llama.cpp does: ",
            r.fell_back.len()
        ));
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for (_, a, b) in &r.fell_back {
            *kinds
                .entry(format!("{} → {}", type_name(*a), type_name(*b)))
                .or_default() += 1;
        }
        let k: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        s.push_str(&k.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel quantizer writes the same bytes as one call, for every type the
    /// schemes use, with a row count that does not divide evenly among the threads.
    #[test]
    fn quantize_parallel_equals_one_call() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let w = Tensor::randn(0f32, 1.0, (1031, 2048), &Device::Cpu).unwrap();
        for dt in [
            GgmlDType::Q8_0,
            GgmlDType::Q6K,
            GgmlDType::Q5K,
            GgmlDType::Q4K,
            GgmlDType::Q5_0,
            GgmlDType::F16,
        ] {
            let one = QTensor::quantize(&w, dt).unwrap();
            let par = pool.install(|| quantize_parallel(&w, dt)).unwrap();
            assert_eq!(par.dtype(), dt);
            assert_eq!(par.shape().dims(), &[1031, 2048]);
            assert!(one.data().unwrap() == par.data().unwrap(), "{dt:?}");
        }
    }
}
