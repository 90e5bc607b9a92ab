//! Errors: [`ServeError`] for starting and reloading, [`ApiError`] for what a request gets back,
//! and [`V2Error`], the same answer in the `KServe` v2 shape.

use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What can stop the server from starting or a model from loading.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The serve config cannot be read or is invalid.
    #[error("{}: invalid serve config: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model artifact cannot be loaded (missing, corrupt, mismatched).
    #[error(transparent)]
    Model(#[from] kiln_model::ModelError),
    /// The artifact loads but is not something this server can serve.
    #[error("{}: cannot serve this model: {message}", path.display())]
    Unservable {
        /// The artifact directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The listening socket.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An I/O error while serving.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// The API keys file, a TLS certificate or its private key cannot be read or is invalid.
    #[error("{}: {what}: {message}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Which file it is (`API keys file`, `TLS certificate`, `TLS private key`).
        what: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ServeError {
    /// Whether the user's input (config, model path) is at fault rather than the machine.
    #[must_use]
    pub fn is_user_input(&self) -> bool {
        match self {
            Self::Config { .. }
            | Self::Unservable { .. }
            | Self::Bind { .. }
            | Self::Credentials { .. } => true,
            Self::Model(e) => e.is_user_input(),
            Self::Io(_) => false,
        }
    }
}

/// An error answer: an HTTP status, a stable machine-readable code and a sentence for people.
/// Rendered as `{"error": {"code": .., "message": ..}}` (and `"error": message` for the v2
/// routes, as the protocol asks).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short stable code, e.g. `bad_image`.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
    /// Seconds to put in `Retry-After`, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After`.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The overloaded answer: 503 with `Retry-After: 1`.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message).retry_after(1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message },
        });
        with_retry_after((self.status, axum::Json(body)), self.retry_after)
    }
}

/// A v2 error: `{"error": "..."}` as the protocol asks, with the usual status.
#[derive(Debug, Clone)]
pub struct V2Error(ApiError);

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.0.message });
        with_retry_after((self.0.status, axum::Json(body)), self.0.retry_after)
    }
}

fn with_retry_after(response: impl IntoResponse, seconds: Option<u64>) -> Response {
    let mut response = response.into_response();
    if let Some(seconds) = seconds {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The error body a route family answers with: the v2 shape under `/v2`, ours elsewhere. For
/// answers made outside the handlers (the middleware, the fallback route), which know only the
/// path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// `{"error": {"code": .., "message": ..}}`
    Kiln,
    /// `{"error": "..."}`
    V2,
}

impl ErrorShape {
    /// The shape for a request to `path`.
    pub(crate) fn for_path(path: &str) -> Self {
        if path.starts_with("/v2") {
            Self::V2
        } else {
            Self::Kiln
        }
    }

    /// `error` in this shape.
    pub(crate) fn respond(self, error: ApiError) -> Response {
        match self {
            Self::Kiln => error.into_response(),
            Self::V2 => V2Error::from(error).into_response(),
        }
    }
}
