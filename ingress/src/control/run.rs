//! The reconcile loop inside `dayshift serve`: it ticks when the last tick asked to
//! (`TickReport::next_tick`: busy/idle period, retry times, the schedule's next change —
//! decided and tested in the scheduler crate), at once on node events and schedule
//! reloads, and on a tokio-cron-scheduler safety job; only the leader ticks.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use dayshift_config::Schedule;
use dayshift_provisioning::Provider;
use dayshift_scheduler::budget::Budget;
use dayshift_scheduler::desired::{COLD_START_SAMPLES, expected_cold_start};
use dayshift_scheduler::reload::ScheduleSource;
use dayshift_scheduler::{ElasticPolicy, Launcher, Limits, PoolPolicy, Reconciler, TickReport};
use tokio::sync::{Notify, watch};
use tokio_cron_scheduler::{Job, JobScheduler};

use super::handle::{ControlContext, ScaleView};
use super::leader::{Leadership, try_lead};
use super::node_store::SchedulerStore;

/// Tunables of the loop (tests shorten them).
#[derive(Debug, Clone)]
pub struct ControlTuning {
    /// How often a follower tries to become the leader.
    pub lead_retry: Duration,
    /// How often the schedule file is checked for changes.
    pub schedule_poll: Duration,
    /// Loop limits (loading timeout, heartbeat grace, attempts, backoff, busy and idle
    /// tick periods).
    pub limits: Limits,
}

impl Default for ControlTuning {
    fn default() -> Self {
        ControlTuning {
            lead_retry: Duration::from_secs(2),
            schedule_poll: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }
}

/// The running scheduler; [`Control::stop`] ends it.
pub struct Control {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    cron: Option<JobScheduler>,
}

impl Control {
    /// Stops the loop after its current tick (nodes and servers stay as they are).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Some(mut c) = self.cron.take() {
            let _ = c.shutdown().await;
        }
        let _ = self.task.await;
    }
}

