//! Prometheus metrics in the text exposition format, kept in memory.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    duration: BTreeMap<String, Histogram>,
    first_byte: BTreeMap<String, Histogram>,
    tokens: BTreeMap<(String, &'static str), u64>,
    retries: BTreeMap<String, u64>,
    queued: BTreeMap<String, u64>,
    wakes: BTreeMap<String, u64>,
    registrations_refused: BTreeMap<&'static str, u64>,
    connections_refused: BTreeMap<&'static str, u64>,
    connections_closed: BTreeMap<&'static str, u64>,
}

/// The ingress's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    open_connections: AtomicI64,
}

/// Gauges computed at scrape time.
pub struct Gauges {
    /// (pool, state) → nodes.
    pub nodes: Vec<(String, String, u64)>,
    /// pool → requests in flight.
    pub in_flight: Vec<(String, u64)>,
    /// pool → nodes on their way.
    pub on_the_way: Vec<(String, u64)>,
}

impl Metrics {
    /// Counts one finished request.
    pub fn request(&self, pool: &str, code: u16, secs: f64) {
        if let Ok(mut m) = self.inner.lock() {
            *m.requests.entry((pool.to_string(), code)).or_default() += 1;
            m.duration
                .entry(pool.to_string())
                .or_default()
                .observe(secs);
        }
    }
    /// Time to the node's response head.
    pub fn first_byte(&self, pool: &str, secs: f64) {
        if let Ok(mut m) = self.inner.lock() {
            m.first_byte
                .entry(pool.to_string())
                .or_default()
                .observe(secs);
        }
    }
    /// Tokens used: prompt, of those the ones a node took from its prefix cache, and
    /// completion.
    pub fn tokens(&self, pool: &str, prompt: u64, cached: u64, completion: u64) {
        if let Ok(mut m) = self.inner.lock() {
            *m.tokens.entry((pool.to_string(), "prompt")).or_default() += prompt;
            *m.tokens
                .entry((pool.to_string(), "cached_prompt"))
                .or_default() += cached;
            *m.tokens
                .entry((pool.to_string(), "completion"))
                .or_default() += completion;
        }
    }
    /// A request retried on another node.
    pub fn retry(&self, pool: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.retries.entry(pool.to_string()).or_default() += 1;
        }
    }
    /// A request that waited for a node on its way.
    pub fn queued(&self, pool: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.queued.entry(pool.to_string()).or_default() += 1;
        }
    }
    /// A request that found no node and woke its pool.
    pub fn wake(&self, pool: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.wakes.entry(pool.to_string()).or_default() += 1;
        }
    }
    /// A refused registration, by reason.
    pub fn registration_refused(&self, reason: &'static str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.registrations_refused.entry(reason).or_default() += 1;
        }
    }

    /// A connection refused at accept, by reason (`per_address_limit`).
    pub fn connection_refused(&self, reason: &'static str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.connections_refused.entry(reason).or_default() += 1;
        }
    }
    /// A connection (or request) the edge closed, by reason (`header_timeout`,
    /// `idle_timeout`, `body_timeout`, `body_too_large`, `tls_handshake_timeout`,
    /// `tls_handshake_failed`).
    pub fn connection_closed(&self, reason: &'static str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.connections_closed.entry(reason).or_default() += 1;
        }
    }
    /// One more (`+1`) or one less (`-1`) open client connection.
    pub fn connections_open(&self, delta: i64) {
        self.open_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        let Ok(m) = self.inner.lock() else {
            return out;
        };
        header(
            &mut out,
            "dayshift_requests_total",
            "counter",
            "Gateway requests by pool and HTTP status.",
        );
        for ((pool, code), n) in &m.requests {
            let _ = writeln!(
                out,
                "dayshift_requests_total{{pool=\"{}\",code=\"{code}\"}} {n}",
                esc(pool)
            );
        }
        histograms(
            &mut out,
            "dayshift_request_duration_seconds",
            "Time from request to the end of the response, by pool.",
            &m.duration,
        );
        histograms(
            &mut out,
            "dayshift_upstream_first_byte_seconds",
            "Time from request to the node's response head, by pool.",
            &m.first_byte,
        );
        header(
            &mut out,
            "dayshift_tokens_total",
            "counter",
            "Tokens by pool and kind (prompt; cached_prompt: of the prompt tokens, those a node took from its prefix cache; completion).",
        );
        for ((pool, kind), n) in &m.tokens {
            let _ = writeln!(
                out,
                "dayshift_tokens_total{{pool=\"{}\",kind=\"{kind}\"}} {n}",
                esc(pool)
            );
        }
        header(
            &mut out,
            "dayshift_upstream_retries_total",
            "counter",
            "Requests retried on another node before the first byte.",
        );
        for (pool, n) in &m.retries {
            let _ = writeln!(
                out,
                "dayshift_upstream_retries_total{{pool=\"{}\"}} {n}",
                esc(pool)
            );
        }
        header(
            &mut out,
            "dayshift_queued_requests_total",
            "counter",
            "Requests that waited for a node on its way.",
        );
        for (pool, n) in &m.queued {
            let _ = writeln!(
                out,
                "dayshift_queued_requests_total{{pool=\"{}\"}} {n}",
                esc(pool)
            );
        }
        header(
            &mut out,
            "dayshift_pool_wake_requests_total",
            "counter",
            "Requests that found no node of their pool and asked the scheduler for one.",
        );
        for (pool, n) in &m.wakes {
            let _ = writeln!(
                out,
                "dayshift_pool_wake_requests_total{{pool=\"{}\"}} {n}",
                esc(pool)
            );
        }
        header(
            &mut out,
            "dayshift_node_registrations_refused_total",
            "counter",
            "Refused node registrations by reason.",
        );
        for (reason, n) in &m.registrations_refused {
            let _ = writeln!(
                out,
                "dayshift_node_registrations_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        header(
            &mut out,
            "dayshift_connections_refused_total",
            "counter",
            "Client connections refused at accept, by reason.",
        );
        for (reason, n) in &m.connections_refused {
            let _ = writeln!(
                out,
                "dayshift_connections_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        header(
            &mut out,
            "dayshift_connections_closed_total",
            "counter",
            "Client connections the edge closed (timeouts, oversized bodies), by reason.",
        );
        for (reason, n) in &m.connections_closed {
            let _ = writeln!(
                out,
                "dayshift_connections_closed_total{{reason=\"{reason}\"}} {n}"
            );
        }
        header(
            &mut out,
            "dayshift_connections_open",
            "gauge",
            "Open client connections (all listeners).",
        );
        let _ = writeln!(
            out,
            "dayshift_connections_open {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "dayshift_nodes",
            "gauge",
            "Nodes by pool and lifecycle state.",
        );
        for (pool, state, n) in &g.nodes {
            let _ = writeln!(
                out,
                "dayshift_nodes{{pool=\"{}\",state=\"{state}\"}} {n}",
                esc(pool)
            );
        }
        header(
            &mut out,
            "dayshift_requests_in_flight",
            "gauge",
            "Gateway requests in flight by pool.",
        );
        for (pool, n) in &g.in_flight {
            let _ = writeln!(
                out,
                "dayshift_requests_in_flight{{pool=\"{}\"}} {n}",
                esc(pool)
            );
        }
        header(
            &mut out,
            "dayshift_nodes_on_the_way",
            "gauge",
            "Nodes the scheduler reports on their way, by pool.",
        );
        for (pool, n) in &g.on_the_way {
            let _ = writeln!(
                out,
                "dayshift_nodes_on_the_way{{pool=\"{}\"}} {n}",
                esc(pool)
            );
        }
        out
    }
}

/// Appends each pool's scaling (read from the store at scrape time, so every replica
/// shows the leader's decisions): its range now, its load over the last minute (left
/// out without a recent sample), and its last scale decision (target, when, and its
/// cause as a label).
pub fn render_scaling(out: &mut String, pools: &[crate::elastic_view::PoolScaling]) {
    header(
        out,
        "dayshift_pool_range_min",
        "gauge",
        "Fewest nodes the pool may have now (schedule window and pool settings).",
    );
    for p in pools {
        let _ = writeln!(
            out,
            "dayshift_pool_range_min{{pool=\"{}\"}} {}",
            esc(&p.pool),
            p.range.min
        );
    }
    header(
        out,
        "dayshift_pool_range_max",
        "gauge",
        "Most nodes the pool may have now (schedule window and pool settings).",
    );
    for p in pools {
        let _ = writeln!(
            out,
            "dayshift_pool_range_max{{pool=\"{}\"}} {}",
            esc(&p.pool),
            p.range.max
        );
    }
    header(
        out,
        "dayshift_pool_active_nodes",
        "gauge",
        "Nodes of the pool on their way or ready, in the store.",
    );
    for p in pools {
        let _ = writeln!(
            out,
            "dayshift_pool_active_nodes{{pool=\"{}\"}} {}",
            esc(&p.pool),
            p.nodes
        );
    }
    header(
        out,
        "dayshift_pool_load",
        "gauge",
        "Requests in flight + queued (all ingress replicas) averaged over the last minute.",
    );
    for p in pools {
        if let Some(l) = p.load {
            let _ = writeln!(out, "dayshift_pool_load{{pool=\"{}\"}} {l}", esc(&p.pool));
        }
    }
    header(
        out,
        "dayshift_pool_target_nodes",
        "gauge",
        "Nodes the scheduler's last scale decision wants.",
    );
    for p in pools {
        if let Some(d) = &p.decision {
            let _ = writeln!(
                out,
                "dayshift_pool_target_nodes{{pool=\"{}\"}} {}",
                esc(&p.pool),
                d.target
            );
        }
    }
    header(
        out,
        "dayshift_pool_scale_decision_timestamp_seconds",
        "gauge",
        "When the pool's last scale decision was taken (unix seconds), its cause as a label \
         (range, load_up, load_down, wake).",
    );
    for p in pools {
        if let Some(d) = &p.decision {
            let _ = writeln!(
                out,
                "dayshift_pool_scale_decision_timestamp_seconds{{pool=\"{}\",cause=\"{}\"}} {}",
                esc(&p.pool),
                d.cause.as_str(),
                d.decided_at.timestamp()
            );
        }
    }
    header(
        out,
        "dayshift_pool_scale_refused",
        "gauge",
        "1 when the scheduler could not act on the pool's target (e.g. the budget refused a node).",
    );
    for p in pools {
        if let Some(d) = &p.decision {
            let _ = writeln!(
                out,
                "dayshift_pool_scale_refused{{pool=\"{}\"}} {}",
                esc(&p.pool),
                u8::from(d.refused.is_some())
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histograms(out: &mut String, name: &str, help: &str, hs: &BTreeMap<String, Histogram>) {
    header(out, name, "histogram", help);
    for (pool, h) in hs {
        let pool = esc(pool);
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{pool=\"{pool}\",le=\"{b}\"}} {}",
                h.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{pool=\"{pool}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{pool=\"{pool}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{pool=\"{pool}\"}} {}", h.count);
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
