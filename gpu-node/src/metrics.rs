//! Engine and server figures, exported in the Prometheus text format at `/metrics`
//! and summarised in heartbeats.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A fixed-bucket histogram.
pub struct Histogram {
    bounds: Vec<f64>,
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending).
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            inner: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }
    /// Records one value.
    pub fn observe(&self, v: f64) {
        if let Ok(mut g) = self.inner.lock() {
            for (i, b) in self.bounds.iter().enumerate() {
                if v <= *b {
                    g.0[i] += 1;
                }
            }
            g.1 += v;
            g.2 += 1;
        }
    }
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let Ok(g) = self.inner.lock() else { return };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&g.0) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", g.2);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", g.1, g.2);
    }
}

/// All figures of one node.
pub struct Metrics {
    /// Requests waiting for admission.
    pub queued: AtomicU64,
    /// Sequences in the running batch.
    pub running: AtomicU64,
    /// Most sequences ever run in one step.
    pub max_step_sequences: AtomicU64,
    /// Engine steps run.
    pub steps: AtomicU64,
    /// Greedy decode steps launched before the previous step's tokens were read.
    pub steps_ahead: AtomicU64,
    /// Of those, steps whose batch had changed by the time they were read (a sequence
    /// ended or arrived): their rows of ended sequences were computed for nothing.
    pub steps_ahead_unmatched: AtomicU64,
    /// Tokens generated in total.
    pub generated_tokens: AtomicU64,
    /// Prompt tokens processed in total.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens not processed because a free KV slot already held them
    /// (`[engine] prefix_cache`).
    pub prompt_tokens_cached: AtomicU64,
    /// KV-cache tokens in use (actual).
    pub kv_used_tokens: AtomicU64,
    /// KV-cache tokens reserved by admitted sequences.
    pub kv_reserved_tokens: AtomicU64,
    /// KV-cache capacity in tokens.
    pub kv_total_tokens: AtomicU64,
    /// HTTP requests in flight.
    pub http_in_flight: AtomicU64,
    /// Requests finished, by outcome.
    pub requests_ok: AtomicU64,
    /// Requests answered with an error.
    pub requests_error: AtomicU64,
    /// Requests refused with `401` for lack of the ingress's credential.
    pub unauthorized: AtomicU64,
    /// Sequences per engine step.
    pub step_sequences: Histogram,
    /// Seconds from arrival to first token.
    pub ttft: Histogram,
    /// Generated tokens per second, updated about once a second.
    tokens_per_second_milli: AtomicU64,
    rate_state: Mutex<(std::time::Instant, u64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Zeroed figures.
    pub fn new() -> Self {
        Metrics {
            queued: AtomicU64::new(0),
            running: AtomicU64::new(0),
            max_step_sequences: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            steps_ahead: AtomicU64::new(0),
            steps_ahead_unmatched: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            prompt_tokens_cached: AtomicU64::new(0),
            kv_used_tokens: AtomicU64::new(0),
            kv_reserved_tokens: AtomicU64::new(0),
            kv_total_tokens: AtomicU64::new(0),
            http_in_flight: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            requests_error: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            step_sequences: Histogram::new(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            ttft: Histogram::new(&[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            tokens_per_second_milli: AtomicU64::new(0),
            rate_state: Mutex::new((std::time::Instant::now(), 0)),
        }
    }

    /// Records a step that ran `n` sequences.
    pub fn record_step(&self, n: usize) {
        self.steps.fetch_add(1, Relaxed);
        self.step_sequences.observe(n as f64);
        self.max_step_sequences.fetch_max(n as u64, Relaxed);
        self.update_rate();
    }

    fn update_rate(&self) {
        let Ok(mut g) = self.rate_state.lock() else {
            return;
        };
        let el = g.0.elapsed().as_secs_f64();
        if el >= 1.0 {
            let now = self.generated_tokens.load(Relaxed);
            let rate = (now.saturating_sub(g.1)) as f64 / el;
            self.tokens_per_second_milli
                .store((rate * 1000.0) as u64, Relaxed);
            *g = (std::time::Instant::now(), now);
        }
    }

    /// Generated tokens per second over the last second or so.
    pub fn tokens_per_second(&self) -> f64 {
        self.update_rate();
        self.tokens_per_second_milli.load(Relaxed) as f64 / 1000.0
    }

    /// The Prometheus text exposition.
    pub fn render(&self, state: &str) -> String {
        let mut o = String::new();
        let g = |o: &mut String, name: &str, help: &str, kind: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            &mut o,
            "dayshift_node_queue_depth",
            "Requests waiting for admission.",
            "gauge",
            self.queued.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_running_sequences",
            "Sequences in the running batch.",
            "gauge",
            self.running.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_step_sequences_max",
            "Most sequences run in one engine step since start.",
            "gauge",
            self.max_step_sequences.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_steps_total",
            "Engine steps run.",
            "counter",
            self.steps.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_steps_ahead_total",
            "Greedy decode steps launched before the previous step's tokens were read (host work overlapping the GPU's).",
            "counter",
            self.steps_ahead.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_steps_ahead_unmatched_total",
            "Steps launched ahead whose batch had changed when they were read (rows of ended sequences wasted).",
            "counter",
            self.steps_ahead_unmatched.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_generated_tokens_total",
            "Tokens generated.",
            "counter",
            self.generated_tokens.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_prompt_tokens_total",
            "Prompt tokens processed.",
            "counter",
            self.prompt_tokens.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_prompt_tokens_cached_total",
            "Prompt tokens taken from the KV cache of an earlier request instead of processed.",
            "counter",
            self.prompt_tokens_cached.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_tokens_per_second",
            "Generated tokens per second (last second).",
            "gauge",
            self.tokens_per_second(),
        );
        g(
            &mut o,
            "dayshift_node_kv_cache_used_tokens",
            "KV-cache tokens in use.",
            "gauge",
            self.kv_used_tokens.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_kv_cache_reserved_tokens",
            "KV-cache tokens reserved by admitted sequences.",
            "gauge",
            self.kv_reserved_tokens.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_kv_cache_total_tokens",
            "KV-cache capacity in tokens.",
            "gauge",
            self.kv_total_tokens.load(Relaxed) as f64,
        );
        g(
            &mut o,
            "dayshift_node_http_requests_in_flight",
            "HTTP requests in flight.",
            "gauge",
            self.http_in_flight.load(Relaxed) as f64,
        );
        let _ = writeln!(
            o,
            "# HELP dayshift_node_requests_total Finished requests by outcome.\n# TYPE dayshift_node_requests_total counter"
        );
        let _ = writeln!(
            o,
            "dayshift_node_requests_total{{outcome=\"ok\"}} {}",
            self.requests_ok.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "dayshift_node_requests_total{{outcome=\"error\"}} {}",
            self.requests_error.load(Relaxed)
        );
        g(
            &mut o,
            "dayshift_node_unauthorized_requests_total",
            "Requests refused with 401: without the ingress's credential for this node.",
            "counter",
            self.unauthorized.load(Relaxed) as f64,
        );
        let _ = writeln!(
            o,
            "# HELP dayshift_node_state Node state (1 for the current one).\n# TYPE dayshift_node_state gauge"
        );
        for s in ["loading", "ready", "draining"] {
            let _ = writeln!(
                o,
                "dayshift_node_state{{state=\"{s}\"}} {}",
                u8::from(s == state)
            );
        }
        self.step_sequences.render(
            &mut o,
            "dayshift_node_step_sequences",
            "Sequences per batched engine step.",
        );
        self.ttft.render(
            &mut o,
            "dayshift_node_time_to_first_token_seconds",
            "Seconds from arrival to first generated token.",
        );
        o
    }
}
