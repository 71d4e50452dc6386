//! The OpenAI-compatible gateway (`/v1/*`): API key check, per-key limits, routing by
//! `model` to the least-loaded ready node, waiting for a node on its way, retry on
//! another node before the first byte, and pass-through of the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Full;

use super::auth::authenticate;
use super::errors::ApiError;
use super::limits::Refusal;
use super::registry::{InFlight, NodeHandle, PoolRuntime, Queued};
use super::state::SharedState;
use super::tap::{TapInfo, TappedBody};

/// `GET /v1/models`: every pool's model, with whether a node serves it now.
pub async fn models(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate(&state, &headers).await {
        return e.into_response();
    }
    let stale = state.tuning.stale_after;
    let data: Vec<serde_json::Value> = state
        .registry
        .pools()
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": p.model,
                "object": "model",
                "created": started_secs(),
                "owned_by": "dayshift",
                "pool": p.name,
                "available": p.ready_count(stale) > 0,
            })
        })
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// When this process started (Unix seconds): the `created` of the models it lists.
fn started_secs() -> i64 {
    static STARTED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *STARTED.get_or_init(|| chrono::Utc::now().timestamp())
}

/// Any other `/v1/...` path.
pub async fn unknown(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!(
        "unknown endpoint {method} {}: this gateway serves /v1/chat/completions, \
         /v1/completions, /v1/embeddings and /v1/models",
        uri.path()
    ))
    .with_code("unknown_url")
    .into_response()
}

/// `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
pub async fn proxy(State(state): State<SharedState>, req: Request) -> Response {
    let started = Instant::now();
    let at = state.clock.now().timestamp_millis();
    match proxy_inner(&state, req, started, at).await {
        Ok(r) => r,
        Err((pool, e)) => {
            if let Some(pool) = pool {
                state
                    .metrics
                    .request(&pool, e.status.as_u16(), started.elapsed().as_secs_f64());
            }
            e.into_response()
        }
    }
}

type Failure = (Option<String>, ApiError);

/// The fields of a request body the gateway looks at (the rest passes through as is).
#[derive(serde::Deserialize)]
struct RequestHead<'a> {
    #[serde(default, deserialize_with = "string_or_none")]
    model: Option<String>,
    #[serde(default, deserialize_with = "bool_or_none")]
    stream: Option<bool>,
    #[serde(default, deserialize_with = "number_or_none")]
    n: Option<f64>,
    #[serde(default, deserialize_with = "number_or_none")]
    max_tokens: Option<f64>,
    #[serde(default, deserialize_with = "number_or_none")]
    max_completion_tokens: Option<f64>,
    /// OpenAI's end-user id, when the app sends one: it narrows the prompt cache's scope.
    #[serde(default, deserialize_with = "string_or_none")]
    user: Option<String>,
    /// The conversation's start for [`affinity_of`], borrowed in this same pass (as
    /// [`ConversationStart`]: `#[serde(flatten)]` cannot carry raw JSON).
    #[serde(borrow, default)]
    messages: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a serde_json::value::RawValue>,
}

/// The prefix-cache scope a request is sent to its node with
/// ([`dayshift_config::protocol::CACHE_SCOPE_HEADER`]): the API key's id, and the end
/// user's id (`user`) where the request names one, hex-encoded so any string is a valid
/// header value (an id over 64 bytes as the hex of its 64-bit hash, so the header stays
/// short).
pub fn cache_scope(key_id: &str, user: Option<&str>) -> String {
    use std::hash::{Hash, Hasher};
    match user {
        Some(u) if u.len() > 64 => {
            let mut h = std::hash::DefaultHasher::new();
            u.hash(&mut h);
            format!("{key_id}/#{:016x}", h.finish())
        }
        Some(u) if !u.is_empty() => {
            let hex: String = u.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{key_id}/{hex}")
        }
        _ => key_id.to_string(),
    }
}

