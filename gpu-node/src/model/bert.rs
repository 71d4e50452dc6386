//! BERT sentence-embedding model (e.g. all-MiniLM-L6-v2): encoder, mean pooling over
//! the attention mask, L2 normalisation — what sentence-transformers does for it.

use super::bert_encoder::{BertConfig, BertEncoder};
use super::files::ModelError;
use candle_core::{DType, Device, Tensor};
use std::path::Path;
use tokenizers::{PaddingParams, Tokenizer};

/// A loaded embedding model.
pub struct EmbeddingModel {
    model: BertEncoder,
    tokenizer: Tokenizer,
    device: Device,
    /// Longest input in tokens (longer inputs are rejected by the API).
    pub max_tokens: usize,
    /// Output width.
    pub dims: usize,
    /// dtype the encoder runs in.
    pub dtype: DType,
}

impl EmbeddingModel {
    /// Loads `config.json`, `tokenizer.json` and the weights of a BERT directory.
    pub fn load(
        dir: &Path,
        raw: &serde_json::Value,
        dtype: Option<&str>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let cfg_path = dir.join("config.json");
        let cfg: BertConfig =
            serde_json::from_value(raw.clone()).map_err(|e| ModelError::BadFile {
                path: cfg_path.clone(),
                message: e.to_string(),
            })?;
        let dt = match dtype {
            Some(d) => super::parse_dtype(d).ok_or_else(|| ModelError::BadFile {
                path: cfg_path.clone(),
                message: format!("dtype {d:?} is not one of f32, bf16, f16"),
            })?,
            None => DType::F32,
        };
        let mut tokenizer = super::load_tokenizer(dir)?;
        // sentence-transformers truncates at 256 word pieces for MiniLM; 512 is BERT's limit.
        let st_max = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
            .map(|m| m as usize);
        let max_tokens = st_max
            .unwrap_or(cfg.max_position_embeddings)
            .min(cfg.max_position_embeddings);
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::BadFile {
                path: dir.join("tokenizer.json"),
                message: e.to_string(),
            })?;
        let vb = super::load_weights(dir, dt, device)?;
        let model = BertEncoder::load(vb, &cfg).map_err(|e| ModelError::Weights {
            dir: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(EmbeddingModel {
            model,
            tokenizer,
            device: device.clone(),
            max_tokens,
            dims: cfg.hidden_size,
            dtype: dt,
        })
    }

    /// Token counts of each input (no padding), to validate and report usage.
    pub fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, String> {
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode(t.as_str(), true)
                    .map(|e| e.get_ids().len())
                    .map_err(|e| format!("cannot tokenize input: {e}"))
            })
            .collect()
    }

    /// Normalised sentence embeddings, one per input.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Batches of 32 bound the memory of padded attention whatever the request size.
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(32) {
            let inputs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let enc = self
                .tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| format!("cannot tokenize input: {e}"))?;
            out.extend(
                self.run(&enc)
                    .map_err(|e| format!("embedding forward pass failed: {e}"))?,
            );
        }
        Ok(out)
    }

    fn run(&self, enc: &[tokenizers::Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let n = enc.len();
        let len = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let types = ids.zeros_like()?;
        let out = self
            .model
            .forward(&ids, &types, &mask)?
            .to_dtype(DType::F32)?; // [n,len,h]
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [n,len,1]
        let summed = out.broadcast_mul(&m)?.sum(1)?; // [n,h]
        let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?; // [n,1]
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}
