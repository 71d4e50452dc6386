//! Llama-family decoder (Llama, Mistral, Qwen2) with a per-sequence KV cache and a
//! batched forward pass: the tokens of every sequence in a step (prefill chunks and
//! single decode tokens alike) go through the projections and the MLP as one matrix;
//! attention runs per sequence against that sequence's own cache.

use super::config::LlamaConfig;
use candle_core::quantized::QMatMul;
use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

/// A linear layer whose weight is dense (safetensors) or quantized (GGUF).
#[derive(Debug, Clone)]
pub enum Lin {
    /// Dense weight `[out, in]` (and optional bias).
    Dense(Linear),
    /// Quantized weight (candle's `QMatMul`) and optional dense bias `[out]`.
    Quant {
        /// The weight.
        w: QMatMul,
        /// The bias.
        b: Option<Tensor>,
    },
}

impl Module for Lin {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Lin::Dense(l) => l.forward(x),
            Lin::Quant { w, b } => {
                let y = w.forward(x)?;
                match b {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
        }
    }
}

/// Where [`Llama::load_gguf`] takes its tensors from (GGUF names: `blk.N.attn_q.weight`, …).
pub trait QuantSource {
    /// A linear layer; `rope_heads` is `Some(heads)` for Q and K projections, whose rows
    /// the source turns into the "rotate half" layout this model uses when needed.
    fn lin(&mut self, name: &str, rope_heads: Option<usize>) -> Result<Lin>;
    /// A dense tensor (norm weights, biases, embeddings), dequantized to the model dtype.
    fn dense(&mut self, name: &str) -> Result<Tensor>;
    /// Whether the file holds `name`.
    fn contains(&self, name: &str) -> bool;
    /// Device to load onto.
    fn device(&self) -> &Device;
}

/// Which logits a sequence wants back from a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantLogits {
    /// None (a prefill chunk that does not end the prompt).
    None,
    /// Only the last token's (to sample the next token).
    Last,
    /// Every token's (tests and scoring).
    All,
}

/// The KV cache of one sequence: per layer, keys and values `[kv_heads, len, head_dim]`.
#[derive(Debug, Default)]
pub struct SeqCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl SeqCache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One sequence's part of a batched step.
pub struct SeqChunk<'a> {
    /// Tokens to run, at positions `cache.len()..cache.len() + tokens.len()`.
    pub tokens: &'a [u32],
    /// That sequence's cache; grows by `tokens.len()`.
    pub cache: &'a mut SeqCache,
    /// Which logits to return.
    pub want: WantLogits,
}