/// Builds the reconciler from the config and starts the loop.
pub async fn start(
    ctx: ControlContext,
    provider: Arc<dyn Provider>,
    launcher: Arc<dyn Launcher>,
    tuning: ControlTuning,
) -> Result<Option<Control>> {
    let config = &ctx.config;
    let Some(path) = config.schedule.clone() else {
        return Ok(None);
    };
    let source = ScheduleSource::load(&path, Some(config.pool_caps()))
        .map_err(|p| anyhow::anyhow!("{p}"))
        .context("loading the schedule")?;
    let schedule: Arc<RwLock<Schedule>> = source.handle();
    let pools: BTreeMap<String, PoolPolicy> = config
        .pools
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                PoolPolicy {
                    max_nodes: p.max_nodes,
                    default_cold_start: chrono::Duration::seconds(p.cold_start_secs as i64),
                    drain_timeout: chrono::Duration::seconds(p.drain_timeout_secs as i64),
                    elastic: ElasticPolicy {
                        min_nodes: p.min_nodes,
                        wake_on_demand: p.wake_on_demand,
                        target_in_flight: p.target_in_flight,
                        scale_up_after: chrono::Duration::seconds(p.scale_up_after_secs as i64),
                        scale_down_after: chrono::Duration::seconds(p.scale_down_after_secs as i64),
                        min_wake: chrono::Duration::seconds(p.min_wake_secs as i64),
                        sample_every: chrono::Duration::from_std(ctx.load_sample_every)
                            .unwrap_or(chrono::Duration::seconds(5)),
                        // Set by the loop from the provider's billing rule.
                        paid_unit: None,
                    },
                },
            )
        })
        .collect();
    let mut reconciler = Reconciler::new(
        config.cluster.clone(),
        provider,
        SchedulerStore::new(&ctx),
        ctx.clock.clone(),
        launcher,
        schedule.clone(),
        pools,
        tuning.limits.clone(),
    );
    reconciler = reconciler
        .with_background_bootstrap()
        .with_billing_rule(config.provider.billing, chrono::Duration::minutes(2));
    // The same constructor `dayshift status` uses, so both show and act on one figure.
    if let Some(budget) = Budget::from_config(config) {
        reconciler = reconciler.with_budget(budget);
    }
    for (name, p) in &config.pools {
        if p.billing_aware_stop {
            reconciler = reconciler.with_billing_aware_stop(
                name,
                config.provider.billing,
                chrono::Duration::minutes(2),
            );
        }
    }

    // Until the first tick has run, requests for a pool the schedule wants now wait for
    // its node instead of getting 503 (the tick sets the real count).
    let wanted = reconciler.desired(ctx.clock.now()).await;
    for (pool, n) in wanted {
        if n > 0 {
            ctx.routing.set_nodes_on_the_way(&pool, n);
        }
    }
    let wake = Arc::new(Notify::new());
    // Schedule reloads go to the gateway's copy too, and wake the loop.
    let watcher = {
        let routing = ctx.routing.clone();
        let schedule = schedule.clone();
        let wake = wake.clone();
        source.spawn_watch(tuning.schedule_poll, move || {
            if let Ok(s) = schedule.read() {
                routing.set_schedule(s.clone());
            }
            wake.notify_one();
        })
    };
    // A periodic safety tick beside the loop's own wake-ups.
    let idle = tuning
        .limits
        .idle_every
        .to_std()
        .unwrap_or(Duration::from_secs(15));
    let cron = {
        let sched = JobScheduler::new()
            .await
            .context("starting the job scheduler")?;
        let w = wake.clone();
        let job = Job::new_repeated(idle, move |_id, _l| {
            w.notify_one();
        })
        .context("making the periodic tick job")?;
        sched
            .add(job)
            .await
            .context("adding the periodic tick job")?;
        sched.start().await.context("starting the job scheduler")?;
        sched
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_loop(ctx, reconciler, wake, tuning, stop_rx));
    Ok(Some(Control {
        stop: stop_tx,
        task,
        watcher: Some(watcher),
        cron: Some(cron),
    }))
}

async fn run_loop(
    ctx: ControlContext,
    reconciler: Reconciler,
    wake: Arc<Notify>,
    tuning: ControlTuning,
    mut stop: watch::Receiver<bool>,
) {
    let mut notices = ctx.routing.subscribe();
    let mut leadership: Option<Leadership> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        // Leadership first: only one scheduler acts on the provider.
        if let Some(l) = leadership.as_mut()
            && !l.still_held().await
        {
            tracing::error!("lost the scheduler lock (database connection gone); standing by");
            leadership = None;
            ctx.routing.set_leader(false);
        }
        if leadership.is_none() {
            match try_lead(&ctx.store, &ctx.config.state_dir, &ctx.config.cluster).await {
                Ok(Some(l)) => {
                    tracing::info!("this ingress runs the scheduler (holds the lock)");
                    leadership = Some(l);
                    ctx.routing.set_leader(true);
                }
                Ok(None) => {
                    tracing::debug!("another ingress runs the scheduler");
                    publish_nodes(&ctx).await;
                    tokio::select! {
                        _ = tokio::time::sleep(tuning.lead_retry) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the scheduler lock; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(tuning.lead_retry) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
        }

        let tick_started = ctx.clock.now();
        let report = reconciler.tick().await;
        log_report(&report);
        publish_nodes(&ctx).await;
        ctx.routing.record_tick(&report);

        // The tick said when it wants to run next (see `Reconciler::next_tick`).
        let now = ctx.clock.now();
        let sleep_for = report
            .next_tick
            .and_then(|t| (t - now).to_std().ok())
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(50));
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = wake.notified() => {}
            _ = wake_from_another_replica(&ctx, tick_started) => {
                tracing::info!("a wake request recorded in the store wakes the scheduler");
            }
            n = notices.recv() => {
                if let Ok(n) = n {
                    tracing::debug!(?n, "node notice wakes the scheduler");
                }
            }
            _ = stop.changed() => {}
        }
    }
}

