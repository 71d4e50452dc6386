//! Request bodies of the OpenAI API (the fields this node reads; others are ignored)
//! and the checks on their values.

use super::error::ApiError;
use crate::engine::sampling::SamplingParams;
use serde::Deserialize;

/// A string or a list of strings (`stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl StringOrList {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// A content part of a chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// `text` (other types are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
}

/// Chat message content: a string or a list of parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<ContentPart>),
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// Role.
    pub role: String,
    /// Content (may be null for assistant tool calls).
    #[serde(default)]
    pub content: Option<Content>,
}

/// `stream_options`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct StreamOptions {
    /// Send a last chunk with usage.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Sampling and length fields shared by chat and completions.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CommonParams {
    /// Most tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Newer name of `max_tokens` (chat).
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    /// 0..=2.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// (0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// ≥ 0 (not in OpenAI's API; vLLM's extension).
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Must be 1.
    #[serde(default)]
    pub n: Option<i64>,
    /// Stream as SSE.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Stream options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Up to 4 stop strings.
    #[serde(default)]
    pub stop: Option<StringOrList>,
    /// -2..=2.
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    /// -2..=2.
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    /// RNG seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Not supported (must be absent, null or false).
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
}

/// `prompt` of a completion request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// List of texts (only one allowed).
    Texts(Vec<String>),
    /// Token ids.
    Tokens(Vec<u32>),
    /// Lists of token ids (only one allowed).
    TokenLists(Vec<Vec<u32>>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// Model name.
    pub model: String,
    /// The prompt.
    pub prompt: Prompt,
    /// Not supported unless false.
    #[serde(default)]
    pub echo: Option<bool>,
    /// Must be 1 if given.
    #[serde(default)]
    pub best_of: Option<i64>,
}

/// `input` of an embeddings request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// Token ids (refused: send text).
    Tokens(Vec<u32>),
    /// Lists of token ids (refused: send text).
    TokenLists(Vec<Vec<u32>>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    /// Model name.
    pub model: String,
    /// Input.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Must equal the model's width if given.
    #[serde(default)]
    pub dimensions: Option<i64>,
}

/// Validated generation settings.
pub struct GenSettings {
    /// Requested max tokens (None: up to the context).
    pub max_tokens: Option<usize>,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Streaming.
    pub stream: bool,
    /// Usage chunk at the end of a stream.
    pub include_usage: bool,
}

fn range(
    param: &str,
    v: Option<f64>,
    lo: f64,
    hi: f64,
    lo_open: bool,
) -> Result<Option<f64>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && x <= hi && (x > lo || (!lo_open && x == lo)) => Ok(Some(x)),
        Some(x) => Err(ApiError::invalid(
            Some(param),
            format!(
                "{x} is not a valid value for '{param}': it must be {} {lo} and <= {hi}.",
                if lo_open { ">" } else { ">=" }
            ),
        )
        .with_code("invalid_value")),
    }
}

impl CommonParams {
    /// Checks every value; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<GenSettings, ApiError> {
        let temperature = range("temperature", self.temperature, 0.0, 2.0, false)?.unwrap_or(1.0);
        let top_p = range("top_p", self.top_p, 0.0, 1.0, true)?.unwrap_or(1.0);
        let presence =
            range("presence_penalty", self.presence_penalty, -2.0, 2.0, false)?.unwrap_or(0.0);
        let frequency = range(
            "frequency_penalty",
            self.frequency_penalty,
            -2.0,
            2.0,
            false,
        )?
        .unwrap_or(0.0);
        let top_k = match self.top_k {
            None | Some(-1) => 0,
            Some(k) if k >= 0 => k as usize,
            Some(k) => {
                return Err(ApiError::invalid(Some("top_k"), format!("{k} is not a valid value for 'top_k': use 0 or -1 (off) or a positive number.")).with_code("invalid_value"));
            }
        };
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid(
                Some("n"),
                format!(
                    "n = {n} is not supported: this node generates one choice per request (n = 1)."
                ),
            )
            .with_code("invalid_value"));
        }
        let max = self.max_completion_tokens.or(self.max_tokens);
        let max_tokens = match max {
            None => None,
            Some(m) if m >= 1 => Some(m as usize),
            Some(m) => {
                let p = if self.max_completion_tokens.is_some() {
                    "max_completion_tokens"
                } else {
                    "max_tokens"
                };
                return Err(ApiError::invalid(
                    Some(p),
                    format!("{m} is not a valid value for '{p}': it must be at least 1."),
                )
                .with_code("invalid_value"));
            }
        };
        let stop = self
            .stop
            .clone()
            .map(StringOrList::into_vec)
            .unwrap_or_default();
        if stop.len() > 4 {
            return Err(ApiError::invalid(
                Some("stop"),
                format!(
                    "{} stop sequences given: at most 4 are allowed.",
                    stop.len()
                ),
            )
            .with_code("invalid_value"));
        }
        match &self.logprobs {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    Some("logprobs"),
                    "logprobs are not supported by this node: leave 'logprobs' out.",
                )
                .with_code("unsupported_parameter"));
            }
        }
        let stream = self.stream.unwrap_or(false);
        let include_usage = self
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid(
                Some("stream_options"),
                "stream_options is only allowed with stream: true.",
            ));
        }
        Ok(GenSettings {
            max_tokens,
            sampling: SamplingParams {
                temperature: temperature as f32,
                top_p: top_p as f32,
                top_k,
                presence_penalty: presence as f32,
                frequency_penalty: frequency as f32,
                seed: self.seed.map(|s| s as u64),
            },
            stop,
            stream,
            include_usage,
        })
    }
}
