//! The v2 handlers: server and model metadata, health, and inference.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::encode::respond;
use super::parse::{header_length, parse_request};
use crate::error::{ApiError, V2Error};
use crate::model::LoadedModel;
use crate::request::{Deadline, RequestId};
use crate::routes::body::{INLINE_PARSE_LIMIT, parse_off_executor, read_body};
use crate::routes::inference::run_model;
use crate::state::AppState;

/// `GET /v2`
pub(crate) async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "kiln",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

/// `GET /v2/health/live`
pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = !state.is_draining();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

/// `GET /v2/models/{name}`
pub(crate) async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, V2Error> {
    Ok(metadata(&*find_model(&state, &name, None)?))
}

/// `GET /v2/models/{name}/versions/{version}`
pub(crate) async fn model_metadata_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, V2Error> {
    Ok(metadata(&*find_model(&state, &name, Some(&version))?))
}

/// `GET /v2/models/{name}/ready`
pub(crate) async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, V2Error> {
    let model = find_model(&state, &name, None)?;
    Ok(Json(json!({ "name": model.name(), "ready": true })))
}

/// `GET /v2/models/{name}/versions/{version}/ready`
pub(crate) async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, V2Error> {
    let model = find_model(&state, &name, Some(&version))?;
    Ok(Json(json!({ "name": model.name(), "ready": true })))
}

/// `POST /v2/models/{name}/infer`
pub(crate) async fn infer(
    State(state): State<Arc<AppState>>,
    Extension(id): Extension<RequestId>,
    Extension(deadline): Extension<Deadline>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    run_infer(state, id, deadline, &name, None, headers, body).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`
pub(crate) async fn infer_version(
    State(state): State<Arc<AppState>>,
    Extension(id): Extension<RequestId>,
    Extension(deadline): Extension<Deadline>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    run_infer(state, id, deadline, &name, Some(&version), headers, body).await
}

/// The model served as `name` (and `version`, when given and not empty).
fn find_model(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Arc<LoadedModel>, V2Error> {
    let model = state.slot.get();
    if model.name() != name {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!(
                "model {name:?} is not served here (this server serves {:?})",
                model.name()
            ),
        )
        .into());
    }
    if let Some(v) = version.filter(|v| !v.is_empty())
        && v != model.version
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_version",
            format!(
                "model {name:?} has no version {v:?} (serving {:?})",
                model.version
            ),
        )
        .into());
    }
    Ok(model)
}

fn metadata(model: &LoadedModel) -> Json<Value> {
    let schema = model.schema();
    let [c, h, w] = schema.shape;
    // `[-1, H, W]` for grey models, as before; `[-1, C, H, W]` when there are channels.
    let shape: Vec<i64> = if c == 1 {
        vec![-1, dim(h), dim(w)]
    } else {
        vec![-1, dim(c), dim(h), dim(w)]
    };
    Json(json!({
        "name": model.name(),
        "versions": [model.version],
        "platform": "kiln",
        "inputs": [{ "name": "input", "datatype": "FP32", "shape": shape }],
        "outputs": [
            { "name": "probabilities", "datatype": "FP32", "shape": [-1, model.classes()] },
            { "name": "class", "datatype": "INT64", "shape": [-1] },
            { "name": "label", "datatype": "BYTES", "shape": [-1] },
        ],
        "parameters": {
            "class_names": model.manifest.class_names,
            "input_shape": schema.shape,
            "fit": schema.fit.name(),
        },
    }))
}

/// A dimension as the v2 protocol writes it (`i64`).
fn dim(d: usize) -> i64 {
    i64::try_from(d).unwrap_or(i64::MAX)
}

async fn run_infer(
    state: Arc<AppState>,
    RequestId(request_id): RequestId,
    Deadline(deadline): Deadline,
    name: &str,
    version: Option<&str>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let model = find_model(&state, name, version)?;
    let header_length = header_length(&headers)?;
    let body = read_body(&state, &headers, body).await?;
    let max_instances = state.config.limits.max_instances;
    let schema = model.schema();
    let heavy = body.len() > INLINE_PARSE_LIMIT;
    let parsed = parse_off_executor(&state, heavy, move || {
        parse_request(&body, header_length, max_instances, schema)
    })
    .await?;
    let output = run_model(&state, &model, &parsed.images, deadline).await?;
    Ok(respond(
        &model,
        parsed.id.unwrap_or(request_id),
        &parsed.outputs,
        &output.probabilities,
    ))
}
