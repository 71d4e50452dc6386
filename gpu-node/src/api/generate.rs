//! `POST /v1/chat/completions` and `POST /v1/completions`: validation, prompt building,
//! submission to the engine, and the answer as one JSON body or OpenAI's SSE chunks.

use super::error::{ApiError, from_value, parse_object};
use super::types::{ChatRequest, CommonParams, CompletionRequest, Content, GenSettings, Prompt};
use super::{AppState, InFlight, new_id, now_secs};
use crate::engine::{Event, GenRequest, SubmitError};
use crate::model::chat::ChatMessage;
use axum::body::Bytes;
use axum::extract::State;
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
pub async fn chat(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let guard = InFlight::new(&app.metrics);
    match chat_inner(&app, &body, guard).await {
        Ok(r) => r,
        Err(e) => app.fail(e),
    }
}

/// `POST /v1/completions`.
pub async fn completions(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let guard = InFlight::new(&app.metrics);
    match completions_inner(&app, &body, guard).await {
        Ok(r) => r,
        Err(e) => app.fail(e),
    }
}

fn message_text(c: Option<Content>, i: usize) -> Result<String, ApiError> {
    match c {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                if p.kind != "text" {
                    return Err(ApiError::invalid(
                        Some(&format!("messages[{i}].content[{j}].type")),
                        format!(
                            "content parts of type {:?} are not supported: send text parts only.",
                            p.kind
                        ),
                    ));
                }
                out.push_str(&p.text.unwrap_or_default());
            }
            Ok(out)
        }
    }
}

async fn chat_inner(
    app: &Arc<AppState>,
    body: &[u8],
    guard: InFlight,
) -> Result<Response, ApiError> {
    let v = parse_object(body)?;
    let req: ChatRequest = from_value(v.clone())?;
    let common: CommonParams = from_value(v)?;
    let settings = common.validate()?;
    let svc = app.generation(&req.model)?;
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
        msgs.push(ChatMessage {
            role,
            content: message_text(m.content, i)?,
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
    let text = tpl
        .render(&msgs)
        .map_err(|m| ApiError::invalid(Some("messages"), m))?;
    let enc = svc
        .model
        .tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| ApiError::internal(format!("cannot tokenize the prompt: {e}")))?;
    let prompt = enc.get_ids().to_vec();
    run(
        app,
        &svc,
        req.model,
        prompt,
        settings,
        Kind::Chat,
        "messages",
        guard,
    )
    .await
}

async fn completions_inner(
    app: &Arc<AppState>,
    body: &[u8],
    guard: InFlight,
) -> Result<Response, ApiError> {
    let v = parse_object(body)?;
    let req: CompletionRequest = from_value(v.clone())?;
    let common: CommonParams = from_value(v)?;
    let settings = common.validate()?;
    if req.echo == Some(true) {
        return Err(ApiError::invalid(
            Some("echo"),
            "echo is not supported by this node: leave it out.",
        ));
    }
    if let Some(b) = req.best_of
        && b != 1
    {
        return Err(ApiError::invalid(
            Some("best_of"),
            "best_of must be 1 on this node.",
        ));
    }
    let svc = app.generation(&req.model)?;
    let vocab = svc.model.llama.config().vocab_size as u32;
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
    let prompt: Vec<u32> = match req.prompt {
        Prompt::Text(t) => encode(&svc, &t)?,
        Prompt::Texts(v) => {
            one(v.len())?;
            encode(&svc, &v[0])?
        }
        Prompt::Tokens(t) => t,
        Prompt::TokenLists(v) => {
            one(v.len())?;
            v.into_iter().next().unwrap_or_default()
        }
    };
    if let Some(bad) = prompt.iter().find(|&&t| t >= vocab) {
        return Err(ApiError::invalid(
            Some("prompt"),
            format!("token id {bad} is outside the vocabulary (size {vocab})."),
        ));
    }
    let prompt = if prompt.is_empty() {
        match svc.model.bos_id {
            Some(b) => vec![b],
            None => {
                return Err(ApiError::invalid(
                    Some("prompt"),
                    "the prompt is empty: send at least one token of text.",
                ));
            }
        }
    } else {
        prompt
    };
    run(
        app,
        &svc,
        req.model,
        prompt,
        settings,
        Kind::Text,
        "prompt",
        guard,
    )
    .await
}

fn encode(svc: &super::GenService, text: &str) -> Result<Vec<u32>, ApiError> {
    svc.model
        .tokenizer
        .encode(text, true)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| ApiError::internal(format!("cannot tokenize the prompt: {e}")))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    app: &Arc<AppState>,
    svc: &super::GenService,
    model: String,
    prompt: Vec<u32>,
    s: GenSettings,
    kind: Kind,
    prompt_param: &str,
    guard: InFlight,
) -> Result<Response, ApiError> {
    let ctx = svc.model.llama.config().max_position_embeddings;
    let max_tokens = match s.max_tokens {
        Some(m) => m,
        None => ctx.saturating_sub(prompt.len()),
    };
    if prompt.len() + max_tokens > ctx || max_tokens == 0 {
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
    svc.engine
        .submit(GenRequest {
            prompt,
            max_tokens,
            sampling: s.sampling,
            stop: s.stop,
            events: tx,
            arrived: Instant::now(),
        })
        .map_err(|e| match e {
            SubmitError::QueueFull(_) => ApiError::unavailable(e.to_string(), "queue_full"),
            SubmitError::TooLarge { .. } => ApiError::invalid(Some(prompt_param), e.to_string())
                .with_code("context_length_exceeded"),
            SubmitError::Stopped => ApiError::internal(e.to_string()),
        })?;
    let id = match kind {
        Kind::Chat => new_id("chatcmpl-"),
        Kind::Text => new_id("cmpl-"),
    };
    let created = now_secs();
    if s.stream {
        let st = StreamState {
            rx,
            pending: VecDeque::new(),
            finished: false,
            kind,
            id,
            model,
            created,
            include_usage: s.include_usage,
            app: app.clone(),
            _guard: guard,
            prompt_len,
        };
        let mut st = st;
        if kind == Kind::Chat {
            let first = st.chunk(json!({"role": "assistant", "content": ""}), None);
            st.pending.push_back(first);
        }
        let body = Sse::new(sse_stream(st));
        return Ok(body.into_response());
    }
    collect(app, rx, kind, id, model, created, prompt_len).await
}

async fn collect(
    app: &Arc<AppState>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    prompt_len: usize,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta(d) => text.push_str(&d),
            Event::Error(e) => return Err(ApiError::internal(e)),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let usage = json!({
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                });
                let body = match kind {
                    Kind::Chat => json!({
                        "id": id, "object": "chat.completion", "created": created, "model": model,
                        "system_fingerprint": null,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                                     "logprobs": null, "finish_reason": finish.as_str()}],
                        "usage": usage,
                    }),
                    Kind::Text => json!({
                        "id": id, "object": "text_completion", "created": created, "model": model,
                        "system_fingerprint": null,
                        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str()}],
                        "usage": usage,
                    }),
                };
                app.metrics
                    .requests_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(axum::Json(body).into_response());
            }
        }
    }
    let _ = prompt_len;
    Err(ApiError::internal(
        "the engine dropped the request without an answer",
    ))
}

