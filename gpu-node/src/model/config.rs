//! `config.json` of a Llama-family model (Llama, Mistral, Qwen2, Qwen3, Gemma 3 text) and
//! its architecture check; what differs between the architectures is worked out once in
//! [`super::arch::Arch`].

use serde::Deserialize;

/// Llama-family architectures this engine runs.
pub const SUPPORTED_GENERATION: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "gemma3_text"];

/// `rope_scaling` of `config.json` (only the `llama3` kind changes the frequencies).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RopeScaling {
    /// `llama3`, `default`, … (`type` in older files).
    #[serde(alias = "type")]
    pub rope_type: Option<String>,
    /// Scaling factor.
    #[serde(default)]
    pub factor: Option<f64>,
    /// llama3: low frequency factor.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// llama3: high frequency factor.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// llama3: context length the model was trained with.
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

impl RopeScaling {
    /// The scaling of a transformers ≥ 5 `rope_parameters` object (`None` for the plain
    /// `default` kind).
    pub fn from_parameters(p: &serde_json::Value) -> Option<RopeScaling> {
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(|v| v.as_str())?;
        if kind == "default" {
            return None;
        }
        let f = |k: &str| p.get(k).and_then(|v| v.as_f64());
        Some(RopeScaling {
            rope_type: Some(kind.to_string()),
            factor: f("factor"),
            low_freq_factor: f("low_freq_factor"),
            high_freq_factor: f("high_freq_factor"),
            original_max_position_embeddings: p
                .get("original_max_position_embeddings")
                .and_then(|v| v.as_u64())
                .map(|x| x as usize),
        })
    }
}

/// The fields of `config.json` the Llama-family model needs.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    /// One of [`SUPPORTED_GENERATION`].
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); default: `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; default: `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RoPE scaling (llama3).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// A GGUF file's `rope_freqs.weight` (llama.cpp's form of Llama 3.1's scaling): each
    /// RoPE frequency divided by its own factor. Never read from `config.json`.
    #[serde(skip)]
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Context length.
    pub max_position_embeddings: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// `lm_head` shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama: bias on q/k/v/o projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Llama: bias on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// dtype the weights were saved in (`torch_dtype`, `dtype` in newer files).
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
    /// End-of-sequence token id(s).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// Beginning-of-sequence token id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// transformers ≥ 5 writes `rope_theta` and the scaling here instead (Gemma 3: one
    /// such object per layer type, `full_attention` and `sliding_attention`).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// MLP activation of Llama, Mistral and Qwen (only `silu` runs).
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Gemma 3: MLP activation (only `gelu_pytorch_tanh` runs).
    #[serde(default)]
    pub hidden_activation: Option<String>,
    /// Gemma 3: attention scores are scaled by `query_pre_attn_scalar^-1/2`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    /// Mistral (every layer), Gemma 3 (its sliding layers): keys a query sees, itself
    /// included.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2 / Qwen3: sliding-window layers on (refused: not implemented).
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    /// Per-layer `full_attention` / `sliding_attention` (Gemma 3; transformers ≥ 5 writes
    /// it for other models too).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Gemma 3 without `layer_types`: every `n`-th layer is global, the others sliding.
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    /// Gemma 3: RoPE base of the sliding layers (`rope_theta` is the global layers').
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// Gemma 3: `cap * tanh(logits / cap)` on the final logits.
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// Gemma 3: the same on the attention scores (transformers ignores it for Gemma 3;
    /// refused unless null).
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 3 (embedding variants): non-causal attention (refused).
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}

impl LlamaConfig {
    /// Moves `rope_parameters` (transformers ≥ 5) into `rope_theta` / `rope_scaling`.
    pub fn normalize(&mut self) {
        let Some(p) = self.rope_parameters.take() else {
            return;
        };
        if let Some(t) = p.get("rope_theta").and_then(|v| v.as_f64()) {
            self.rope_theta = t;
        }
        if self.rope_scaling.is_none()
            && let Some(s) = RopeScaling::from_parameters(&p)
        {
            self.rope_scaling = Some(s);
        }
        self.rope_parameters = Some(p);
    }
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    /// Whether q/k/v carry a bias (Qwen2 always; the others when `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }
    /// Whether the output projection carries a bias (Llama, Qwen3 and Gemma 3 with
    /// `attention_bias`).
    pub fn o_bias(&self) -> bool {
        matches!(self.model_type.as_str(), "llama" | "qwen3" | "gemma3_text") && self.attention_bias
    }
    /// Checks the numbers fit together; the message says which ones do not.
    pub fn check(&self) -> Result<(), String> {
        if self.num_attention_heads == 0 || self.kv_heads() == 0 {
            return Err("num_attention_heads and num_key_value_heads must be > 0".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) || self.head_dim() == 0 {
            return Err(format!("head_dim {} must be even and > 0", self.head_dim()));
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 {
            return Err("vocab_size and max_position_embeddings must be > 0".into());
        }
        super::arch::Arch::from_config(self).map(|_| ())
    }
    /// EOS ids listed in `config.json`.
    pub fn eos_ids(&self) -> Vec<u32> {
        ids_from_json(self.eos_token_id.as_ref())
    }
}

/// Reads a token id or a list of token ids from a JSON value.
pub fn ids_from_json(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_transformers5_rope_parameters() {
        let mut c: LlamaConfig = serde_json::from_value(serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 64,
            "vocab_size": 10, "dtype": "bfloat16",
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192}
        }))
        .unwrap();
        c.normalize();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
        assert_eq!(c.rope_scaling.unwrap().factor, Some(8.0));
    }
}
