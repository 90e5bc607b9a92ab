//! The router: every route. Handlers live in one module per route family; what they share is
//! in [`body`] (reading and parsing request bodies) and [`inference`] (running the model).

mod body;
mod inference;
mod ops;
mod page;
mod predict;
mod v2;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};

use crate::error::{ApiError, ErrorShape};
use crate::state::AppState;

/// The axum app for `state`: `/predict`, the `KServe` v2 routes, health, metrics and admin.
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
        .merge(page::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::middleware::observe,
        ))
        .with_state(state)
}

async fn not_found(uri: Uri) -> Response {
    let error = ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see README (POST /predict, POST /v2/models/<name>/infer)",
    );
    ErrorShape::for_path(uri.path()).respond(error)
}
