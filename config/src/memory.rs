//! A model's memory need on a node: its weights (as the node will hold them: the dtype it
//! runs in, quantized at load, or a GGUF file's own types), its KV cache (the tokens the
//! node will reserve at the KV dtype it really uses), the CUDA graphs of its decode steps
//! (on a GPU with `cuda_graphs` on) and a fixed headroom. One
//! calculation for both sides: `dayshift-node` checks it against the device's free
//! memory before loading, and the ingress (`dayshift config check`, `dayshift serve`)
//! against each server type's GPU memory ([`crate::pool_fit`]). It reads only
//! `config.json` and the weight files' sizes, or a GGUF file's header
//! ([`crate::gguf_header`]): nothing here needs candle.

use std::path::Path;

use crate::gguf_header::GgufHeader;
use crate::node::EngineConfig;

/// Memory kept free besides the weights, the KV cache, the CUDA graphs and a prefill
/// chunk's activations ([`Need::activations`]): CUDA context, kernels, allocator slack.
pub const HEADROOM_BYTES: u64 = 512 << 20;

/// Most bytes of attention scores one block of a prompt chunk's query rows
/// materializes: the node's prefill attention runs a chunk in blocks of rows under it
/// (dayshift-node `model/llama.rs`), the mask and the softmax taking as much again each.
pub const PREFILL_SCORES_BYTES: u64 = 256 << 20;

/// Memory the decode steps' CUDA graphs of one generation model hold on a GPU (one graph
/// per batch bucket, each with its own intermediates and memory-pool reservations).
/// Measured on an H200 with 128 slots: a node's peak GPU memory with `cuda_graphs = true`
/// minus the same model's with `false`, same binary, same run, batch 1: 524 MiB
/// (Llama-8B shape), 548 MiB (Llama-1B), 614 MiB (Qwen2-0.5B)
/// (`bench/gpu/results/h200-issue17-s8/`); this rounds the largest up.
pub const CUDA_GRAPH_BYTES: u64 = 640 << 20;

/// The memory a generation model's CUDA graphs take on `target` with `engine`'s
/// settings: [`CUDA_GRAPH_BYTES`] on a GPU with `cuda_graphs` on, else 0.
pub fn cuda_graph_bytes(target: Target, engine: &EngineConfig) -> u64 {
    if target == Target::Gpu && engine.cuda_graphs {
        CUDA_GRAPH_BYTES
    } else {
        0
    }
}

/// Where the node runs the model: the dtype rules differ (the CPU runs safetensors
/// models in f32, and re-quantizes GGUF types it has no fast kernel for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A CPU device.
    Cpu,
    /// A GPU (CUDA).
    Gpu,
}

/// A GGML tensor type: id in GGUF files, name, weights per block and bytes per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    /// Id in a GGUF tensor table.
    pub id: u32,
    /// GGUF name, lowercase (`q4_k`).
    pub name: &'static str,
    /// Weights per block.
    pub block: u64,
    /// Bytes per block.
    pub bytes: u64,
}

/// The GGML types the node reads (ggml's `ggml_type_traits`; `dayshift-node`'s tests
/// check the table against candle's).
#[rustfmt::skip]
pub const GGML_TYPES: &[GgmlType] = &[
    GgmlType { id: 0, name: "f32", block: 1, bytes: 4 },
    GgmlType { id: 1, name: "f16", block: 1, bytes: 2 },
    GgmlType { id: 2, name: "q4_0", block: 32, bytes: 18 },
    GgmlType { id: 3, name: "q4_1", block: 32, bytes: 20 },
    GgmlType { id: 6, name: "q5_0", block: 32, bytes: 22 },
    GgmlType { id: 7, name: "q5_1", block: 32, bytes: 24 },
    GgmlType { id: 8, name: "q8_0", block: 32, bytes: 34 },
    GgmlType { id: 9, name: "q8_1", block: 32, bytes: 36 },
    GgmlType { id: 10, name: "q2_k", block: 256, bytes: 84 },
    GgmlType { id: 11, name: "q3_k", block: 256, bytes: 110 },
    GgmlType { id: 12, name: "q4_k", block: 256, bytes: 144 },
    GgmlType { id: 13, name: "q5_k", block: 256, bytes: 176 },
    GgmlType { id: 14, name: "q6_k", block: 256, bytes: 210 },
    GgmlType { id: 15, name: "q8_k", block: 256, bytes: 292 },
    GgmlType { id: 30, name: "bf16", block: 1, bytes: 2 },
];

impl GgmlType {
    /// The type with GGUF id `id`.
    pub fn by_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.id == id)
    }
    /// The type named `name` (`q4_k`, `Q8_0`, ...).
    pub fn by_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES
            .iter()
            .copied()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }
    /// Bytes of `elements` weights of this type.
    pub fn bytes_for(&self, elements: u64) -> u64 {
        elements.div_ceil(self.block) * self.bytes
    }
    /// Bits per weight (Q4_K: 144 bytes for 256 weights, 4.5).
    pub fn bits_per_weight(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.block as f64
    }
}

/// Bytes of one element of a dtype name (`f32`, `float32`, `bf16`, `bfloat16`, ...).
pub fn dtype_bytes(name: &str) -> Option<u64> {
    canonical_dtype(name).map(|d| if d == "f32" { 4 } else { 2 })
}

/// `f32`, `bf16` or `f16` for any of their spellings in `config.json` or a node config.
pub fn canonical_dtype(name: &str) -> Option<&'static str> {
    match name {
        "f32" | "float32" => Some("f32"),
        "bf16" | "bfloat16" => Some("bf16"),
        "f16" | "float16" => Some("f16"),
        _ => None,
    }
}

