//! `GET /`: a page to try the model in a browser (draw a digit or drop an image, see the
//! classes), with its script and style at `/page.js` and `/page.css`.
//!
//! All three are embedded in the binary: no CDN, no build step. The page is a plain client of
//! the server: it reads the model from `/readyz` and `/v2/models/{name}` and posts to
//! `/predict`, so the same preprocessing, limits and rate limits apply to it as to any client.
//! These routes are not rate limited themselves (the middleware limits inference and admin
//! routes only). The script and style are separate files so that the Content-Security-Policy
//! needs no `'unsafe-inline'`.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// The page, its script and its style.
const HTML: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// Only this origin's own script, style, fetches and images (`data:` and `blob:` for the fitted
/// input and a dropped file's preview); no inline code, no frames, no forms, no plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The routes of the page, to merge into the app.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/page.js", get(script))
        .route("/page.css", get(style))
}

/// Headers every part of the page carries: its content type and the security policy.
fn headers(content_type: &'static str) -> [(HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // A reloaded server may serve a newer page; revalidating three small files is cheap.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

/// `GET /`
async fn index() -> impl IntoResponse {
    (headers("text/html; charset=utf-8"), HTML)
}

/// `GET /page.js`
async fn script() -> impl IntoResponse {
    (headers("text/javascript; charset=utf-8"), SCRIPT)
}

/// `GET /page.css`
async fn style() -> impl IntoResponse {
    (headers("text/css; charset=utf-8"), STYLE)
}
