//! Model directories (Hugging Face layout): reading config, tokenizer, chat template and
//! weights into a generation model (Llama family) or an embedding model (BERT).

pub mod arch;
pub mod bert;
pub mod bert_encoder;
pub mod chat;
pub mod config;
pub use dayshift_cpu_kernels::qgemv as cpu_qgemv;
pub use dayshift_cpu_kernels::softmax as cpu_softmax;
#[cfg(feature = "cuda")]
pub mod cuda_graph;
pub mod decode_ops;
pub mod files;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod greedy_step;
pub mod l2_prefetch;
pub mod llama;
pub mod mask;
pub mod quantize;
pub mod static_step;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use files::{ModelError, read_json, required};
use std::path::Path;
use tokenizers::Tokenizer;

/// A loaded generation model with everything needed to serve it.
pub struct GenerationModel {
    /// The network.
    pub llama: llama::Llama,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template, if `tokenizer_config.json` has one.
    pub chat: Option<chat::ChatTemplate>,
    /// Token ids that end generation.
    pub eos_ids: Vec<u32>,
    /// BOS id, if the model has one.
    pub bos_id: Option<u32>,
    /// `model_type` of config.json.
    pub architecture: String,
    /// Token bytes and the grammar engine for constrained decoding (built on first use).
    pub guide: crate::engine::grammar::Guide,
}

/// Either kind of model.
pub enum LoadedModel {
    /// Llama family.
    Generation(Box<GenerationModel>),
    /// BERT encoder.
    Embedding(Box<bert::EmbeddingModel>),
}

/// Parses a dtype name.
pub fn parse_dtype(s: &str) -> Option<DType> {
    match s {
        "f32" | "float32" => Some(DType::F32),
        "bf16" | "bfloat16" => Some(DType::BF16),
        "f16" | "float16" => Some(DType::F16),
        _ => None,
    }
}

/// Name of a dtype as reported to clients and the ingress.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "other",
    }
}

/// The dtype to run in ([`dayshift_config::memory::run_dtype`], the rule the memory
/// check counts with): the override, else config.json's on a GPU, else f32 on the CPU
/// (half precision on the CPU is slow and gains nothing; quantized CPU kernels take f32).
fn choose_dtype(
    over: Option<&str>,
    from_cfg: Option<&str>,
    quantize: Option<&str>,
    device: &Device,
) -> Result<DType, String> {
    let name = dayshift_config::memory::run_dtype(over, from_cfg, quantize, target_of(device))?;
    parse_dtype(name).ok_or_else(|| format!("dtype {name:?} is not one of f32, bf16, f16"))
}

/// Which memory and dtype rules apply to `device` (the CPU's, or a GPU's).
pub fn target_of(device: &Device) -> dayshift_config::memory::Target {
    if device.is_cpu() {
        dayshift_config::memory::Target::Cpu
    } else {
        dayshift_config::memory::Target::Gpu
    }
}

/// [`llama::Llama::check_quant_matmul`] for a model just loaded from `path`: logs each
/// type's error, or refuses the model with the check's message.
pub(crate) fn check_quant_matmul_on_load(m: &llama::Llama, path: &Path) -> Result<(), ModelError> {
    let errs = m.check_quant_matmul().map_err(|e| ModelError::Weights {
        dir: path.to_path_buf(),
        message: e.to_string(),
    })?;
    for (t, e) in errs {
        tracing::info!(ggml_type = ?t, relative_error = e, "quantized matmul checked against the dequantized weight");
    }
    Ok(())
}

/// Loads a tokenizer.json.
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, ModelError> {
    let p = required(dir, "tokenizer.json", "the fast tokenizer file is required")?;
    Tokenizer::from_file(&p).map_err(|e| ModelError::BadFile {
        path: p,
        message: format!("cannot load tokenizer: {e}"),
    })
}

pub(crate) fn load_weights<'a>(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'a>, ModelError> {
    let files = files::safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; they must not be changed while the
    // node runs (they live in the node's own model cache or a directory the operator owns).
    unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }.map_err(|e| {
        ModelError::BadFile {
            path: dir.to_path_buf(),
            message: format!("cannot read safetensors: {e}"),
        }
    })
}

/// The decoder's part of a `config.json`: Gemma 3's multimodal `gemma3` config nests the
/// text model under `text_config` (its vision tower is not loaded); that part becomes a
/// `gemma3_text` config, with the top-level fields it lacks (token ids, dtype) carried
/// over. Gemma 3 ties its embeddings unless the config says otherwise.
pub(crate) fn text_config(raw: serde_json::Value) -> serde_json::Value {
    let mut raw = raw;
    if raw.get("model_type").and_then(|v| v.as_str()) == Some("gemma3")
        && let Some(serde_json::Value::Object(text)) = raw.get("text_config")
    {
        let mut text = text.clone();
        if let serde_json::Value::Object(top) = &raw {
            for (k, v) in top {
                if k != "text_config" && k != "vision_config" && !text.contains_key(k) {
                    text.insert(k.clone(), v.clone());
                }
            }
        }
        text.insert("model_type".into(), "gemma3_text".into());
        raw = serde_json::Value::Object(text);
    }
    if raw.get("model_type").and_then(|v| v.as_str()) == Some("gemma3_text")
        && let serde_json::Value::Object(m) = &mut raw
    {
        m.entry("tie_word_embeddings").or_insert(true.into());
    }
    raw
}

