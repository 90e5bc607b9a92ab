//! What the middleware attaches to every request for the handlers: its id and its deadline,
//! and the one answer for a request whose deadline passed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, StatusCode};

use crate::error::ApiError;

/// The header that carries a request id, both ways.
pub(crate) static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of a request: the client's `x-request-id` when it sent a sane one, else a new one.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

impl RequestId {
    /// The id for a request with `headers`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let id = headers
            .get(&REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(new_request_id, str::to_string);
        Self(id)
    }
}

/// A fresh id: a per-process prefix and a counter.
fn new_request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        (nanos ^ (u128::from(std::process::id()) << 32)) as u32
    });
    format!(
        "{prefix:08x}-{:010x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// When the request must be answered by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub Instant);

/// How long past its deadline a request may run before the middleware answers for it.
const BACKSTOP_GRACE: Duration = Duration::from_millis(500);

impl Deadline {
    /// How long the middleware lets a handler run from now: handlers enforce the deadline
    /// themselves (408 for a slow body, 503 for a late answer), and this backstop, a little
    /// later, catches anything that does not.
    pub(crate) fn backstop(self) -> Duration {
        self.0.saturating_duration_since(Instant::now()) + BACKSTOP_GRACE
    }
}

/// The answer for a request whose deadline passed: 503 with `Retry-After: 1`.
pub(crate) fn deadline_exceeded() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "deadline_exceeded",
        "the request was not answered within its deadline; retry",
    )
    .retry_after(1)
}
