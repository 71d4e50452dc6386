//! Request bodies at the edge (a middleware on every route): a body announced larger
//! than `gateway.max_body_bytes` is refused with `413` before it is read, one that grows
//! past it with `413`, one that does not arrive within `gateway.body_read_timeout` of
//! its head with `408` — each with `Connection: close` on HTTP/1. A body a handler
//! answered without reading (an early `401` or `404`) is drained first, within the same
//! bounds, so that the client reads the answer: an HTTP/2 stream then ends cleanly
//! instead of being reset under the client's upload, and an HTTP/1 connection stays in
//! step for its next request. When the drain cannot finish, the answer carries
//! `Connection: close`: too large or the client waits for `100 Continue` → the
//! handler's answer; too slow → `408` (the request never arrived whole).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use crate::server::errors::ApiError;
use crate::server::state::SharedState;

/// What became of a request body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Still being read (or never touched).
    Open,
    /// Read to its end.
    Done,
    /// Did not arrive in time.
    TimedOut,
    /// Larger than the limit.
    TooLarge,
    /// The client's stream failed (reset, closed mid-body).
    Failed,
}

/// The body and its bookkeeping, shared by the handler's view and the middleware.
struct Shared {
    inner: Mutex<(Option<Body>, Outcome)>,
    read: AtomicU64,
    polled: AtomicBool,
    limit: u64,
}

/// The body a handler sees: the client's body, bounded in size and time.
struct Bounded {
    shared: Arc<Shared>,
    deadline: Pin<Box<Sleep>>,
}

impl HttpBody for Bounded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.shared.polled.store(true, Ordering::Relaxed);
        let shared = self.shared.clone();
        let Ok(mut guard) = shared.inner.lock() else {
            return Poll::Ready(Some(Err(axum::Error::new("request body state poisoned"))));
        };
        let (slot, outcome) = &mut *guard;
        if *outcome != Outcome::Open {
            return Poll::Ready(ended(*outcome));
        }
        let Some(body) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = shared.read.fetch_add(data.len() as u64, Ordering::Relaxed)
                        + data.len() as u64;
                    if n > shared.limit {
                        *outcome = Outcome::TooLarge;
                        *slot = None;
                        return Poll::Ready(ended(Outcome::TooLarge));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *outcome = Outcome::Failed;
                *slot = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                *outcome = Outcome::Done;
                *slot = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    *outcome = Outcome::TimedOut;
                    *slot = None;
                    return Poll::Ready(ended(Outcome::TimedOut));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.shared.inner.lock() {
            Ok(g) => g.1 != Outcome::Open || g.0.as_ref().is_none_or(|b| b.is_end_stream()),
            Err(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.shared.inner.lock() {
            Ok(g) => g.0.as_ref().map(|b| b.size_hint()).unwrap_or_default(),
            Err(_) => SizeHint::default(),
        }
    }
}

/// What a handler reading past a failed body sees.
fn ended(outcome: Outcome) -> Option<Result<Frame<Bytes>, axum::Error>> {
    match outcome {
        Outcome::Open | Outcome::Done => None,
        Outcome::TimedOut => Some(Err(axum::Error::new("request body read timed out"))),
        Outcome::TooLarge => Some(Err(axum::Error::new("request body too large"))),
        Outcome::Failed => Some(Err(axum::Error::new("request body failed"))),
    }
}

/// The body middleware (see the module doc). Requests without a body pass untouched.
pub async fn guard(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let g = &state.config.gateway;
    let limit = g.max_body_bytes;
    let timeout = Duration::from_secs(g.body_read_timeout_secs);
    let h1 = req.version() < Version::HTTP_2;
    if announced(req.headers(), req.body().size_hint()).is_some_and(|n| n > limit) {
        state.metrics.connection_closed("body_too_large");
        return close(too_large(limit), h1);
    }
    let expects_continue = h1 && expects_continue(req.headers());
    let deadline = Instant::now() + timeout;
    let (parts, body) = req.into_parts();
    let shared = Arc::new(Shared {
        inner: Mutex::new((Some(body), Outcome::Open)),
        read: AtomicU64::new(0),
        polled: AtomicBool::new(false),
        limit,
    });
    let bounded = || Bounded {
        shared: shared.clone(),
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
    };
    let resp = next
        .run(Request::from_parts(parts, Body::new(bounded())))
        .await;
    match outcome(&shared) {
        Outcome::Done => resp,
        Outcome::TimedOut => {
            state.metrics.connection_closed("body_timeout");
            close(timed_out(timeout), h1)
        }
        Outcome::TooLarge => {
            state.metrics.connection_closed("body_too_large");
            close(too_large(limit), h1)
        }
        Outcome::Failed => close(resp, h1),
        Outcome::Open => {
            // Answered without reading the body: drain it (bounded) so the client can
            // read the answer, unless it still waits for `100 Continue`.
            if expects_continue && !shared.polled.load(Ordering::Relaxed) {
                return close(resp, h1);
            }
            let mut rest = bounded();
            while let Some(Ok(_)) = rest.frame().await {}
            match outcome(&shared) {
                Outcome::Done => resp,
                Outcome::TimedOut => {
                    // The request never arrived whole: that is the answer.
                    state.metrics.connection_closed("body_timeout");
                    close(timed_out(timeout), h1)
                }
                Outcome::TooLarge => {
                    state.metrics.connection_closed("body_too_large");
                    close(resp, h1)
                }
                _ => close(resp, h1),
            }
        }
    }
}

fn outcome(shared: &Shared) -> Outcome {
    shared.inner.lock().map(|g| g.1).unwrap_or(Outcome::Failed)
}

/// The body length the client announced (`Content-Length`), if any.
fn announced(headers: &HeaderMap, hint: SizeHint) -> Option<u64> {
    hint.exact().or_else(|| {
        headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    })
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Marks an HTTP/1 answer as the connection's last (HTTP/2 has no such header: its
/// stream ends with the answer).
fn close(mut resp: Response, h1: bool) -> Response {
    if h1 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn too_large(limit: u64) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!("request body larger than the limit of {limit} bytes (gateway.max_body_bytes)"),
    )
    .with_code("request_too_large")
    .into_response()
}

fn timed_out(timeout: Duration) -> Response {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        format!(
            "the request body did not arrive within {} s of its headers (gateway.body_read_timeout); \
             send the whole body at once",
            timeout.as_secs()
        ),
    )
    .with_code("request_timeout")
    .into_response()
}
