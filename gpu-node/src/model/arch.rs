//! What differs between the decoder architectures this engine runs, worked out once from
//! `config.json`: the MLP activation, the norms, the attention scale, soft-capping, which
//! layers attend through a sliding window and which RoPE each layer uses. A value the
//! engine does not implement is refused here, with the field and the value in the message,
//! rather than ignored.
//!
//! | | Llama | Mistral | Qwen2 | Qwen3 | Gemma 3 |
//! |---|---|---|---|---|---|
//! | q/k/v bias | `attention_bias` | no | yes | `attention_bias` | `attention_bias` |
//! | per-head q/k RMSNorm | | | | yes | yes, `1 + w` |
//! | norms | pre | pre | pre | pre | pre and post, `1 + w` |
//! | MLP | SiLU | SiLU | SiLU | SiLU | GELU (tanh) |
//! | embeddings × √hidden | | | | | yes |
//! | sliding window | | all layers | refused | refused | per layer type |

use super::config::{LlamaConfig, RopeScaling};

/// MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// SiLU (Llama, Mistral, Qwen).
    Silu,
    /// GELU, tanh approximation (`gelu_pytorch_tanh`, Gemma).
    GeluTanh,
}

/// How the RoPE frequencies are scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeKind {
    /// Plain RoPE.
    Default,
    /// `linear`: every frequency divided by `factor`.
    Linear(f64),
    /// A GGUF file's `rope_freqs.weight`: frequency `i` divided by factor `i`.
    Factors(Vec<f64>),
    /// `llama3`: the Llama 3.1 long-context scaling.
    Llama3 {
        /// `factor`.
        factor: f64,
        /// `low_freq_factor`.
        low: f64,
        /// `high_freq_factor`.
        high: f64,
        /// `original_max_position_embeddings`.
        original: f64,
    },
}

/// One RoPE table: its base and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// Base (`rope_theta`).
    pub theta: f64,
    /// Scaling.
    pub kind: RopeKind,
}

/// The per-architecture choices of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    /// Per-head RMSNorm of q and k before RoPE (`self_attn.q_norm` / `k_norm`).
    pub qk_norm: bool,
    /// Gemma: RMSNorm weights are applied as `1 + w`, and each layer has a norm after
    /// attention and around the MLP (`pre_feedforward_layernorm` before it,
    /// `post_feedforward_layernorm` after it).
    pub gemma_norms: bool,
    /// Embeddings multiplied by this (Gemma: √hidden, rounded to the model dtype).
    pub embed_scale: Option<f64>,
    /// MLP activation.
    pub act: Act,
    /// Attention scores are multiplied by this.
    pub attn_scale: f64,
    /// `cap * tanh(x / cap)` on the final logits.
    pub final_softcap: Option<f64>,
    /// Keys a sliding-window layer sees (itself included).
    pub window: Option<usize>,
    /// Per layer: whether it attends through [`Arch::window`].
    pub sliding: Vec<bool>,
    /// RoPE tables: `[global]` or `[global, local]`.
    pub ropes: Vec<Rope>,
    /// Per layer: index into `ropes`.
    pub layer_rope: Vec<usize>,
}

const FULL: &str = "full_attention";
const SLIDING: &str = "sliding_attention";

fn rope_kind(s: Option<&RopeScaling>, allowed: &[&str], field: &str) -> Result<RopeKind, String> {
    let Some(s) = s else {
        return Ok(RopeKind::Default);
    };
    let kind = s.rope_type.as_deref().unwrap_or("default");
    if !allowed.contains(&kind) {
        return Err(format!(
            "{field} type {kind:?} is not supported (this engine runs {})",
            allowed.join(", ")
        ));
    }
    let factor = |d: Option<f64>| -> Result<f64, String> {
        match s.factor.or(d) {
            Some(f) if f > 0.0 => Ok(f),
            other => Err(format!(
                "{field} {kind:?} needs a factor > 0, not {other:?}"
            )),
        }
    };
    Ok(match kind {
        "default" => RopeKind::Default,
        "linear" => RopeKind::Linear(factor(None)?),
        "llama3" => RopeKind::Llama3 {
            factor: factor(Some(8.0))?,
            low: s.low_freq_factor.unwrap_or(1.0),
            high: s.high_freq_factor.unwrap_or(4.0),
            original: s.original_max_position_embeddings.unwrap_or(8192) as f64,
        },
        other => return Err(format!("{field} type {other:?} is not supported")),
    })
}

