//! Single-file GGUF models (the format of llama.cpp and Ollama) of the Llama family
//! (`general.architecture` = `llama`, `mistral`, `qwen2` or `qwen3`; SmolLM files say
//! `llama`):
//! quantized weights stay quantized (candle's `QMatMul`), the tokenizer is rebuilt from
//! `tokenizer.ggml.*` and the chat template comes from `tokenizer.chat_template`, so no
//! other file is needed. The result is an ordinary [`GenerationModel`] that runs in the
//! same continuous-batching engine as a safetensors model.
//!
//! GGUF files written by llama.cpp's converter store the Q and K projections of `llama`
//! models with their rows permuted for the interleaved ("GPT-J") rotary layout; this
//! loader permutes those rows back (a lossless move of whole quantized rows) so that the
//! model's "rotate half" rotary embedding applies unchanged. `qwen2` and `qwen3` files are not
//! permuted (llama.cpp's `Qwen3Model` converter derives from `Qwen2Model`, which keeps the
//! rows as they are; Qwen3's `attn_q_norm` / `attn_k_norm` are stored unshifted).
//!
//! `gemma3` files (Gemma 3 text, or the text part of the multimodal model) are read as
//! llama.cpp reads them; see [`gemma3_config`] for the conventions and where they come
//! from.

use super::files::ModelError;
use super::gguf_tokenizer::{GgufVocab, default_bos, default_eos};
use super::llama::{Lin, Llama, QuantSource};
use super::{GenerationModel, chat, config::LlamaConfig};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor, ggml_file};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::Tokenizer;

/// GGUF architectures this loader runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "gemma3"];

/// Whether `path` is a GGUF file (by its magic bytes).
pub fn is_gguf_file(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut magic = [0u8; 4];
    path.is_file() && f.read_exact(&mut magic).is_ok() && &magic == b"GGUF"
}

/// The single `*.gguf` file of a directory that has no `config.json` (a GGUF model
/// fetched from the mirror lands in such a directory); `None` otherwise.
pub fn single_gguf_in_dir(dir: &Path) -> Option<PathBuf> {
    dayshift_config::memory::single_gguf_in_dir(dir)
}

fn bad(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::BadFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::U16(x) => Some(*x as u64),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::U32(x) => Some(*x as u64),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::U64(x) => Some(*x),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        other => as_u64(other).map(|x| x as f64),
    }
}

/// Typed access to the metadata of one file, with the file in every error.
struct Meta<'a> {
    md: &'a HashMap<String, Value>,
    path: &'a Path,
}

impl Meta<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.md.get(k)
    }
    fn u64(&self, k: &str) -> Result<u64, ModelError> {
        self.opt_u64(k).ok_or_else(|| {
            bad(
                self.path,
                format!("metadata {k} is missing or not an integer"),
            )
        })
    }
    fn opt_u64(&self, k: &str) -> Option<u64> {
        self.get(k).and_then(as_u64)
    }
    fn opt_f64(&self, k: &str) -> Option<f64> {
        self.get(k).and_then(as_f64)
    }
    fn opt_bool(&self, k: &str) -> Option<bool> {
        match self.get(k) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    fn opt_str(&self, k: &str) -> Option<&str> {
        match self.get(k) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        }
    }
    fn str(&self, k: &str) -> Result<&str, ModelError> {
        self.opt_str(k).ok_or_else(|| {
            bad(
                self.path,
                format!("metadata {k} is missing or not a string"),
            )
        })
    }
    fn strings(&self, k: &str) -> Result<Vec<String>, ModelError> {
        match self.get(k) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(bad(self.path, format!("metadata {k} holds a non-string"))),
                })
                .collect(),
            _ => Err(bad(
                self.path,
                format!("metadata {k} is missing: this GGUF file has no tokenizer"),
            )),
        }
    }
    /// A float array (`None` when the key is absent).
    fn floats(&self, k: &str) -> Result<Option<Vec<f32>>, ModelError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    as_f64(v)
                        .map(|x| x as f32)
                        .ok_or_else(|| bad(self.path, format!("metadata {k} holds a non-number")))
                })
                .collect::<Result<Vec<f32>, ModelError>>()
                .map(Some),
            Some(_) => Err(bad(self.path, format!("metadata {k} is not an array"))),
        }
    }
    fn ints(&self, k: &str) -> Vec<u64> {
        match self.get(k) {
            Some(Value::Array(a)) => a.iter().map(|v| as_u64(v).unwrap_or(1)).collect(),
            _ => Vec::new(),
        }
    }
}