struct Attention {
    q: Lin,
    k: Lin,
    v: Lin,
    o: Lin,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

struct Mlp {
    gate: Lin,
    up: Lin,
    down: Lin,
}

struct Block {
    attn: Attention,
    mlp: Mlp,
    ln1: Tensor,
    ln2: Tensor,
}

/// A loaded Llama-family model.
pub struct Llama {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Lin,
    cos: Tensor,
    sin: Tensor,
    eps: f64,
    dtype: DType,
    device: Device,
    cfg: LlamaConfig,
}

fn linear(vb: VarBuilder, inp: usize, out: usize, bias: bool) -> Result<Lin> {
    if bias {
        candle_nn::linear(inp, out, vb).map(Lin::Dense)
    } else {
        candle_nn::linear_no_bias(inp, out, vb).map(Lin::Dense)
    }
}

/// `[n, hd/2]` cos and sin tables of the rotary embedding, in `dtype` on `device`.
fn rope_tables(cfg: &LlamaConfig, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let inv = inv_freqs(cfg);
    let n = cfg.max_position_embeddings;
    let half = inv.len();
    let inv_t = Tensor::from_vec(inv, (1, half), &Device::Cpu)?;
    let pos = Tensor::arange(0u32, n as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((n, 1))?;
    let freqs = pos.broadcast_mul(&inv_t)?;
    Ok((
        freqs.cos()?.to_dtype(dtype)?.to_device(device)?,
        freqs.sin()?.to_dtype(dtype)?.to_device(device)?,
    ))
}

/// Inverse RoPE frequencies, with llama3 scaling when configured.
fn inv_freqs(cfg: &LlamaConfig) -> Vec<f32> {
    let dim = cfg.head_dim();
    let base: Vec<f64> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / cfg.rope_theta.powf(i as f64 / dim as f64))
        .collect();
    let Some(s) = &cfg.rope_scaling else {
        return base.iter().map(|&f| f as f32).collect();
    };
    if s.rope_type.as_deref() != Some("llama3") {
        return base.iter().map(|&f| f as f32).collect();
    }
    let factor = s.factor.unwrap_or(8.0);
    let low = s.low_freq_factor.unwrap_or(1.0);
    let high = s.high_freq_factor.unwrap_or(4.0);
    let old = s.original_max_position_embeddings.unwrap_or(8192) as f64;
    let low_wl = old / low;
    let high_wl = old / high;
    base.iter()
        .map(|&f| {
            let wl = 2.0 * std::f64::consts::PI / f;
            let r = if wl < high_wl {
                f
            } else if wl > low_wl {
                f / factor
            } else {
                let smooth = (old / wl - low) / (high - low);
                (1.0 - smooth) * f / factor + smooth * f
            };
            r as f32
        })
        .collect()
}

impl Llama {
    /// Builds the model from weights (HF names: `model.layers.N.self_attn.q_proj.weight`, …).
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let m = vb.pp("model");
        let embed = candle_nn::embedding(cfg.vocab_size, h, m.pp("embed_tokens"))?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let b = m.pp(format!("layers.{i}"));
            let a = b.pp("self_attn");
            let attn = Attention {
                q: linear(a.pp("q_proj"), h, nh * hd, cfg.qkv_bias())?,
                k: linear(a.pp("k_proj"), h, nkv * hd, cfg.qkv_bias())?,
                v: linear(a.pp("v_proj"), h, nkv * hd, cfg.qkv_bias())?,
                o: linear(a.pp("o_proj"), nh * hd, h, cfg.o_bias())?,
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
            };
            let p = b.pp("mlp");
            let mlp = Mlp {
                gate: linear(p.pp("gate_proj"), h, cfg.intermediate_size, cfg.mlp_bias)?,
                up: linear(p.pp("up_proj"), h, cfg.intermediate_size, cfg.mlp_bias)?,
                down: linear(p.pp("down_proj"), cfg.intermediate_size, h, cfg.mlp_bias)?,
            };
            blocks.push(Block {
                attn,
                mlp,
                ln1: b.get(h, "input_layernorm.weight")?,
                ln2: b.get(h, "post_attention_layernorm.weight")?,
            });
        }
        let norm = m.get(h, "norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
            Lin::Dense(Linear::new(embed.embeddings().clone(), None))
        } else {
            Lin::Dense(candle_nn::linear_no_bias(
                h,
                cfg.vocab_size,
                vb.pp("lm_head"),
            )?)
        };
        let inv = inv_freqs(cfg);
        let n = cfg.max_position_embeddings;
        let half = inv.len();
        let inv_t = Tensor::from_vec(inv, (1, half), &Device::Cpu)?;
        let pos = Tensor::arange(0u32, n as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((n, 1))?;
        let freqs = pos.broadcast_mul(&inv_t)?;
        let device = vb.device().clone();
        let dtype = vb.dtype();
        Ok(Llama {
            embed,
            blocks,
            norm,
            lm_head,
            cos: freqs.cos()?.to_dtype(dtype)?.to_device(&device)?,
            sin: freqs.sin()?.to_dtype(dtype)?.to_device(&device)?,
            eps: cfg.rms_norm_eps,
            dtype,
            device,
            cfg: cfg.clone(),
        })
    }

