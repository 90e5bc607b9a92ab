//! Errors: [`ServeError`] for starting and reloading, [`ApiError`] for what a request gets back.

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
}

impl ServeError {
    /// Whether the user's input (config, model path) is at fault rather than the machine.
    #[must_use]
    pub fn is_user_input(&self) -> bool {
        match self {
            Self::Config { .. } | Self::Unservable { .. } | Self::Bind { .. } => true,
            Self::Model(e) => !matches!(e, kiln_model::ModelError::Io { .. }),
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
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
