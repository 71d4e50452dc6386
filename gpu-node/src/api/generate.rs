//! `POST /v1/chat/completions` and `POST /v1/completions`: validation, prompt building
//! (tools included), submission to the engine (grammars for structured output and
//! forced tool calls, `n` choices, logprobs), and the answer as one JSON body or
//! OpenAI's SSE chunks.

use super::error::{ApiError, from_value, parse_object};
use super::tools::{self, Call, Family, ToolChoice, ToolSetup};
use super::types::{
    CHAT_KEYS, COMPLETION_KEYS, ChatRequest, CommonParams, CompletionRequest, GenSettings,
    check_known,
};
use super::{AppState, GenService, InFlight, new_id, now_secs};
use crate::engine::grammar::Constraint;
use crate::engine::{Event, FinishReason, GenRequest, SubmitError, TokenLogprob};
use crate::model::chat::ChatMessage;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Chat or plain completion.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let guard = InFlight::new(&app.metrics);
    match chat_inner(&app, &body, cache_scope(&headers), guard).await {
        Ok(r) => r,
        Err(e) => app.fail(e),
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let guard = InFlight::new(&app.metrics);
    match completions_inner(&app, &body, cache_scope(&headers), guard).await {
        Ok(r) => r,
        Err(e) => app.fail(e),
    }
}

/// The request's prefix-cache scope ([`crate::engine::prefix`]): a hash of the
/// ingress's [`dayshift_config::protocol::CACHE_SCOPE_HEADER`] (the API key's id), 0
/// without it (a direct call with the node's token).
fn cache_scope(headers: &HeaderMap) -> u64 {
    use std::hash::{Hash, Hasher};
    match headers.get(dayshift_config::protocol::CACHE_SCOPE_HEADER) {
        Some(v) => {
            let mut h = std::hash::DefaultHasher::new();
            v.as_bytes().hash(&mut h);
            h.finish() | 1
        }
        None => 0,
    }
}

/// `scope` narrowed to the request's end user (OpenAI's `user`) where it names one, as
/// the ingress narrows its header: one user's prompts never shorten another's.
fn scope_with_user(scope: u64, body: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    match body.get("user").and_then(Value::as_str) {
        Some(u) if !u.is_empty() => {
            let mut h = std::hash::DefaultHasher::new();
            (scope, u).hash(&mut h);
            h.finish() | 1
        }
        _ => scope,
    }
}

/// What a request wants done with the output besides the text.
#[derive(Clone)]
struct Post {
    kind: Kind,
    /// Tools in play (tool_choice other than `none`) and the output format.
    tools: Option<(ToolSetup, Family)>,
    /// `parallel_tool_calls: false` keeps only the first call.
    parallel: bool,
    /// Logprobs asked for (top-k count).
    logprobs: Option<usize>,
    /// Completions' echo: the prompt text goes first.
    echo: Option<String>,
    /// Prompt logprobs for echo + logprobs (completions' format entries).
    echo_logprobs: Option<Vec<TokenLogprob>>,
    /// Each token's bytes, for logprobs entries.
    token_bytes: Option<Arc<Vec<Vec<u8>>>>,
    system_fingerprint: String,
}

fn message_text(c: Option<Value>, i: usize) -> Result<Option<String>, ApiError> {
    match c {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
                if kind != "text" {
                    return Err(ApiError::invalid(
                        Some(&format!("messages[{i}].content[{j}].type")),
                        format!(
                            "content parts of type {kind:?} are not supported: send text parts only."
                        ),
                    ));
                }
                match p.get("text") {
                    Some(Value::String(t)) => out.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            Some(&format!("messages[{i}].content[{j}].text")),
                            "a text part needs a string 'text'.",
                        ));
                    }
                }
            }
            Ok(Some(out))
        }
        Some(_) => Err(ApiError::invalid(
            Some(&format!("messages[{i}].content")),
            "'content' must be a string, a list of text parts, or null.",
        )),
    }
}