/// The dtype a node runs a safetensors model in (weights, activations and KV cache; the
/// dense tensors when it quantizes at load): the configured `dtype`; else f32 on the CPU;
/// else the saved `torch_dtype`, bf16 when the file does not say. A model quantized at
/// load on the CPU runs in f32 only (candle's quantized CPU kernels take f32 input).
pub fn run_dtype(
    dtype: Option<&str>,
    saved: Option<&str>,
    quantize: Option<&str>,
    target: Target,
) -> Result<&'static str, String> {
    if quantize.is_some() && target == Target::Cpu {
        return match dtype {
            Some(d) if canonical_dtype(d) != Some("f32") => Err(
                "a model quantized at load runs with f32 activations on the CPU (candle's quantized CPU kernels take f32 input): leave dtype out".into(),
            ),
            _ => Ok("f32"),
        };
    }
    if let Some(d) = dtype {
        return canonical_dtype(d)
            .ok_or_else(|| format!("dtype {d:?} is not one of f32, bf16, f16"));
    }
    if target == Target::Cpu {
        return Ok("f32");
    }
    Ok(saved.and_then(canonical_dtype).unwrap_or("bf16"))
}

/// The dtype a node runs a GGUF file's activations, dense tensors (embeddings, norms,
/// biases) and KV cache in: on a GPU `dtype`, else bf16 (half the KV cache and embedding
/// table of f32; candle's quantized GPU kernels take bf16 input); on the CPU f32 only
/// (its quantized CPU kernels take f32 input).
pub fn gguf_run_dtype(dtype: Option<&str>, target: Target) -> Result<&'static str, String> {
    let Some(d) = dtype else {
        return Ok(if target == Target::Cpu { "f32" } else { "bf16" });
    };
    let d =
        canonical_dtype(d).ok_or_else(|| format!("dtype {d:?} is not one of f32, bf16, f16"))?;
    if target == Target::Cpu && d != "f32" {
        return Err(format!(
            "dtype {d:?}: a GGUF file runs in f32 on the CPU (candle's quantized CPU kernels take f32 input): leave dtype out, or run it on a GPU"
        ));
    }
    Ok(d)
}

/// Bytes of KV cache one token takes: keys and values of every layer.
pub fn kv_bytes_per_token(layers: u64, kv_heads: u64, head_dim: u64, elem_bytes: u64) -> u64 {
    2 * layers * kv_heads * head_dim * elem_bytes
}

/// Total size of the weight files of a model directory (`*.safetensors`, `*.gguf`,
/// `*.bin`), or of a single file.
pub fn weight_file_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return path.metadata().map(|m| m.len()).unwrap_or(0);
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(".safetensors") || n.ends_with(".gguf") || n.ends_with(".bin")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The one `.gguf` file of a directory without `config.json` (how the node finds a GGUF
/// model in a mirrored folder).
pub fn single_gguf_in_dir(dir: &Path) -> Option<std::path::PathBuf> {
    if !dir.is_dir() || dir.join("config.json").is_file() {
        return None;
    }
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
            && p.is_file()
        {
            found.push(p);
        }
    }
    if found.len() == 1 { found.pop() } else { None }
}

/// What a model takes on a node, before its KV cache is sized.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMemory {
    /// Bytes of the weights on the device.
    pub weights: u64,
    /// How the weights are held, for people (`bf16`, `q4_k at load`, `GGUF Q4_K_M`).
    pub weights_kind: String,
    /// KV-cache bytes per token (0 for an embedding model).
    pub kv_bytes_per_token: u64,
    /// The KV cache's dtype.
    pub kv_dtype: &'static str,
    /// The model's context length (`max_position_embeddings`, `context_length`).
    pub context: u64,
    /// Where it runs.
    pub target: Target,
    /// Of `weights`, what candle's x86 kernels add on the CPU after the load, on first
    /// use ([`x86_repack_bytes`]): not yet taken when the node sizes the KV cache.
    pub repacked: u64,
    /// Activation bytes one prompt token of a prefill chunk takes at the step's peak, the
    /// MLP's: `(hidden + 3 × intermediate) × 4` (its input, gate, up and their product,
    /// counted in f32, the widest dtype they take: the quantized kernels convert to it).
    pub activation_bytes_per_token: u64,
    /// Query heads (0 for an embedding model): bounds a prompt block's attention scores.
    pub heads: u64,
}

/// [`ModelMemory::activation_bytes_per_token`] of a model `hidden` wide with an MLP of
/// `intermediate` (4 × `hidden` when unknown).
pub fn activation_bytes_per_token(hidden: u64, intermediate: Option<u64>) -> u64 {
    (hidden + 3 * intermediate.unwrap_or(4 * hidden)) * 4
}

/// Why the KV cache holds the tokens a [`Need`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvBasis {
    /// `kv_cache_tokens` of the node's engine (a pool's `slots` × `context_tokens`).
    Configured,
    /// Unset: the node sizes the cache from free memory, but never below one sequence of
    /// the model's full context.
    FullContext,
    /// An embedding model keeps no KV cache.
    None,
}

/// A model's memory need on a node with given engine settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// Weight bytes.
    pub weights: u64,
    /// How the weights are held.
    pub weights_kind: String,
    /// KV-cache tokens reserved.
    pub kv_tokens: u64,
    /// Their bytes.
    pub kv_bytes: u64,
    /// The KV cache's dtype.
    pub kv_dtype: &'static str,
    /// Why that many tokens.
    pub kv_basis: KvBasis,
    /// The decode steps' CUDA graphs ([`cuda_graph_bytes`]).
    pub graphs: u64,
    /// A prefill chunk's activations at the step's peak: `prefill_chunk_tokens` ×
    /// [`ModelMemory::activation_bytes_per_token`], and three blocks of attention scores
    /// (scores, mask, softmax; each the chunk against the whole context, at most
    /// [`PREFILL_SCORES_BYTES`]). 0 for an embedding model.
    pub activations: u64,
    /// The prefill chunk those activations are for.
    pub chunk_tokens: u64,
    /// [`HEADROOM_BYTES`].
    pub headroom: u64,
}