/// How often the leader looks in the store for wake requests of other replicas.
const WAKE_POLL: Duration = Duration::from_secs(1);

/// Resolves when a pool that wakes on demand has a wake request newer than `since` in
/// the store. A follower replica's gateway records its wake request there, and its notice
/// reaches only its own loop: without this the leader saw it at its next idle tick (up to
/// 15 s later, on top of the cold start). Never resolves when no pool wakes on demand.
async fn wake_from_another_replica(ctx: &ControlContext, since: chrono::DateTime<chrono::Utc>) {
    let pools: Vec<&str> = ctx
        .config
        .pools
        .iter()
        .filter(|(_, p)| p.wake_on_demand)
        .map(|(name, _)| name.as_str())
        .collect();
    if pools.is_empty() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(WAKE_POLL).await;
        for pool in &pools {
            match ctx.store.last_wake_request(pool).await {
                Ok(Some(at)) if at > since => return,
                Ok(_) => {}
                Err(e) => tracing::debug!(pool, error = %e, "reading wake requests"),
            }
        }
    }
}

/// Tells the gateway how many nodes per pool are on their way (from the store, so a
/// follower replica queues requests like the leader does).
async fn publish_nodes(ctx: &ControlContext) {
    let nodes = match ctx.store.list_nodes(false).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "reading nodes after a tick");
            return;
        }
    };
    let mut on_the_way: BTreeMap<&str, u32> = BTreeMap::new();
    for pool in ctx.config.pools.keys() {
        on_the_way.insert(pool.as_str(), 0);
    }
    for n in &nodes {
        if n.state.is_on_its_way() {
            *on_the_way.entry(n.pool.as_str()).or_default() += 1;
        }
    }
    for (pool, count) in on_the_way {
        ctx.routing.set_nodes_on_the_way(pool, count);
    }
    publish_scale(ctx).await;
}

/// Tells the gateway each pool's scale state and expected cold start (from the store,
/// so a follower replica wakes pools and answers refusals like the leader).
async fn publish_scale(ctx: &ControlContext) {
    for (pool, p) in &ctx.config.pools {
        let state = match ctx.store.scale_state(pool).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, pool = %pool, "reading the pool's scale state");
                continue;
            }
        };
        let samples = ctx
            .store
            .recent_cold_starts(pool, COLD_START_SAMPLES)
            .await
            .unwrap_or_default();
        let configured = chrono::Duration::seconds(p.cold_start_secs as i64);
        let expected = expected_cold_start(&samples, configured);
        ctx.routing.set_scale(
            pool,
            ScaleView {
                target: state.as_ref().map(|s| s.target),
                decided_at: state.as_ref().map(|s| s.decided_at),
                refused: state.and_then(|s| s.refused),
                cold_start: expected.to_std().unwrap_or(Duration::ZERO),
            },
        );
    }
}

fn log_report(r: &TickReport) {
    for e in &r.errors {
        tracing::warn!("scheduler: {e}");
    }
    for b in &r.budget_blocked {
        tracing::warn!("budget: {b}");
    }
    for p in &r.pools_stopped {
        tracing::error!("pool stopped: {p}");
    }
    if !(r.planned.is_empty()
        && r.created.is_empty()
        && r.draining.is_empty()
        && r.deleted.is_empty()
        && r.orphans_deleted.is_empty()
        && r.failed.is_empty())
    {
        tracing::info!(
            planned = ?r.planned,
            created = ?r.created,
            draining = ?r.draining,
            deleted = ?r.deleted,
            orphans_deleted = ?r.orphans_deleted,
            failed = ?r.failed,
            "scheduler tick"
        );
    }
}
