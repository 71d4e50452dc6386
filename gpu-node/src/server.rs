//! `dayshift-node serve`: load models, serve the API, run the agent, drain on SIGTERM.

use crate::agent::{Agent, NodeFacts};
use crate::api::access::NodeAccess;
use crate::api::{self, AppState, GenService, Served};
use crate::engine::{self, EngineLimits};
use crate::metrics::Metrics;
use crate::model::{self, LoadedModel};
use crate::{device, source, tls};
use anyhow::Context;
use dayshift_config::memory::{self, ModelMemory};
use dayshift_config::node::NodeConfig;
use dayshift_config::protocol::{
    Capacity, GpuFacts, ModelKind, NodeState, ServedModel, StartFailureKind,
};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::watch;

async fn wait_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            std::future::pending::<()>().await;
            return "signal";
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

/// Logs why the node cannot start, reports it to the ingress (when there is one) and
/// returns the error to exit with.
async fn give_up(
    agent: &Option<Arc<Agent>>,
    kind: StartFailureKind,
    error: anyhow::Error,
    gpus: Vec<GpuFacts>,
) -> anyhow::Error {
    let reason = format!("{error:#}");
    tracing::error!(kind = kind.as_str(), "cannot start: {reason}");
    if let Some(a) = agent {
        a.report_start_failure(kind, &reason, gpus).await;
    }
    error
}

