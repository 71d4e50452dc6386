//! The status page at `/` (server-side HTML, no JavaScript) and `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{Datelike, TimeZone, Utc};
use rust_decimal::Decimal;

use dayshift_config::schedule::describe;

use super::metrics::Gauges;
use super::state::SharedState;
use crate::store::NodeState;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Month-to-date cost (the calendar month in UTC) of the ledger's intervals, costed by
/// [`crate::costing`].
async fn month_to_date(state: &SharedState) -> Option<Decimal> {
    let now = state.clock.now();
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()?;
    let rows = state
        .store
        .intervals(start.timestamp_millis(), now.timestamp_millis())
        .await
        .ok()?;
    let (costs, _, _) =
        crate::costing::cost_intervals(&rows, &state.config, start, now, now).ok()?;
    Some(dayshift_config::billing::to_cents(
        costs.iter().map(|c| c.cost).sum(),
    ))
}

/// Every configured pool's scaling at the state's clock, from the store (`None` when
/// the store cannot be read: the page and metrics leave the part out).
async fn scaling(state: &SharedState) -> Option<Vec<crate::elastic_view::PoolScaling>> {
    let now = state.clock.now();
    let schedule = state.schedule.read().ok().and_then(|g| g.clone());
    let nodes = state.store.list_nodes(false).await.ok()?;
    let names = state.config.pool_names();
    match crate::elastic_view::read(
        &state.store,
        &state.config,
        schedule.as_ref(),
        &names,
        &nodes,
        now,
    )
    .await
    {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the pools' load and scale decisions");
            None
        }
    }
}