/// The raw JSON of a request's `messages` and `prompt`, borrowed from its body.
#[derive(serde::Deserialize, Default)]
pub struct ConversationStart<'a> {
    /// A chat's messages, as sent.
    #[serde(borrow, default)]
    pub messages: Option<&'a serde_json::value::RawValue>,
    /// A completion's prompt, as sent.
    #[serde(borrow, default)]
    pub prompt: Option<&'a serde_json::value::RawValue>,
}

/// [`affinity_of`] of a whole body (parsed for it alone; the gateway takes the start
/// from its request head's pass instead).
pub fn affinity(scope: &str, body: &[u8]) -> Option<u64> {
    affinity_of(scope, &serde_json::from_slice(body).ok()?)
}

/// The start of a request's conversation, hashed with its cache scope: which node of
/// the pool most likely holds its prompt's start in its KV cache
/// ([`PoolRuntime::pick`]). For a chat, the messages up to and including the first user
/// message (a conversation's later turns resend them unchanged); for a completion, the
/// first 512 bytes of its prompt. The raw JSON is hashed as sent, not parsed further.
/// `None` for a request with neither (embeddings): no cache to meet, least-loaded routing.
pub fn affinity_of(scope: &str, start: &ConversationStart<'_>) -> Option<u64> {
    use serde_json::value::RawValue;
    use std::hash::{Hash, Hasher};
    #[derive(serde::Deserialize)]
    struct Role<'a> {
        #[serde(borrow, default)]
        role: Option<&'a str>,
    }
    let mut h = std::hash::DefaultHasher::new();
    scope.hash(&mut h);
    if let Some(m) = start.messages
        && let Ok(list) = serde_json::from_str::<Vec<&RawValue>>(m.get())
    {
        for msg in list {
            msg.get().hash(&mut h);
            if serde_json::from_str::<Role<'_>>(msg.get()).is_ok_and(|r| r.role == Some("user")) {
                break;
            }
        }
    } else if let Some(p) = start.prompt {
        let raw = p.get().as_bytes();
        raw[..raw.len().min(512)].hash(&mut h);
    } else {
        return None;
    }
    Some(h.finish())
}

impl RequestHead<'_> {
    /// Most completion tokens the request can produce (`n × max_tokens`), when it
    /// says; the per-key token limit is checked against it.
    fn token_ceiling(&self) -> i64 {
        let n = self.n.filter(|n| *n >= 1.0).unwrap_or(1.0);
        let max = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(0.0);
        (n * max.max(0.0)).min(i64::MAX as f64) as i64
    }
}

/// `Some(number)` for a JSON number, `None` for any other value.
fn number_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_any(Lenient::<f64>(std::marker::PhantomData))
}

/// `Some(string)` for a JSON string, `None` for any other value (skipped without building
/// a `serde_json::Value`).
fn string_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Lenient::<String>(std::marker::PhantomData))
}

/// `Some(bool)` for a JSON boolean, `None` for any other value.
fn bool_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_any(Lenient::<bool>(std::marker::PhantomData))
}

/// What [`Lenient`] keeps of a JSON value.
trait Keep: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
}

impl Keep for f64 {
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
}

impl Keep for String {
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_string())
    }
}