/// One layer type's entry of Gemma 3's `rope_parameters`.
type RopeEntry<'a> = Option<&'a serde_json::Value>;

/// Gemma 3's per-layer-type `rope_parameters` (transformers ≥ 5: `full_attention`,
/// `sliding_attention`), if the config has them.
fn gemma_rope_parameters(cfg: &LlamaConfig) -> Option<(RopeEntry<'_>, RopeEntry<'_>)> {
    let p = cfg.rope_parameters.as_ref()?;
    let (full, sliding) = (p.get(FULL), p.get(SLIDING));
    if full.is_none() && sliding.is_none() {
        return None;
    }
    Some((full, sliding))
}

fn theta_of(p: Option<&serde_json::Value>) -> Option<f64> {
    p.and_then(|v| v.get("rope_theta")).and_then(|v| v.as_f64())
}

impl Arch {
    /// The choices for `cfg` (after [`LlamaConfig::normalize`]); an error names the field
    /// and value this engine does not implement.
    pub fn from_config(cfg: &LlamaConfig) -> Result<Arch, String> {
        let n = cfg.num_hidden_layers;
        let hd = cfg.head_dim();
        let gemma = cfg.model_type == "gemma3_text";
        let mut arch = Arch {
            qk_norm: matches!(cfg.model_type.as_str(), "qwen3" | "gemma3_text"),
            gemma_norms: gemma,
            embed_scale: None,
            act: Act::Silu,
            attn_scale: 1.0 / (hd as f64).sqrt(),
            final_softcap: None,
            window: None,
            sliding: vec![false; n],
            ropes: Vec::new(),
            layer_rope: vec![0; n],
        };
        if gemma {
            Self::gemma(cfg, &mut arch)?;
            return Ok(arch);
        }
        if let Some(a) = &cfg.hidden_act
            && a != "silu"
        {
            return Err(format!(
                "hidden_act {a:?} is not supported for {} (only \"silu\")",
                cfg.model_type
            ));
        }
        let kinds: &[&str] = &["default", "linear", "llama3"];
        let kind = match &cfg.rope_freq_factors {
            Some(f) if f.len() != hd / 2 => {
                return Err(format!(
                    "rope_freqs.weight has {} factors, expected head_dim / 2 = {}",
                    f.len(),
                    hd / 2
                ));
            }
            Some(f) if f.iter().any(|x| !(x.is_finite() && *x > 0.0)) => {
                return Err("rope_freqs.weight holds a factor that is not > 0".into());
            }
            Some(f) => RopeKind::Factors(f.iter().map(|&x| x as f64).collect()),
            None => rope_kind(cfg.rope_scaling.as_ref(), kinds, "rope_scaling")?,
        };
        arch.ropes.push(Rope {
            theta: cfg.rope_theta,
            kind,
        });
        match cfg.model_type.as_str() {
            // transformers' Mistral applies `sliding_window` to every layer when set.
            "mistral" => {
                if let Some(w) = cfg.sliding_window {
                    if w == 0 {
                        return Err("sliding_window 0 is not valid".into());
                    }
                    arch.window = Some(w);
                    arch.sliding = vec![true; n];
                }
            }
            "qwen2" | "qwen3" if cfg.use_sliding_window == Some(true) => {
                return Err(format!(
                    "use_sliding_window true is not supported for {} (sliding-window layers are not implemented for Qwen)",
                    cfg.model_type
                ));
            }
            _ => {}
        }
        // `sliding_window` means nothing to Llama (transformers ignores it there too).
        if let Some(types) = &cfg.layer_types
            && let Some(t) = types.iter().find(|t| *t != FULL)
        {
            return Err(format!(
                "layer_types entry {t:?} is not supported for {} (only \"{FULL}\")",
                cfg.model_type
            ));
        }
        Ok(arch)
    }

