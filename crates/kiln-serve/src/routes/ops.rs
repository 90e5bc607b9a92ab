//! Health, readiness, metrics and the admin reload route.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{media_type, read_body};
use crate::error::ApiError;
use crate::state::{AppState, ReloadOutcome};

/// `GET /healthz`: the process is up.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: a model is loaded and the server is not shutting down.
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let model = state.slot.get();
    if state.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    Json(json!({
        "status": "ready",
        "model": model.name(),
        "version": model.version,
        "queue_depth": state.batcher.depth(),
    }))
    .into_response()
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let model = state.slot.get();
    let mut response = state
        .metrics
        .render(model.name(), &model.version, state.batcher.depth())
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {
    /// An artifact or run directory; the path served at start when absent.
    path: Option<PathBuf>,
}

/// `POST /admin/reload`: loads a new artifact and swaps it in, or refuses it and keeps the old.
/// Needs the admin key as `Authorization: Bearer <key>` or `x-admin-key`.
pub(super) async fn reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ReloadOutcome>, ApiError> {
    authorise(&state, &headers)?;
    let body = read_body(&state, &headers, body).await?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest { path: None }
    } else {
        if media_type(&headers) != "application/json" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send {\"path\": \"...\"} as application/json, or an empty body",
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("bad_json", format!("expected {{\"path\": \"...\"}}: {e}"))
        })?
    };
    state
        .reload(request.path.as_deref())
        .await
        .map(Json)
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload_refused",
                format!("{e}; the previous model is still serving"),
            )
        })
}

fn authorise(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.auth.is_on() {
        // API keys govern: the middleware let this request through with the admin role.
        return Ok(());
    }
    let Some(expected) = &state.admin_key else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            format!(
                "admin routes are off: set {} for the server to turn them on",
                state.config.admin.key_env
            ),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-admin-key").and_then(|v| v.to_str().ok()));
    match given {
        Some(key) if constant_time_eq(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong admin key",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin key as Authorization: Bearer <key>",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
