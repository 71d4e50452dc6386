//! Putting it together: state, background tasks, listeners (TLS off, self-signed or
//! ACME, plus the port-80 redirect), graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use dayshift_config::clock::{Clock, SystemClock};
use dayshift_config::protocol::Secret;
use dayshift_config::settings::TlsMode;
use dayshift_config::{Config, Schedule};
use tokio_util::sync::CancellationToken;

use super::edge::{self, Tls};
use super::state::{AppState, SharedState, Tuning};
use super::usage_writer::UsageWriter;
use super::{app, node_api, tls, usage_writer};
use crate::store::{Store, random_hex};

/// A built server: state, routes and its background tasks.
pub struct Built {
    /// The shared state (scheduler hooks live here).
    pub state: SharedState,
    /// The routes.
    pub router: Router,
    writer: UsageWriter,
    watcher: tokio::task::JoinHandle<()>,
}

impl Built {
    /// Stops the background tasks, writing every queued usage row first.
    pub async fn shutdown(self) {
        self.watcher.abort();
        self.writer.flush_and_stop().await;
    }
}

/// The admin token: `DAYSHIFT_ADMIN_TOKEN`, else `<state_dir>/admin-token`, made on
/// first start (mode 0600).
pub fn admin_token(config: &Config) -> Result<Secret> {
    if let Ok(t) = std::env::var("DAYSHIFT_ADMIN_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(Secret::new(t.trim()));
    }
    let path = config.state_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(Secret::new(t.trim()));
    }
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let t = format!("dsa-{}", random_hex(24));
    tls::write_private(&path, t.as_bytes())?;
    tracing::info!(path = %path.display(), "made a new admin token");
    Ok(Secret::new(t))
}

/// Loads the schedule the config names (its pools checked against the config's).
pub fn load_schedule(config: &Config) -> Result<Option<Schedule>> {
    let Some(path) = &config.schedule else {
        return Ok(None);
    };
    match Schedule::load_for_pools(path, &config.pool_caps()) {
        Ok(s) => Ok(Some(s)),
        Err(problems) => bail!("{problems}"),
    }
}

/// Builds state and routes from a config (store opened and migrated).
pub async fn build(config: Config, clock: Arc<dyn Clock>, tuning: Tuning) -> Result<Built> {
    tls::install_provider();
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let schedule = load_schedule(&config)?;
    let store = Store::open(&config.database_url)
        .await
        .context("opening the store")?;
    let admin = admin_token(&config)?;
    let (usage, writer) =
        usage_writer::spawn(store.clone(), tuning.usage_batch, tuning.usage_flush);
    let state = Arc::new(AppState::new(
        config, schedule, store, clock, tuning, &admin, usage,
    ));
    let watcher = tokio::spawn(node_api::watch_heartbeats(state.clone()));
    tokio::spawn(super::in_flight_sync::run(Arc::downgrade(&state)));
    tokio::spawn(super::load_sampler::run(Arc::downgrade(&state)));
    let router = app::router(state.clone());
    Ok(Built {
        state,
        router,
        writer,
        watcher,
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: axum::http::HeaderMap, uri: Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h).to_string());
        let Some(host) = host else {
            return (StatusCode::BAD_REQUEST, "Host header needed").into_response();
        };
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let to = format!("https://{host}{port}{pq}");
        Response::builder()
            .status(StatusCode::PERMANENT_REDIRECT)
            .header(header::LOCATION, to)
            .body(axum::body::Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    })
}

/// Binds a listening socket, saying which address failed.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("listening on {addr} (in use, or a port below 1024 without the right)")
    })
}

/// `dayshift serve`: runs until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> Result<()> {
    let addr: SocketAddr = config
        .gateway
        .listen
        .parse()
        .with_context(|| format!("gateway.listen {:?}", config.gateway.listen))?;
    let http_addr: Option<SocketAddr> = match &config.gateway.http_listen {
        Some(a) => Some(
            a.parse()
                .with_context(|| format!("gateway.http_listen {a:?}"))?,
        ),
        None => None,
    };
    let tls_cfg = config.tls.clone();
    let state_dir = config.state_dir.clone();
    if tls_cfg.mode == TlsMode::SelfSigned {
        // Made before the scheduler starts: local nodes are told to trust it.
        tls::self_signed(&state_dir, &tls_cfg.domains)?;
    }
    let tuning = Tuning {
        load_sample_every: crate::control::load_sample_every_from_env(),
        ..Tuning::default()
    };
    let built = build(config, Arc::new(SystemClock), tuning).await?;
    let control =
        crate::control::start_for_serve(super::state::control_context(&built.state)).await?;
    let app = built.router.clone();
    let settings = edge::EdgeSettings::from_config(&built.state.config.gateway);
    let metrics = edge::report_to(built.state.clone());
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            stop.cancel();
        });
    }
    let redirect = match (http_addr, tls_cfg.mode != TlsMode::Off) {
        (Some(http_addr), true) => {
            let listener = bind(http_addr).await?;
            let router = redirect_router(addr.port());
            let (metrics, stop) = (metrics.clone(), stop.clone());
            Some(tokio::spawn(async move {
                let r = edge::serve(listener, router, Tls::Off, settings, metrics, stop).await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "the HTTP redirect listener failed");
                }
            }))
        }
        _ => None,
    };
    let tls = match tls_cfg.mode {
        TlsMode::Off => {
            tracing::info!(%addr, "listening (plain HTTP, tls = off)");
            Tls::Off
        }
        TlsMode::SelfSigned => {
            let (cert, key) = tls::self_signed(&state_dir, &tls_cfg.domains)?;
            tracing::info!(%addr, "listening (HTTPS, self-signed certificate)");
            Tls::Rustls(tls::server_config(&cert, &key)?)
        }
        TlsMode::Acme => {
            let acceptor = tls::acme_acceptor(&tls_cfg, &state_dir)?;
            tracing::info!(%addr, domains = ?tls_cfg.domains, directory = %tls_cfg.directory, "listening (HTTPS, ACME)");
            Tls::Acme(acceptor)
        }
    };
    let listener = bind(addr).await?;
    let result = edge::serve(listener, app, tls, settings, metrics, stop).await;
    if let Some(r) = redirect {
        let _ = r.await;
    }
    if let Some(c) = control {
        c.shutdown().await;
    }
    built.shutdown().await;
    result.with_context(|| format!("serving on {addr}"))?;
    tracing::info!("stopped");
    Ok(())
}
