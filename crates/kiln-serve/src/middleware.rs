//! One middleware around every route: request ids, rate limits, the concurrency cap, the
//! request deadline, metrics and the access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::ratelimit::{Decision, LimitClass};
use crate::state::AppState;

/// The id of a request: the client's `x-request-id` when it sent a sane one, else a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// When the request must be answered by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// How long past its deadline a request may run before the middleware answers for it.
const BACKSTOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

fn new_request_id() -> String {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
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

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_string)
}

fn classify(path: &str) -> Option<LimitClass> {
    if path.starts_with("/admin/") {
        Some(LimitClass::Admin)
    } else if path == "/predict" || (path.starts_with("/v2/models/") && path.ends_with("/infer")) {
        Some(LimitClass::Inference)
    } else {
        None
    }
}

/// Who is asking, for the rate limiter and the access log: the API key header when sent
/// (hashed, so keys stay out of logs and memory use per key is fixed), else the rightmost
/// `X-Forwarded-For` hop when trusted (the one our own load balancer added), else the peer.
fn client_key(state: &AppState, request: &Request) -> String {
    let r = &state.config.rate_limit;
    if !r.client_header.is_empty()
        && let Some(key) = request
            .headers()
            .get(r.client_header.as_str())
            .map(HeaderValue::as_bytes)
            .filter(|v| !v.is_empty())
    {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hasher::write(&mut hasher, key);
        return format!("key#{:016x}", std::hash::Hasher::finish(&hasher));
    }
    if r.trust_forwarded_for
        && let Some(ip) = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter_map(|v| v.parse::<std::net::IpAddr>().ok())
            .next_back()
    {
        return format!("ip:{ip}");
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "ip:unknown".into(), |c| format!("ip:{}", c.0.ip()))
}

/// An error made here, in the error shape of the route family (v2 wants a plain string).
fn error_response(v2: bool, error: ApiError) -> Response {
    if v2 {
        crate::routes::V2Error::from(error).into_response()
    } else {
        error.into_response()
    }
}

/// Methods as metric labels: a fixed set, so clients cannot mint new series.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn rate_headers(response: &mut Response, d: &Decision) {
    let h = response.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(d.reset_seconds));
}

/// The middleware; see the module docs.
pub async fn observe(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = method_label(request.method());
    let id = request_id(request.headers());
    let client = client_key(&state, &request);
    let class = classify(request.uri().path());
    let v2 = request.uri().path().starts_with("/v2");
    request.extensions_mut().insert(RequestId(id.clone()));
    let deadline = start + state.config.limits.request_timeout();
    request.extensions_mut().insert(Deadline(deadline));

    let decision = match class {
        Some(class) if state.config.rate_limit.enabled => Some(state.limiter.check(&client, class)),
        _ => None,
    };
    let mut response = match decision {
        Some(d) if !d.allowed => {
            state.metrics.rate_limited();
            let error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests from this client; retry in {} s",
                    d.retry_after_seconds
                ),
            )
            .retry_after(d.retry_after_seconds);
            error_response(v2, error)
        }
        _ => {
            let permit = match class {
                Some(_) => Arc::clone(&state.concurrency).try_acquire_owned().ok(),
                None => None,
            };
            if class.is_some() && permit.is_none() {
                state.metrics.overloaded();
                error_response(
                    v2,
                    ApiError::overloaded(
                        "the server is handling as many requests as it may; retry",
                    ),
                )
            } else {
                let _in_flight = InFlight::new(&state);
                // Handlers enforce the deadline themselves (408 for a slow body, 503 for a late
                // answer); this backstop, a little later, catches anything that does not.
                // Admin work (a reload) is not cut off half way.
                let response = if class == Some(LimitClass::Admin) {
                    next.run(request).await
                } else {
                    let wait = deadline.saturating_duration_since(Instant::now()) + BACKSTOP_GRACE;
                    match tokio::time::timeout(wait, next.run(request)).await {
                        Ok(response) => response,
                        Err(_) => error_response(
                            v2,
                            ApiError::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "deadline_exceeded",
                                "the request was not answered within its deadline; retry",
                            )
                            .retry_after(1),
                        ),
                    }
                };
                drop(permit);
                response
            }
        }
    };
    if let Some(d) = &decision {
        rate_headers(&mut response, d);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER.clone(), v);
    }
    let status = response.status().as_u16();
    let seconds = start.elapsed().as_secs_f64();
    state
        .metrics
        .observe_request(method, &route, status, seconds);
    tracing::info!(
        target: "kiln::access",
        request_id = %id,
        method = %method,
        route = %route,
        status,
        latency_ms = seconds * 1e3,
        client = %client,
    );
    response
}

/// Counts a request in flight until dropped, which also covers a client that hangs up.
struct InFlight<'a>(&'a AppState);

impl<'a> InFlight<'a> {
    fn new(state: &'a AppState) -> Self {
        state.metrics.in_flight(1);
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight(-1);
    }
}