    /// Builds the model from a GGUF file's tensors (quantized linear layers, f32
    /// activations); `cfg` comes from the file's metadata.
    pub fn load_gguf(src: &mut dyn QuantSource, cfg: &LlamaConfig) -> Result<Self> {
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let h = cfg.hidden_size;
        let emb = src.dense("token_embd.weight")?;
        let embed = Embedding::new(emb, h);
        let bias = |src: &mut dyn QuantSource, name: String| -> Result<Option<Tensor>> {
            if src.contains(&name) {
                src.dense(&name).map(Some)
            } else {
                Ok(None)
            }
        };
        let with_bias = |src: &mut dyn QuantSource, lin: Lin, name: String| -> Result<Lin> {
            match (lin, bias(src, name)?) {
                (Lin::Quant { w, .. }, Some(b)) => Ok(Lin::Quant { w, b: Some(b) }),
                (Lin::Dense(l), Some(b)) => {
                    Ok(Lin::Dense(Linear::new(l.weight().clone(), Some(b))))
                }
                (l, None) => Ok(l),
            }
        };
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("blk.{i}");
            let q = src.lin(&format!("{p}.attn_q.weight"), Some(nh))?;
            let k = src.lin(&format!("{p}.attn_k.weight"), Some(nkv))?;
            let v = src.lin(&format!("{p}.attn_v.weight"), None)?;
            let o = src.lin(&format!("{p}.attn_output.weight"), None)?;
            let attn = Attention {
                q: with_bias(src, q, format!("{p}.attn_q.bias"))?,
                k: with_bias(src, k, format!("{p}.attn_k.bias"))?,
                v: with_bias(src, v, format!("{p}.attn_v.bias"))?,
                o: with_bias(src, o, format!("{p}.attn_output.bias"))?,
                heads: nh,
                kv_heads: nkv,
                head_dim: cfg.head_dim(),
            };
            let mlp = Mlp {
                gate: src.lin(&format!("{p}.ffn_gate.weight"), None)?,
                up: src.lin(&format!("{p}.ffn_up.weight"), None)?,
                down: src.lin(&format!("{p}.ffn_down.weight"), None)?,
            };
            blocks.push(Block {
                attn,
                mlp,
                ln1: src.dense(&format!("{p}.attn_norm.weight"))?,
                ln2: src.dense(&format!("{p}.ffn_norm.weight"))?,
            });
        }
        let norm = src.dense("output_norm.weight")?;
        let lm_head = if src.contains("output.weight") {
            src.lin("output.weight", None)?
        } else {
            src.lin("token_embd.weight", None)?
        };
        let device = src.device().clone();
        let dtype = DType::F32;
        let (cos, sin) = rope_tables(cfg, dtype, &device)?;
        Ok(Llama {
            embed,
            blocks,
            norm,
            lm_head,
            cos,
            sin,
            eps: cfg.rms_norm_eps,
            dtype,
            device,
            cfg: cfg.clone(),
        })
    }

    /// The model's config.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }
    /// Device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// dtype of weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Bytes of KV cache one token takes (all layers, keys and values).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.cfg.num_hidden_layers
            * self.cfg.kv_heads()
            * self.cfg.head_dim()
            * self.dtype.size_in_bytes()
    }

    /// Runs one batched step. Returns, per chunk, its logits as f32 `[rows, vocab]`
    /// (`None` for [`WantLogits::None`]).
    pub fn forward(&self, chunks: &mut [SeqChunk<'_>]) -> Result<Vec<Option<Tensor>>> {
        let mut ids = Vec::new();
        let mut pos = Vec::new();
        let mut spans = Vec::with_capacity(chunks.len());
        for c in chunks.iter() {
            let start = c.cache.len();
            if start + c.tokens.len() > self.cfg.max_position_embeddings {
                candle_core::bail!(
                    "sequence of {} tokens exceeds the model's context of {}",
                    start + c.tokens.len(),
                    self.cfg.max_position_embeddings
                );
            }
            spans.push((ids.len(), c.tokens.len(), start));
            ids.extend_from_slice(c.tokens);
            pos.extend((start..start + c.tokens.len()).map(|p| p as u32));
        }
        let total = ids.len();
        if total == 0 {
            return Ok(chunks.iter().map(|_| None).collect());
        }
        let ids_t = Tensor::from_vec(ids, total, &self.device)?;
        let pos_t = Tensor::from_vec(pos, total, &self.device)?;
        let cos = self.cos.index_select(&pos_t, 0)?.unsqueeze(1)?; // [T,1,hd/2]
        let sin = self.sin.index_select(&pos_t, 0)?.unsqueeze(1)?;
        let mut x = self.embed.forward(&ids_t)?; // [T,H]
        for (li, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.ln1, self.eps as f32)?;
            let a = self.attention(li, &b.attn, &h, &cos, &sin, chunks, &spans)?;
            x = (x + a)?;
            let h = candle_nn::ops::rms_norm(&x, &b.ln2, self.eps as f32)?;
            let g = candle_nn::ops::silu(&b.mlp.gate.forward(&h)?)?;
            let m = b.mlp.down.forward(&(g * b.mlp.up.forward(&h)?)?)?;
            x = (x + m)?;
        }
        for (c, &(_, n, _)) in chunks.iter_mut().zip(&spans) {
            c.cache.len += n;
        }
        // Only the rows someone wants go through the norm and lm_head.
        let mut rows = Vec::new();
        let mut out_spans = Vec::with_capacity(chunks.len());
        for (c, &(off, n, _)) in chunks.iter().zip(&spans) {
            let r0 = rows.len();
            match c.want {
                WantLogits::None => {}
                WantLogits::Last => rows.push((off + n - 1) as u32),
                WantLogits::All => rows.extend((off..off + n).map(|r| r as u32)),
            }
            out_spans.push((r0, rows.len() - r0));
        }
        if rows.is_empty() {
            return Ok(chunks.iter().map(|_| None).collect());
        }
        let nrows = rows.len();
        let sel = x.index_select(&Tensor::from_vec(rows, nrows, &self.device)?, 0)?;
        let sel = candle_nn::ops::rms_norm(&sel, &self.norm, self.eps as f32)?;
        let logits = self.lm_head.forward(&sel)?.to_dtype(DType::F32)?;
        out_spans
            .into_iter()
            .map(|(r0, n)| {
                if n == 0 {
                    Ok(None)
                } else {
                    logits.narrow(0, r0, n).map(Some)
                }
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        at: &Attention,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        chunks: &mut [SeqChunk<'_>],
        spans: &[(usize, usize, usize)],
    ) -> Result<Tensor> {
        let t = h.dim(0)?;
        let (nh, nkv, hd) = (at.heads, at.kv_heads, at.head_dim);
        let rep = nh / nkv;
        let q = rope(&at.q.forward(h)?.reshape((t, nh, hd))?, cos, sin)?;
        let k = rope(&at.k.forward(h)?.reshape((t, nkv, hd))?, cos, sin)?;
        let v = at.v.forward(h)?.reshape((t, nkv, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut outs = Vec::with_capacity(chunks.len());
        for (c, &(off, n, start)) in chunks.iter_mut().zip(spans) {
            if n == 0 {
                continue;
            }
            let qi = q.narrow(0, off, n)?.transpose(0, 1)?.contiguous()?; // [nh,n,hd]
            let ki = k.narrow(0, off, n)?.transpose(0, 1)?.contiguous()?; // [nkv,n,hd]
            let vi = v.narrow(0, off, n)?.transpose(0, 1)?.contiguous()?;
            if c.cache.layers.len() <= layer {
                c.cache.layers.resize(layer + 1, None);
            }
            let (ka, va) = match c.cache.layers[layer].take() {
                Some((kc, vc)) => (Tensor::cat(&[&kc, &ki], 1)?, Tensor::cat(&[&vc, &vi], 1)?),
                None => (ki, vi),
            };
            let total = ka.dim(1)?;
            // Query heads grouped by their KV head: [nkv, rep*n, hd].
            let qg = qi.reshape((nkv, rep * n, hd))?;
            let scores = (qg.matmul(&ka.t()?)? * scale)?; // [nkv, rep*n, total]
            let scores = if n > 1 {
                let mask = causal_mask(n, start, total, &self.device, scores.dtype())?;
                scores
                    .reshape((nkv, rep, n, total))?
                    .broadcast_add(&mask)?
                    .reshape((nkv, rep * n, total))?
            } else {
                scores
            };
            let p = candle_nn::ops::softmax_last_dim(&scores)?;
            let o = p.matmul(&va)?; // [nkv, rep*n, hd]
            let o = o
                .reshape((nh, n, hd))?
                .transpose(0, 1)?
                .reshape((n, nh * hd))?;
            outs.push(o);
            c.cache.layers[layer] = Some((ka, va));
        }
        let o = Tensor::cat(&outs, 0)?;
        at.o.forward(&o)
    }
}

/// Rotary embedding in the "rotate half" layout of HF Llama. `x`: `[T, heads, hd]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let half = hd / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Tensor::cat(&[&a, &b], D::Minus1)
}

/// `[n, total]` mask: row i (position start+i) sees columns `0..=start+i`.
fn causal_mask(n: usize, start: usize, total: usize, dev: &Device, dt: DType) -> Result<Tensor> {
    let mut m = vec![0f32; n * total];
    for i in 0..n {
        for j in (start + i + 1)..total {
            m[i * total + j] = f32::NEG_INFINITY;
        }
    }
    Tensor::from_vec(m, (n, total), dev)?.to_dtype(dt)
}

/// Logits of every position of `tokens` run as one sequence from scratch (tests, scoring).
pub fn full_logits(model: &Llama, tokens: &[u32]) -> Result<Tensor> {
    let mut cache = SeqCache::default();
    let mut chunks = [SeqChunk {
        tokens,
        cache: &mut cache,
        want: WantLogits::All,
    }];
    let out = model.forward(&mut chunks)?;
    match out.into_iter().next().flatten() {
        Some(t) => Ok(t),
        None => candle_core::bail!("no logits for an empty token list"),
    }
}
