//! Per-client rate limiting with token buckets, behind [`RateLimiter`] so a shared store (for
//! example Redis, when several replicas serve one model) can take the in-memory one's place.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

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

/// Decides whether a client may make a request now. Implementations must be cheap: this runs
/// on every inference request.
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Takes one token for `client` from its `class` budget, if there is one.
    fn check(&self, client: &str, class: LimitClass) -> Decision;
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
    fn check(&self, client: &str, class: LimitClass) -> Decision {
        self.check_at(client, class, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
