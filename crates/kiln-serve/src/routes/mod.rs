//! The router: every route, and the helpers their handlers share.

mod ops;
mod predict;
mod v2;

pub use v2::V2Error;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};

use std::time::Instant;

use crate::batcher::{BatchError, BatchOutput};
use crate::error::ApiError;
use crate::model::{LoadedModel, PIXELS};
use crate::state::AppState;

/// The axum app for `state`: `/predict`, the KServe v2 routes, health, metrics and admin.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/predict", post(predict::predict))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/admin/reload", post(ops::reload))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{name}", get(v2::model_metadata))
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/infer", post(v2::infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(v2::model_metadata_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(v2::model_ready_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(v2::infer_version),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::middleware::observe,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let error = ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see README (POST /predict, POST /v2/models/<name>/infer)",
    );
    if uri.path().starts_with("/v2") {
        V2Error::from(error).into_response()
    } else {
        error.into_response()
    }
}

/// Reads a whole body, refusing (413) one over the configured limit before reading it all, and
/// (408) one that does not arrive within the request's time.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let max = state.config.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the {max}-byte limit"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(
        state.config.limits.request_timeout(),
        axum::body::to_bytes(body, max),
    );
    match read.await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) if e.to_string().contains("length limit") => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "bad_body",
            format!("cannot read the request body: {e}"),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// The media type of a request, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The answer for a job the batcher could not run.
fn batch_error(state: &AppState, e: &BatchError) -> ApiError {
    match e {
        BatchError::QueueFull => {
            state.metrics.overloaded();
            ApiError::overloaded("the inference queue is full; retry")
        }
        BatchError::DeadlineExceeded => deadline_passed(),
        BatchError::Closed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
        .retry_after(1),
        BatchError::Failed(m) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "inference_failed",
            format!("inference failed: {m}"),
        ),
    }
}

/// Normalises `images` (28x28 `u8` levels) with the model's own `preprocess()` table and runs
/// them through the batcher on `model`.
async fn run_model(
    state: &AppState,
    model: &Arc<LoadedModel>,
    images: &[Vec<u8>],
    deadline: Instant,
) -> Result<BatchOutput, ApiError> {
    let mut inputs = Vec::with_capacity(images.len() * PIXELS);
    for pixels in images {
        kiln_data::preprocess(pixels, &model.table, &mut inputs);
    }
    state
        .batcher
        .infer(Arc::clone(model), inputs, images.len(), deadline)
        .await
        .map_err(|e| batch_error(state, &e))
}

/// Index of the largest value.
fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// Bodies above this size are parsed on a blocking thread, not the async executor.
const INLINE_PARSE_LIMIT: usize = 32 * 1024;

/// Runs `parse` inline for small work, and for large work on the blocking pool, a few at a
/// time (so a burst of image-heavy requests cannot hold hundreds of decoders in memory).
async fn parse_off_executor<T: Send + 'static>(
    state: &AppState,
    heavy: bool,
    parse: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if !heavy {
        return parse();
    }
    let _permit = state
        .decode_permits
        .acquire()
        .await
        .map_err(|_| ApiError::overloaded("the server is shutting down"))?;
    tokio::task::spawn_blocking(parse).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("request parsing failed: {e}"),
        )
    })?
}

/// The answer for a request whose deadline passed.
fn deadline_passed() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "deadline_exceeded",
        "the request was not answered within its deadline; retry",
    )
    .retry_after(1)
}