/// `bytes` in GiB with two decimals (`22.49 GiB`).
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `1280000` as `1,280,000`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Need {
    /// Weights + KV cache + CUDA graphs + activations + headroom.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_bytes)
            .saturating_add(self.graphs)
            .saturating_add(self.activations)
            .saturating_add(self.headroom)
    }

    /// `weights 8.57 GiB (q4_k at load) + KV cache 11.72 GiB (38,400 tokens, f32) +
    /// CUDA graphs 0.62 GiB + headroom 0.50 GiB = 21.42 GiB` (no graphs term when 0).
    pub fn figures(&self) -> String {
        let kv = match self.kv_basis {
            KvBasis::None => "no KV cache (embedding model)".to_string(),
            KvBasis::Configured => format!(
                "KV cache {} ({} tokens, {})",
                gib(self.kv_bytes),
                thousands(self.kv_tokens),
                self.kv_dtype
            ),
            KvBasis::FullContext => format!(
                "KV cache {} ({} tokens: one sequence of the model's full context, {})",
                gib(self.kv_bytes),
                thousands(self.kv_tokens),
                self.kv_dtype
            ),
        };
        let graphs = if self.graphs > 0 {
            format!(" + CUDA graphs {}", gib(self.graphs))
        } else {
            String::new()
        };
        let act = if self.activations > 0 {
            format!(
                " + activations {} ({}-token prefill chunk)",
                gib(self.activations),
                thousands(self.chunk_tokens)
            )
        } else {
            String::new()
        };
        format!(
            "weights {} ({}) + {kv}{graphs}{act} + headroom {} = {}",
            gib(self.weights),
            self.weights_kind,
            gib(self.headroom),
            gib(self.total())
        )
    }
}