    fn gemma(cfg: &LlamaConfig, arch: &mut Arch) -> Result<(), String> {
        let n = cfg.num_hidden_layers;
        let act = cfg
            .hidden_activation
            .as_deref()
            .unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" {
            return Err(format!(
                "hidden_activation {act:?} is not supported for gemma3_text (only \"gelu_pytorch_tanh\")"
            ));
        }
        arch.act = Act::GeluTanh;
        if cfg.use_bidirectional_attention == Some(true) {
            return Err(
                "use_bidirectional_attention true is not supported (causal decoders only)".into(),
            );
        }
        arch.embed_scale = Some((cfg.hidden_size as f64).sqrt());
        let qpas = cfg.query_pre_attn_scalar.unwrap_or(256.0);
        if qpas <= 0.0 {
            return Err(format!("query_pre_attn_scalar {qpas} must be > 0"));
        }
        arch.attn_scale = 1.0 / qpas.sqrt();
        if let Some(c) = cfg.final_logit_softcapping
            && c <= 0.0
        {
            return Err(format!("final_logit_softcapping {c} must be > 0"));
        }
        arch.final_softcap = cfg.final_logit_softcapping;
        // transformers' Gemma 3 stores this but never applies it (5.17: the tiny model with
        // 5.0 gives the same logits as with null), so what a checkpoint setting it expects
        // is unclear: refused rather than guessed.
        if let Some(c) = cfg.attn_logit_softcapping {
            return Err(format!(
                "attn_logit_softcapping {c} is not supported for gemma3_text (transformers' Gemma 3 ignores it; only null runs)"
            ));
        }
        // Which layers slide: `layer_types`, else every `sliding_window_pattern`-th layer
        // is global (transformers: sliding iff (i + 1) % pattern != 0).
        arch.sliding = match &cfg.layer_types {
            Some(types) => {
                if types.len() != n {
                    return Err(format!(
                        "layer_types has {} entries for {n} layers",
                        types.len()
                    ));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        SLIDING => Ok(true),
                        FULL => Ok(false),
                        other => Err(format!(
                            "layer_types entry {other:?} is not supported (only \"{FULL}\" and \"{SLIDING}\")"
                        )),
                    })
                    .collect::<Result<_, _>>()?
            }
            None => {
                let p = cfg.sliding_window_pattern.unwrap_or(6);
                if p == 0 {
                    return Err("sliding_window_pattern 0 is not valid".into());
                }
                (0..n).map(|i| (i + 1) % p != 0).collect()
            }
        };
        if arch.sliding.iter().any(|&s| s) {
            let w = cfg.sliding_window.unwrap_or(4096);
            if w == 0 {
                return Err("sliding_window 0 is not valid".into());
            }
            arch.window = Some(w);
        }
        // RoPE: global layers use `rope_theta` with `rope_scaling`, sliding layers
        // `rope_local_base_freq` unscaled; transformers ≥ 5 writes both into
        // `rope_parameters` per layer type.
        let gemma_kinds: &[&str] = &["default", "linear"];
        let (global, local) = match gemma_rope_parameters(cfg) {
            Some((full, sliding)) => {
                let scaling =
                    |p: Option<&serde_json::Value>| p.and_then(RopeScaling::from_parameters);
                let g = Rope {
                    theta: theta_of(full).unwrap_or(cfg.rope_theta),
                    kind: rope_kind(
                        scaling(full).as_ref(),
                        gemma_kinds,
                        "rope_parameters.full_attention",
                    )?,
                };
                let l = Rope {
                    theta: theta_of(sliding)
                        .or(cfg.rope_local_base_freq)
                        .unwrap_or(10_000.0),
                    kind: rope_kind(
                        scaling(sliding).as_ref(),
                        &["default"],
                        "rope_parameters.sliding_attention",
                    )?,
                };
                (g, l)
            }
            None => (
                Rope {
                    theta: cfg.rope_theta,
                    kind: rope_kind(cfg.rope_scaling.as_ref(), gemma_kinds, "rope_scaling")?,
                },
                Rope {
                    theta: cfg.rope_local_base_freq.unwrap_or(10_000.0),
                    kind: RopeKind::Default,
                },
            ),
        };
        arch.ropes = vec![global, local];
        arch.layer_rope = arch.sliding.iter().map(|&s| usize::from(s)).collect();
        Ok(())
    }
}