/// An assistant message's `tool_calls`, checked, with JSON arguments parsed into
/// objects for the template.
fn history_calls(calls: Vec<Value>, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(calls.len());
    for (j, c) in calls.into_iter().enumerate() {
        let p = format!("messages[{i}].tool_calls[{j}]");
        let f = c.get("function").ok_or_else(|| {
            ApiError::invalid(
                Some(&p),
                "a tool call needs 'function' with 'name' and 'arguments'.",
            )
        })?;
        let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
            ApiError::invalid(
                Some(&format!("{p}.function.name")),
                "a tool call needs a function name.",
            )
        })?;
        let args = match f.get("arguments") {
            Some(Value::String(s)) => {
                serde_json::from_str::<Value>(s).unwrap_or(Value::String(s.clone()))
            }
            Some(v) => v.clone(),
            None => json!({}),
        };
        out.push(json!({
            "id": c.get("id").cloned().unwrap_or(Value::Null),
            "type": "function",
            "function": {"name": name, "arguments": args},
        }));
    }
    Ok(out)
}

/// A stable `system_fingerprint` for the node build, model and dtype.
fn fingerprint(svc: &GenService, model: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    let src = format!(
        "{}/{model}/{}/{:?}",
        env!("CARGO_PKG_VERSION"),
        svc.model.architecture,
        svc.model.llama.dtype()
    );
    for b in src.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("fp_{:010x}", h & 0xff_ffff_ffff)
}

/// The grammar for `response_format`, `None` for text.
fn response_format(v: Option<&Value>) -> Result<Option<Option<Value>>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(None)),
        "json_schema" => {
            let js = v.get("json_schema").ok_or_else(|| {
                ApiError::invalid(
                    Some("response_format.json_schema"),
                    "response_format of type json_schema needs 'json_schema': {\"name\": …, \"schema\": {…}}.",
                )
            })?;
            match js.get("schema") {
                Some(s @ Value::Object(_)) => Ok(Some(Some(s.clone()))),
                Some(Value::Bool(true)) | None => Ok(Some(None)),
                Some(_) => Err(ApiError::invalid(
                    Some("response_format.json_schema.schema"),
                    "'schema' must be a JSON schema object.",
                )),
            }
        }
        other => Err(ApiError::invalid(
            Some("response_format.type"),
            format!("response_format type {other:?} is not one of text, json_object, json_schema."),
        )),
    }
}

/// `n` grammars for `schema` (built off the async runtime: the first one also builds
/// the model's token tables).
async fn constraints(
    svc: &GenService,
    schema: Option<&Value>,
    n: usize,
    param: &str,
) -> Result<Vec<Constraint>, ApiError> {
    let model = svc.model.clone();
    let schema = schema.cloned();
    let built = tokio::task::spawn_blocking(move || {
        let eos = model.eos_ids.first().copied().unwrap_or(0);
        (0..n)
            .map(|_| model.guide.json(&model.tokenizer, eos, schema.as_ref()))
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("grammar task failed: {e}")))?;
    built.map_err(|m| ApiError::invalid(Some(param), m))
}

async fn token_bytes(svc: &GenService) -> Option<Arc<Vec<Vec<u8>>>> {
    let model = svc.model.clone();
    tokio::task::spawn_blocking(move || {
        let eos = model.eos_ids.first().copied().unwrap_or(0);
        model.guide.token_bytes(&model.tokenizer, eos).ok()
    })
    .await
    .ok()
    .flatten()
}