impl ModelMemory {
    /// The memory of the model at `path` (a Hugging Face directory, a directory holding
    /// one `.gguf` file, or a `.gguf` file) run with the node's `dtype` and `quantize`
    /// settings on `target`.
    pub fn of(
        path: &Path,
        dtype: Option<&str>,
        quantize: Option<&str>,
        target: Target,
    ) -> Result<ModelMemory, String> {
        let gguf = if path.is_file() {
            Some(path.to_path_buf())
        } else {
            single_gguf_in_dir(path)
        };
        if let Some(p) = gguf {
            if quantize.is_some() {
                return Err(format!(
                    "{}: quantize does not apply to a GGUF file (its weights are quantized already)",
                    p.display()
                ));
            }
            let run = gguf_run_dtype(dtype, target).map_err(|e| format!("{}: {e}", p.display()))?;
            return ModelMemory::from_gguf(&GgufHeader::read(&p)?, target, run)
                .map_err(|e| format!("{}: {e}", p.display()));
        }
        let cfg = path.join("config.json");
        let text = std::fs::read_to_string(&cfg).map_err(|e| {
            format!(
                "{}: {e} (a model directory needs its config.json)",
                cfg.display()
            )
        })?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cfg.display()))?;
        ModelMemory::from_config_json(&raw, weight_file_bytes(path), dtype, quantize, target)
            .map_err(|e| format!("{}: {e}", cfg.display()))
    }

    /// From a Hugging Face `config.json` and the size of the weight files beside it.
    /// Quantized at load, the matrices take the type's bits per weight and the embedding
    /// matrix (kept dense) f32.
    pub fn from_config_json(
        raw: &serde_json::Value,
        file_bytes: u64,
        dtype: Option<&str>,
        quantize: Option<&str>,
        target: Target,
    ) -> Result<ModelMemory, String> {
        // Multimodal Gemma 3: the text model's numbers are in text_config.
        let text = raw.get("text_config").filter(|v| v.is_object());
        let get = |k: &str| text.and_then(|t| t.get(k)).or_else(|| raw.get(k));
        let num = |k: &str| get(k).and_then(serde_json::Value::as_u64);
        let need = |k: &str| num(k).ok_or_else(|| format!("{k} is missing or not a number"));
        let saved = get("torch_dtype")
            .or_else(|| get("dtype"))
            .and_then(|d| d.as_str());
        let run = run_dtype(dtype, saved, quantize, target)?;
        let run_bytes = dtype_bytes(run).unwrap_or(2);
        let saved_bytes = saved.and_then(dtype_bytes);
        let mut repacked = 0u64;
        let (weights, weights_kind) = match quantize {
            Some(q) => {
                let t = GgmlType::by_name(q)
                    .filter(|t| crate::node::QUANTIZE_TYPES.contains(&t.name))
                    .ok_or_else(|| {
                        format!(
                            "quantize {q:?} is not one of {}",
                            crate::node::QUANTIZE_TYPES.join(", ")
                        )
                    })?;
                let params = file_bytes / saved_bytes.unwrap_or(2);
                let vocab = num("vocab_size").unwrap_or(0);
                let hidden = num("hidden_size").unwrap_or(0);
                let embed = vocab.saturating_mul(hidden).min(params);
                let mats = ((params - embed) as f64 * t.bits_per_weight() / 8.0) as u64;
                // On the CPU candle's x86 kernels also keep a tiled copy of the matrices
                // (their rows `hidden` wide, a multiple of 256; `down`'s are assumed so too).
                if target == Target::Cpu && hidden > 0 && hidden.is_multiple_of(256) {
                    let per_tile = x86_repack_bytes(t.id, 16, 256, x86_repack_level());
                    repacked = (params - embed) / 4096 * per_tile;
                }
                let mut kind = format!("{} at load, embeddings {run}", t.name);
                if repacked > 0 {
                    kind.push_str(&format!(
                        ", + {} repacked by candle's x86 kernels",
                        gib(repacked)
                    ));
                }
                (mats + embed * run_bytes + repacked, kind)
            }
            None => match saved_bytes {
                Some(from) if from != run_bytes => (file_bytes / from * run_bytes, run.to_string()),
                _ => (file_bytes, run.to_string()),
            },
        };
        let model_type = get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        let context = num("max_position_embeddings").unwrap_or(0);
        if model_type == "bert" {
            return Ok(ModelMemory {
                weights,
                weights_kind,
                kv_bytes_per_token: 0,
                kv_dtype: run,
                context,
                target,
                repacked,
                activation_bytes_per_token: 0,
                heads: 0,
            });
        }
        let heads = need("num_attention_heads")?;
        let hidden = need("hidden_size")?;
        let layers = need("num_hidden_layers")?;
        let kv_heads = num("num_key_value_heads").unwrap_or(heads);
        let head_dim = num("head_dim").unwrap_or(hidden / heads.max(1));
        Ok(ModelMemory {
            weights,
            weights_kind,
            kv_bytes_per_token: kv_bytes_per_token(layers, kv_heads, head_dim, run_bytes),
            kv_dtype: run,
            context: if context == 0 { 4096 } else { context },
            target,
            repacked,
            activation_bytes_per_token: activation_bytes_per_token(
                hidden,
                num("intermediate_size"),
            ),
            heads,
        })
    }

    /// From a GGUF file's header. The node keeps the matrices in their own types (on the
    /// CPU Q4_1/Q5_0/Q5_1 become Q8_0), the token embeddings and 1-D tensors (norms,
    /// biases) in f32 (the embeddings also quantized when they double as the output
    /// matrix), and runs activations and the KV cache in f32. On the CPU (this machine's:
    /// [`Target::Cpu`] is only asked by the node itself) candle 0.11 also keeps a second,
    /// tiled copy of the matrices its x86 kernels take ([`x86_repack_bytes`]).
    /// `dtype`: [`gguf_run_dtype`]'s choice, the dtype of the dense tensors and KV cache.
    pub fn from_gguf(
        h: &GgufHeader,
        target: Target,
        dtype: &'static str,
    ) -> Result<ModelMemory, String> {
        let dense_bytes = dtype_bytes(dtype).ok_or_else(|| format!("unknown dtype {dtype:?}"))?;
        let arch = h
            .text("general.architecture")
            .ok_or("general.architecture is missing")?;
        let k = |s: &str| format!("{arch}.{s}");
        let need = |s: &str| {
            h.uint(&k(s))
                .ok_or_else(|| format!("{} is missing or not a number", k(s)))
        };
        let heads = need("attention.head_count")?;
        let hidden = need("embedding_length")?;
        let layers = need("block_count")?;
        let kv_heads = h.uint(&k("attention.head_count_kv")).unwrap_or(heads);
        let head_dim = h
            .uint(&k("attention.key_length"))
            .or_else(|| h.uint(&k("rope.dimension_count")))
            .unwrap_or(hidden / heads.max(1));
        let context = h.uint(&k("context_length")).unwrap_or(4096);
        let tied = h.tensor("output.weight").is_none();
        let q8_0 = GgmlType::by_id(8).ok_or("no q8_0 in the type table")?;
        let mut weights = 0u64;
        let mut repacked = 0u64;
        let level = x86_repack_level();
        for t in &h.tensors {
            let ty = GgmlType::by_id(t.ggml_type)
                .ok_or_else(|| format!("tensor {}: unknown GGML type {}", t.name, t.ggml_type))?;
            let n = t.elements();
            if t.name == "rope_freqs.weight" {
                continue; // read into the rotary tables, not kept as a tensor
            }
            if t.name == "token_embd.weight" {
                weights += n * dense_bytes;
                if !tied {
                    continue;
                }
            } else if t.dims.len() < 2 {
                weights += n * dense_bytes;
                continue;
            }
            let ty = if target == Target::Cpu && matches!(ty.id, 3 | 6 | 7) {
                q8_0
            } else {
                ty
            };
            weights += ty.bytes_for(n);
            if target == Target::Cpu {
                let (k, rows) = (t.dims[0], t.dims[1..].iter().product());
                repacked += x86_repack_bytes(ty.id, rows, k, level);
            }
        }
        let mut kind = h
            .uint("general.file_type")
            .and_then(file_type_name)
            .map(|n| format!("GGUF {n}, embeddings {dtype}"))
            .unwrap_or_else(|| format!("GGUF, embeddings {dtype}"));
        if repacked > 0 {
            kind.push_str(&format!(
                ", + {} repacked by candle's x86 kernels",
                gib(repacked)
            ));
            weights += repacked;
        }
        Ok(ModelMemory {
            weights,
            weights_kind: kind,
            kv_bytes_per_token: kv_bytes_per_token(layers, kv_heads, head_dim, dense_bytes),
            kv_dtype: dtype,
            context,
            target,
            repacked,
            activation_bytes_per_token: activation_bytes_per_token(
                hidden,
                h.uint(&k("feed_forward_length")),
            ),
            heads,
        })
    }

    /// The largest block of attention scores a prompt chunk materializes: a chunk's
    /// rows against the model's whole context, in f32 at most, but never above
    /// [`PREFILL_SCORES_BYTES`] (the node splits the rows into blocks under it).
    fn prefill_scores_bytes(&self, engine: &EngineConfig) -> u64 {
        self.heads
            .saturating_mul(u64::from(engine.prefill_chunk_tokens).min(self.context.max(1)))
            .saturating_mul(self.context)
            .saturating_mul(4)
            .min(PREFILL_SCORES_BYTES)
    }

    /// The need with `engine`'s settings: the KV cache the node reserves at least
    /// (`kv_cache_tokens` when set, else one sequence of the model's full context; the
    /// node gives it more when memory is left, [`kv_cache_tokens`]), and a generation
    /// model's CUDA graphs.
    pub fn need(&self, engine: &EngineConfig) -> Need {
        let (kv_tokens, kv_basis) = if self.kv_bytes_per_token == 0 {
            (0, KvBasis::None)
        } else {
            match engine.kv_cache_tokens {
                Some(t) => (t, KvBasis::Configured),
                None => (self.context, KvBasis::FullContext),
            }
        };
        Need {
            weights: self.weights,
            weights_kind: self.weights_kind.clone(),
            kv_tokens,
            kv_bytes: kv_tokens.saturating_mul(self.kv_bytes_per_token),
            kv_dtype: self.kv_dtype,
            kv_basis,
            graphs: if self.kv_bytes_per_token == 0 {
                0
            } else {
                cuda_graph_bytes(self.target, engine)
            },
            activations: if self.kv_bytes_per_token == 0 {
                0
            } else {
                u64::from(engine.prefill_chunk_tokens)
                    .saturating_mul(self.activation_bytes_per_token)
                    .saturating_add(3 * self.prefill_scores_bytes(engine))
            },
            chunk_tokens: u64::from(engine.prefill_chunk_tokens),
            headroom: HEADROOM_BYTES,
        }
    }
}

