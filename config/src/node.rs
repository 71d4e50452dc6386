//! The config file a `dayshift-node` reads at start (written by the ingress at bootstrap).
//!
//! ```toml
//! node_id = "n-42"
//! ingress_url = "https://ingress.example.com"   # leave out to run standalone
//! join_token = "…"                               # one-time token bound to node_id
//! listen = "0.0.0.0:8443"
//! advertise_url = "https://203.0.113.7:8443"     # what the ingress should call
//! drain_grace_secs = 60
//! cache_dir = "/var/lib/dayshift-node/models"
//!
//! [tls]
//! mode = "self_signed"                           # or "files" (cert_file, key_file) or "off"
//! subject_alt_names = ["203.0.113.7"]
//!
//! [engine]
//! device = "auto"                                # "cpu", "cuda", "cuda:1"
//! max_running_sequences = 32
//! prefill_chunk_tokens = 256
//! prefix_cache = true                            # reuse cached prompt starts (same API key)
//!
//! [[models]]
//! name = "llama-3-8b"
//! source = { type = "mirror" }                   # or { type = "local", path = "…" } (a model
//!                                                #   directory or a single .gguf file)
//!                                                # or { type = "hf", repo = "…", revision = "main" }
//! dtype = "bf16"                                 # optional override of config.json
//! # quantize = "q4_k"                            # or quantize the matrices at load (safetensors
//!                                                #   only; activations f32): QUANTIZE_TYPES
//! ```

use crate::protocol::Secret;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Weight types `quantize` takes (one type for every linear layer), GGUF names.
pub const QUANTIZE_TYPES: &[&str] = &[
    "q4_k", "q5_k", "q6_k", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16",
];

/// The whole node config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id given by the ingress; reported at registration.
    pub node_id: String,
    /// Base URL of the ingress (`https://…`); `None` runs the node standalone (no registration).
    #[serde(default)]
    pub ingress_url: Option<String>,
    /// One-time join token for registration; required with `ingress_url`. Never logged.
    #[serde(default)]
    pub join_token: Secret,
    /// PEM file of a CA to trust for the ingress's certificate (besides the system roots).
    #[serde(default)]
    pub ingress_ca_file: Option<PathBuf>,
    /// The same CA as PEM text, inline (the ingress writes it here at bootstrap).
    #[serde(default)]
    pub ingress_ca_pem: Option<String>,
    /// Connect to this address for the ingress URL's host instead of resolving it
    /// (before DNS is set up, and in tests); TLS still checks the URL's name.
    #[serde(default)]
    pub ingress_address: Option<SocketAddr>,
    /// Address the OpenAI API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Base URL the ingress should use to reach the API; default built from `listen`.
    #[serde(default)]
    pub advertise_url: Option<String>,
    /// Seconds to let running requests finish after SIGTERM before exiting anyway.
    #[serde(default = "default_drain_grace")]
    pub drain_grace_secs: u64,
    /// Where model files from the mirror or the hub are cached.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// TLS for the API.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Engine tuning.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Models to serve (at least one).
    pub models: Vec<ModelConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_drain_grace() -> u64 {
    NodeConfig::DEFAULT_DRAIN_GRACE_SECS
}
fn default_cache_dir() -> PathBuf {
    PathBuf::from("/var/lib/dayshift-node/models")
}

/// How the API serves TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Generate a self-signed certificate at start; its sha256 is reported at registration.
    #[default]
    SelfSigned,
    /// Use `cert_file` and `key_file` (PEM).
    Files,
    /// Plain HTTP (tests on loopback only).
    Off,
}