struct StreamState {
    rx: mpsc::UnboundedReceiver<Event>,
    pending: VecDeque<String>,
    finished: bool,
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    app: Arc<AppState>,
    _guard: InFlight,
    prompt_len: usize,
}

impl StreamState {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        let mut v = match self.kind {
            Kind::Chat => json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": null,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            }),
            Kind::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model, "system_fingerprint": null,
                "choices": [{"index": 0, "text": delta, "logprobs": null, "finish_reason": finish}],
            }),
        };
        if self.include_usage
            && let Some(o) = v.as_object_mut()
        {
            o.insert("usage".into(), Value::Null);
        }
        v.to_string()
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Delta(d) => {
                let delta = match self.kind {
                    Kind::Chat => json!({"content": d}),
                    Kind::Text => Value::String(d),
                };
                let c = self.chunk(delta, None);
                self.pending.push_back(c);
            }
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let empty = match self.kind {
                    Kind::Chat => json!({}),
                    Kind::Text => Value::String(String::new()),
                };
                let c = self.chunk(empty, Some(finish.as_str()));
                self.pending.push_back(c);
                if self.include_usage {
                    let obj = match self.kind {
                        Kind::Chat => "chat.completion.chunk",
                        Kind::Text => "text_completion",
                    };
                    let u = json!({
                        "id": self.id, "object": obj, "created": self.created, "model": self.model,
                        "system_fingerprint": null, "choices": [],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                  "total_tokens": prompt_tokens + completion_tokens},
                    });
                    self.pending.push_back(u.to_string());
                }
                self.pending.push_back("[DONE]".into());
                self.finished = true;
                self.app
                    .metrics
                    .requests_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                None => {
                    let _ = st.prompt_len;
                    st.on_event(Event::Error("the engine dropped the request".into()));
                }
            }
        }
    })
}