async fn chat_inner(
    app: &Arc<AppState>,
    body: &[u8],
    scope: u64,
    guard: InFlight,
) -> Result<Response, ApiError> {
    let v = parse_object(body)?;
    check_known(&v, CHAT_KEYS, "/v1/chat/completions")?;
    let scope = scope_with_user(scope, &v);
    let req: ChatRequest = from_value(v.clone())?;
    let common: CommonParams = from_value(v)?;
    let svc = app.generation(&req.model)?;
    let settings = common.validate(svc.model.llama.config().vocab_size)?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), None) => Some(0),
        (Some(true), Some(k)) if (0..=20).contains(&k) => Some(k as usize),
        (Some(true), Some(k)) => {
            return Err(ApiError::invalid(
                Some("top_logprobs"),
                format!("{k} is not a valid value for 'top_logprobs': it must be 0 to 20."),
            )
            .with_code("invalid_value"));
        }
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                Some("top_logprobs"),
                "top_logprobs needs logprobs: true.",
            ));
        }
        _ => None,
    };
    let setup = tools::parse(req.tools.as_ref(), req.tool_choice.as_ref())?;
    let format = response_format(req.response_format.as_ref())?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            Some("messages"),
            "'messages' is empty: send at least one message.",
        ));
    }
    let mut msgs = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant" | "tool"
        ) {
            return Err(ApiError::invalid(
                Some(&format!("messages[{i}].role")),
                format!(
                    "role {:?} is not one of system, developer, user, assistant, tool.",
                    m.role
                ),
            ));
        }
        let role = if m.role == "developer" {
            "system".to_string()
        } else {
            m.role
        };
        let tool_calls = match m.tool_calls {
            Some(c) if role == "assistant" && !c.is_empty() => Some(history_calls(c, i)?),
            _ => None,
        };
        let content = message_text(m.content, i)?;
        msgs.push(ChatMessage {
            content: if content.is_none() && tool_calls.is_none() {
                Some(String::new())
            } else {
                content
            },
            tool_calls,
            tool_call_id: m.tool_call_id,
            name: m.name,
            role,
        });
    }
    let Some(tpl) = &svc.model.chat else {
        return Err(ApiError::invalid(
            Some("model"),
            format!(
                "model `{}` has no chat template in its tokenizer_config.json: use /v1/completions.",
                req.model
            ),
        ));
    };
    if !tpl.takes_tools {
        // A template without tool support: calls and tool answers in the history are
        // written in the Hermes format the fallback tool prompt teaches.
        for m in msgs.iter_mut() {
            if let Some(calls) = m.tool_calls.take() {
                let mut c = m.content.take().unwrap_or_default();
                for call in calls {
                    let f = &call["function"];
                    let one = json!({"name": f["name"], "arguments": f["arguments"]});
                    c.push_str(&format!("\n<tool_call>\n{one}\n</tool_call>"));
                }
                m.content = Some(c.trim_start().to_string());
            } else if m.role == "tool" {
                m.role = "user".into();
                let c = m.content.take().unwrap_or_default();
                m.content = Some(format!("<tool_response>\n{c}\n</tool_response>"));
            }
        }
    }
    let active = setup.filter(|s| s.choice != ToolChoice::None);
    let family = Family::of_template(&tpl.source);
    let mut family_used = family;
    let mut tools_var = None;
    if let Some(s) = &active {
        if tpl.takes_tools {
            tools_var = Some(s.raw.clone());
        } else {
            // The template has no `tools`: describe them in the system message.
            family_used = Family::Hermes;
            let p = s.fallback_prompt();
            match msgs.first_mut() {
                Some(m) if m.role == "system" => {
                    let c = m.content.take().unwrap_or_default();
                    m.content = Some(format!("{c}\n\n{p}").trim_start().to_string());
                }
                _ => msgs.insert(
                    0,
                    ChatMessage {
                        role: "system".into(),
                        content: Some(p),
                        ..Default::default()
                    },
                ),
            }
        }
    }
    let text = tpl
        .render(&msgs, tools_var.as_ref())
        .map_err(|m| ApiError::invalid(Some("messages"), m))?;
    let enc = svc
        .model
        .tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| ApiError::internal(format!("cannot tokenize the prompt: {e}")))?;
    let prompt = enc.get_ids().to_vec();
    let forced = active.as_ref().and_then(ToolSetup::forced_schema);
    let cons = match (&forced, &format) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                Some("response_format"),
                "response_format cannot be combined with a required or named tool_choice: the call's arguments already follow the tool's schema.",
            ));
        }
        (Some(schema), None) => constraints(&svc, Some(schema), settings.n, "tools").await?,
        (None, Some(schema)) => {
            constraints(&svc, schema.as_ref(), settings.n, "response_format").await?
        }
        (None, None) => Vec::new(),
    };
    let post = Post {
        kind: Kind::Chat,
        tools: active.map(|s| (s, family_used)),
        parallel: req.parallel_tool_calls.unwrap_or(true),
        logprobs,
        echo: None,
        echo_logprobs: None,
        token_bytes: match logprobs {
            Some(_) => token_bytes(&svc).await,
            None => None,
        },
        system_fingerprint: fingerprint(&svc, &req.model),
    };
    run(
        app, &svc, req.model, prompt, settings, cons, post, "messages", scope, guard,
    )
    .await
}

