//! Per-client rate limiting behind [`RateLimiter`]: token buckets in this process's memory
//! ([`TokenBuckets`], the default) or GCRA in Redis, shared by every replica
//! ([`RedisLimiter`], `[rate_limit] store = "redis"`).
//!
//! Checks are async; the middleware bounds each with `rate_limit.redis_timeout_ms` and, when
//! the store fails, applies `rate_limit.on_redis_error` (see [`decide`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::config::{OnStoreError, RateLimitConfig, RateLimitStore};
use crate::error::ApiError;
use crate::state::AppState;

mod redis;
mod resp;

pub use redis::RedisLimiter;

/// Which budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitClass {
    /// `/predict` and v2 inference.
    Inference,
    /// `/admin/*`: a much smaller budget.
    Admin,
}

/// A limiter's answer, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The burst size (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests left now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the bucket is full again (`RateLimit-Reset`).
    pub reset_seconds: u64,
    /// Seconds until one request would be allowed (`Retry-After`), when refused.
    pub retry_after_seconds: u64,
}

/// What [`RateLimiter::check`] returns: a boxed future, so the trait stays object safe.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<Decision, StoreError>> + Send + 'a>>;

/// Decides whether a client may make a request now. Implementations must be cheap: this runs
/// on every inference request. The caller bounds the future with a timeout and may drop it
/// part way; an implementation must stay usable when it does.
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Takes one token for `client` from its `class` budget, if there is one.
    ///
    /// # Errors
    /// [`StoreError`] when a remote store cannot answer.
    fn check<'a>(&'a self, client: &'a str, class: LimitClass) -> CheckFuture<'a>;
}

/// Why a shared store could not decide.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting, reading or writing failed.
    #[error("redis connection: {0}")]
    Io(#[from] std::io::Error),
    /// Redis answered something that is not RESP2 or not what the script returns.
    #[error("redis protocol: {0}")]
    Protocol(String),
    /// Redis answered with an error (`-ERR ...`, `-NOAUTH ...`).
    #[error("redis error reply: {0}")]
    Reply(String),
    /// A recent connection attempt failed; the next is not due yet.
    #[error("redis unreachable; next connection attempt in {0:?}")]
    BackingOff(Duration),
    /// No answer within `rate_limit.redis_timeout_ms`.
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    /// The store's settings are unusable (a bad `redis_url`).
    #[error("rate_limit.redis_url: {0}")]
    Config(String),
}

/// A rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Tokens added per second.
    pub rate: f64,
    /// Bucket size.
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets in this process's memory.
#[derive(Debug)]
pub struct TokenBuckets {
    inference: Budget,
    admin: Budget,
    buckets: Mutex<HashMap<(LimitClass, String), Bucket>>,
}

/// Buckets kept before idle, full ones are dropped.
const MAX_BUCKETS: usize = 100_000;

impl TokenBuckets {
    /// Buckets with these budgets.
    #[must_use]
    pub fn new(inference: Budget, admin: Budget) -> Self {
        Self {
            inference,
            admin,
            buckets: Mutex::default(),
        }
    }