impl Keep for bool {
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

/// Visits any JSON value: keeps what `T` keeps, skips the rest.
struct Lenient<T>(std::marker::PhantomData<T>);

impl<'de, T: Keep> serde::de::Visitor<'de> for Lenient<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(T::from_str(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(T::from_bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(T::from_f64(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(T::from_f64(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(T::from_f64(v))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(None)
    }
}

async fn proxy_inner(
    state: &SharedState,
    req: Request,
    started: Instant,
    at: i64,
) -> Result<Response, Failure> {
    let (parts, body) = req.into_parts();
    let key = authenticate(state, &parts.headers)
        .await
        .map_err(|e| (None, e))?;
    let limit = usize::try_from(state.config.gateway.max_body_bytes).unwrap_or(usize::MAX);
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return Err((
                None,
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    format!("request body larger than the limit of {limit} bytes"),
                )
                .with_code("request_too_large"),
            ));
        }
    };
    let head: RequestHead<'_> = serde_json::from_slice(&body).map_err(|e| {
        (
            None,
            ApiError::bad_request(format!("the request body is not valid JSON: {e}")),
        )
    })?;
    let Some(model) = head.model.as_deref() else {
        return Err((
            None,
            ApiError::bad_request("missing `model`: name the model to use (see GET /v1/models)")
                .with_param("model"),
        ));
    };
    let streaming = head.stream.unwrap_or(false);
    let Some(pool) = state.registry.pool_for_model(model).cloned() else {
        return Err((
            None,
            ApiError::not_found(format!(
                "the model `{model}` does not exist here; GET /v1/models lists the models"
            ))
            .with_param("model")
            .with_code("model_not_found"),
        ));
    };
    let pool_name = Some(pool.name.clone());
    match state.limiter.admit(&key, head.token_ceiling()).await {
        Ok(Ok(())) => {}
        Ok(Err(Refusal::Rate(secs))) => {
            return Err((
                pool_name,
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate limit of this API key reached (requests per minute)",
                )
                .with_code("rate_limit_exceeded")
                .with_retry_after(secs),
            ));
        }
        Ok(Err(Refusal::Tokens(secs))) => {
            return Err((
                pool_name,
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "token limit of this API key reached for today (UTC), or n × max_tokens of this request exceeds what is left of it",
                )
                .with_code("tokens_exceeded")
                .with_retry_after(secs),
            ));
        }
        Err(e) => return Err((pool_name, e.into())),
    }

    let path = parts.uri.path().to_string();
    let accept = parts.headers.get(header::ACCEPT).cloned();
    // Whose cached prompts this request may reuse on a node: its API key's, and its end
    // user's where the app names one (`user`), so one user's prompts never shorten
    // another's. Conversations of one scope go to the same node where load allows.
    let scope = cache_scope(&key.id, head.user.as_deref());
    let affinity = affinity_of(
        &scope,
        &ConversationStart {
            messages: head.messages,
            prompt: head.prompt,
        },
    );
    let mut tried: Vec<String> = Vec::new();
    let mut last_error = String::new();
    loop {
        let node = match wait_for_node(state, &pool, affinity, &tried).await {
            Ok(n) => n,
            Err(e) if !tried.is_empty() => {
                let _ = e;
                return Err((
                    pool_name,
                    ApiError::bad_gateway(format!(
                        "the node(s) of pool `{}` failed before answering ({last_error}); retry",
                        pool.name
                    )),
                ));
            }
            Err(e) => return Err((pool_name, e)),
        };
        let inflight = InFlight::start(node.clone());
        let upstream = match build_request(&node, &path, &body, accept.as_ref(), &scope) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, node = %node.id, "cannot build the node request");
                return Err((pool_name, ApiError::internal()));
            }
        };
        match node.client.request(upstream).await {
            Ok(resp)
                if resp.status() == StatusCode::SERVICE_UNAVAILABLE
                    && pool
                        .pick(affinity, &with(&tried, &node.id), state.tuning.stale_after)
                        .is_some() =>
            {
                tracing::info!(node = %node.id, pool = %pool.name, "node busy (503); trying another");
                state.metrics.retry(&pool.name);
                tried.push(node.id.clone());
            }
            Ok(resp) => {
                state
                    .metrics
                    .first_byte(&pool.name, started.elapsed().as_secs_f64());
                let (rparts, rbody) = resp.into_parts();
                let info = TapInfo {
                    state: state.clone(),
                    key_id: key.id.clone(),
                    pool: pool.name.clone(),
                    model: model.to_string(),
                    endpoint: path.clone(),
                    status: rparts.status.as_u16(),
                    started,
                    at,
                    streaming,
                    count_tokens: key.limits.tokens_per_day.is_some(),
                };
                let mut out = Response::new(Body::new(TappedBody::new(rbody, info, inflight)));
                *out.status_mut() = rparts.status;
                for (name, value) in rparts.headers.iter() {
                    if !is_hop_by_hop(name) {
                        out.headers_mut().append(name.clone(), value.clone());
                    }
                }
                if streaming {
                    out.headers_mut()
                        .insert("x-accel-buffering", HeaderValue::from_static("no"));
                }
                return Ok(out);
            }
            Err(e) => {
                tracing::warn!(node = %node.id, pool = %pool.name, error = %e, "node failed before the first byte; trying another");
                node.mark_failed();
                state.metrics.retry(&pool.name);
                last_error = error_chain(&e);
                tried.push(node.id.clone());
            }
        }
    }
}