/// `GET /`.
pub async fn page(State(state): State<SharedState>) -> Html<String> {
    let now = state.clock.now();
    // The schedule's zone and its words for each pool (shared with `dayshift status`).
    let schedule = state.schedule.read().ok().and_then(|g| g.clone());
    let tz = schedule
        .as_ref()
        .map(|s| s.timezone)
        .unwrap_or(chrono_tz::UTC);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>dayshift · {}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em}}</style></head><body>\
         <h1>dayshift · {}</h1><p>Now: {} {}</p>",
        esc(&state.config.cluster),
        esc(&state.config.cluster),
        describe::minute(now, tz),
        esc(tz.name())
    );
    h.push_str("<h2>Pools</h2><table><tr><th>pool</th><th>model</th><th>ready nodes</th><th>on the way</th><th>in flight</th><th>next window</th></tr>");
    for p in state.registry.pools() {
        let in_flight: u32 = p.nodes().iter().map(|n| n.in_flight()).sum();
        let next = match &schedule {
            Some(s) => describe::describe_windows(&s.pool_windows(&p.name, now), tz),
            None => "no schedule file".into(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            esc(&p.model),
            p.ready_count(state.tuning.stale_after),
            p.on_the_way(),
            in_flight,
            esc(&next)
        );
    }
    h.push_str("</table>");
    if let Some(pools) = scaling(&state).await {
        h.push_str(
            "<h2>Scaling</h2><p>Load: requests in flight + queued, all ingress replicas, \
             averaged over the last minute.</p><table><tr><th>pool</th><th>range now</th>\
             <th>active nodes</th><th>load</th><th>last scale decision</th></tr>",
        );
        for p in &pools {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.pool),
                p.range,
                p.nodes,
                crate::elastic_view::load_text(p.load),
                esc(&crate::elastic_view::decision_text(p.decision.as_ref(), tz))
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Schedule today</h2><ul>");
    match &schedule {
        Some(s) => {
            let date = now.with_timezone(&tz).date_naive();
            let pools = s.pools();
            if pools.is_empty() {
                h.push_str("<li>no window in the schedule</li>");
            }
            for pool in pools {
                let _ = write!(
                    h,
                    "<li>{}: {} ({})</li>",
                    esc(&pool),
                    esc(&describe::describe_day(&s.pool_day(&pool, date), tz)),
                    esc(tz.name())
                );
            }
        }
        None => h.push_str("<li>no schedule file</li>"),
    }
    h.push_str("</ul><h2>Nodes</h2><table><tr><th>id</th><th>pool</th><th>state</th><th>address</th><th>in flight</th></tr>");
    if let Ok(nodes) = state.store.list_nodes(false).await {
        for n in nodes {
            let live = state.registry.node(&n.id);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&n.id),
                esc(&n.pool),
                n.state,
                esc(n.api_url.as_deref().unwrap_or("")),
                live.map(|l| l.in_flight()).unwrap_or(0)
            );
        }
    }
    h.push_str("</table>");
    let control = state.control_status();
    let _ = write!(
        h,
        "<h2>Scheduler</h2><p>{}; {} tick(s), last {}</p>",
        if control.leader {
            "runs here"
        } else {
            "runs in another ingress (or is off)"
        },
        control.ticks,
        control
            .last_tick
            .map(|t| t.with_timezone(&tz).format("%H:%M:%S").to_string())
            .unwrap_or_else(|| "never".into())
    );
    if !control.budget_blocked.is_empty() {
        h.push_str("<p><strong>Budget stop:</strong></p><ul>");
        for b in &control.budget_blocked {
            let _ = write!(h, "<li>{}</li>", esc(b));
        }
        h.push_str("</ul>");
    }
    if !control.pools_stopped.is_empty() {
        h.push_str("<p><strong>Pools stopped (nodes could not start):</strong></p><ul>");
        for b in &control.pools_stopped {
            let _ = write!(h, "<li>{}</li>", esc(b));
        }
        h.push_str("</ul>");
    }
    let cost = month_to_date(&state)
        .await
        .map(|c| format!("{c} EUR"))
        .unwrap_or_else(|| "unknown".into());
    let _ = write!(
        h,
        "<h2>Cost</h2><p>Month to date: {}</p><p><a href=\"/metrics\">metrics</a></p></body></html>",
        esc(&cost)
    );
    Html(h)
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<SharedState>) -> Response {
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    if let Ok(nodes) = state.store.list_nodes(false).await {
        for n in nodes {
            *counts.entry((n.pool, n.state.to_string())).or_default() += 1;
        }
    }
    for p in state.registry.pools() {
        for s in [NodeState::Ready, NodeState::Loading] {
            counts.entry((p.name.clone(), s.to_string())).or_default();
        }
    }
    let pools = state.registry.pools();
    let g = Gauges {
        nodes: counts.into_iter().map(|((p, s), n)| (p, s, n)).collect(),
        in_flight: pools
            .iter()
            .map(|p| {
                let n: u32 = p.nodes().iter().map(|n| n.in_flight()).sum();
                (p.name.clone(), u64::from(n))
            })
            .collect(),
        on_the_way: pools
            .iter()
            .map(|p| (p.name.clone(), u64::from(p.on_the_way())))
            .collect(),
    };
    let mut text = state.metrics.render(&g);
    if let Some(pools) = scaling(&state).await {
        super::metrics::render_scaling(&mut text, &pools);
    }
    let c = state.control_status();
    let _ = write!(
        text,
        "# HELP dayshift_scheduler_leader 1 when this ingress runs the scheduler.\n\
         # TYPE dayshift_scheduler_leader gauge\ndayshift_scheduler_leader {}\n\
         # HELP dayshift_scheduler_ticks_total Reconcile ticks run here.\n\
         # TYPE dayshift_scheduler_ticks_total counter\ndayshift_scheduler_ticks_total {}\n\
         # HELP dayshift_scheduler_errors_total Errors met by reconcile ticks.\n\
         # TYPE dayshift_scheduler_errors_total counter\ndayshift_scheduler_errors_total {}\n\
         # HELP dayshift_orphans_deleted_total Servers deleted because no node owned them.\n\
         # TYPE dayshift_orphans_deleted_total counter\ndayshift_orphans_deleted_total {}\n\
         # HELP dayshift_budget_blocked 1 when the monthly budget keeps new nodes from starting.\n\
         # TYPE dayshift_budget_blocked gauge\ndayshift_budget_blocked {}\n",
        u8::from(c.leader),
        c.ticks,
        c.errors_total,
        c.orphans_deleted_total,
        u8::from(!c.budget_blocked.is_empty())
    );
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
