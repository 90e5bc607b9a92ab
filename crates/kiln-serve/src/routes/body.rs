//! Reading request bodies within the limits, and parsing them off the async executor.

use std::error::Error as _;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::LengthLimitError;

use crate::error::ApiError;
use crate::state::AppState;

/// Bodies above this size are parsed on a blocking thread, not the async executor.
pub(super) const INLINE_PARSE_LIMIT: usize = 32 * 1024;

/// Reads a whole body, refusing (413) one over the configured limit before reading it all, and
/// (408) one that does not arrive within the request's time.
pub(super) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let max = state.config.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the {max}-byte limit"),
        )
    };
    if declared_length(headers).is_some_and(|n| n > max as u64) {
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
        Ok(Err(e)) if is_over_limit(&e) => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "bad_body",
            format!("cannot read the request body: {e}"),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// The `Content-Length` a client declared, if it is a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether reading stopped at the length limit: [`axum::body::to_bytes`] reports it as a
/// [`LengthLimitError`] somewhere in the error's source chain.
fn is_over_limit(error: &axum::Error) -> bool {
    std::iter::successors(error.source(), |&e| e.source())
        .any(<dyn std::error::Error + 'static>::is::<LengthLimitError>)
}

/// The media type of a request, lower-cased, without parameters.
pub(super) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Runs `parse` inline for small work, and for large work on the blocking pool, a few at a
/// time (so a burst of image-heavy requests cannot hold hundreds of decoders in memory).
pub(super) async fn parse_off_executor<T: Send + 'static>(
    state: &AppState,
    heavy: bool,
    parse: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if !heavy {
        return parse();
    }
    // The permit moves into the blocking task: a request dropped while its image decodes (a
    // client gone, the deadline) still holds its slot until the decode ends.
    let permit = std::sync::Arc::clone(&state.decode_permits)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::overloaded("the server is shutting down"))?;
    let parse = move || {
        let _permit = permit;
        parse()
    };
    tokio::task::spawn_blocking(parse).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("request parsing failed: {e}"),
        )
    })?
}
