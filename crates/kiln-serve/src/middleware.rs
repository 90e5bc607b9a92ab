//! One middleware around every route: request ids, API keys, rate limits, the concurrency
//! cap, the request deadline, metrics and the access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::{ApiError, ErrorShape};
use crate::ratelimit::{Decision, LimitClass};
use crate::request::{Deadline, REQUEST_ID_HEADER, RequestId, deadline_exceeded};
use crate::state::AppState;

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
pub(crate) async fn observe(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut seen = Seen::of(&state, &request);
    let class = classify(request.uri().path());
    let shape = ErrorShape::for_path(request.uri().path());
    let deadline = Deadline(seen.start + state.config.limits.request_timeout());
    request.extensions_mut().insert(seen.id.clone());
    request.extensions_mut().insert(deadline);

    // API keys first (401/403 before any limit): with keys on, a key's id is its client.
    let access = crate::auth::authorize(&state, &request);
    if let Ok(Some(key)) = &access {
        seen.client = format!("key:{}", key.id);
        request.extensions_mut().insert(key.clone());
    }
    // A failing shared store answers per `on_redis_error`: no limit (`Ok(None)`) or a 503.
    let limited = match class.filter(|_| state.config.rate_limit.enabled && access.is_ok()) {
        Some(class) => crate::ratelimit::decide(&state, &seen.client, class).await,
        None => Ok(None),
    };
    let decision = limited.as_ref().ok().copied().flatten();
    let admitted = access
        .and(limited)
        .and_then(|_| admit(&state, class, decision.as_ref()));
    let mut response = match admitted {
        Err(error) => shape.respond(error),
        Ok(permit) => {
            let _in_flight = InFlight::new(&state);
            let response = run_until_backstop(next, request, class, deadline, shape).await;
            drop(permit);
            response
        }
    };
    crate::auth::challenge(&mut response);
    if let Some(d) = &decision {
        rate_headers(&mut response, d);
    }
    if let Ok(v) = HeaderValue::from_str(&seen.id.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER.clone(), v);
    }
    seen.record(&state, response.status().as_u16());
    response
}

/// What metrics and the access log say of a request, taken as it arrives.
struct Seen {
    start: Instant,
    method: &'static str,
    route: String,
    id: RequestId,
    client: String,
}

impl Seen {
    fn of(state: &AppState, request: &Request) -> Self {
        Self {
            start: Instant::now(),
            method: method_label(request.method()),
            route: request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str)
                .to_string(),
            id: RequestId::from_headers(request.headers()),
            client: client_key(state, request),
        }
    }

    /// Counts the answer in the metrics and writes its access-log line.
    fn record(&self, state: &AppState, status: u16) {
        let seconds = self.start.elapsed().as_secs_f64();
        state
            .metrics
            .observe_request(self.method, &self.route, status, seconds);
        tracing::info!(
            target: "kiln::access",
            request_id = %self.id.0,
            method = %self.method,
            route = %self.route,
            status,
            latency_ms = seconds * 1e3,
            client = %self.client,
        );
    }
}

/// Lets a request in, or says why not: 429 over its rate limit, 503 when the server already
/// handles `max_concurrency` requests. Inference and admin requests hold a permit while they
/// run; the others (health, metrics) are never refused.
fn admit(
    state: &Arc<AppState>,
    class: Option<LimitClass>,
    decision: Option<&Decision>,
) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    if let Some(d) = decision.filter(|d| !d.allowed) {
        state.metrics.rate_limited();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many requests from this client; retry in {} s",
                d.retry_after_seconds
            ),
        )
        .retry_after(d.retry_after_seconds));
    }
    if class.is_none() {
        return Ok(None);
    }
    if let Ok(permit) = Arc::clone(&state.concurrency).try_acquire_owned() {
        Ok(Some(permit))
    } else {
        state.metrics.overloaded();
        Err(ApiError::overloaded(
            "the server is handling as many requests as it may; retry",
        ))
    }
}

/// Runs the handler, answering 503 for it if it is still running at the deadline's backstop.
/// Admin work (a reload) is not cut off half way.
async fn run_until_backstop(
    next: Next,
    request: Request,
    class: Option<LimitClass>,
    deadline: Deadline,
    shape: ErrorShape,
) -> Response {
    if class == Some(LimitClass::Admin) {
        return next.run(request).await;
    }
    match tokio::time::timeout(deadline.backstop(), next.run(request)).await {
        Ok(response) => response,
        Err(_) => shape.respond(deadline_exceeded()),
    }
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