/// Runs the node until SIGTERM (or a drain order) and the drain that follows. A node
/// that cannot start (device, model, memory) reports why to the ingress and returns the
/// error.
pub async fn serve(cfg: NodeConfig) -> anyhow::Result<()> {
    // With an ingress, the API answers only it: a fresh token for this process's life,
    // sent in the registration. Without one (benchmarks, trials) it is open.
    let (api_token, access) = match &cfg.ingress_url {
        Some(_) => {
            let (t, a) = NodeAccess::generate();
            (Some(t), a)
        }
        None => (None, NodeAccess::Open),
    };
    let agent = Agent::new(&cfg, api_token.unwrap_or_default())?.map(Arc::new);
    let metrics = Arc::new(Metrics::new());
    let app = AppState::new(metrics.clone(), access);
    let tls = match tls::server_config(&cfg.tls).await {
        Ok(t) => t,
        Err(e) => return Err(give_up(&agent, StartFailureKind::Other, e, vec![]).await),
    };
    let fingerprint = tls.as_ref().map(|(_, f)| f.clone());
    let handle = axum_server::Handle::<std::net::SocketAddr>::new();
    let router = api::router(app.clone());
    let listener = match std::net::TcpListener::bind(cfg.listen)
        .with_context(|| format!("cannot listen on {}", cfg.listen))
    {
        Ok(l) => l,
        Err(e) => return Err(give_up(&agent, StartFailureKind::Other, e, vec![]).await),
    };
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let server = {
        let handle = handle.clone();
        let svc = router.into_make_service();
        match tls {
            Some((rc, _)) => tokio::spawn(async move {
                axum_server::from_tcp_rustls(listener, rc)?
                    .handle(handle)
                    .serve(svc)
                    .await
            }),
            None => tokio::spawn(async move {
                axum_server::from_tcp(listener)?
                    .handle(handle)
                    .serve(svc)
                    .await
            }),
        }
    };
    tracing::info!(addr = %local, tls = fingerprint.is_some(), "API listening (state: loading)");
    if agent.is_none() {
        tracing::warn!(
            addr = %local,
            "no ingress_url: standalone node, its API answers anyone who reaches {local}"
        );
    }
    if let Some(fp) = &fingerprint {
        tracing::info!("TLS certificate sha256 {fp}");
    }

    let dev = match device::select(&cfg.engine.device) {
        Ok(d) => d,
        Err(e) => return Err(give_up(&agent, StartFailureKind::NoDevice, e, vec![]).await),
    };
    tracing::info!(backend = %dev.facts.backend, name = %dev.facts.name, "device");
    let gpus = || vec![dev.facts.clone()];
    let mut kv_total = 0u64;
    let mut kv_bytes_reserved = 0u64;
    let mut max_ctx = 0usize;
    let mut warming = Vec::new();
    for m in &cfg.models {
        let dir = match source::resolve(&cfg, m).await {
            Ok(d) => d,
            Err(e) => return Err(give_up(&agent, StartFailureKind::Model, e, gpus()).await),
        };
        // The same figure the ingress checks a pool against (`dayshift config check`).
        // A model the calculation cannot read is left to the load, which says why.
        let target = model::target_of(&dev.device);
        // What the model will take after the load (candle's x86 repacked copies, made on
        // first use, and a prefill chunk's activations): the KV cache is sized without it.
        let mut later = 0u64;
        match ModelMemory::of(&dir, m.dtype.as_deref(), m.quantize.as_deref(), target) {
            Ok(mem) => {
                let need = mem.need(&cfg.engine);
                // The prefill activations are taken at run time too: left out of the cache.
                later = mem.repacked + need.activations;
                let free = device::free_memory(&dev).saturating_sub(kv_bytes_reserved);
                tracing::info!(model = %m.name, need = %need.figures(), free = %memory::gib(free), "memory");
                if let Err(why) = memory::check_fits(&m.name, &need, free, &dev.facts.name) {
                    let e = anyhow::anyhow!(why);
                    return Err(give_up(&agent, StartFailureKind::DoesNotFit, e, gpus()).await);
                }
            }
            Err(why) => tracing::debug!(model = %m.name, "memory need not computed: {why}"),
        }
        let t0 = Instant::now();
        let device = dev.device.clone();
        let dtype = m.dtype.clone();
        let quantize = m.quantize.clone();
        let d2 = dir.clone();
        let loaded = match tokio::task::spawn_blocking(move || {
            model::load_quantized(&d2, dtype.as_deref(), quantize.as_deref(), &device)
        })
        .await
        .context("model loading task failed")
        .and_then(|r| r.with_context(|| format!("cannot load model {:?}", m.name)))
        {
            Ok(l) => l,
            Err(e) => return Err(give_up(&agent, StartFailureKind::Model, e, gpus()).await),
        };
        match loaded {
            LoadedModel::Generation(g) => {
                let ctx = g.llama.config().max_position_embeddings;
                // What the KV cache may take: free memory less what earlier models' caches,
                // graphs, repacks and activations will take, and this model's CUDA graphs
                // (captured after the cache is allocated), repacked copies and activations.
                let graphs = memory::cuda_graph_bytes(target, &cfg.engine);
                let free = device::free_memory(&dev)
                    .saturating_sub(kv_bytes_reserved)
                    .saturating_sub(graphs)
                    .saturating_sub(later);
                let per_token = g.llama.kv_bytes_per_token();
                let kv = match memory::kv_cache_tokens(
                    &cfg.engine,
                    free,
                    per_token as u64,
                    ctx as u64,
                ) {
                    Ok(kv) => kv as usize,
                    Err(why) => {
                        let e = anyhow::anyhow!("model {:?}: {why}", m.name);
                        return Err(give_up(&agent, StartFailureKind::DoesNotFit, e, gpus()).await);
                    }
                };
                kv_bytes_reserved += (kv * per_token) as u64 + graphs + later;
                let limits = EngineLimits {
                    max_running: cfg.engine.max_running_sequences as usize,
                    kv_tokens: kv,
                    prefill_chunk: cfg.engine.prefill_chunk_tokens as usize,
                    max_queued: cfg.engine.max_queued_requests as usize,
                    cuda_graphs: cfg.engine.cuda_graphs,
                    overlap: engine::Overlap::OnDevice,
                    prefix_cache: cfg.engine.prefix_cache,
                };
                kv_total += kv as u64;
                max_ctx = max_ctx.max(ctx);
                let info = ServedModel {
                    id: m.name.clone(),
                    kind: ModelKind::Generation,
                    architecture: g.architecture.clone(),
                    context_length: ctx as u32,
                    dtype: model::dtype_name(g.llama.dtype()).into(),
                };
                let g: Arc<model::GenerationModel> = Arc::from(g);
                let (engine, warmed) = engine::start(g.clone(), limits, metrics.clone());
                warming.push((m.name.clone(), warmed));
                app.add_model(
                    m.name.clone(),
                    Served::Generation(GenService { model: g, engine }),
                    info,
                );
                tracing::info!(model = %m.name, dir = %dir.display(), kv_tokens = kv, secs = t0.elapsed().as_secs_f64(), "generation model loaded");
            }
            LoadedModel::Embedding(e) => {
                let info = ServedModel {
                    id: m.name.clone(),
                    kind: ModelKind::Embedding,
                    architecture: "bert".into(),
                    context_length: e.max_tokens as u32,
                    dtype: model::dtype_name(e.dtype).into(),
                };
                app.add_model(m.name.clone(), Served::Embedding(Arc::from(e)), info);
                tracing::info!(model = %m.name, dir = %dir.display(), secs = t0.elapsed().as_secs_f64(), "embedding model loaded");
            }
        }
    }
    // Ready (and so registered with the ingress) only once every engine has warmed up:
    // on a fresh GPU server that is the kernels' load and the decode graphs' capture.
    for (name, warmed) in warming {
        if warmed.await.is_err() {
            tracing::warn!(model = %name, "the engine stopped before it warmed up");
        }
    }
    app.set_state(NodeState::Ready);
    tracing::info!("ready");

    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, mut drain_rx) = watch::channel(false);
    let agent_task = agent.clone().map(|a| {
        let facts = NodeFacts {
            api_url: cfg.advertise_url.clone().unwrap_or_else(|| {
                let scheme = if fingerprint.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{local}")
            }),
            tls_cert_sha256: fingerprint.clone(),
            gpus: vec![dev.facts.clone()],
            capacity: Capacity {
                max_running_sequences: cfg.engine.max_running_sequences,
                kv_cache_tokens: kv_total,
                max_queued_requests: cfg.engine.max_queued_requests,
            },
        };
        tokio::spawn(a.run(app.clone(), facts, stop_rx.clone(), drain_tx.clone()))
    });

    let reason = tokio::select! {
        s = wait_signal() => s,
        _ = drain_rx.changed() => "drain requested by the ingress",
        r = server => {
            stop_engines(&app).await;
            anyhow::bail!("the API server stopped: {r:?}");
        }
    };
    tracing::info!("{reason}: draining (no new requests, finishing running ones)");
    app.set_state(NodeState::Draining);
    let deadline = Instant::now() + Duration::from_secs(cfg.drain_grace_secs);
    loop {
        let busy =
            metrics.http_in_flight.load(Relaxed) > 0 || app.engines().iter().any(|e| !e.idle());
        if !busy {
            tracing::info!("drained");
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                "grace period of {}s over: exiting with requests still running",
                cfg.drain_grace_secs
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    if let Some(t) = agent_task {
        let _ = t.await;
    }
    if let Some(a) = &agent {
        a.goodbye(reason).await;
    }
    handle.graceful_shutdown(Some(Duration::from_secs(1)));
    stop_engines(&app).await;
    tracing::info!("bye");
    Ok(())
}

/// Stops every engine thread and waits for it to free its device memory, so that no
/// thread touches the GPU while the process exits (see [`engine::EngineHandle::shutdown`]).
async fn stop_engines(app: &AppState) {
    for e in app.engines() {
        e.shutdown(Duration::from_secs(30)).await;
    }
}
