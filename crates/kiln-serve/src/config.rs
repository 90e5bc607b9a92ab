//! `serve.toml`: the server's settings, as serde structs with defaults.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ServeError;

/// Everything `kiln serve` can be told, beyond the model path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Dynamic batching.
    pub batching: BatchingConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Per-client rate limits.
    pub rate_limit: RateLimitConfig,
    /// Admin routes (`/admin/reload`).
    pub admin: AdminConfig,
    /// API keys and roles (off by default).
    pub auth: crate::auth::AuthConfig,
    /// HTTPS (off unless a certificate is named).
    pub tls: crate::tls::TlsConfig,
    /// On SIGTERM, how long `/readyz` reports 503 while the server still accepts requests, so a
    /// load balancer stops sending before the listener closes (milliseconds).
    pub drain_ms: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            batching: BatchingConfig::default(),
            limits: LimitsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            admin: AdminConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            tls: crate::tls::TlsConfig::default(),
            drain_ms: 1000,
        }
    }
}

/// `[batching]`: how concurrent requests are coalesced into one forward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Most images in one forward pass (1 turns batching off).
    pub max_batch_size: usize,
    /// When a worker that has taken work waits for more to join its batch (see [`Wait`]).
    pub wait: Wait,
    /// Longest a batch waits for company, in microseconds (see [`Wait`]).
    pub max_delay_us: u64,
    /// Requests that may wait for a worker; beyond this, 503 with `Retry-After`.
    pub queue_capacity: usize,
    /// Inference worker threads (each runs whole batches; the backend parallelises inside).
    pub workers: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            wait: Wait::Adaptive,
            max_delay_us: 2000,
            queue_capacity: 1024,
            workers: 1,
        }
    }
}

/// `batching.wait`: whether a worker holds a batch back, up to `max_delay_us`, for more
/// requests.
///
/// Requests that arrive while a worker runs a forward pass queue up and form its next batch
/// whatever this says, so batches grow with load on their own; waiting adds latency to each
/// batch in exchange for larger ones, which pays when a forward pass has a large fixed cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wait {
    /// Only under concurrency (the batch, or the one before, holds more than one request), and
    /// at most half as long as the last forward pass took: a lone request on an idle server
    /// runs at once, a cheap model barely waits, an expensive one gathers fuller batches.
    #[default]
    Adaptive,
    /// Never: a free worker runs what is queued at once.
    Never,
    /// Always, even for a lone request on an idle server (each batch waits up to
    /// `max_delay_us` after its first request, unless it fills first).
    Always,
}

impl BatchingConfig {
    /// The queue delay as a duration.
    #[must_use]
    pub fn max_delay(&self) -> Duration {
        Duration::from_micros(self.max_delay_us)
    }
}

/// `[limits]`: what one request may ask of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most instances (images) in one request.
    pub max_instances: usize,
    /// Largest encoded image side, in pixels, read from the header before decoding.
    pub max_image_side: u32,
    /// Most pixels decoded for one request, all its images together (read from the headers
    /// before decoding).
    pub max_image_pixels: u64,
    /// Deadline for a request, from arrival to answer, in milliseconds.
    pub request_timeout_ms: u64,
    /// Requests handled at once; beyond this, 503 with `Retry-After`.
    pub max_concurrency: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_instances: 256,
            max_image_side: 4096,
            max_image_pixels: 16 * 1024 * 1024,
            request_timeout_ms: 5000,
            max_concurrency: 1024,
        }
    }
}

impl LimitsConfig {
    /// The request deadline as a duration.
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// `[rate_limit]`: token buckets per client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Turn per-client limiting on or off.
    pub enabled: bool,
    /// Sustained requests per second per client on the inference routes.
    pub rate_per_second: f64,
    /// Requests a client may make at once after being idle.
    pub burst: u32,
    /// Sustained requests per second per client on admin routes.
    pub admin_rate_per_second: f64,
    /// Admin burst.
    pub admin_burst: u32,
    /// Header naming the client (an API key); the peer address is used when it is absent.
    pub client_header: String,
    /// Use the rightmost `X-Forwarded-For` address (the one our own load balancer added) as the
    /// client when no key is sent (only behind a load balancer that sets it).
    pub trust_forwarded_for: bool,
    /// Where budgets are kept: this process's memory, or Redis shared by every replica.
    pub store: RateLimitStore,
    /// `redis://[[user]:password@]host[:port][/db]` (with `store = "redis"`).
    pub redis_url: String,
    /// Prefix of the Redis keys (`{prefix}inference:{client}`, `{prefix}admin:{client}`).
    pub redis_key_prefix: String,
    /// Longest wait for the store's answer before `on_redis_error` applies (milliseconds).
    pub redis_timeout_ms: u64,
    /// What requests get while the store fails.
    pub on_redis_error: OnStoreError,
}

/// `rate_limit.store`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitStore {
    /// Token buckets in this process (each replica limits on its own).
    Memory,
    /// GCRA in Redis, one budget per client across all replicas.
    Redis,
}

/// `rate_limit.on_redis_error`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Fail open: allow the request without a limit (and count the error).
    Open,
    /// Fail closed: 503 with `Retry-After: 1`.
    Closed,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rate_per_second: 10_000.0,
            burst: 20_000,
            admin_rate_per_second: 0.2,
            admin_burst: 3,
            client_header: "x-api-key".into(),
            trust_forwarded_for: false,
            store: RateLimitStore::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_key_prefix: "kiln:rl:".into(),
            redis_timeout_ms: 50,
            on_redis_error: OnStoreError::Open,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Environment variable holding the admin key; admin routes answer 403 while it is unset.
    pub key_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            key_env: "KILN_ADMIN_KEY".into(),
        }
    }
}

impl ServeConfig {
    /// Reads a `serve.toml`.
    ///
    /// # Errors
    /// [`ServeError::Config`] naming the file and the bad key or value.
    pub fn from_file(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let config: Self = toml::from_str(&text).map_err(|e| ServeError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| ServeError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// What is wrong with these settings, if anything.
    ///
    /// # Errors
    /// A sentence naming the key.
    pub fn check(&self) -> Result<(), String> {
        self.auth.check()?;
        self.tls.check()?;
        self.rate_limit.check_store()?;
        let b = &self.batching;
        let l = &self.limits;
        let r = &self.rate_limit;
        let problems = [
            (
                b.max_batch_size == 0,
                "batching.max_batch_size must be at least 1",
            ),
            (
                b.queue_capacity == 0,
                "batching.queue_capacity must be at least 1",
            ),
            (b.workers == 0, "batching.workers must be at least 1"),
            (
                l.max_instances == 0,
                "limits.max_instances must be at least 1",
            ),
            (
                l.max_concurrency == 0,
                "limits.max_concurrency must be at least 1",
            ),
            (
                l.request_timeout_ms == 0,
                "limits.request_timeout_ms must be positive",
            ),
            (
                !(r.rate_per_second > 0.0 && r.admin_rate_per_second > 0.0),
                "rate_limit rates must be positive",
            ),
            (
                r.burst == 0 || r.admin_burst == 0,
                "rate_limit bursts must be at least 1",
            ),
        ];
        match problems.iter().find(|(bad, _)| *bad) {
            Some((_, message)) => Err((*message).to_string()),
            None => Ok(()),
        }
    }
}