/// TLS options of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Which kind of TLS.
    #[serde(default)]
    pub mode: TlsMode,
    /// Names and IPs the self-signed certificate is valid for (besides `localhost`, `127.0.0.1`).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// PEM certificate chain (mode `files`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (mode `files`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Engine tuning knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// `auto` (CUDA when built with it and present, else CPU), `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Most sequences in one batched decode step.
    #[serde(default = "default_max_running")]
    pub max_running_sequences: u32,
    /// KV-cache size in tokens; default: from free memory and `kv_cache_memory_fraction`.
    #[serde(default)]
    pub kv_cache_tokens: Option<u64>,
    /// Share of free device memory (after weights) given to the KV cache.
    #[serde(default = "default_kv_fraction")]
    pub kv_cache_memory_fraction: f64,
    /// Prompt tokens prefetched per sequence per step (chunked prefill).
    #[serde(default = "default_prefill_chunk")]
    pub prefill_chunk_tokens: u32,
    /// Requests waiting for admission before new ones get `503`.
    #[serde(default = "default_max_queued")]
    pub max_queued_requests: u32,
    /// On CUDA: capture each batch size's decode step as a CUDA graph at warm-up and
    /// replay it (one launch per step instead of hundreds); `false` decodes eagerly.
    #[serde(default = "default_true")]
    pub cuda_graphs: bool,
    /// A new request whose prompt starts with tokens a free KV slot still holds (an
    /// earlier turn of the same chat, the same system prompt) reuses that slot's keys and
    /// values instead of prefilling them again; only between requests of the same API key.
    /// `false` prefills every prompt whole (benchmarks of cold prompts).
    #[serde(default = "default_true")]
    pub prefix_cache: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            device: default_device(),
            max_running_sequences: default_max_running(),
            kv_cache_tokens: None,
            kv_cache_memory_fraction: default_kv_fraction(),
            prefill_chunk_tokens: default_prefill_chunk(),
            max_queued_requests: default_max_queued(),
            cuda_graphs: true,
            prefix_cache: true,
        }
    }
}

fn default_device() -> String {
    "auto".into()
}
fn default_max_running() -> u32 {
    32
}
fn default_kv_fraction() -> f64 {
    0.9
}
fn default_prefill_chunk() -> u32 {
    256
}
fn default_true() -> bool {
    true
}
fn default_max_queued() -> u32 {
    256
}

/// Where a model's files come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSource {
    /// A directory (Hugging Face layout) or a single GGUF file on this machine.
    Local {
        /// The model directory, or the `.gguf` file.
        path: PathBuf,
    },
    /// The ingress's model mirror (manifest + files, sha256 checked), cached in `cache_dir`.
    Mirror {
        /// Name on the mirror; default: the model's `name`.
        #[serde(default)]
        model: Option<String>,
    },
    /// The Hugging Face hub (needs network at boot; never used in tests).
    Hf {
        /// Repository id, e.g. `Qwen/Qwen2.5-0.5B-Instruct`.
        repo: String,
        /// Branch, tag or commit.
        #[serde(default = "default_revision")]
        revision: String,
    },
}

impl ModelSource {
    /// Whether this is a local `.gguf` file (by its extension; nothing is read).
    pub fn is_gguf_file(&self) -> bool {
        match self {
            ModelSource::Local { path } => path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf")),
            _ => false,
        }
    }
}

fn default_revision() -> String {
    "main".into()
}

/// One model to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients use in `model`.
    pub name: String,
    /// Where its files come from.
    pub source: ModelSource,
    /// dtype override (`f32`, `bf16`, `f16`); default: `torch_dtype` of `config.json`. For
    /// a GGUF file: the dtype of its activations, dense tensors and KV cache on a GPU
    /// (default bf16; the CPU runs GGUF in f32 only).
    #[serde(default)]
    pub dtype: Option<String>,
    /// Quantize the linear layers at load (one of [`QUANTIZE_TYPES`]): a safetensors
    /// model then runs like a GGUF file of that type (f32 activations on the CPU, `dtype` or
    /// bf16 on a GPU).
    #[serde(default)]
    pub quantize: Option<String>,
}

