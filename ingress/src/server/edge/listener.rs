//! The accept loop: TCP → per-address admission → TLS handshake (bounded by
//! `header_read`) → one task per connection (`conn::serve`); on shutdown, stops
//! accepting and gives the connections' requests in flight `grace` to finish.

use std::io;
use std::sync::Arc;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::per_address::PerAddress;
use super::{EdgeSettings, Event, Report, conn};

/// How a listener speaks.
#[derive(Clone)]
pub enum Tls {
    /// Plain HTTP (HTTP/1, or HTTP/2 with prior knowledge).
    Off,
    /// TLS with a fixed certificate; ALPN as configured (`h2`, `http/1.1`).
    Rustls(Arc<rustls::ServerConfig>),
    /// TLS through rustls-acme, which answers TLS-ALPN-01 challenges itself.
    Acme(rustls_acme::axum::AxumAcceptor),
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits up to
/// `settings.grace` for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Tls,
    settings: EdgeSettings,
    report: Report,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let table = PerAddress::new(settings.max_per_address);
    let builder = Arc::new(conn::builder(&settings));
    // Each connection task holds a sender; all dropped = all connections done.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(admitted) = table.admit(peer.ip()) else {
            report(Event::Refused("per_address_limit"));
            tracing::debug!(%peer, "refused: too many connections from this address");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (router, tls, builder, report, shutdown, alive) = (
            router.clone(),
            tls.clone(),
            builder.clone(),
            report.clone(),
            shutdown.clone(),
            alive.clone(),
        );
        tokio::spawn(async move {
            report(Event::Opened);
            handle(tcp, tls, router, builder, settings, &report, shutdown).await;
            report(Event::Ended);
            drop(admitted);
            drop(alive);
        });
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(settings.grace, all_done.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = settings.grace.as_secs(),
            "requests still in flight after the grace period; closing them"
        );
    }
    Ok(())
}

async fn handle(
    tcp: TcpStream,
    tls: Tls,
    router: Router,
    builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    settings: EdgeSettings,
    report: &Report,
    shutdown: CancellationToken,
) {
    match tls {
        Tls::Off => {
            conn::serve(
                tcp,
                false,
                router,
                builder,
                settings,
                report.clone(),
                shutdown,
            )
            .await
        }
        Tls::Rustls(cfg) => {
            let accept = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp);
            match tokio::time::timeout(settings.header_read, accept).await {
                Ok(Ok(stream)) => {
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    conn::serve(
                        stream,
                        h2,
                        router,
                        builder,
                        settings,
                        report.clone(),
                        shutdown,
                    )
                    .await
                }
                Ok(Err(e)) => {
                    report(Event::Closed("tls_handshake_failed"));
                    tracing::debug!(error = %e, "TLS handshake failed");
                }
                Err(_) => report(Event::Closed("tls_handshake_timeout")),
            }
        }
        Tls::Acme(acceptor) => {
            use axum_server::accept::Accept;
            let accept = acceptor.accept(tcp, ());
            match tokio::time::timeout(settings.header_read, accept).await {
                Ok(Ok((stream, ()))) => {
                    let h2 = stream.get_ref().get_ref().1.alpn_protocol() == Some(b"h2");
                    conn::serve(
                        stream,
                        h2,
                        router,
                        builder,
                        settings,
                        report.clone(),
                        shutdown,
                    )
                    .await
                }
                // A TLS-ALPN-01 validation connection ends here, answered by rustls-acme.
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake ended"),
                Err(_) => report(Event::Closed("tls_handshake_timeout")),
            }
        }
    }
}