/// The model config (in `config.json` terms) from a GGUF file's metadata.
fn config_from_meta(m: &Meta, arch: &str, vocab: usize) -> Result<LlamaConfig, ModelError> {
    let k = |s: &str| format!("{arch}.{s}");
    let heads = m.u64(&k("attention.head_count"))?;
    let hidden = m.u64(&k("embedding_length"))?;
    let head_dim = m
        .opt_u64(&k("attention.key_length"))
        .or_else(|| m.opt_u64(&k("rope.dimension_count")))
        .unwrap_or(hidden / heads.max(1));
    let mut v = serde_json::json!({
        "model_type": match arch {
            "qwen2" | "qwen3" => arch,
            "gemma3" => "gemma3_text",
            _ => "llama",
        },
        "hidden_size": hidden,
        "intermediate_size": m.u64(&k("feed_forward_length"))?,
        "num_hidden_layers": m.u64(&k("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": m.opt_u64(&k("attention.head_count_kv")).unwrap_or(heads),
        "head_dim": head_dim,
        "rms_norm_eps": m.opt_f64(&k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        "rope_theta": m.opt_f64(&k("rope.freq_base")).unwrap_or(10_000.0),
        "max_position_embeddings": m.opt_u64(&k("context_length")).unwrap_or(4096),
        "vocab_size": vocab,
        "torch_dtype": "float32",
    });
    if arch == "gemma3" {
        gemma3_config(m, &mut v)?;
    }
    let cfg: LlamaConfig = serde_json::from_value(v).map_err(|e| bad(m.path, e.to_string()))?;
    cfg.check().map_err(|e| bad(m.path, e))?;
    Ok(cfg)
}

/// llama.cpp's fixed Gemma 3 layer pattern: layer `i` slides unless `(i + 1) % 6 == 0`
/// (`llama_hparams::set_swa_pattern(6)`: sliding iff `i % 6 < 5`).
pub const GEMMA3_SWA_PATTERN: usize = 6;
/// llama.cpp's fixed RoPE base of Gemma 3's sliding-window layers
/// (`rope_freq_base_train_swa = 10000.0f`, their scale fixed at 1).
pub const GEMMA3_LOCAL_ROPE_BASE: f64 = 10_000.0;

/// The value llama.cpp's Gemma 3 multiplies queries by is `query_pre_attn_scalar^-½`
/// with this scalar: `n_embd / n_head` (integer division) for the 27B model (recognised
/// by its 62 layers), `head_dim` (`attention.key_length`) for every other size.
pub fn gemma3_query_pre_attn_scalar(layers: u64, hidden: u64, heads: u64, head_dim: u64) -> u64 {
    if layers == 62 {
        hidden / heads.max(1)
    } else {
        head_dim
    }
}

/// The Gemma 3 fields of the model config from a `gemma3` file's metadata, as llama.cpp
/// reads the file. Read in llama.cpp (ggml-org/llama.cpp: `src/llama-model.cpp`,
/// `case LLM_ARCH_GEMMA3` of `load_hparams`; `src/models/gemma3.cpp`, the graph;
/// `convert_hf_to_gguf.py`, class `Gemma3Model`; `gguf-py/gguf/constants.py` and
/// `tensor_mapping.py`, names), and in the llama-cpp-python 0.3.36 build the tests use:
/// - tensors: `token_embd`, `blk.N.attn_norm`, `attn_q/k/v/output`, `attn_q_norm`,
///   `attn_k_norm`, `post_attention_norm`, `ffn_norm` (before the MLP:
///   `pre_feedforward_layernorm`), `ffn_gate/up/down`, `post_ffw_norm`, `output_norm`;
///   no `output` (tied to `token_embd`); Q/K rows as they are (rotary NEOX, not
///   permuted); every `*norm.weight` stored with the `+1` of `Gemma3RMSNorm` added by
///   the converter ([`Llama::load_gguf`] uses them as they are);
/// - embeddings × √`embedding_length`, GELU (tanh) MLP, RMSNorm epsilon
///   `attention.layer_norm_rms_epsilon` (required by llama.cpp, so here too);
/// - sliding layers: only when `attention.sliding_window` is present and > 0 (llama.cpp
///   since its Rnj-1 change; before it the key was required), then every
///   [`GEMMA3_SWA_PATTERN`]-th layer is global; llama.cpp reads no pattern key for
///   `gemma3`, so an `attention.sliding_window_pattern` that says otherwise is refused;
/// - RoPE: `rope.freq_base` (default 10000) with `rope.scaling.factor` (linear) on global
///   layers; sliding layers [`GEMMA3_LOCAL_ROPE_BASE`] unscaled (a `rope.freq_base_swa`
///   that differs is refused, llama.cpp overrides it);
/// - attention scale: [`gemma3_query_pre_attn_scalar`] (no key; an `attention.scale`
///   that differs is refused);
/// - `final_logit_softcapping`: llama.cpp applies it only to files without sliding
///   layers (its sliding-window graph has no soft-capping), so a file with both is
///   refused; `attn_logit_softcapping` is refused (Gemma 3 has none; the converter
///   asserts it is null).
fn gemma3_config(m: &Meta, v: &mut serde_json::Value) -> Result<(), ModelError> {
    let k = |s: &str| format!("gemma3.{s}");
    let refuse = |key: &str, why: String| Err(bad(m.path, format!("metadata {key}: {why}")));
    let layers = m.u64(&k("block_count"))?;
    let hidden = m.u64(&k("embedding_length"))?;
    let heads = m.u64(&k("attention.head_count"))?;
    let eps = k("attention.layer_norm_rms_epsilon");
    let Some(eps_v) = m.opt_f64(&eps) else {
        return refuse(
            &eps,
            "is missing (llama.cpp requires it for gemma3; Gemma 3 uses 1e-6)".into(),
        );
    };
    v["rms_norm_eps"] = eps_v.into();
    let head_dim = v["head_dim"].as_u64().unwrap_or(0);
    if let Some(vl) = m.opt_u64(&k("attention.value_length"))
        && vl != head_dim
    {
        return refuse(
            &k("attention.value_length"),
            format!(
                "{vl} differs from attention.key_length {head_dim}; this engine runs equal key and value widths"
            ),
        );
    }
    if let Some(rd) = m.opt_u64(&k("rope.dimension_count"))
        && rd != head_dim
    {
        return refuse(
            &k("rope.dimension_count"),
            format!(
                "{rd} differs from the head width {head_dim}; partial rotary embeddings are not implemented"
            ),
        );
    }
    v["hidden_activation"] = "gelu_pytorch_tanh".into();
    v["tie_word_embeddings"] = true.into();
    let qpas = gemma3_query_pre_attn_scalar(layers, hidden, heads, head_dim);
    if let Some(scale) = m.opt_f64(&k("attention.scale")) {
        let implied = 1.0 / (qpas as f64).sqrt();
        if (scale - implied).abs() > 1e-6 * implied {
            return refuse(
                &k("attention.scale"),
                format!(
                    "{scale} differs from {implied} (1/√{qpas}), the scale llama.cpp's gemma3 applies regardless of this key; rewrite the file without it"
                ),
            );
        }
    }
    v["query_pre_attn_scalar"] = qpas.into();
    // Which layers slide.
    let window = m.opt_u64(&k("attention.sliding_window")).unwrap_or(0);
    let sliding: Vec<bool> = (0..layers as usize)
        .map(|i| window > 0 && (i + 1) % GEMMA3_SWA_PATTERN != 0)
        .collect();
    let pattern_key = k("attention.sliding_window_pattern");
    match m.get(&pattern_key) {
        None => {}
        Some(Value::Array(a)) => {
            let given: Vec<Option<bool>> = a
                .iter()
                .map(|x| match x {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect();
            if given != sliding.iter().map(|&b| Some(b)).collect::<Vec<_>>() {
                return refuse(
                    &pattern_key,
                    format!(
                        "{given:?} is not llama.cpp's fixed gemma3 pattern {sliding:?} (every {GEMMA3_SWA_PATTERN}th layer global), which llama.cpp uses regardless of this key"
                    ),
                );
            }
        }
        Some(x) if as_u64(x) != Some(GEMMA3_SWA_PATTERN as u64) => {
            return refuse(
                &pattern_key,
                format!(
                    "{x:?} is not {GEMMA3_SWA_PATTERN}, llama.cpp's fixed gemma3 pattern (every {GEMMA3_SWA_PATTERN}th layer global), which it uses regardless of this key"
                ),
            );
        }
        Some(_) => {}
    }
    let any_sliding = sliding.iter().any(|&s| s);
    if any_sliding {
        v["sliding_window"] = window.into();
    }
    v["layer_types"] = sliding
        .iter()
        .map(|&s| {
            if s {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect::<Vec<_>>()
        .into();
    // RoPE.
    if let Some(b) = m.opt_f64(&k("rope.freq_base_swa"))
        && (b - GEMMA3_LOCAL_ROPE_BASE).abs() > 1e-3
    {
        return refuse(
            &k("rope.freq_base_swa"),
            format!(
                "{b} differs from {GEMMA3_LOCAL_ROPE_BASE}, the base llama.cpp's gemma3 gives its sliding layers regardless of this key"
            ),
        );
    }
    v["rope_local_base_freq"] = GEMMA3_LOCAL_ROPE_BASE.into();
    let ty_key = k("rope.scaling.type");
    let factor = m
        .opt_f64(&k("rope.scaling.factor"))
        .or_else(|| m.opt_f64(&k("rope.scale_linear")))
        .filter(|f| *f != 0.0);
    match (m.opt_str(&ty_key), factor) {
        (None | Some("linear"), Some(f)) if f > 0.0 => {
            if f != 1.0 {
                v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": f});
            }
        }
        (None | Some("linear") | Some("none"), None) => {}
        (Some("none"), Some(1.0)) => {}
        (t, f) => {
            return refuse(
                &ty_key,
                format!(
                    "{t:?} with rope.scaling.factor {f:?} is not supported for gemma3 (only linear scaling with a factor > 0)"
                ),
            );
        }
    }
    // Soft-capping.
    if m.get(&k("attn_logit_softcapping")).is_some() {
        return refuse(
            &k("attn_logit_softcapping"),
            "is set; Gemma 3 has no attention soft-capping (llama.cpp's converter refuses it) and this engine does not implement it".into(),
        );
    }
    if let Some(c) = m.opt_f64(&k("final_logit_softcapping"))
        && c != 0.0
    {
        if any_sliding {
            return refuse(
                &k("final_logit_softcapping"),
                format!(
                    "{c} on a file with sliding-window layers: llama.cpp's sliding-window gemma3 graph never applies it, so which logits the file means is unclear; rewrite it without the key"
                ),
            );
        }
        v["final_logit_softcapping"] = c.into();
    }
    Ok(())
}

/// The tokenizer of a GGUF file (`tokenizer.ggml.*`; see [`super::gguf_tokenizer`]).
fn build_tokenizer(m: &Meta, tokens: &[String]) -> Result<Tokenizer, ModelError> {
    let model = m.str("tokenizer.ggml.model")?;
    let merges = match m.get("tokenizer.ggml.merges") {
        Some(_) => Some(m.strings("tokenizer.ggml.merges")?),
        None => None,
    };
    let v = GgufVocab {
        model,
        pre: m.opt_str("tokenizer.ggml.pre"),
        tokens,
        scores: m.floats("tokenizer.ggml.scores")?,
        types: m
            .ints("tokenizer.ggml.token_type")
            .into_iter()
            .map(|t| t as i64)
            .collect(),
        merges,
        bos_id: m.opt_u64("tokenizer.ggml.bos_token_id"),
        add_bos: m.opt_bool("tokenizer.ggml.add_bos_token"),
        add_space_prefix: m.opt_bool("tokenizer.ggml.add_space_prefix"),
    };
    super::gguf_tokenizer::build(&v).map_err(|e| bad(m.path, e))
}

/// Tensors of an open GGUF file, read one at a time onto a device.
struct GgufSource {
    content: Content,
    reader: BufReader<File>,
    device: Device,
    /// Q/K rows are stored in the interleaved rotary layout (llama.cpp's `llama` converter).
    interleaved: bool,
    head_dim: usize,
    /// Dense tensors' (and the model's activations') dtype.
    dtype: DType,
    path: PathBuf,
    /// Re-quantize [`slow_on_cpu`] types to Q8_0 when loading onto the CPU.
    widen_slow: bool,
    /// Matrices re-quantized so far.
    widened: usize,
}

/// Weight types for which candle's CPU backend has no SIMD dot product (it runs a scalar
/// loop 5–10× slower than Q8_0's AVX one) and our kernel ([`super::cpu_qgemv`]) none
/// either: Q5_0 and Q5_1, and Q4_1 on CPUs without AVX2/FMA/F16C (with them, Q4_1 stays
/// as stored: 0.625 bytes a weight read per token instead of Q8_0's 1.0625). On the CPU
/// these are re-quantized to Q8_0 at load: each block's values `min + d·q` are re-rounded
/// to 1/127 of the block's largest value, an error far below the 4/5-bit step itself.
/// `DAYSHIFT_GGUF_KEEP_TYPES=1` keeps them as they are.
fn slow_on_cpu(dt: GgmlDType) -> bool {
    match dt {
        GgmlDType::Q4_1 => !super::cpu_qgemv::available(),
        GgmlDType::Q5_0 | GgmlDType::Q5_1 => true,
        _ => false,
    }
}

impl GgufSource {
    /// The raw (still quantized) bytes of a tensor, its dtype and dims.
    fn raw(&mut self, name: &str) -> candle_core::Result<(Vec<u8>, GgmlDType, Vec<usize>)> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            candle_core::bail!("{}: tensor {name} is missing", self.path.display());
        };
        let dt = info.ggml_dtype;
        let dims = info.shape.dims().to_vec();
        let elems = info.shape.elem_count();
        if !elems.is_multiple_of(dt.block_size()) {
            candle_core::bail!("tensor {name}: {elems} elements is not a whole number of blocks");
        }
        let size = elems / dt.block_size() * dt.type_size();
        let mut data = vec![0u8; size];
        self.reader.seek(SeekFrom::Start(
            self.content.tensor_data_offset + info.offset,
        ))?;
        self.reader.read_exact(&mut data)?;
        Ok((data, dt, dims))
    }
}

/// Reorders the rows of a `[heads * head_dim, in]` matrix (each row `row_bytes` long)
/// from the interleaved rotary layout (row `2i + a` of a head) to "rotate half"
/// (row `a * head_dim / 2 + i`).
fn deinterleave_rows(data: &[u8], row_bytes: usize, heads: usize, head_dim: usize) -> Vec<u8> {
    let half = head_dim / 2;
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for a in 0..2 {
            for i in 0..half {
                let src = h * head_dim + 2 * i + a;
                let dst = h * head_dim + a * half + i;
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

impl QuantSource for GgufSource {
    fn lin(&mut self, name: &str, rope_heads: Option<usize>) -> candle_core::Result<Lin> {
        let (data, dt, dims) = self.raw(name)?;
        let data = match rope_heads {
            Some(heads) if self.interleaved => {
                let rows = dims.first().copied().unwrap_or(0);
                if rows != heads * self.head_dim || rows == 0 {
                    candle_core::bail!(
                        "tensor {name} has {rows} rows, expected {heads} heads × {}",
                        self.head_dim
                    );
                }
                deinterleave_rows(&data, data.len() / rows, heads, self.head_dim)
            }
            _ => data,
        };
        let qt = if self.device.is_cpu() && self.widen_slow && slow_on_cpu(dt) {
            let q = ggml_file::qtensor_from_ggml(dt, &data, dims, &Device::Cpu)?;
            self.widened += 1;
            QTensor::quantize(&q.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?
        } else {
            ggml_file::qtensor_from_ggml(dt, &data, dims, &self.device)?
        };
        Ok(Lin::Quant {
            w: QMatMul::from_arc(Arc::new(qt))?,
            b: None,
        })
    }

    fn dense(&mut self, name: &str) -> candle_core::Result<Tensor> {
        let (data, dt, dims) = self.raw(name)?;
        let qt = ggml_file::qtensor_from_ggml(dt, &data, dims, &Device::Cpu)?;
        let t = qt.dequantize(&Device::Cpu)?.to_dtype(self.dtype)?;
        // Q/K biases were permuted with their rows (llama.cpp's converter): back to
        // "rotate half", as `lin` does for the weights.
        let t = if self.interleaved
            && (name.ends_with(".attn_q.bias") || name.ends_with(".attn_k.bias"))
        {
            let rows = t.elem_count();
            let hd = self.head_dim;
            if hd == 0 || !rows.is_multiple_of(hd) {
                candle_core::bail!("tensor {name} has {rows} rows, not whole heads of {hd}");
            }
            t.reshape((rows / hd, hd / 2, 2))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape(rows)?
        } else {
            t
        };
        t.to_device(&self.device)
    }

    fn contains(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}

/// A GGUF file's header (metadata and tensor table) and a reader for its tensors.
fn open(path: &Path) -> Result<(Content, BufReader<File>), ModelError> {
    let file = File::open(path).map_err(|e| bad(path, e.to_string()))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader)
        .map_err(|e| bad(path, format!("not a readable GGUF file: {e}")))?;
    Ok((content, reader))
}

/// The tokenizer of a GGUF file, as [`load`] builds it (the weights are not read).
pub fn read_tokenizer(path: &Path) -> Result<Tokenizer, ModelError> {
    let (content, _) = open(path)?;
    let m = Meta {
        md: &content.metadata,
        path,
    };
    let tokens = m.strings("tokenizer.ggml.tokens")?;
    build_tokenizer(&m, &tokens)
}

/// Loads a GGUF file of the Llama family or Gemma 3 onto `device`, its activations, dense
/// tensors and KV cache in `dtype` ([`dayshift_config::memory::gguf_run_dtype`]: bf16 on
/// a GPU unless set; only f32 on the CPU).
pub fn load(
    path: &Path,
    dtype: Option<&str>,
    device: &Device,
) -> Result<GenerationModel, ModelError> {
    let run = dayshift_config::memory::gguf_run_dtype(dtype, super::target_of(device))
        .map_err(|e| bad(path, e))?;
    let run = super::parse_dtype(run).ok_or_else(|| bad(path, format!("unknown dtype {run}")))?;
    let (content, mut reader) = open(path)?;
    let m = Meta {
        md: &content.metadata,
        path,
    };
    let arch = m.str("general.architecture")?.to_string();
    if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(ModelError::Unsupported {
            model_type: format!("{arch} (GGUF)"),
            path: path.to_path_buf(),
        });
    }
    let tokens = m.strings("tokenizer.ggml.tokens")?;
    let vocab = m
        .opt_u64(&format!("{arch}.vocab_size"))
        .map(|v| v as usize)
        .unwrap_or(tokens.len());
    let mut cfg = config_from_meta(&m, &arch, vocab)?;
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        let f = content
            .tensor(&mut reader, "rope_freqs.weight", &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .and_then(|t| t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>())
            .map_err(|e| bad(path, format!("rope_freqs.weight: {e}")))?;
        cfg.rope_freq_factors = Some(f);
    }
    let tokenizer = build_tokenizer(&m, &tokens)?;
    // BOS and EOS ids, with llama.cpp's defaults for SentencePiece files that name none.
    let model = m.str("tokenizer.ggml.model")?;
    let bos = m
        .opt_u64("tokenizer.ggml.bos_token_id")
        .or_else(|| default_bos(model));
    let eos = m
        .opt_u64("tokenizer.ggml.eos_token_id")
        .or_else(|| default_eos(model));
    let tok_str = |id: Option<u64>| {
        id.and_then(|id| tokens.get(id as usize).cloned())
            .unwrap_or_default()
    };
    let bos_str = tok_str(bos);
    let eos_str = tok_str(eos);
    let chat = match m.opt_str("tokenizer.chat_template") {
        Some(src) => Some(
            chat::ChatTemplate::new(src, &bos_str, &eos_str)
                .map_err(|e| bad(path, format!("tokenizer.chat_template: {e}")))?,
        ),
        None => None,
    };
    let mut eos_ids = Vec::new();
    for id in [
        eos,
        m.opt_u64("tokenizer.ggml.eot_token_id"),
        m.opt_u64("tokenizer.ggml.eom_token_id"),
    ]
    .into_iter()
    .flatten()
    {
        let id = id as u32;
        if !eos_ids.contains(&id) {
            eos_ids.push(id);
        }
    }
    let bos_id = bos.map(|x| x as u32);
    let mut src = GgufSource {
        interleaved: !matches!(arch.as_str(), "qwen2" | "qwen3" | "gemma3"),
        head_dim: cfg.head_dim(),
        dtype: run,
        device: device.clone(),
        path: path.to_path_buf(),
        content,
        reader,
        widen_slow: std::env::var("DAYSHIFT_GGUF_KEEP_TYPES")
            .map_or(true, |v| v.is_empty() || v == "0"),
        widened: 0,
    };
    let llama = Llama::load_gguf(&mut src, &cfg).map_err(|e| ModelError::Weights {
        dir: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if src.widened > 0 {
        tracing::info!(
            matrices = src.widened,
            file = %path.display(),
            "GGUF Q4_1/Q5_0/Q5_1 matrices re-quantized to Q8_0 for the CPU (no SIMD kernel for those types in candle; DAYSHIFT_GGUF_KEEP_TYPES=1 keeps them)"
        );
    }
    Ok(GenerationModel {
        llama,
        tokenizer,
        chat,
        eos_ids,
        bos_id,
        architecture: arch,
        guide: Default::default(),
    })
}