async fn completions_inner(
    app: &Arc<AppState>,
    body: &[u8],
    scope: u64,
    guard: InFlight,
) -> Result<Response, ApiError> {
    let v = parse_object(body)?;
    check_known(&v, COMPLETION_KEYS, "/v1/completions")?;
    let scope = scope_with_user(scope, &v);
    let req: CompletionRequest = from_value(v.clone())?;
    let common: CommonParams = from_value(v)?;
    let svc = app.generation(&req.model)?;
    let vocab = svc.model.llama.config().vocab_size;
    let settings = common.validate(vocab)?;
    if let Some(b) = req.best_of
        && b != settings.n as i64
        && b != 1
    {
        return Err(ApiError::invalid(
            Some("best_of"),
            "best_of must be 1 or equal to n on this node (it does not rank extra choices).",
        ));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            Some("suffix"),
            "suffix (fill-in-the-middle) is not supported by this node: leave it out.",
        ));
    }
    let logprobs = match req.logprobs {
        None => None,
        Some(k) if (0..=20).contains(&k) => Some(k as usize),
        Some(k) => {
            return Err(ApiError::invalid(
                Some("logprobs"),
                format!("{k} is not a valid value for 'logprobs': it must be 0 to 20."),
            )
            .with_code("invalid_value"));
        }
    };
    let one = |n: usize| {
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::invalid(
                Some("prompt"),
                format!("{n} prompts given: send exactly one prompt per request."),
            ))
        }
    };
    let bad_prompt = || {
        ApiError::invalid(
            Some("prompt"),
            "'prompt' must be a string, a list of token ids, a one-element list of either, or null.",
        )
    };
    let ids = |a: &[Value]| -> Option<Vec<u32>> {
        a.iter()
            .map(|x| x.as_u64().and_then(|t| u32::try_from(t).ok()))
            .collect()
    };
    let prompt: Vec<u32> = match &req.prompt {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(t)) => encode(&svc, t)?,
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            one(a.len())?;
            encode(&svc, a[0].as_str().unwrap_or_default())?
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_array) => {
            one(a.len())?;
            match &a[0] {
                Value::Array(inner) => ids(inner).ok_or_else(bad_prompt)?,
                _ => return Err(bad_prompt()),
            }
        }
        Some(Value::Array(a)) => ids(a).ok_or_else(bad_prompt)?,
        Some(_) => return Err(bad_prompt()),
    };
    if let Some(bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::invalid(
            Some("prompt"),
            format!("token id {bad} is outside the vocabulary (size {vocab})."),
        ));
    }
    let prompt = if prompt.is_empty() {
        match svc.model.bos_id.or(svc.model.eos_ids.first().copied()) {
            Some(b) => vec![b],
            None => {
                return Err(ApiError::invalid(
                    Some("prompt"),
                    "the prompt is empty and this model has no BOS token: send at least one token of text.",
                ));
            }
        }
    } else {
        prompt
    };
    let echo = req.echo.unwrap_or(false);
    let echo_text = if echo {
        Some(
            svc.model
                .tokenizer
                .decode(&prompt, false)
                .map_err(|e| ApiError::internal(format!("cannot decode the prompt: {e}")))?,
        )
    } else {
        None
    };
    let echo_logprobs = match (echo, logprobs) {
        (true, Some(k)) => Some(prompt_logprobs(&svc, &prompt, k).await?),
        _ => None,
    };
    let post = Post {
        kind: Kind::Text,
        tools: None,
        parallel: true,
        logprobs,
        echo: echo_text,
        echo_logprobs,
        token_bytes: match logprobs {
            Some(_) => token_bytes(&svc).await,
            None => None,
        },
        system_fingerprint: fingerprint(&svc, &req.model),
    };
    run(
        app,
        &svc,
        req.model,
        prompt,
        settings,
        Vec::new(),
        post,
        "prompt",
        scope,
        guard,
    )
    .await
}