fn with(tried: &[String], id: &str) -> Vec<String> {
    let mut v = tried.to_vec();
    v.push(id.to_string());
    v
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
    )
}

fn build_request(
    node: &NodeHandle,
    path: &str,
    body: &Bytes,
    accept: Option<&HeaderValue>,
    scope: &str,
) -> Result<hyper::Request<Full<Bytes>>, axum::http::Error> {
    let mut b = hyper::Request::builder()
        .method(Method::POST)
        .uri(format!("{}{}", node.api_url, path))
        .header(header::CONTENT_TYPE, "application/json")
        // The node's credential; the client's own Authorization (its API key) never
        // leaves the ingress.
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", node.api_token.expose()),
        )
        // The node reuses cached prompt prefixes only within one scope.
        .header(dayshift_config::protocol::CACHE_SCOPE_HEADER, scope);
    if let Some(a) = accept {
        b = b.header(header::ACCEPT, a.clone());
    }
    b.body(Full::new(body.clone()))
}

/// The node to send to: the least-loaded routable one; if none, waits (bounded by the
/// pool's queue timeout) while a node is on its way. A pool with no node wanted whose
/// range allows one (an elastic window at zero, or `wake_on_demand` outside windows) is
/// woken: the request asks the scheduler for a node and waits for it — or, when the
/// pool's cold start is longer than its queue timeout, gets `503` + `Retry-After` with
/// the expected ready time at once. Otherwise `503` + `Retry-After` with the next window.
async fn wait_for_node(
    state: &SharedState,
    pool: &Arc<PoolRuntime>,
    affinity: Option<u64>,
    tried: &[String],
) -> Result<Arc<NodeHandle>, ApiError> {
    let stale = state.tuning.stale_after;
    // Fast path: a routable node now (no wake-up registration, no timer).
    if let Some(n) = pool.pick(affinity, tried, stale) {
        return Ok(n);
    }
    let started = tokio::time::Instant::now();
    let deadline = started + pool.queue_timeout;
    let _queued = Queued::start(pool.clone());
    let mut counted = false;
    // When this request woke the pool, and the wait it was told to expect.
    let mut woke: Option<(chrono::DateTime<chrono::Utc>, Duration)> = None;
    loop {
        let notified = pool.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(n) = pool.pick(affinity, tried, stale) {
            return Ok(n);
        }
        if pool.on_the_way() == 0 {
            match woke {
                None if tried.is_empty() && may_wake(state, pool) => {
                    let expected = wake(state, pool).await?;
                    woke = Some((state.clock.now(), expected));
                    if expected > pool.queue_timeout {
                        return Err(waking(pool, expected));
                    }
                }
                None => {
                    // A wake the budget refused (for an earlier request) stands until the
                    // scheduler takes it back: say so rather than "outside its hours".
                    let scale = pool.scale();
                    if let Some(why) = scale.refused.filter(|_| scale.target.unwrap_or(0) > 0) {
                        return Err(wake_refused(pool, &why));
                    }
                    return Err(no_node(state, pool));
                }
                Some((at, _)) => {
                    let scale = pool.scale();
                    if let Some(why) = scale.refused.filter(|_| {
                        scale
                            .decided_at
                            .is_some_and(|d| d >= at - chrono::Duration::seconds(1))
                    }) {
                        return Err(wake_refused(pool, &why));
                    }
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            if let Some((_, expected)) = woke {
                return Err(waking(pool, expected.saturating_sub(started.elapsed())));
            }
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                format!(
                    "a node of pool `{}` is starting but was not ready within {} s; retry shortly",
                    pool.name,
                    pool.queue_timeout.as_secs()
                ),
            )
            .with_code("node_starting")
            .with_retry_after(pool.queue_timeout.as_secs().clamp(1, 60)));
        }
        if !counted {
            counted = true;
            state.metrics.queued(&pool.name);
        }
        let tick = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        let _ = tokio::time::timeout_at(tick, notified).await;
    }
}

