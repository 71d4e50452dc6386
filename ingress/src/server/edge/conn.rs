//! One client connection: HTTP/1 or HTTP/2 through hyper, with the edge's own clock on
//! it. A connection with no request in progress is closed when
//! - its first request's head has not arrived `header_read` after the connection began
//!   (after the TLS handshake),
//! - an HTTP/1 request head has not arrived `header_read` after its first byte, or
//! - nothing was asked of it for `idle` since its last answer ended.
//!
//! (hyper's own `header_read_timeout` also runs while an HTTP/1 connection waits idle
//! between requests, so it would cut keep-alive short; this clock tells the two apart.)
//! A connection is never closed this way while a request on it is in flight.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{EdgeSettings, Event, Report};

const NONE: u64 = u64::MAX;

/// What a connection is doing, shared by its reader, its requests and its watcher.
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    h2: AtomicBool,
    /// Milliseconds since `born` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `born` of the first byte read while idle (`NONE`: none).
    head_since: AtomicU64,
    woken: Notify,
}

impl Activity {
    fn new(h2: bool) -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            h2: AtomicBool::new(h2),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            woken: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }

    /// When the connection is to be closed if nothing changes, and why; `None` while a
    /// request is in flight.
    fn deadline(&self, s: &EdgeSettings) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Acquire) {
            return Some((self.born + s.header_read, "header_timeout"));
        }
        let idle = (
            self.at(self.idle_since.load(Ordering::Acquire)) + s.idle,
            "idle_timeout",
        );
        let head = self.head_since.load(Ordering::Acquire);
        if head != NONE && !self.h2.load(Ordering::Relaxed) {
            let header = self.at(head) + s.header_read;
            if header < idle.0 {
                return Some((header, "header_timeout"));
            }
        }
        Some(idle)
    }

    fn request_started(self: &Arc<Self>, version: Version) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        self.head_since.store(NONE, Ordering::Release);
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
            && self
                .head_since
                .compare_exchange(NONE, self.now_ms(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.woken.notify_one();
        }
    }
}

/// A request in flight on its connection, until its answer's body ends or is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request counted as in flight.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's stream, noting when bytes arrive.
struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The hyper connection builder for `s`: HTTP/1 keep-alive without hyper's header
/// timer (the edge's clock above replaces it), HTTP/2 with keep-alive pings so a dead
/// peer of a long stream is noticed.
pub fn builder(s: &EdgeSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(s.header_read.max(Duration::from_secs(5)));
    b
}

/// Serves one connection until it ends, its clock closes it, or shutdown (then its
/// requests in flight finish). `h2` says that TLS negotiated HTTP/2.
pub async fn serve<IO>(
    io: IO,
    h2: bool,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    s: EdgeSettings,
    report: Report,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new(h2);
    let io = Watched {
        io,
        activity: activity.clone(),
    };
    let a = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = a.request_started(req.version());
        let router = router.clone();
        async move {
            let resp: Response<Body> = match router.oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|inner| {
                Body::new(Tracked {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    let mut hard_stop: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wake = match activity.deadline(&s) {
            Some((at, reason)) if at <= now && !closing => {
                tracing::debug!(reason, "closing a client connection");
                report(Event::Closed(reason));
                if !activity.h2.load(Ordering::Relaxed) {
                    // HTTP/1 with no request in flight: nothing to finish.
                    return;
                }
                // HTTP/2: GOAWAY first, then close (at the latest 1 s later).
                conn.as_mut().graceful_shutdown();
                closing = true;
                hard_stop = Some(now + Duration::from_secs(1));
                continue;
            }
            Some((at, _)) if !closing => at,
            _ => now + s.header_read.min(s.idle),
        };
        let wake = match hard_stop {
            Some(h) if activity.in_flight.load(Ordering::Acquire) == 0 => {
                if h <= now {
                    return;
                }
                wake.min(h)
            }
            _ => wake,
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = activity.woken.notified() => {}
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}