/// Which of candle 0.11's x86 quantized kernels this CPU gets (its
/// `repack_x86::level()`, with the same `MISTRALRS_FORCE_AVX2` / `MISTRALRS_FORCE_AVXVNNI`
/// overrides): `Some(true)` with VNNI, `Some(false)` AVX2 only, `None` neither.
pub fn x86_repack_level() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        let env = |k: &str| std::env::var(k).as_deref() == Ok("1");
        let (avx2_only, vnni) = (env("MISTRALRS_FORCE_AVX2"), env("MISTRALRS_FORCE_AVXVNNI"));
        let has = |f: bool| !avx2_only && f;
        if has(!vnni
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni"))
            || has((vnni || std::arch::is_x86_feature_detected!("avxvnni"))
                && std::arch::is_x86_feature_detected!("avx2"))
        {
            return Some(true);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(false);
        }
        None
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The second copy candle 0.11 keeps of a `rows` × `k` matrix of GGML type `ggml_type`
/// once its x86 kernels have used it (`repack_x86::select` and `pack`: tiles of 16 rows
/// by 256 columns, made on first use and kept beside the original): Q4_K 3,072 bytes per
/// tile (0.75 bytes a weight), Q6_K 5,120 (taken only for several rows, which every
/// prompt is), Q8_0 544 per 16 × 32 (only with VNNI); 0 for other types, shapes or CPUs.
/// Measured: a Qwen3-0.6B-shaped Q4_K_M file of 306 MB ran in 915 MB of RSS, its Q8_0
/// copy of 523 MB in 1,305 MB (`bench/gguf-cpu/make_qwen3_shape.py`, 2026-12-04).
pub fn x86_repack_bytes(ggml_type: u32, rows: u64, k: u64, level: Option<bool>) -> u64 {
    let Some(vnni) = level else {
        return 0;
    };
    if k == 0 || !k.is_multiple_of(256) || !rows.is_multiple_of(16) {
        return 0;
    }
    let tiles_256 = rows / 16 * (k / 256);
    match ggml_type {
        12 => tiles_256 * 3072,
        14 => tiles_256 * 5120,
        8 if vnni => rows / 16 * (k / 32) * 544,
        _ => 0,
    }
}

/// llama.cpp's `general.file_type` names of the common mixes.
fn file_type_name(t: u64) -> Option<&'static str> {
    Some(match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

/// `Ok` when `need` fits in `free` bytes of `device`; else the node's refusal with the
/// figures: the configured KV cache's when the weights fit but it does not.
pub fn check_fits(model: &str, need: &Need, free: u64, device: &str) -> Result<(), String> {
    if need.total() <= free {
        return Ok(());
    }
    let after = free
        .saturating_sub(need.weights)
        .saturating_sub(need.graphs)
        .saturating_sub(need.activations)
        .saturating_sub(need.headroom);
    if need.kv_basis == KvBasis::Configured && after > 0 {
        let per_token = need.kv_bytes / need.kv_tokens.max(1);
        let besides = match (need.graphs > 0, need.activations > 0) {
            (true, true) => " and the CUDA graphs, prefill activations and headroom",
            (true, false) => " and the CUDA graphs and headroom",
            (false, true) => " and the prefill activations and headroom",
            (false, false) => " and the headroom",
        };
        return Err(format!(
            "model {model:?}: {}",
            kv_refusal(need.kv_tokens, per_token, after, besides)
        ));
    }
    Err(format!(
        "model {model:?} does not fit on {device}: it needs {}, and {} is free; pick a server \
         type with more memory, a smaller dtype (bf16), a quantize type or a quantized GGUF \
         file, or a smaller KV cache (engine.kv_cache_tokens; a pool's slots × context_tokens)",
        need.figures(),
        gib(free)
    ))
}

/// The refusal of `kv_cache_tokens = tokens` when `free` bytes are left for it.
fn kv_refusal(tokens: u64, per_token: u64, free: u64, besides: &str) -> String {
    let per_token = per_token.max(1);
    let need = u128::from(tokens) * u128::from(per_token);
    format!(
        "engine.kv_cache_tokens = {tokens} does not fit: at {per_token} bytes per token the KV cache needs {}, and {} is free after the weights{besides}; set kv_cache_tokens to at most {} (or leave it out to size the cache from free memory), or pick a server type with more memory",
        gib(u64::try_from(need).unwrap_or(u64::MAX)),
        gib(free),
        free / per_token
    )
}

/// The KV-cache size in tokens a node gives a model: `kv_cache_tokens` when configured
/// (refused with the figures when its bytes exceed `free`, the memory left after the
/// weights), else `kv_cache_memory_fraction` of `free`, at most `max_running_sequences`
/// full-context sequences and at least one.
pub fn kv_cache_tokens(
    engine: &EngineConfig,
    free: u64,
    per_token: u64,
    ctx: u64,
) -> Result<u64, String> {
    let cap = u64::from(engine.max_running_sequences) * ctx;
    let per_token = per_token.max(1);
    if let Some(t) = engine.kv_cache_tokens {
        if u128::from(t) * u128::from(per_token) > u128::from(free) {
            return Err(kv_refusal(t, per_token, free, ""));
        }
        return Ok(t);
    }
    let by_mem = (free as f64 * engine.kv_cache_memory_fraction) as u64 / per_token;
    Ok(by_mem.min(cap).max(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(kv: Option<u64>) -> EngineConfig {
        EngineConfig {
            kv_cache_tokens: kv,
            ..EngineConfig::default()
        }
    }

    #[test]
    fn a_configured_kv_cache_that_does_not_fit_is_refused_with_figures() {
        let gib = 1u64 << 30;
        // 22 GiB free after the weights; 160 KiB per token (Mistral-Nemo-12B in bf16).
        let e = kv_cache_tokens(&engine(Some(200_000)), 22 * gib, 160 << 10, 4096).unwrap_err();
        assert!(e.contains("kv_cache_tokens = 200000 does not fit"), "{e}");
        assert!(
            e.contains("30.52 GiB") && e.contains("22.00 GiB is free"),
            "{e}"
        );
        assert!(e.contains("at most 144179"), "{e}");
        assert_eq!(
            kv_cache_tokens(&engine(Some(144_179)), 22 * gib, 160 << 10, 4096),
            Ok(144_179)
        );
        // Unset: sized from free memory (fraction of it), capped by the sequences' contexts.
        let n = kv_cache_tokens(&engine(None), 22 * gib, 160 << 10, 4096).unwrap();
        assert!(n > 4096 && n <= 144_179, "{n}");
    }

    #[test]
    fn a_model_too_large_for_the_device_is_refused_with_figures() {
        let gib = 1u64 << 30;
        let need = |weights| Need {
            weights,
            weights_kind: "bf16".into(),
            kv_tokens: 0,
            kv_bytes: 0,
            kv_dtype: "bf16",
            kv_basis: KvBasis::Configured,
            graphs: 0,
            activations: 0,
            chunk_tokens: 0,
            headroom: HEADROOM_BYTES,
        };
        assert!(check_fits("m", &need(10 * gib), 24 * gib, "NVIDIA L4").is_ok());
        let e = check_fits("llama-70b", &need(140 * gib), 23 * gib, "NVIDIA L4").unwrap_err();
        assert!(e.contains("does not fit on NVIDIA L4"), "{e}");
        assert!(e.contains("weights 140.00 GiB"), "{e}");
        assert!(e.contains("23.00 GiB is free"), "{e}");
        // The headroom counts: weights that fill the device exactly do not fit.
        assert!(check_fits("m", &need(24 * gib), 24 * gib, "gpu").is_err());
    }

    fn dir_with(config: &str, weight_bytes: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("model.safetensors")).unwrap();
        f.set_len(weight_bytes).unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), vec![0u8; 999]).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    const TINY: &str = r#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 10,
        "max_position_embeddings": 512, "torch_dtype": "float32"}"#;

    #[test]
    fn weights_follow_the_dtype_the_node_runs_in() {
        let dir = dir_with(TINY, 4000);
        let of = |dtype, target| ModelMemory::of(dir.path(), dtype, None, target).unwrap();
        assert_eq!(of(None, Target::Gpu).weights, 4000);
        assert_eq!(of(Some("bf16"), Target::Gpu).weights, 2000);
        assert_eq!(of(Some("f32"), Target::Cpu).weights, 4000);
        let bf16 = dir_with(&TINY.replace("float32", "bfloat16"), 2000);
        // The CPU runs it in f32; a GPU as saved.
        let m = ModelMemory::of(bf16.path(), None, None, Target::Cpu).unwrap();
        assert_eq!((m.weights, m.kv_dtype), (4000, "f32"));
        let m = ModelMemory::of(bf16.path(), None, None, Target::Gpu).unwrap();
        assert_eq!((m.weights, m.kv_dtype), (2000, "bf16"));
        // 2 (k, v) × 3 layers × 2 kv heads × 16 (64 / 4) × 2 bytes.
        assert_eq!(m.kv_bytes_per_token, 384);
        assert_eq!(m.context, 512);
    }

    /// A GGUF file runs in bf16 on a GPU unless `dtype` says otherwise, in f32 on the CPU.
    #[test]
    fn gguf_runs_in_f32_unless_a_gpu_is_told_otherwise() {
        assert_eq!(gguf_run_dtype(None, Target::Gpu), Ok("bf16"));
        assert_eq!(gguf_run_dtype(None, Target::Cpu), Ok("f32"));
        assert_eq!(gguf_run_dtype(Some("bfloat16"), Target::Gpu), Ok("bf16"));
        assert_eq!(gguf_run_dtype(Some("f16"), Target::Gpu), Ok("f16"));
        assert_eq!(gguf_run_dtype(Some("f32"), Target::Cpu), Ok("f32"));
        let e = gguf_run_dtype(Some("bf16"), Target::Cpu).unwrap_err();
        assert!(e.contains("f32 on the CPU"), "{e}");
        assert!(gguf_run_dtype(Some("int8"), Target::Gpu).is_err());
    }

    #[test]
    fn weights_follow_quantize_at_load() {
        // 1,000 bf16 weights, 100 of them the embedding matrix (kept dense, in the run
        // dtype: bf16 on a GPU as saved, f32 on the CPU).
        let cfg = r#"{"torch_dtype": "bfloat16", "vocab_size": 10, "hidden_size": 10,
            "num_attention_heads": 2, "num_hidden_layers": 1, "max_position_embeddings": 8}"#;
        let dir = dir_with(cfg, 2000);
        let q = |t, target| ModelMemory::of(dir.path(), None, Some(t), target).unwrap();
        assert_eq!(q("q8_0", Target::Gpu).weights, 900 * 85 / 80 + 200);
        assert_eq!(q("q4_k", Target::Gpu).weights, 900 * 45 / 80 + 200);
        assert_eq!(q("q4_k", Target::Gpu).kv_dtype, "bf16");
        // The CPU runs f32 activations, so an f32 embedding and KV cache, and refuses
        // another dtype.
        let cpu = q("q8_0", Target::Cpu);
        assert_eq!(
            (cpu.weights - cpu.repacked, cpu.kv_dtype),
            (900 * 85 / 80 + 400, "f32")
        );
        assert!(ModelMemory::of(dir.path(), Some("bf16"), Some("q8_0"), Target::Cpu).is_err());
        let f32_gpu = ModelMemory::of(dir.path(), Some("f32"), Some("q8_0"), Target::Gpu).unwrap();
        assert_eq!(f32_gpu.kv_dtype, "f32");
        assert!(ModelMemory::of(dir.path(), None, Some("q4_k_m"), Target::Gpu).is_err());
    }

    /// Issue 18's workload (30 streams of 1,000 + 256 tokens: 30 slots × 1,280) with
    /// Qwen3-8B's real shape inside the issue's 22 GB budget (20.49 GiB): bf16 weights
    /// leave too little for that KV cache, and the refusal says how much does fit;
    /// quantized to Q4_K at load it fits with room to spare.
    #[test]
    fn qwen3_8b_at_thirty_streams_fits_22_gb_in_q4_k_not_in_bf16() {
        let raw = serde_json::json!({"model_type": "qwen3", "hidden_size": 4096,
            "intermediate_size": 12288, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 128, "num_hidden_layers": 36, "vocab_size": 151936,
            "max_position_embeddings": 40960, "torch_dtype": "bfloat16"});
        let bf16_bytes = 8_190_735_360u64 * 2;
        let engine = EngineConfig {
            kv_cache_tokens: Some(30 * 1280),
            max_running_sequences: 30,
            ..EngineConfig::default()
        };
        let budget = 22_000_000_000u64;
        let need = |quantize| {
            ModelMemory::from_config_json(&raw, bf16_bytes, None, quantize, Target::Gpu)
                .unwrap()
                .need(&engine)
        };
        let bf16 = need(None);
        // 36 layers × 8 kv heads × 128 × (k, v) × 2 bytes a token.
        assert_eq!(bf16.kv_bytes, 38_400 * 147_456);
        let e = check_fits("qwen3-8b", &bf16, budget, "a 22 GB budget").unwrap_err();
        assert!(
            e.contains("engine.kv_cache_tokens = 38400 does not fit"),
            "{e}"
        );
        let most: u64 = e
            .split("at most ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!((20_000..38_400).contains(&most), "{e}");
        let q4k = need(Some("q4_k"));
        assert!(check_fits("qwen3-8b", &q4k, budget, "a 22 GB budget").is_ok());
        assert!(
            q4k.total() + (9u64 << 30) < bf16.total(),
            "{}",
            q4k.figures()
        );
    }

    #[test]
    fn head_dim_other_than_hidden_over_heads_is_used() {
        // Mistral Nemo: 32 heads of 128 in a 5120-wide model (not 160).
        let raw = serde_json::json!({"hidden_size": 5120, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 128, "num_hidden_layers": 40,
            "max_position_embeddings": 1024000, "torch_dtype": "bfloat16"});
        let m = ModelMemory::from_config_json(&raw, 0, None, None, Target::Gpu).unwrap();
        assert_eq!(m.kv_bytes_per_token, 160 << 10);
        // Gemma 3's multimodal checkpoints keep them in text_config.
        let raw = serde_json::json!({"model_type": "gemma3", "text_config": {"hidden_size": 64,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 256,
            "num_hidden_layers": 2, "max_position_embeddings": 128}});
        let m = ModelMemory::from_config_json(&raw, 0, None, None, Target::Gpu).unwrap();
        assert_eq!((m.kv_bytes_per_token, m.context), (2 * 2 * 256 * 2, 128));
    }

    #[test]
    fn figures_name_every_part() {
        let mut m = ModelMemory {
            weights: 3 << 30,
            weights_kind: "bf16".into(),
            kv_bytes_per_token: 1 << 20,
            kv_dtype: "bf16",
            context: 8192,
            target: Target::Cpu,
            repacked: 0,
            activation_bytes_per_token: 256 << 10,
            heads: 32,
        };
        let n = m.need(&engine(Some(2048)));
        // A 256-token prefill chunk at 256 KiB a token, and three 256 MiB blocks of scores.
        let act = (64 << 20) + 3 * PREFILL_SCORES_BYTES;
        assert_eq!(n.activations, act);
        assert_eq!(n.total(), (5 << 30) + act + HEADROOM_BYTES);
        assert_eq!(
            n.figures(),
            "weights 3.00 GiB (bf16) + KV cache 2.00 GiB (2,048 tokens, bf16) + activations 0.81 GiB (256-token prefill chunk) + headroom 0.50 GiB = 6.31 GiB"
        );
        let n = m.need(&engine(None));
        assert_eq!(n.kv_tokens, 8192);
        assert!(
            n.figures()
                .contains("8,192 tokens: one sequence of the model's full context")
        );
        assert_eq!(thousands(1_024_000), "1,024,000");
        assert_eq!(thousands(999), "999");
        // On a GPU the decode steps' CUDA graphs count, unless they are off.
        m.target = Target::Gpu;
        let n = m.need(&engine(Some(2048)));
        assert_eq!(
            n.total(),
            (5 << 30) + CUDA_GRAPH_BYTES + act + HEADROOM_BYTES
        );
        assert_eq!(
            n.figures(),
            "weights 3.00 GiB (bf16) + KV cache 2.00 GiB (2,048 tokens, bf16) + CUDA graphs 0.62 GiB + activations 0.81 GiB (256-token prefill chunk) + headroom 0.50 GiB = 6.94 GiB"
        );
        let off = EngineConfig {
            cuda_graphs: false,
            ..engine(Some(2048))
        };
        assert_eq!(m.need(&off).graphs, 0);
        // A small model's scores stay far under the cap: 4 heads × 256 rows × 512 keys ×
        // 4 bytes = 2 MiB a block.
        let small = ModelMemory {
            heads: 4,
            context: 512,
            ..m.clone()
        };
        assert_eq!(
            small.need(&engine(Some(512))).activations,
            (64 << 20) + 3 * (2 << 20)
        );
        // An embedding model has no decode graphs and no prefill chunks.
        m.kv_bytes_per_token = 0;
        assert_eq!(m.need(&engine(None)).graphs, 0);
        assert_eq!(m.need(&engine(None)).activations, 0);
    }

    #[test]
    fn candle_x86_repacked_copies_are_counted() {
        let (k, rows) = (1024u64, 3072u64);
        // Q4_K: 0.75 bytes a weight; Q6_K 1.25; Q8_0 1.0625 but only with VNNI.
        assert_eq!(x86_repack_bytes(12, rows, k, Some(false)), rows * k * 3 / 4);
        assert_eq!(x86_repack_bytes(14, rows, k, Some(true)), rows * k * 5 / 4);
        assert_eq!(x86_repack_bytes(8, rows, k, Some(true)), rows * k * 17 / 16);
        assert_eq!(x86_repack_bytes(8, rows, k, Some(false)), 0);
        // Shapes the tiles do not fit (SmolLM2's 576-wide rows), other types, no kernels.
        assert_eq!(x86_repack_bytes(12, rows, 576, Some(true)), 0);
        assert_eq!(x86_repack_bytes(12, 24, k, Some(true)), 0);
        assert_eq!(x86_repack_bytes(13, rows, k, Some(true)), 0);
        assert_eq!(x86_repack_bytes(12, rows, k, None), 0);
        // Quantized at load on this CPU: the matrices' tiled copy counts (rows 1024 wide).
        let raw = serde_json::json!({"model_type": "llama", "vocab_size": 1000, "hidden_size": 1024,
            "num_attention_heads": 8, "num_hidden_layers": 2, "torch_dtype": "bfloat16"});
        let params = 1000 * 1024 + 4096 * 100;
        let m = ModelMemory::from_config_json(&raw, params * 2, None, Some("q4_k"), Target::Cpu)
            .unwrap();
        let per_tile = x86_repack_bytes(12, 16, 256, x86_repack_level());
        assert_eq!(m.repacked, 100 * per_tile);
        let g = ModelMemory::from_config_json(&raw, params * 2, None, Some("q4_k"), Target::Gpu)
            .unwrap();
        // A GPU keeps no tiled copy, and its embedding in bf16 (2 bytes a weight less).
        assert_eq!(
            (g.repacked, m.weights - g.weights),
            (0, m.repacked + 1000 * 1024 * 2)
        );
    }

    #[test]
    fn a_kv_cache_that_leaves_no_room_for_the_graphs_is_refused() {
        let gib = 1u64 << 30;
        let m = ModelMemory {
            weights: 20 * gib,
            weights_kind: "bf16".into(),
            kv_bytes_per_token: 1 << 20,
            kv_dtype: "bf16",
            context: 8192,
            target: Target::Gpu,
            repacked: 0,
            activation_bytes_per_token: 0,
            heads: 32,
        };
        // 20 GiB + 3 GiB of KV + 0.75 GiB of attention scores + 0.5 GiB headroom fits
        // 24.35 GiB; with the graphs it does not.
        let free = 23 * gib + (3 * PREFILL_SCORES_BYTES) + (600 << 20);
        let e = check_fits("m", &m.need(&engine(Some(3072))), free, "NVIDIA L4").unwrap_err();
        assert!(
            e.contains("and the CUDA graphs, prefill activations and headroom"),
            "{e}"
        );
        let off = EngineConfig {
            cuda_graphs: false,
            ..engine(Some(3072))
        };
        assert!(check_fits("m", &m.need(&off), free, "NVIDIA L4").is_ok());
    }
}
