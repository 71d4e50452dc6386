//! The response body from a node, passed to the client frame by frame (never buffered),
//! while a tap reads the token usage out of it; when the body ends (or the client goes
//! away) the usage row and metrics are recorded and the node's in-flight count drops.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::registry::InFlight;
use super::state::SharedState;
use crate::store::UsageRow;

/// Most bytes of a non-streaming answer kept to read its `usage`.
const MAX_JSON_TAP: usize = 1 << 20;

/// What is known about the request when its response starts.
pub struct TapInfo {
    /// State (usage sender, metrics, limiter).
    pub state: SharedState,
    /// API key id.
    pub key_id: String,
    /// Pool.
    pub pool: String,
    /// Model.
    pub model: String,
    /// Endpoint path.
    pub endpoint: String,
    /// HTTP status sent.
    pub status: u16,
    /// When the request arrived.
    pub started: Instant,
    /// Wall-clock arrival (unix ms).
    pub at: i64,
    /// SSE or one JSON document.
    pub streaming: bool,
    /// Whether the key has a daily token limit (its counter needs the tokens).
    pub count_tokens: bool,
}

/// Only the `usage` of an answer (everything else is skipped without allocating).
#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<UsageFields>,
}

#[derive(serde::Deserialize)]
struct UsageFields {
    #[serde(default)]
    prompt_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens: Option<i64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(serde::Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<i64>,
}

/// The body wrapper.
pub struct TappedBody {
    inner: Incoming,
    info: TapInfo,
    inflight: Option<InFlight>,
    /// SSE: the unfinished line. JSON: unused (see `chunks`).
    buf: Vec<u8>,
    /// JSON answers: the frames as received (reference-counted, not copied).
    chunks: Vec<Bytes>,
    chunk_bytes: usize,
    prompt: i64,
    /// Of `prompt`, the tokens the node took from its prefix cache.
    cached: i64,
    completion: i64,
    events: i64,
    done: bool,
}

impl TappedBody {
    /// Wraps a node's response body.
    pub fn new(inner: Incoming, info: TapInfo, inflight: InFlight) -> TappedBody {
        TappedBody {
            inner,
            info,
            inflight: Some(inflight),
            buf: Vec::new(),
            chunks: Vec::new(),
            chunk_bytes: 0,
            prompt: 0,
            cached: 0,
            completion: 0,
            events: 0,
            done: false,
        }
    }

    fn feed(&mut self, data: &Bytes) {
        if self.info.streaming {
            self.buf.extend_from_slice(data);
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                self.sse_line(&line);
            }
            if self.buf.len() > MAX_JSON_TAP {
                self.buf.clear();
            }
        } else if self.chunk_bytes + data.len() <= MAX_JSON_TAP {
            self.chunk_bytes += data.len();
            self.chunks.push(data.clone());
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let Some(rest) = line.strip_prefix(b"data:") else {
            return;
        };
        let rest = rest.trim_ascii();
        if rest == b"[DONE]" || rest.is_empty() {
            return;
        }
        self.events += 1;
        if memchr_usage(rest)
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest)
        {
            self.take_usage(&v);
        }
    }

    fn take_usage(&mut self, v: &serde_json::Value) {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.prompt = u.get("prompt_tokens").and_then(|x| x.as_i64()).unwrap_or(0);
            self.cached = u
                .pointer("/prompt_tokens_details/cached_tokens")
                .and_then(|x| x.as_i64())
                .unwrap_or(0);
            self.completion = u
                .get("completion_tokens")
                .and_then(|x| x.as_i64())
                .unwrap_or(0);
        }
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.info.streaming {
            let joined;
            let doc: &[u8] = match self.chunks.as_slice() {
                [one] => &one[..],
                many => {
                    joined = many.concat();
                    &joined
                }
            };
            if let Ok(doc) = serde_json::from_slice::<UsageOnly>(doc)
                && let Some(u) = doc.usage
            {
                self.prompt = u.prompt_tokens.unwrap_or(0);
                self.cached = u
                    .prompt_tokens_details
                    .and_then(|d| d.cached_tokens)
                    .unwrap_or(0);
                self.completion = u.completion_tokens.unwrap_or(0);
            }
        } else if self.prompt == 0 && self.completion == 0 {
            // No usage chunk (the client did not ask for one): count content events.
            self.completion = self.events.saturating_sub(1).max(0);
        }
        self.buf = Vec::new();
        self.chunks = Vec::new();
        let node_id = self.inflight.take().map(|f| f.0.id.clone());
        let i = &self.info;
        let elapsed = i.started.elapsed();
        i.state
            .metrics
            .request(&i.pool, i.status, elapsed.as_secs_f64());
        // (never more than the prompt, whatever a node says)
        self.cached = self.cached.clamp(0, self.prompt.max(0));
        i.state.metrics.tokens(
            &i.pool,
            self.prompt.max(0) as u64,
            self.cached as u64,
            self.completion.max(0) as u64,
        );
        if i.count_tokens {
            i.state
                .limiter
                .add_tokens(&i.key_id, self.prompt + self.completion);
        }
        let i = &mut self.info;
        let row = UsageRow {
            at: i.at,
            key_id: std::mem::take(&mut i.key_id),
            pool: std::mem::take(&mut i.pool),
            node_id,
            model: std::mem::take(&mut i.model),
            endpoint: std::mem::take(&mut i.endpoint),
            status: i64::from(i.status),
            prompt_tokens: self.prompt,
            cached_tokens: self.cached,
            completion_tokens: self.completion,
            latency_ms: elapsed.as_millis() as i64,
        };
        if i.state.usage.send(row).is_err() {
            tracing::warn!("usage writer has stopped; a usage row was not recorded");
        }
    }
}

fn memchr_usage(s: &[u8]) -> bool {
    s.windows(7).any(|w| w == b"\"usage\"")
}

impl Body for TappedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.feed(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, pool = %this.info.pool, "node response broke off");
                this.finish();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TappedBody {
    fn drop(&mut self) {
        self.finish();
    }
}
