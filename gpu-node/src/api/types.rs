//! Request bodies of the OpenAI API and the checks on their values. Every key of a
//! body must be one this node applies (or one of OpenAI's documented hints `user`,
//! `metadata`, `store`): anything else is refused with a 400 that names it.

use super::error::ApiError;
use crate::engine::sampling::SamplingParams;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Keys a chat request may carry.
pub const CHAT_KEYS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stream",
    "stream_options",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

/// Keys a completion request may carry.
pub const COMPLETION_KEYS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stream",
    "stream_options",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "logit_bias",
    "logprobs",
    "echo",
    "best_of",
    "suffix",
];

/// Keys an embeddings request may carry.
pub const EMBEDDING_KEYS: &[&str] = &["model", "input", "encoding_format", "dimensions"];

/// Keys OpenAI documents that change nothing in the answer: `metadata` and `store` are
/// accepted and not applied; `user` (the app's end user) narrows the prefix cache's
/// scope (`api::generate::scope_with_user`, and the ingress's scope header).
pub const HINT_KEYS: &[&str] = &["user", "metadata", "store"];

/// Refuses keys of `body` that are neither in `known` nor hints, naming them all.
pub fn check_known(body: &Value, known: &[&str], endpoint: &str) -> Result<(), ApiError> {
    let Some(o) = body.as_object() else {
        return Ok(());
    };
    let unknown: Vec<&str> = o
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k) && !HINT_KEYS.contains(k))
        .collect();
    if let Some(first) = unknown.first() {
        return Err(ApiError::invalid(
            Some(first),
            format!(
                "Unrecognized request argument{} supplied: {}. {endpoint} on this node applies: {}.",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", "),
                known.join(", ")
            ),
        )
        .with_code("unknown_parameter"));
    }
    Ok(())
}

/// `Option<i64>` that also takes whole numbers written as floats (`9.0`), as JSON
/// Schema's `integer` does.
pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is too large")))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(Some(v as i64))
            } else {
                Err(E::custom(format!("expected a whole number, got {v}")))
            }
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

/// `stream_options`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with usage.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Sampling and length fields shared by chat and completions.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CommonParams {
    /// Most tokens to generate.
    #[serde(default, deserialize_with = "whole")]
    pub max_tokens: Option<i64>,
    /// Newer name of `max_tokens` (chat).
    #[serde(default, deserialize_with = "whole")]
    pub max_completion_tokens: Option<i64>,
    /// 0..=2.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// [0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// ≥ 0 (not in OpenAI's API; vLLM's extension).
    #[serde(default, deserialize_with = "whole")]
    pub top_k: Option<i64>,
    /// Choices, 1..=16.
    #[serde(default, deserialize_with = "whole")]
    pub n: Option<i64>,
    /// Stream as SSE.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Stream options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Up to 4 stop strings (a string or a list).
    #[serde(default)]
    pub stop: Option<Value>,
    /// -2..=2.
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    /// -2..=2.
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    /// RNG seed.
    #[serde(default, deserialize_with = "whole")]
    pub seed: Option<i64>,
    /// Token id (as a string) → bias in -100..=100.
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
}

/// One chat message, as sent (content and tool fields checked in `generate`).
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// Role.
    pub role: String,
    /// Content: a string, a list of parts, or null (assistant tool calls).
    #[serde(default)]
    pub content: Option<Value>,
    /// Assistant tool calls in the history.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// A participant's or a tool's name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Return logprobs of the generated tokens.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Alternatives per token, 0..=20 (needs `logprobs: true`).
    #[serde(default, deserialize_with = "whole")]
    pub top_logprobs: Option<i64>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Function tools.
    #[serde(default)]
    pub tools: Option<Value>,
    /// `none`, `auto`, `required` or `{"type":"function","function":{"name":…}}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Whether several calls may come in one answer.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// Model name.
    pub model: String,
    /// The prompt: text, token ids, a one-element list of either, or null.
    #[serde(default)]
    pub prompt: Option<Value>,
    /// Return the prompt before the completion.
    #[serde(default)]
    pub echo: Option<bool>,
    /// Must be 1 (or equal n) if given.
    #[serde(default, deserialize_with = "whole")]
    pub best_of: Option<i64>,
    /// Logprobs of the `logprobs` most likely tokens at each position, 0..=20.
    #[serde(default, deserialize_with = "whole")]
    pub logprobs: Option<i64>,
    /// Text after the completion: not supported unless null or empty.
    #[serde(default)]
    pub suffix: Option<String>,
}

/// `input` of an embeddings request.
#[derive(Debug, Clone)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// Token ids (refused: send text).
    Tokens,
}

impl EmbeddingInput {
    /// Reads `input`, with an error a person understands.
    pub fn from_value(v: &Value) -> Result<Self, ApiError> {
        match v {
            Value::String(s) => Ok(EmbeddingInput::Text(s.clone())),
            Value::Array(a) if a.iter().all(Value::is_string) => Ok(EmbeddingInput::Texts(
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
            )),
            Value::Array(a) if a.iter().all(|x| x.is_u64() || x.is_array()) => {
                Ok(EmbeddingInput::Tokens)
            }
            _ => Err(ApiError::invalid(
                Some("input"),
                "'input' must be a string or a list of strings.",
            )),
        }
    }
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    /// Model name.
    pub model: String,
    /// Input (checked by [`EmbeddingInput::from_value`]).
    pub input: Value,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Must equal the model's width if given.
    #[serde(default, deserialize_with = "whole")]
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
    /// Choices.
    pub n: usize,
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

/// Most choices per request.
pub const MAX_N: i64 = 16;

impl CommonParams {
    /// Checks every value; the error names the field and the allowed range. `vocab`
    /// bounds `logit_bias`'s token ids.
    pub fn validate(&self, vocab: usize) -> Result<GenSettings, ApiError> {
        let temperature = range("temperature", self.temperature, 0.0, 2.0, false)?.unwrap_or(1.0);
        let top_p = range("top_p", self.top_p, 0.0, 1.0, false)?.unwrap_or(1.0);
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
        let n = match self.n {
            None => 1,
            Some(n) if (1..=MAX_N).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    Some("n"),
                    format!("{n} is not a valid value for 'n': it must be 1 to {MAX_N}."),
                )
                .with_code("invalid_value"));
            }
        };
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
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                return Err(ApiError::invalid(
                    Some("stop"),
                    "'stop' must be a string or a list of up to 4 strings.",
                ));
            }
        };
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
        let mut logit_bias = Vec::new();
        for (k, v) in self.logit_bias.iter().flatten() {
            let param = format!("logit_bias.{k}");
            let id: u32 = k.trim().parse().map_err(|_| {
                ApiError::invalid(
                    Some(&param),
                    format!("logit_bias key {k:?} is not a token id: keys are token ids written as strings, e.g. \"50256\"."),
                )
            })?;
            if id as usize >= vocab {
                return Err(ApiError::invalid(
                    Some(&param),
                    format!(
                        "token id {id} in logit_bias is outside the vocabulary (size {vocab})."
                    ),
                ));
            }
            let b = v
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    ApiError::invalid(
                        Some(&param),
                        format!(
                            "logit_bias value {v} for token {id} must be a number from -100 to 100."
                        ),
                    )
                })?;
            logit_bias.push((id, b as f32));
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
                logit_bias,
            },
            stop,
            stream,
            include_usage,
            n,
        })
    }
}