/// True when `pool` has no node wanted now but its range allows one: the scheduler's
/// target is 0 (or not decided yet and the range's floor is 0) and the range's top is
/// at least 1.
fn may_wake(state: &SharedState, pool: &PoolRuntime) -> bool {
    let range = state.pool_range(&pool.name, state.clock.now());
    let target = pool.scale().target.unwrap_or(range.min);
    range.max >= 1 && target == 0
}

/// Asks the scheduler (through the store, so the leader sees it from any replica) to
/// wake `pool`; returns the wait to expect (the pool's cold start).
async fn wake(state: &SharedState, pool: &PoolRuntime) -> Result<Duration, ApiError> {
    let now = state.clock.now();
    if let Err(e) = state.store.request_wake(&pool.name, now).await {
        tracing::error!(pool = %pool.name, error = %e, "cannot record a wake request");
        return Err(ApiError::internal());
    }
    tracing::info!(pool = %pool.name, "a request found no node: waking the pool");
    state.metrics.wake(&pool.name);
    let _ = state
        .notices
        .send(crate::control::NodeNotice::WakeRequested {
            pool: pool.name.clone(),
        });
    Ok(pool.scale().cold_start)
}

/// `503` for a pool that may not start a node (the month's budget).
fn wake_refused(pool: &PoolRuntime, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        format!(
            "pool `{}` has no node and may not start one: {why}",
            pool.name
        ),
    )
    .with_code("wake_refused")
}

/// `503` for a woken pool whose node is expected in `wait`.
fn waking(pool: &PoolRuntime, wait: Duration) -> ApiError {
    let secs = wait.as_secs().max(1);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        format!(
            "pool `{}` had no node running; one is starting and is expected ready in about {}; retry then",
            pool.name,
            human(secs)
        ),
    )
    .with_code("node_waking")
    .with_retry_after(secs)
}

fn no_node(state: &SharedState, pool: &PoolRuntime) -> ApiError {
    let now = state.clock.now();
    let (message, retry) = match state.next_window(&pool.name, now) {
        Some(start) if start > now => {
            let secs = (start - now).num_seconds().max(1) as u64;
            (
                format!(
                    "no node of pool `{}` runs outside its hours; the next window opens at {} \
                     (in {})",
                    pool.name,
                    start.to_rfc3339(),
                    human(secs)
                ),
                secs,
            )
        }
        Some(_) => (
            format!(
                "the window of pool `{}` is open but no node is ready yet; retry shortly",
                pool.name
            ),
            30,
        ),
        None => (
            format!(
                "no node of pool `{}` is running and no window is scheduled in the next 31 days",
                pool.name
            ),
            3600,
        ),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
        .with_code("no_node_available")
        .with_retry_after(retry)
}

fn human(secs: u64) -> String {
    let (d, h, m) = (secs / 86400, (secs % 86400) / 3600, (secs % 3600) / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}