    fn check_at(&self, client: &str, class: LimitClass, now: Instant) -> Decision {
        let budget = match class {
            LimitClass::Inference => self.inference,
            LimitClass::Admin => self.admin,
        };
        let burst = f64::from(budget.burst);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS {
            // Drop buckets that have refilled (their clients are idle); if that frees nothing,
            // many clients are active at once: start everyone afresh rather than grow without
            // bound (a brief leniency, never a refusal of a well-behaved client).
            buckets.retain(|(c, _), b| {
                let rate = if *c == LimitClass::Admin {
                    self.admin.rate
                } else {
                    self.inference.rate
                };
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_BUCKETS / 2 {
                tracing::warn!(
                    clients = buckets.len(),
                    "rate limiter: too many clients tracked; resetting"
                );
                buckets.clear();
            }
        }
        let bucket = buckets
            .entry((class, client.to_string()))
            .or_insert(Bucket {
                tokens: burst,
                updated: now,
            });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * budget.rate).min(burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let tokens = bucket.tokens;
        Decision {
            allowed,
            limit: budget.burst,
            remaining: tokens.floor() as u32,
            reset_seconds: ((burst - tokens) / budget.rate).ceil() as u64,
            retry_after_seconds: if allowed {
                0
            } else {
                (((1.0 - tokens) / budget.rate).ceil() as u64).max(1)
            },
        }
    }
}

impl RateLimiter for TokenBuckets {
    fn check<'a>(&'a self, client: &'a str, class: LimitClass) -> CheckFuture<'a> {
        Box::pin(std::future::ready(Ok(self.check_at(
            client,
            class,
            Instant::now(),
        ))))
    }
}

/// The limiter `[rate_limit]` asks for: token buckets in memory, or GCRA in Redis.
#[must_use]
pub fn from_config(r: &RateLimitConfig) -> std::sync::Arc<dyn RateLimiter> {
    let inference = Budget {
        rate: r.rate_per_second,
        burst: r.burst,
    };
    let admin = Budget {
        rate: r.admin_rate_per_second,
        burst: r.admin_burst,
    };
    match r.store {
        RateLimitStore::Memory => std::sync::Arc::new(TokenBuckets::new(inference, admin)),
        RateLimitStore::Redis => std::sync::Arc::new(RedisLimiter::new(
            &r.redis_url,
            &r.redis_key_prefix,
            inference,
            admin,
        )),
    }
}

impl RateLimitConfig {
    /// What is wrong with the store settings, if anything.
    ///
    /// # Errors
    /// A sentence naming the key.
    pub fn check_store(&self) -> Result<(), String> {
        if self.store == RateLimitStore::Redis {
            resp::RedisAddress::parse(&self.redis_url)
                .map_err(|e| format!("rate_limit.redis_url: {e}"))?;
        }
        if self.redis_timeout_ms == 0 {
            return Err("rate_limit.redis_timeout_ms must be positive".into());
        }
        Ok(())
    }
}

/// Seconds a client is told to wait when the store is down and `on_redis_error = "closed"`.
const CLOSED_RETRY_AFTER_SECONDS: u64 = 1;
/// At most one log line per this long about a failing store.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Asks the server's limiter about one request, within `rate_limit.redis_timeout_ms`.
/// `Ok(Some)`: the limiter's decision. When the store fails, the error is counted
/// (`kiln_rate_limit_store_errors_total`), logged at most once per 10 s, and
/// `on_redis_error` decides: `open` lets the request through unlimited (`Ok(None)`: no
/// `RateLimit-*` headers), `closed` refuses it with 503 and `Retry-After: 1` (never a 500).
///
/// # Errors
/// The 503 of a closed failure.
pub(crate) async fn decide(
    state: &AppState,
    client: &str,
    class: LimitClass,
) -> Result<Option<Decision>, ApiError> {
    let r = &state.config.rate_limit;
    let timeout = Duration::from_millis(r.redis_timeout_ms);
    let error = match tokio::time::timeout(timeout, state.limiter.check(client, class)).await {
        Ok(Ok(decision)) => {
            state.store_health.recovered();
            return Ok(Some(decision));
        }
        Ok(Err(error)) => error,
        Err(_) => StoreError::Timeout(r.redis_timeout_ms),
    };
    state.metrics.rate_limit_store_error();
    state.store_health.failed(&error, r.on_redis_error);
    match r.on_redis_error {
        OnStoreError::Open => Ok(None),
        OnStoreError::Closed => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "rate_limit_unavailable",
            "the rate limit store is unavailable; retry",
        )
        .retry_after(CLOSED_RETRY_AFTER_SECONDS)),
    }
}

/// Rate-limited logging of store failures: one line per [`LOG_EVERY`] with the count since
/// the last, and one when the store answers again.
#[derive(Debug, Default)]
pub struct StoreHealth {
    failing: AtomicBool,
    log: Mutex<FailureLog>,
}

#[derive(Debug, Default)]
struct FailureLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl StoreHealth {
    fn failed(&self, error: &StoreError, policy: OnStoreError) {
        self.failing.store(true, Ordering::Relaxed);
        let mut log = lock(&self.log);
        log.unlogged += 1;
        if log.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            let outcome = match policy {
                OnStoreError::Open => "allowed without limits (on_redis_error = open)",
                OnStoreError::Closed => "refused with 503 (on_redis_error = closed)",
            };
            tracing::warn!(
                error = %error,
                failures = log.unlogged,
                "rate limit store failing; requests are {outcome}"
            );
            log.last = Some(Instant::now());
            log.unlogged = 0;
        }
    }

    fn recovered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            let unlogged = std::mem::take(&mut lock(&self.log).unlogged);
            tracing::info!(
                failures_since_last_log = unlogged,
                "rate limit store answering again"
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_are_logged_once_per_interval_and_recovery_once() {
        let health = StoreHealth::default();
        let error = StoreError::Timeout(50);
        for _ in 0..5 {
            health.failed(&error, OnStoreError::Open);
        }
        // The first failure was logged; the four after it wait for the next line.
        assert_eq!(lock(&health.log).unlogged, 4);
        assert!(health.failing.load(Ordering::Relaxed));
        health.recovered();
        assert!(!health.failing.load(Ordering::Relaxed));
        assert_eq!(lock(&health.log).unlogged, 0);
        // Still within the interval: a new failure is counted, not logged.
        health.failed(&error, OnStoreError::Closed);
        assert_eq!(lock(&health.log).unlogged, 1);
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let limiter = TokenBuckets::new(
            Budget {
                rate: 2.0,
                burst: 3,
            },
            Budget {
                rate: 0.1,
                burst: 1,
            },
        );
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(
                limiter.check_at("a", LimitClass::Inference, t0).allowed,
                "request {i}"
            );
        }
        let refused = limiter.check_at("a", LimitClass::Inference, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_seconds, 1);
        // Another client and another class have their own buckets.
        assert!(limiter.check_at("b", LimitClass::Inference, t0).allowed);
        assert!(limiter.check_at("a", LimitClass::Admin, t0).allowed);
        assert!(!limiter.check_at("a", LimitClass::Admin, t0).allowed);
        // Half a second at 2/s refills one token.
        let later = t0 + Duration::from_millis(500);
        assert!(limiter.check_at("a", LimitClass::Inference, later).allowed);
        assert!(!limiter.check_at("a", LimitClass::Inference, later).allowed);
    }
}
