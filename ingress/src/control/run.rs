//! The reconcile loop inside `dayshift serve`: it ticks periodically (a
//! tokio-cron-scheduler job), at once on node events and schedule reloads, and at the
//! schedule's next change (minus the pool's pre-warm lead); only the leader ticks.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use dayshift_config::Schedule;
use dayshift_provisioning::Provider;
use dayshift_scheduler::budget::Budget;
use dayshift_scheduler::reload::ScheduleSource;
use dayshift_scheduler::{Launcher, Limits, NodeState, PoolPolicy, Reconciler, TickReport};
use tokio::sync::{Notify, watch};
use tokio_cron_scheduler::{Job, JobScheduler};

use super::leader::{Leadership, try_lead};
use super::node_store::SchedulerStore;
use crate::server::state::SharedState;
use crate::store::NodeStore;

/// Tunables of the loop (tests shorten them).
#[derive(Debug, Clone)]
pub struct ControlTuning {
    /// Tick period while some node is on its way, draining or deleting.
    pub busy_every: Duration,
    /// Tick period otherwise (each tick lists the provider's servers once).
    pub idle_every: Duration,
    /// How often a follower tries to become the leader.
    pub lead_retry: Duration,
    /// How often the schedule file is checked for changes.
    pub schedule_poll: Duration,
    /// Loop limits (loading timeout, heartbeat grace, create attempts, backoff).
    pub limits: Limits,
}

impl Default for ControlTuning {
    fn default() -> Self {
        ControlTuning {
            busy_every: Duration::from_secs(2),
            idle_every: Duration::from_secs(15),
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
    state: SharedState,
    provider: Arc<dyn Provider>,
    launcher: Arc<dyn Launcher>,
    tuning: ControlTuning,
) -> Result<Option<Control>> {
    let config = &state.config;
    let Some(path) = config.schedule.clone() else {
        return Ok(None);
    };
    let source = ScheduleSource::load(&path, Some(config.pool_names()))
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
                },
            )
        })
        .collect();
    let mut reconciler = Reconciler::new(
        config.cluster.clone(),
        provider,
        SchedulerStore::new(state.clone()),
        state.clock.clone(),
        launcher,
        schedule.clone(),
        pools,
        tuning.limits.clone(),
    );
    reconciler = reconciler.with_background_bootstrap();
    if let Some(cap) = config.budget_monthly {
        let prices = config
            .pools
            .keys()
            .filter_map(|p| config.pool_price(p).map(|price| (p.clone(), price)))
            .collect();
        reconciler = reconciler.with_budget(Budget {
            monthly_cap: cap,
            rule: config.provider.billing,
            prices,
        });
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
    let wanted = reconciler.desired(state.clock.now()).await;
    for (pool, n) in wanted {
        if n > 0 {
            state.set_nodes_on_the_way(&pool, n);
        }
    }
    let wake = Arc::new(Notify::new());
    // Schedule reloads go to the gateway's copy too, and wake the loop.
    let watcher = {
        let state = state.clone();
        let schedule = schedule.clone();
        let wake = wake.clone();
        source.spawn_watch(tuning.schedule_poll, move || {
            if let Ok(s) = schedule.read() {
                state.set_schedule(Some(s.clone()));
            }
            wake.notify_one();
        })
    };
    // The periodic tick.
    let cron = {
        let sched = JobScheduler::new()
            .await
            .context("starting the job scheduler")?;
        let w = wake.clone();
        let job = Job::new_repeated(tuning.idle_every, move |_id, _l| {
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
    let task = tokio::spawn(run_loop(state, reconciler, schedule, wake, tuning, stop_rx));
    Ok(Some(Control {
        stop: stop_tx,
        task,
        watcher: Some(watcher),
        cron: Some(cron),
    }))
}

async fn run_loop(
    state: SharedState,
    reconciler: Reconciler,
    schedule: Arc<RwLock<Schedule>>,
    wake: Arc<Notify>,
    tuning: ControlTuning,
    mut stop: watch::Receiver<bool>,
) {
    let mut notices = state.subscribe();
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
            state.set_leader(false);
        }
        if leadership.is_none() {
            match try_lead(&state.store, &state.config.state_dir, &state.config.cluster).await {
                Ok(Some(l)) => {
                    tracing::info!("this ingress runs the scheduler (holds the lock)");
                    leadership = Some(l);
                    state.set_leader(true);
                }
                Ok(None) => {
                    tracing::debug!("another ingress runs the scheduler");
                    publish_nodes(&state).await;
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

        let report = reconciler.tick().await;
        log_report(&report);
        let busy = after_tick(&state, &report).await;

        let now = state.clock.now();
        let mut sleep_for = if busy {
            tuning.busy_every
        } else {
            tuning.idle_every
        };
        // Wake at the schedule's next change, early by the largest pre-warm lead.
        let mut lead = chrono::Duration::zero();
        for pool in state.config.pools.keys() {
            lead = lead.max(reconciler.lead(pool).await);
        }
        let next = schedule.read().ok().and_then(|s| s.next_change(now + lead));
        if let Some(next) = next
            && let Ok(d) = (next - lead - now).to_std()
        {
            sleep_for = sleep_for.min(d.max(Duration::from_millis(200)));
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = wake.notified() => {}
            n = notices.recv() => {
                if let Ok(n) = n {
                    tracing::debug!(?n, "node notice wakes the scheduler");
                }
            }
            _ = stop.changed() => {}
        }
    }
}

/// Publishes what the tick found to routing and status; true while nodes are moving.
async fn after_tick(state: &SharedState, report: &TickReport) -> bool {
    let busy = publish_nodes(state).await;
    state.record_tick(report);
    busy
}

/// Tells the gateway how many nodes per pool are on their way (from the store, so a
/// follower replica queues requests like the leader does); true while nodes are moving.
async fn publish_nodes(state: &SharedState) -> bool {
    let nodes = match state.store.list_nodes(false).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "reading nodes after a tick");
            return true;
        }
    };
    let mut on_the_way: BTreeMap<&str, u32> = BTreeMap::new();
    for pool in state.config.pools.keys() {
        on_the_way.insert(pool.as_str(), 0);
    }
    let mut busy = false;
    for n in &nodes {
        if n.state.is_on_its_way() {
            *on_the_way.entry(n.pool.as_str()).or_default() += 1;
        }
        if n.state != NodeState::Ready {
            busy = true;
        }
    }
    for (pool, count) in on_the_way {
        state.set_nodes_on_the_way(pool, count);
    }
    busy
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
