//! The BERT encoder (the transformers `BertModel` without its pooler): embeddings, then
//! `num_hidden_layers` of self-attention and feed-forward, each followed by a residual
//! add and LayerNorm. What sentence-embedding models such as all-MiniLM-L6-v2 run.
//!
//! Our own, on candle-core/candle-nn, rather than `candle-transformers`' copy: that
//! crate carries every model candle knows and took 61 s of a cold 2-core build for this
//! one file's worth of code (tests/README.md, "Suite figures").

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The fields of a BERT `config.json` the encoder uses. Settings it cannot apply
/// (another position embedding type, an unknown activation) are refused at load.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Word-piece vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation: "gelu" (erf), "gelu_new"/"gelu_pytorch_tanh" (tanh), "relu".
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Positions the model has embeddings for.
    pub max_position_embeddings: usize,
    /// Token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only "absolute" is implemented.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// Prefix of the weights in checkpoints saved from a task model (e.g. "bert.").
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => candle_core::bail!(
                "hidden_act {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
            ),
        }
    }
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

/// LayerNorm weights are `weight`/`bias`, or `gamma`/`beta` in old checkpoints.
fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let (w, b) = match (vb.get(size, "weight"), vb.get(size, "bias")) {
        (Ok(w), Ok(b)) => (w, b),
        _ => (vb.get(size, "gamma")?, vb.get(size, "beta")?),
    };
    Ok(LayerNorm::new(w, b, eps))
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

impl Layer {
    fn load(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let att = vb.pp("attention");
        Ok(Layer {
            query: candle_nn::linear(h, h, att.pp("self").pp("query"))?,
            key: candle_nn::linear(h, h, att.pp("self").pp("key"))?,
            value: candle_nn::linear(h, h, att.pp("self").pp("value"))?,
            attn_out: candle_nn::linear(h, h, att.pp("output").pp("dense"))?,
            attn_norm: layer_norm(h, cfg.layer_norm_eps, att.pp("output").pp("LayerNorm"))?,
            up: candle_nn::linear(h, i, vb.pp("intermediate").pp("dense"))?,
            down: candle_nn::linear(i, h, vb.pp("output").pp("dense"))?,
            out_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
        })
    }
}

/// A loaded BERT encoder.
pub struct BertEncoder {
    words: Embedding,
    positions: Embedding,
    types: Embedding,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    act: Activation,
}

impl BertEncoder {
    /// Loads the weights (`embeddings.*`, `encoder.layer.N.*`, optionally under the
    /// `model_type` prefix) from `vb`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        if cfg.position_embedding_type != "absolute" {
            candle_core::bail!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                cfg.position_embedding_type
            );
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        let act = Activation::parse(&cfg.hidden_act)?;
        let vb = match &cfg.model_type {
            Some(prefix) if !vb.contains_tensor("embeddings.word_embeddings.weight") => {
                vb.pp(prefix)
            }
            _ => vb,
        };
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(cfg, vb.pp("encoder").pp("layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertEncoder {
            words: candle_nn::embedding(cfg.vocab_size, h, emb.pp("word_embeddings"))?,
            positions: candle_nn::embedding(
                cfg.max_position_embeddings,
                h,
                emb.pp("position_embeddings"),
            )?,
            types: candle_nn::embedding(cfg.type_vocab_size, h, emb.pp("token_type_embeddings"))?,
            embed_norm: layer_norm(h, cfg.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers,
            heads: cfg.num_attention_heads,
            act,
        })
    }

    /// Hidden states `[n, len, hidden]` of token ids `[n, len]` with token types
    /// `[n, len]` and an attention mask `[n, len]` (1 = token, 0 = padding).
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (n, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?.unsqueeze(0)?;
        let x = self
            .words
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&positions)?)?
            .add(&self.types.forward(types)?)?;
        let mut x = self.embed_norm.forward(&x)?;
        // Padding gets a large negative score before the softmax: [n, 1, 1, len].
        let keep = mask.to_dtype(DType::F32)?;
        let bias = ((keep - 1.0)? * 1e9)?
            .to_dtype(x.dtype())?
            .reshape((n, 1, 1, len))?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &bias)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (n, len, h) = x.dims3()?;
        let hd = h / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((n, len, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(l.query.forward(x)?)?;
        let k = split(l.key.forward(x)?)?;
        let v = split(l.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
        let probs = candle_nn::ops::softmax(&scores.broadcast_add(bias)?, D::Minus1)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, len, h))?;
        let x = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + x)?)?;
        let up = self.act.apply(&l.up.forward(&x)?)?;
        l.out_norm.forward(&(l.down.forward(&up)? + &x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn cfg(extra: &str) -> BertConfig {
        serde_json::from_str(&format!(
            r#"{{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 16,
                "max_position_embeddings": 6{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn settings_it_cannot_apply_are_refused_by_name() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        for (extra, named) in [
            (
                r#", "position_embedding_type": "relative_key""#,
                "relative_key",
            ),
            (r#", "hidden_act": "swish""#, "swish"),
        ] {
            let err = BertEncoder::load(vb.clone(), &cfg(extra))
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn padding_does_not_change_a_sequences_states() {
        // Random weights; one sequence alone and padded beside a longer one.
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let c = cfg("");
        let enc = BertEncoder::load(vb, &c).unwrap();
        let ids = Tensor::new(&[[1u32, 2, 3, 0], [4, 5, 6, 7]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 0], [1, 1, 1, 1]], &dev).unwrap();
        let types = ids.zeros_like().unwrap();
        let both = enc.forward(&ids, &types, &mask).unwrap();
        let one_ids = Tensor::new(&[[1u32, 2, 3]], &dev).unwrap();
        let one = enc
            .forward(
                &one_ids,
                &one_ids.zeros_like().unwrap(),
                &one_ids.ones_like().unwrap(),
            )
            .unwrap();
        let a = both.narrow(0, 0, 1).unwrap().narrow(1, 0, 3).unwrap();
        let d = crate::model::decode_ops::max_abs_diff(&a, &one).unwrap();
        assert!(d < 1e-5, "padding changed the states by {d}");
        assert_eq!(both.dims(), &[2, 4, 8]);
    }
}