/// Logprobs of each prompt token given the ones before (the first has none: its
/// entry's logprob is NaN and is written as null), from one forward pass over the prompt.
async fn prompt_logprobs(
    svc: &GenService,
    prompt: &[u32],
    k: usize,
) -> Result<Vec<TokenLogprob>, ApiError> {
    let model = svc.model.clone();
    let toks = prompt.to_vec();
    tokio::task::spawn_blocking(move || -> Result<Vec<TokenLogprob>, String> {
        let logits =
            crate::model::llama::full_logits(&model.llama, &toks).map_err(|e| e.to_string())?;
        let ls = candle_nn::ops::log_softmax(
            &logits
                .to_dtype(candle_core::DType::F32)
                .map_err(|e| e.to_string())?,
            candle_core::D::Minus1,
        )
        .and_then(|t| t.to_vec2::<f32>())
        .map_err(|e| e.to_string())?;
        let mut out = vec![TokenLogprob {
            token: toks[0],
            logprob: f32::NAN,
            top: Vec::new(),
        }];
        for (i, &t) in toks.iter().enumerate().skip(1) {
            let row = &ls[i - 1];
            out.push(TokenLogprob {
                token: t,
                logprob: row.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY),
                top: crate::engine::top_k(row, k),
            });
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal(format!("prompt logprobs task failed: {e}")))?
    .map_err(|e| ApiError::internal(format!("prompt logprobs: {e}")))
}

fn encode(svc: &GenService, text: &str) -> Result<Vec<u32>, ApiError> {
    svc.model
        .tokenizer
        .encode(text, true)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| ApiError::internal(format!("cannot tokenize the prompt: {e}")))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    app: &Arc<AppState>,
    svc: &GenService,
    model: String,
    prompt: Vec<u32>,
    s: GenSettings,
    constraints: Vec<Constraint>,
    post: Post,
    prompt_param: &str,
    cache_scope: u64,
    guard: InFlight,
) -> Result<Response, ApiError> {
    let ctx = svc
        .model
        .llama
        .config()
        .max_position_embeddings
        .min(svc.engine.seq_cap());
    let max_tokens = match s.max_tokens {
        Some(m) => m,
        None => ctx.saturating_sub(prompt.len()),
    };
    if prompt.len() + max_tokens > svc.model.llama.config().max_position_embeddings
        || max_tokens == 0
    {
        let ctx = svc.model.llama.config().max_position_embeddings;
        return Err(ApiError::invalid(
            Some(prompt_param),
            format!(
                "This model's maximum context length is {ctx} tokens. However, you requested {} tokens ({} in the {prompt_param}, {max_tokens} in the completion). Please reduce the length of the {prompt_param} or completion.",
                prompt.len() + max_tokens,
                prompt.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let prompt_len = prompt.len();
    let n = s.n;
    svc.engine
        .submit(GenRequest {
            prompt,
            max_tokens,
            sampling: s.sampling,
            stop: s.stop,
            events: tx,
            arrived: Instant::now(),
            n,
            logprobs: post.logprobs,
            constraints,
            cache_scope,
        })
        .map_err(|e| match e {
            SubmitError::QueueFull(_) => ApiError::unavailable(e.to_string(), "queue_full"),
            SubmitError::TooLarge { .. } => ApiError::invalid(Some(prompt_param), e.to_string())
                .with_code("context_length_exceeded"),
            SubmitError::TooManyChoices { .. } => {
                ApiError::invalid(Some("n"), e.to_string()).with_code("invalid_value")
            }
            SubmitError::Stopped => ApiError::internal(e.to_string()),
        })?;
    let id = match post.kind {
        Kind::Chat => new_id("chatcmpl-"),
        Kind::Text => new_id("cmpl-"),
    };
    let created = now_secs();
    let choices: Vec<ChoiceState> = (0..n).map(|_| ChoiceState::default()).collect();
    let mut st = StreamState {
        rx,
        pending: VecDeque::new(),
        finished: false,
        id,
        model,
        created,
        include_usage: s.include_usage,
        app: app.clone(),
        _guard: guard,
        prompt_len,
        cached_tokens: 0,
        choices,
        done: 0,
        completion_tokens: 0,
        post,
        stream: s.stream,
    };
    if s.stream {
        st.start();
        let body = Sse::new(sse_stream(st));
        return Ok(body.into_response());
    }
    collect(st).await
}

/// What one choice has produced so far.
#[derive(Default)]
struct ChoiceState {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<FinishReason>,
    /// Streaming a named tool call: the header chunk went out.
    call_open: Option<String>,
    /// Text held back (tools in `auto`/`required`: it may be a call).
    held: String,
    held_logprobs: Vec<TokenLogprob>,
}

struct StreamState {
    rx: mpsc::UnboundedReceiver<Event>,
    pending: VecDeque<String>,
    finished: bool,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    app: Arc<AppState>,
    _guard: InFlight,
    prompt_len: usize,
    /// Prompt tokens the engine found in its KV cache (`usage.prompt_tokens_details`).
    cached_tokens: usize,
    choices: Vec<ChoiceState>,
    done: usize,
    completion_tokens: usize,
    post: Post,
    stream: bool,
}

impl Post {
    fn token_str(&self, id: u32) -> (String, Vec<u8>) {
        let b = self
            .token_bytes
            .as_ref()
            .and_then(|t| t.get(id as usize))
            .cloned()
            .unwrap_or_default();
        // Special tokens carry llguidance's 0xFF marker.
        let b = match b.split_first() {
            Some((0xFF, rest)) => rest.to_vec(),
            _ => b,
        };
        (String::from_utf8_lossy(&b).into_owned(), b)
    }

    /// Chat's `logprobs.content` entries.
    fn chat_logprobs(&self, lps: &[TokenLogprob]) -> Value {
        let entries: Vec<Value> = lps
            .iter()
            .map(|lp| {
                let (t, b) = self.token_str(lp.token);
                let top: Vec<Value> = lp
                    .top
                    .iter()
                    .map(|&(id, l)| {
                        let (t, b) = self.token_str(id);
                        json!({"token": t, "logprob": l, "bytes": b})
                    })
                    .collect();
                json!({"token": t, "logprob": lp.logprob, "bytes": b, "top_logprobs": top})
            })
            .collect();
        json!({"content": entries, "refusal": null})
    }

    /// Completions' `logprobs` object; `offset` is the text offset of the first token.
    fn text_logprobs(&self, lps: &[TokenLogprob], offset: usize) -> Value {
        let mut tokens = Vec::new();
        let mut lp = Vec::new();
        let mut top = Vec::new();
        let mut offs = Vec::new();
        let mut at = offset;
        for e in lps {
            let (t, _) = self.token_str(e.token);
            offs.push(at);
            at += t.len();
            tokens.push(t);
            lp.push(if e.logprob.is_nan() {
                Value::Null
            } else {
                json!(e.logprob)
            });
            if e.logprob.is_nan() {
                top.push(Value::Null);
            } else {
                let m: serde_json::Map<String, Value> = e
                    .top
                    .iter()
                    .map(|&(id, l)| (self.token_str(id).0, json!(l)))
                    .collect();
                top.push(Value::Object(m));
            }
        }
        json!({"tokens": tokens, "token_logprobs": lp, "top_logprobs": top, "text_offset": offs})
    }

    /// Text and tool calls of a finished choice.
    fn split(&self, text: &str) -> (Option<String>, Vec<Call>) {
        let Some((setup, family)) = &self.tools else {
            return (Some(text.to_string()), Vec::new());
        };
        let (content, mut calls) = match setup.choice {
            ToolChoice::Named(_) | ToolChoice::Required => match setup.forced_call(text) {
                Some(c) => (None, vec![c]),
                None => (Some(text.to_string()), Vec::new()),
            },
            _ => tools::parse_output(*family, text, &setup.tools),
        };
        if !self.parallel {
            calls.truncate(1);
        }
        (content, calls)
    }

    fn streams_named_call(&self) -> Option<String> {
        match &self.tools {
            Some((s, _)) => match &s.choice {
                ToolChoice::Named(n) => Some(n.clone()),
                _ => None,
            },
            None => None,
        }
    }

    fn holds_text(&self) -> bool {
        matches!(&self.tools, Some((s, _)) if matches!(s.choice, ToolChoice::Auto | ToolChoice::Required))
    }
}

fn calls_json(calls: &[Call]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| {
            json!({"id": tools::call_id(), "type": "function",
                   "function": {"name": c.name, "arguments": c.arguments}})
        })
        .collect()
}

fn finish_name(f: Option<FinishReason>, calls: bool) -> &'static str {
    match f {
        Some(FinishReason::Length) => "length",
        _ if calls => "tool_calls",
        Some(f) => f.as_str(),
        None => "stop",
    }
}

impl StreamState {
    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_len,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_len + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }

    fn chunk(&self, choice: Value) -> String {
        let mut v = match self.post.kind {
            Kind::Chat => json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": self.post.system_fingerprint,
                "choices": [choice],
            }),
            Kind::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model, "system_fingerprint": self.post.system_fingerprint,
                "choices": [choice],
            }),
        };
        if self.include_usage
            && let Some(o) = v.as_object_mut()
        {
            o.insert("usage".into(), Value::Null);
        }
        v.to_string()
    }

    /// The first chunks of a stream: each chat choice's role, or the echoed prompt.
    fn start(&mut self) {
        for i in 0..self.choices.len() {
            let c = match self.post.kind {
                Kind::Chat => json!({"index": i, "delta": {"role": "assistant", "content": ""},
                                     "logprobs": null, "finish_reason": null}),
                Kind::Text => match &self.post.echo {
                    Some(t) => {
                        let lp = match &self.post.echo_logprobs {
                            Some(l) => self.post.text_logprobs(l, 0),
                            None => Value::Null,
                        };
                        json!({"index": i, "text": t, "logprobs": lp, "finish_reason": null})
                    }
                    None => continue,
                },
            };
            let s = self.chunk(c);
            self.pending.push_back(s);
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Delta {
                index,
                text,
                logprobs,
            } => {
                let stream = self.stream;
                let holds = self.post.holds_text();
                let echo_len = self.post.echo.as_ref().map_or(0, String::len);
                let named = self.post.streams_named_call();
                let Some(ch) = self.choices.get_mut(index) else {
                    return;
                };
                let offset = echo_len + ch.text.len();
                ch.text.push_str(&text);
                if !stream {
                    ch.logprobs.extend(logprobs);
                    return;
                }
                if holds {
                    ch.held.push_str(&text);
                    ch.held_logprobs.extend(logprobs);
                    return;
                }
                let mut header = None;
                if named.is_some() && ch.call_open.is_none() {
                    let id = tools::call_id();
                    ch.call_open = Some(id.clone());
                    header = Some(id);
                }
                let lp = if self.post.logprobs.is_some() {
                    match self.post.kind {
                        Kind::Chat => self.post.chat_logprobs(&logprobs),
                        Kind::Text => self.post.text_logprobs(&logprobs, offset),
                    }
                } else {
                    Value::Null
                };
                let mut out = Vec::new();
                match (self.post.kind, named) {
                    (Kind::Chat, Some(name)) => {
                        if let Some(id) = header {
                            out.push(json!({"index": index, "delta": {"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}, "logprobs": null, "finish_reason": null}));
                        }
                        out.push(json!({"index": index, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}, "logprobs": lp, "finish_reason": null}));
                    }
                    (Kind::Chat, None) => out
                        .push(json!({"index": index, "delta": {"content": text},
                                                          "logprobs": lp, "finish_reason": null})),
                    (Kind::Text, _) => out.push(json!({"index": index, "text": text,
                                                       "logprobs": lp, "finish_reason": null})),
                }
                for c in out {
                    let s = self.chunk(c);
                    self.pending.push_back(s);
                }
            }
            Event::Done {
                index,
                finish,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
            } => {
                self.prompt_len = prompt_tokens;
                self.cached_tokens = self.cached_tokens.max(cached_tokens);
                self.completion_tokens += completion_tokens;
                self.done += 1;
                if let Some(ch) = self.choices.get_mut(index) {
                    ch.finish = Some(finish);
                }
                if self.stream {
                    self.finish_stream_choice(index);
                }
                if self.done >= self.choices.len() {
                    if self.stream {
                        if self.include_usage {
                            let obj = match self.post.kind {
                                Kind::Chat => "chat.completion.chunk",
                                Kind::Text => "text_completion",
                            };
                            let u = json!({
                                "id": self.id, "object": obj, "created": self.created, "model": self.model,
                                "system_fingerprint": self.post.system_fingerprint, "choices": [],
                                "usage": self.usage(),
                            });
                            self.pending.push_back(u.to_string());
                        }
                        self.pending.push_back("[DONE]".into());
                    }
                    self.finished = true;
                    self.app
                        .metrics
                        .requests_ok
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Event::Error(e) => {
                let err = ApiError::internal(e);
                self.pending
                    .push_back(serde_json::to_string(&err.body()).unwrap_or_default());
                self.pending.push_back("[DONE]".into());
                self.finished = true;
                self.app
                    .metrics
                    .requests_error
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// A streamed choice's last chunks: held text as content or as tool-call deltas
    /// (a header with id and name, then the arguments), then the finish reason.
    fn finish_stream_choice(&mut self, index: usize) {
        let Some(ch) = self.choices.get_mut(index) else {
            return;
        };
        let finish = ch.finish;
        let mut out = Vec::new();
        let mut had_calls = ch.call_open.is_some();
        if self.post.kind == Kind::Chat && self.post.holds_text() {
            let held = std::mem::take(&mut ch.held);
            let lps = std::mem::take(&mut ch.held_logprobs);
            let (content, calls) = self.post.split(&held);
            let lp = if self.post.logprobs.is_some() {
                self.post.chat_logprobs(&lps)
            } else {
                Value::Null
            };
            if calls.is_empty() {
                out.push(json!({"index": index, "delta": {"content": content.unwrap_or_default()}, "logprobs": lp, "finish_reason": null}));
            } else {
                had_calls = true;
                if let Some(c) = content {
                    out.push(json!({"index": index, "delta": {"content": c}, "logprobs": null, "finish_reason": null}));
                }
                for (k, c) in calls_json(&calls).into_iter().enumerate() {
                    let args = c["function"]["arguments"].clone();
                    out.push(json!({"index": index, "delta": {"tool_calls": [{"index": k, "id": c["id"], "type": "function", "function": {"name": c["function"]["name"], "arguments": ""}}]}, "logprobs": null, "finish_reason": null}));
                    out.push(json!({"index": index, "delta": {"tool_calls": [{"index": k, "function": {"arguments": args}}]}, "logprobs": if k == 0 { lp.clone() } else { Value::Null }, "finish_reason": null}));
                }
            }
        }
        let last = match self.post.kind {
            Kind::Chat => json!({"index": index, "delta": {}, "logprobs": null,
                                 "finish_reason": finish_name(finish, had_calls)}),
            Kind::Text => json!({"index": index, "text": "", "logprobs": null,
                                 "finish_reason": finish_name(finish, false)}),
        };
        out.push(last);
        for c in out {
            let s = self.chunk(c);
            self.pending.push_back(s);
        }
    }

    /// The whole answer (non-streaming).
    fn body(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, ch)| match self.post.kind {
                Kind::Chat => {
                    let (content, calls) = self.post.split(&ch.text);
                    let lp = if self.post.logprobs.is_some() {
                        self.post.chat_logprobs(&ch.logprobs)
                    } else {
                        Value::Null
                    };
                    let mut msg = json!({"role": "assistant", "content": content, "refusal": null});
                    if !calls.is_empty() {
                        msg["tool_calls"] = Value::Array(calls_json(&calls));
                    }
                    json!({"index": i, "message": msg, "logprobs": lp,
                           "finish_reason": finish_name(ch.finish, !calls.is_empty())})
                }
                Kind::Text => {
                    let echo = self.post.echo.clone().unwrap_or_default();
                    let lp = match self.post.logprobs {
                        Some(_) => {
                            let mut all = self.post.echo_logprobs.clone().unwrap_or_default();
                            let start = if all.is_empty() { echo.len() } else { 0 };
                            all.extend(ch.logprobs.iter().cloned());
                            self.post.text_logprobs(&all, start)
                        }
                        None => Value::Null,
                    };
                    json!({"index": i, "text": format!("{echo}{}", ch.text), "logprobs": lp,
                           "finish_reason": finish_name(ch.finish, false)})
                }
            })
            .collect();
        let object = match self.post.kind {
            Kind::Chat => "chat.completion",
            Kind::Text => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "system_fingerprint": self.post.system_fingerprint,
            "choices": choices,
            "usage": self.usage(),
        })
    }
}

async fn collect(mut st: StreamState) -> Result<Response, ApiError> {
    while let Some(ev) = st.rx.recv().await {
        if let Event::Error(e) = ev {
            return Err(ApiError::internal(e));
        }
        st.on_event(ev);
        if st.finished {
            return Ok(axum::Json(st.body()).into_response());
        }
    }
    Err(ApiError::internal(
        "the engine dropped the request without an answer",
    ))
}

fn sse_stream(st: StreamState) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(st, |mut st| async move {
        loop {
            if let Some(data) = st.pending.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), st));
            }
            if st.finished {
                return None;
            }
            match st.rx.recv().await {
                Some(ev) => st.on_event(ev),
                None => st.on_event(Event::Error("the engine dropped the request".into())),
            }
        }
    })
}