/// Why a node config is unusable.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// The file could not be read.
    #[error("cannot read node config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax or a field of the wrong type.
    #[error("node config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message (with line and column).
        message: String,
    },
    /// Values that parse but do not make sense together.
    #[error("node config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl NodeConfig {
    /// Seconds running requests get after SIGTERM when the config does not say.
    pub const DEFAULT_DRAIN_GRACE_SECS: u64 = 60;

    /// Reads, parses and validates a node config file.
    pub fn load(path: &Path) -> Result<Self, NodeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, NodeConfigError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| NodeConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| NodeConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks values that parse but are unusable; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id.trim().is_empty() {
            return Err("node_id is empty: set it to the id the ingress gave this node".into());
        }
        if let Some(url) = &self.ingress_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "ingress_url {url:?} must start with https:// (or http:// on loopback)"
                ));
            }
            if self.join_token.is_empty() {
                return Err("join_token is missing: it is required with ingress_url".into());
            }
        }
        if self.models.is_empty() {
            return Err("no [[models]] entry: add at least one model to serve".into());
        }
        let mut names = std::collections::HashSet::new();
        for m in &self.models {
            if m.name.trim().is_empty() {
                return Err("a [[models]] entry has an empty name".into());
            }
            if !names.insert(m.name.as_str()) {
                return Err(format!(
                    "model name {:?} appears twice in [[models]]",
                    m.name
                ));
            }
            if m.source.is_gguf_file() && self.engine.device == "cpu" {
                crate::memory::gguf_run_dtype(m.dtype.as_deref(), crate::memory::Target::Cpu)
                    .map_err(|e| format!("model {:?}: {e}", m.name))?;
            }
            if let Some(q) = &m.quantize {
                if !QUANTIZE_TYPES.contains(&q.as_str()) {
                    return Err(format!(
                        "model {:?}: quantize {q:?} is not one of {}",
                        m.name,
                        QUANTIZE_TYPES.join(", ")
                    ));
                }
                if m.source.is_gguf_file() {
                    return Err(format!(
                        "model {:?}: quantize does not apply to a GGUF file (its weights are quantized already): leave quantize out",
                        m.name
                    ));
                }
                if self.engine.device == "cpu" && m.dtype.as_deref().is_some_and(|d| d != "f32") {
                    return Err(format!(
                        "model {:?}: a model quantized at load runs with f32 activations on the CPU; leave dtype out (or \"f32\")",
                        m.name
                    ));
                }
            }
            if let Some(d) = &m.dtype
                && !matches!(d.as_str(), "f32" | "bf16" | "f16")
            {
                return Err(format!(
                    "model {:?}: dtype {d:?} is not one of f32, bf16, f16",
                    m.name
                ));
            }
        }
        if self.tls.mode == TlsMode::Files
            && (self.tls.cert_file.is_none() || self.tls.key_file.is_none())
        {
            return Err("tls mode \"files\" needs both tls.cert_file and tls.key_file".into());
        }
        let e = &self.engine;
        if e.max_running_sequences == 0 {
            return Err("engine.max_running_sequences must be at least 1".into());
        }
        if e.prefill_chunk_tokens == 0 {
            return Err("engine.prefill_chunk_tokens must be at least 1".into());
        }
        if !(e.kv_cache_memory_fraction > 0.0 && e.kv_cache_memory_fraction <= 1.0) {
            return Err("engine.kv_cache_memory_fraction must be in (0, 1]".into());
        }
        let dev = e.device.as_str();
        let dev_ok = matches!(dev, "auto" | "cpu" | "cuda")
            || dev
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<u32>().is_ok());
        if !dev_ok {
            return Err(format!(
                "engine.device {dev:?} is not one of auto, cpu, cuda, cuda:N"
            ));
        }
        Ok(())
    }

    /// The API base URL to report: `advertise_url`, else built from `listen` and the TLS mode.
    pub fn api_url(&self) -> String {
        if let Some(u) = &self.advertise_url {
            return u.trim_end_matches('/').to_string();
        }
        let scheme = if self.tls.mode == TlsMode::Off {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
node_id = "n-42"
ingress_url = "https://127.0.0.1:9443"
join_token = "sekrit"
listen = "127.0.0.1:8443"
[tls]
mode = "self_signed"
[engine]
device = "cpu"
[[models]]
name = "tiny"
source = { type = "local", path = "/m/tiny" }
[[models]]
name = "big"
source = { type = "hf", repo = "a/b" }
dtype = "bf16"
[[models]]
name = "mirrored"
source = { type = "mirror" }
"#;

    #[test]
    fn parses_full_example() {
        let c = NodeConfig::parse(FULL, Path::new("node.toml")).unwrap();
        assert_eq!(c.models.len(), 3);
        assert_eq!(
            c.models[1].source,
            ModelSource::Hf {
                repo: "a/b".into(),
                revision: "main".into()
            }
        );
        assert_eq!(c.api_url(), "https://127.0.0.1:8443");
        assert!(!format!("{c:?}").contains("sekrit"));
        assert_eq!(c.engine.max_running_sequences, 32);
    }

    #[test]
    fn rejects_bad_values() {
        let bad = FULL.replace("device = \"cpu\"", "device = \"tpu\"");
        let e = NodeConfig::parse(&bad, Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("engine.device"), "{e}");
        let bad = FULL.replace("join_token = \"sekrit\"", "");
        assert!(NodeConfig::parse(&bad, Path::new("n.toml")).is_err());
        let bad = FULL.replace("listen", "lisen");
        let e = NodeConfig::parse(&bad, Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
    }

    #[test]
    fn local_source_may_be_a_gguf_file() {
        let text = FULL.replace("/m/tiny", "/m/SmolLM2-135M-Instruct.Q4_1.gguf");
        let c = NodeConfig::parse(&text, Path::new("n.toml")).unwrap();
        assert!(c.models[0].source.is_gguf_file());
        assert!(!c.models[1].source.is_gguf_file());
        // dtype applies to a GGUF file on a GPU (activations, KV cache), not on the CPU.
        let with_dtype = text.replace("Q4_1.gguf\" }", "Q4_1.gguf\" }\ndtype = \"bf16\"");
        let on_gpu = with_dtype.replace("device = \"cpu\"", "device = \"cuda\"");
        let c = NodeConfig::parse(&on_gpu, Path::new("n.toml")).unwrap();
        assert_eq!(c.models[0].dtype.as_deref(), Some("bf16"));
        let e = NodeConfig::parse(&with_dtype, Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("f32 on the CPU"), "{e}");
        let with_q = text.replace("Q4_1.gguf\" }", "Q4_1.gguf\" }\nquantize = \"q4_k\"");
        let e = NodeConfig::parse(&with_q, Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("quantize does not apply"), "{e}");
    }

    #[test]
    fn quantize_names_a_known_type_and_no_other_dtype() {
        let q = |v: &str| FULL.replacen("dtype = \"bf16\"", v, 1);
        let c = NodeConfig::parse(&q("quantize = \"q4_k\""), Path::new("n.toml")).unwrap();
        assert_eq!(c.models[1].quantize.as_deref(), Some("q4_k"));
        let e = NodeConfig::parse(&q("quantize = \"q3_k\""), Path::new("n.toml")).unwrap_err();
        assert!(
            e.to_string().contains("q3_k") && e.to_string().contains("q4_k, q5_k"),
            "{e}"
        );
        // FULL runs on the CPU: f32 only there; a GPU takes bf16 activations.
        let both = q("quantize = \"q8_0\"\ndtype = \"bf16\"");
        let e = NodeConfig::parse(&both, Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("f32 activations on the CPU"), "{e}");
        let on_gpu = both.replace("device = \"cpu\"", "device = \"cuda\"");
        assert!(NodeConfig::parse(&on_gpu, Path::new("n.toml")).is_ok());
    }
}
