//! Finding the files of a model directory in the Hugging Face layout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why a model directory cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A required file is absent.
    #[error("model directory {dir}: missing {file} ({hint})")]
    MissingFile {
        /// The directory.
        dir: PathBuf,
        /// The file name.
        file: String,
        /// What to do.
        hint: String,
    },
    /// A file exists but cannot be read or parsed.
    #[error("model file {path}: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// `config.json` names an architecture this engine does not run.
    #[error(
        "unsupported architecture {model_type:?} in {path}: supported are llama, mistral, qwen2 (generation) and bert (embeddings)"
    )]
    Unsupported {
        /// `model_type` of config.json.
        model_type: String,
        /// The config file.
        path: PathBuf,
    },
    /// The weights do not match the config (missing tensor, wrong shape).
    #[error("weights of {dir} do not match its config.json: {message}")]
    Weights {
        /// The directory.
        dir: PathBuf,
        /// candle's message (tensor name and shapes).
        message: String,
    },
}

/// Reads a JSON file into `T`, with the file name in the error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::BadFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

/// Path of a file that must exist in `dir`.
pub fn required(dir: &Path, file: &str, hint: &str) -> Result<PathBuf, ModelError> {
    let p = dir.join(file);
    if p.is_file() {
        Ok(p)
    } else {
        Err(ModelError::MissingFile {
            dir: dir.to_path_buf(),
            file: file.to_string(),
            hint: hint.to_string(),
        })
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// The safetensors files of a model: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let idx: ShardIndex = read_json(&index)?;
        let names: BTreeSet<String> = idx.weight_map.into_values().collect();
        let mut out = Vec::new();
        for n in names {
            if n.contains("..") || n.contains('/') {
                return Err(ModelError::BadFile {
                    path: index,
                    message: format!("shard name {n:?} must be a plain file name"),
                });
            }
            out.push(required(
                dir,
                &n,
                "named in model.safetensors.index.json; copy every shard",
            )?);
        }
        if out.is_empty() {
            return Err(ModelError::BadFile {
                path: index,
                message: "weight_map is empty".into(),
            });
        }
        return Ok(out);
    }
    Ok(vec![required(
        dir,
        "model.safetensors",
        "expected model.safetensors or model.safetensors.index.json with its shards",
    )?])
}
