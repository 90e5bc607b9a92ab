//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Upper bounds of the batch-size buckets, in images.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The server's counters, gauges and histograms.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    batch_sizes: Mutex<Histogram>,
    in_flight: AtomicUsize,
    rate_limited: AtomicU64,
    rate_limit_store_errors: AtomicU64,
    overloaded: AtomicU64,
    reloads: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            latency: Mutex::default(),
            batch_sizes: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
            in_flight: AtomicUsize::new(0),
            rate_limited: AtomicU64::new(0),
            rate_limit_store_errors: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            reloads: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts one answered request and its latency.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        lock(&self.latency)
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(seconds);
    }

    /// Counts one forward pass of `images` images.
    pub fn observe_batch(&self, images: usize) {
        lock(&self.batch_sizes).observe(images as f64);
    }

    /// Adjusts the in-flight gauge.
    pub fn in_flight(&self, delta: isize) {
        if delta >= 0 {
            self.in_flight
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.in_flight
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Counts a request refused by the rate limiter.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed or timed-out check of a shared rate-limit store.
    pub fn rate_limit_store_error(&self) {
        self.rate_limit_store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused because the server was at capacity.
    pub fn overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reload, `ok` or `failed`.
    pub fn reload(&self, outcome: &'static str) {
        *lock(&self.reloads).entry(outcome).or_default() += 1;
    }

    /// Requests being handled now.
    #[must_use]
    pub fn in_flight_now(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The exposition text; `model` and `version` label the model-info gauge, `queue_depth` is
    /// the batcher's queue now.
    #[must_use]
    pub fn render(&self, model: &str, version: &str, queue_depth: usize) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP kiln_requests_total Requests answered, by route, method and status.\n",
        );
        out.push_str("# TYPE kiln_requests_total counter\n");
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "kiln_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP kiln_request_duration_seconds Time from request to answer.\n");
        out.push_str("# TYPE kiln_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            h.render(
                &mut out,
                "kiln_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
            );
        }
        out.push_str("# HELP kiln_batch_size Images per forward pass.\n");
        out.push_str("# TYPE kiln_batch_size histogram\n");
        lock(&self.batch_sizes).render(&mut out, "kiln_batch_size", "");
        let gauges = [
            (
                "kiln_queue_depth",
                "Requests waiting for an inference worker.",
                "gauge",
                queue_depth as u64,
            ),
            (
                "kiln_in_flight_requests",
                "Requests being handled now.",
                "gauge",
                self.in_flight.load(Ordering::Relaxed) as u64,
            ),
            (
                "kiln_rate_limited_total",
                "Requests refused with 429 by the rate limiter.",
                "counter",
                self.rate_limited.load(Ordering::Relaxed),
            ),
            (
                "kiln_rate_limit_store_errors_total",
                "Rate-limit checks the shared store (Redis) failed or did not answer in time.",
                "counter",
                self.rate_limit_store_errors.load(Ordering::Relaxed),
            ),
            (
                "kiln_overloaded_total",
                "Requests refused with 503 because the queue or concurrency limit was full.",
                "counter",
                self.overloaded.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, kind, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out.push_str("# HELP kiln_reloads_total Model reloads, by outcome.\n");
        out.push_str("# TYPE kiln_reloads_total counter\n");
        for outcome in ["ok", "failed"] {
            let n = lock(&self.reloads).get(outcome).copied().unwrap_or(0);
            let _ = writeln!(out, "kiln_reloads_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str("# HELP kiln_model_info The model being served (value 1).\n");
        out.push_str("# TYPE kiln_model_info gauge\n");
        let _ = writeln!(
            out,
            "kiln_model_info{{model=\"{}\",version=\"{}\"}} 1",
            escape(model),
            escape(version)
        );
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