/// Inverse RoPE frequencies of a `dim`-wide head.
pub fn inv_freqs(dim: usize, rope: &Rope) -> Vec<f32> {
    let base: Vec<f64> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / rope.theta.powf(i as f64 / dim as f64))
        .collect();
    match rope.kind {
        RopeKind::Default => base.iter().map(|&f| f as f32).collect(),
        RopeKind::Linear(factor) => base.iter().map(|&f| (f / factor) as f32).collect(),
        RopeKind::Factors(ref fs) => base.iter().zip(fs).map(|(f, d)| (f / d) as f32).collect(),
        RopeKind::Llama3 {
            factor,
            low,
            high,
            original,
        } => {
            let low_wl = original / low;
            let high_wl = original / high;
            base.iter()
                .map(|&f| {
                    let wl = 2.0 * std::f64::consts::PI / f;
                    let r = if wl < high_wl {
                        f
                    } else if wl > low_wl {
                        f / factor
                    } else {
                        let smooth = (original / wl - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    };
                    r as f32
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> LlamaConfig {
        let mut base = serde_json::json!({
            "model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 7, "num_attention_heads": 4, "num_key_value_heads": 1,
            "head_dim": 32, "max_position_embeddings": 64, "vocab_size": 10
        });
        for (k, x) in v.as_object().unwrap() {
            base[k] = x.clone();
        }
        let mut c: LlamaConfig = serde_json::from_value(base).unwrap();
        c.normalize();
        c
    }

    #[test]
    fn gemma_layer_pattern_and_ropes_like_transformers() {
        let a = Arch::from_config(&cfg(serde_json::json!({
            "sliding_window_pattern": 3, "sliding_window": 5, "rope_theta": 1e6,
            "rope_local_base_freq": 500.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0}
        })))
        .unwrap();
        assert_eq!(
            a.sliding,
            [true, true, false, true, true, false, true],
            "(i + 1) % 3 != 0 slides"
        );
        assert_eq!(a.layer_rope, [1, 1, 0, 1, 1, 0, 1]);
        assert_eq!(a.ropes[0].kind, RopeKind::Linear(8.0));
        assert_eq!(a.ropes[0].theta, 1e6);
        assert_eq!(a.ropes[1].theta, 500.0);
        assert_eq!(a.window, Some(5));
        assert_eq!(
            a.attn_scale,
            1.0 / 16.0,
            "query_pre_attn_scalar defaults to 256"
        );
        // The same written as transformers 5 does.
        let b = Arch::from_config(&cfg(serde_json::json!({
            "layer_types": ["sliding_attention", "sliding_attention", "full_attention",
                            "sliding_attention", "sliding_attention", "full_attention",
                            "sliding_attention"],
            "sliding_window": 5,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 500.0}}
        })))
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn unimplemented_values_are_refused_by_name() {
        let err = |v| Arch::from_config(&cfg(v)).unwrap_err();
        let e = err(serde_json::json!({"hidden_activation": "gelu"}));
        assert!(e.contains("hidden_activation \"gelu\""), "{e}");
        let e = err(serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}));
        assert!(e.contains("rope_scaling type \"yarn\""), "{e}");
        let e = err(serde_json::json!({"attn_logit_softcapping": 50.0}));
        assert!(e.contains("attn_logit_softcapping 50"), "{e}");
        let e = err(serde_json::json!({"use_bidirectional_attention": true}));
        assert!(e.contains("use_bidirectional_attention"), "{e}");
        let e = err(serde_json::json!({"layer_types": ["chunked_attention"]}));
        assert!(e.contains("layer_types"), "{e}");
        let e = err(serde_json::json!({"model_type": "qwen3", "use_sliding_window": true}));
        assert!(e.contains("use_sliding_window true"), "{e}");
        let e = err(serde_json::json!({"model_type": "llama", "hidden_act": "gelu"}));
        assert!(e.contains("hidden_act \"gelu\""), "{e}");
        let e = err(serde_json::json!({"model_type": "qwen2",
            "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}}));
        assert!(e.contains("rope_scaling type \"yarn\""), "{e}");
    }
}