/// Loads a model onto `device`: a directory (Hugging Face layout; `dtype` overrides
/// config.json), a GGUF file, or a directory holding one GGUF file and no config.json.
pub fn load(dir: &Path, dtype: Option<&str>, device: &Device) -> Result<LoadedModel, ModelError> {
    load_quantized(dir, dtype, None, device)
}

/// [`load`], with a safetensors generation model's linear layers quantized at load to
/// `quantize` (a uniform GGUF type name of [`quantize::Scheme`]: `q4_k`, `q8_0`, …; the
/// activations are in the run dtype, as for a GGUF file: f32 on the CPU, bf16 by default
/// on a GPU).
pub fn load_quantized(
    dir: &Path,
    dtype: Option<&str>,
    quantize: Option<&str>,
    device: &Device,
) -> Result<LoadedModel, ModelError> {
    let quant = match quantize {
        None => None,
        Some(q) => match quantize::Scheme::parse(q) {
            Some(quantize::Scheme::Uniform(t)) => Some(t),
            _ => {
                return Err(ModelError::BadFile {
                    path: dir.to_path_buf(),
                    message: format!(
                        "quantize {q:?}: at load one type for every matrix is supported (q4_k, q5_k, q6_k, q8_0, q4_0, q4_1, q5_0, q5_1, f16); mixes such as q4_k_m are written by `dayshift-node quantize`"
                    ),
                });
            }
        },
    };
    let gguf_path = if dir.is_file() {
        Some(dir.to_path_buf())
    } else {
        gguf::single_gguf_in_dir(dir)
    };
    if let Some(p) = gguf_path {
        if !gguf::is_gguf_file(&p) {
            return Err(ModelError::BadFile {
                path: p,
                message: "not a GGUF file: give a model directory (config.json, safetensors) or a .gguf file".into(),
            });
        }
        if quant.is_some() {
            return Err(ModelError::BadFile {
                path: p,
                message:
                    "quantize does not apply to a GGUF file (its weights are quantized already)"
                        .into(),
            });
        }
        let m = gguf::load(&p, dtype, device)?;
        if device.is_cuda() {
            check_quant_matmul_on_load(&m.llama, &p)?;
        }
        return Ok(LoadedModel::Generation(Box::new(m)));
    }
    let cfg_path = required(
        dir,
        "config.json",
        "every model directory needs its config.json",
    )?;
    let raw: serde_json::Value = read_json(&cfg_path)?;
    let raw = text_config(raw);
    let model_type = raw
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let bad = |message: String| ModelError::BadFile {
        path: cfg_path.clone(),
        message,
    };
    match model_type.as_str() {
        t if config::SUPPORTED_GENERATION.contains(&t) => {
            let mut cfg: config::LlamaConfig =
                serde_json::from_value(raw.clone()).map_err(|e| bad(format!("{e}")))?;
            cfg.normalize();
            cfg.check().map_err(bad)?;
            let dt = choose_dtype(dtype, cfg.torch_dtype.as_deref(), quantize, device)
                .map_err(bad)?;
            let tokenizer = load_tokenizer(dir)?;
            let vb = load_weights(dir, dt, device)?;
            if let Some(t) = quant {
                tracing::info!(dir = %dir.display(), quantize = ?t, activations = dtype_name(dt), "quantizing the linear layers at load");
            }
            let llama = llama::Llama::load_with(vb, &cfg, quant).map_err(|e| ModelError::Weights {
                dir: dir.to_path_buf(),
                message: e.to_string(),
            })?;
            if quant.is_some() && device.is_cuda() {
                check_quant_matmul_on_load(&llama, dir)?;
            }
            let tc = chat::TokenizerConfig::load(&dir.join("tokenizer_config.json"))?;
            let chat = match &tc.chat_template {
                Some(src) => Some(
                    chat::ChatTemplate::new(src, &tc.bos_token, &tc.eos_token).map_err(|m| {
                        ModelError::BadFile {
                            path: dir.join("tokenizer_config.json"),
                            message: m,
                        }
                    })?,
                ),
                None => None,
            };
            let mut eos_ids = cfg.eos_ids();
            let gen_cfg = dir.join("generation_config.json");
            if gen_cfg.is_file() {
                let g: serde_json::Value = read_json(&gen_cfg)?;
                for id in config::ids_from_json(g.get("eos_token_id")) {
                    if !eos_ids.contains(&id) {
                        eos_ids.push(id);
                    }
                }
            }
            if !tc.eos_token.is_empty()
                && let Some(id) = tokenizer.token_to_id(&tc.eos_token)
                && !eos_ids.contains(&id)
            {
                eos_ids.push(id);
            }
            let bos_id = cfg
                .bos_token_id
                .or_else(|| tokenizer.token_to_id(&tc.bos_token));
            Ok(LoadedModel::Generation(Box::new(GenerationModel {
                llama,
                tokenizer,
                chat,
                eos_ids,
                bos_id,
                architecture: model_type,
                guide: Default::default(),
            })))
        }
        "bert" if quant.is_some() => Err(bad(
            "quantize applies to generation models; this is an embedding model (bert): leave quantize out".into(),
        )),
        "bert" => {
            let m = bert::EmbeddingModel::load(dir, &raw, dtype, device)?;
            Ok(LoadedModel::Embedding(Box::new(m)))
        }
        _ => Err(ModelError::Unsupported {
            model_type: if model_type.is_empty() {
                "(none)".into()
            } else {
                model_type
            },
            path: cfg_path,
        }),
    }
}
