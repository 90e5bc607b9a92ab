//! The KServe v2 / Open Inference Protocol REST routes, with Triton's binary tensor extension
//! (so `tritonclient.http` works with its defaults).

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{INLINE_PARSE_LIMIT, argmax, parse_off_executor, read_body, run_model};
use crate::error::ApiError;
use crate::input::{self, Scale};
use crate::middleware::{Deadline, RequestId};
use crate::model::{LoadedModel, PIXELS};
use crate::numbers::Flat;
use crate::state::AppState;

/// Header that splits a body into its JSON part and its binary tensor data.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// A v2 error: `{"error": "..."}` as the protocol asks, with the usual status.
pub struct V2Error(ApiError);

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let mut response =
            (self.0.status, Json(json!({ "error": self.0.message }))).into_response();
        if let Some(s) = self.0.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// `GET /v2`
pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "kiln",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

/// `GET /v2/health/live`
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = !state.is_draining();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

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
    Json(json!({
        "name": model.name(),
        "versions": [model.version],
        "platform": "kiln",
        "inputs": [{ "name": "input", "datatype": "FP32", "shape": [-1, 28, 28] }],
        "outputs": [
            { "name": "probabilities", "datatype": "FP32", "shape": [-1, model.classes()] },
            { "name": "class", "datatype": "INT64", "shape": [-1] },
            { "name": "label", "datatype": "BYTES", "shape": [-1] },
        ],
        "parameters": { "class_names": model.manifest.class_names },
    }))
}

/// `GET /v2/models/{name}`
pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, V2Error> {
    Ok(metadata(&*find_model(&state, &name, None)?))
}

/// `GET /v2/models/{name}/versions/{version}`
pub async fn model_metadata_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, V2Error> {
    Ok(metadata(&*find_model(&state, &name, Some(&version))?))
}

/// `GET /v2/models/{name}/ready`
pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, V2Error> {
    let model = find_model(&state, &name, None)?;
    Ok(Json(json!({ "name": model.name(), "ready": true })))
}

/// `GET /v2/models/{name}/versions/{version}/ready`
pub async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, V2Error> {
    let model = find_model(&state, &name, Some(&version))?;
    Ok(Json(json!({ "name": model.name(), "ready": true })))
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InferInput>,
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Flat>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// What a parsed request asks for.
struct Parsed {
    id: Option<String>,
    images: Vec<Vec<u8>>,
    outputs: Vec<(Output, bool)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Probabilities,
    Class,
    Label,
}

impl Output {
    fn parse(name: &str) -> Result<Self, ApiError> {
        match name {
            "probabilities" => Ok(Self::Probabilities),
            "class" => Ok(Self::Class),
            "label" => Ok(Self::Label),
            other => Err(ApiError::bad_request(
                "unknown_output",
                format!("no output {other:?}; outputs are probabilities, class and label"),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Probabilities => "probabilities",
            Self::Class => "class",
            Self::Label => "label",
        }
    }
}

fn flag(parameters: &Map<String, Value>, key: &str) -> bool {
    parameters
        .get(key)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn parse_request(
    body: &[u8],
    header_length: Option<usize>,
    max_instances: usize,
) -> Result<Parsed, ApiError> {
    let (json_part, mut binary) = match header_length {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(ApiError::bad_request(
                "bad_header_length",
                format!(
                    "{HEADER_LENGTH} is {n} but the body has {} bytes",
                    body.len()
                ),
            ));
        }
        None => (body, &[][..]),
    };
    let request: InferRequest = serde_json::from_slice(json_part).map_err(|e| {
        ApiError::bad_request("bad_json", format!("malformed inference request: {e}"))
    })?;
    let mut inputs = request.inputs;
    if inputs.len() != 1 {
        return Err(ApiError::bad_request(
            "bad_inputs",
            format!("send exactly one input tensor, got {}", inputs.len()),
        ));
    }
    let mut input = inputs.remove(0);
    let n = batch_of(&input, max_instances)?;
    let values = match (input.data.take(), input.parameters.get("binary_data_size")) {
        (Some(data), None) => {
            if let Some(problem) = &data.problem {
                return Err(ApiError::bad_request("bad_pixels", *problem));
            }
            data.values
        }
        (None, Some(size)) => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("bad_binary", "binary_data_size must be a byte count")
                })?;
            if size > binary.len() {
                return Err(ApiError::bad_request(
                    "bad_binary",
                    format!(
                        "binary_data_size {size} but only {} bytes follow the header",
                        binary.len()
                    ),
                ));
            }
            let (mine, rest) = binary.split_at(size);
            binary = rest;
            from_binary(mine, &input.datatype)?
        }
        _ => {
            return Err(ApiError::bad_request(
                "bad_inputs",
                format!(
                    "input {:?} needs either data or parameters.binary_data_size",
                    input.name
                ),
            ));
        }
    };
    if !binary.is_empty() {
        return Err(ApiError::bad_request(
            "bad_binary",
            format!(
                "{} bytes of binary data are not claimed by any input",
                binary.len()
            ),
        ));
    }
    if values.len() != n * PIXELS {
        return Err(ApiError::bad_request(
            "wrong_pixel_count",
            format!(
                "shape {:?} needs {} values, found {}",
                input.shape,
                n * PIXELS,
                values.len()
            ),
        ));
    }
    let scale = match input.datatype.as_str() {
        "UINT8" => Scale::U8,
        "FP32" => Scale::Auto,
        other => {
            return Err(ApiError::bad_request(
                "bad_datatype",
                format!("datatype {other:?} is not accepted: use UINT8 or FP32"),
            ));
        }
    };
    if scale == Scale::U8 && values.iter().any(|v| v.fract() != 0.0) {
        return Err(ApiError::bad_request(
            "bad_pixels",
            "UINT8 values must be integers",
        ));
    }
    let images = values
        .chunks(PIXELS)
        .enumerate()
        .map(|(i, chunk)| {
            input::pixels_from_numbers(chunk, scale).map_err(|mut e| {
                e.message = format!("image {i}: {}", e.message);
                e
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let binary_default = flag(&request.parameters, "binary_data_output");
    let outputs = match &request.outputs {
        None => [Output::Probabilities, Output::Class, Output::Label]
            .into_iter()
            .map(|o| (o, binary_default))
            .collect(),
        Some(list) => list
            .iter()
            .map(|o| {
                let binary = o
                    .parameters
                    .get("binary_data")
                    .and_then(Value::as_bool)
                    .unwrap_or(binary_default);
                Output::parse(&o.name).map(|out| (out, binary))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(Parsed {
        id: request.id,
        images,
        outputs,
    })
}

/// The batch size a shape declares: `[N,28,28]`, `[N,784]` or `[N,1,28,28]`.
fn batch_of(input: &InferInput, max_instances: usize) -> Result<usize, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "bad_shape",
            format!(
                "shape {:?} is not accepted: use [N,28,28], [N,784] or [N,1,28,28]",
                input.shape
            ),
        )
    };
    let dims: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let n = match dims.as_slice() {
        [n, 28, 28] | [n, 784] | [n, 1, 28, 28] => *n,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(ApiError::bad_request(
            "no_instances",
            "the batch is empty (N = 0)",
        ));
    }
    if n > max_instances {
        return Err(ApiError::bad_request(
            "too_many_instances",
            format!("{n} images in one request; the limit is {max_instances}"),
        ));
    }
    Ok(n)
}

fn from_binary(bytes: &[u8], datatype: &str) -> Result<Vec<f64>, ApiError> {
    match datatype {
        "UINT8" => Ok(bytes.iter().map(|&b| f64::from(b)).collect()),
        "FP32" => {
            if !bytes.len().is_multiple_of(4) {
                return Err(ApiError::bad_request(
                    "bad_binary",
                    "FP32 binary data must be a multiple of 4 bytes",
                ));
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect())
        }
        other => Err(ApiError::bad_request(
            "bad_datatype",
            format!("datatype {other:?} is not accepted: use UINT8 or FP32"),
        )),
    }
}

/// `POST /v2/models/{name}/infer`
pub async fn infer(
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
pub async fn infer_version(
    State(state): State<Arc<AppState>>,
    Extension(id): Extension<RequestId>,
    Extension(deadline): Extension<Deadline>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    run_infer(state, id, deadline, &name, Some(&version), headers, body).await
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
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_header_length",
                        format!("{HEADER_LENGTH} must be a byte count"),
                    )
                })?,
        ),
    };
    let body = read_body(&state, &headers, body).await?;
    let max_instances = state.config.limits.max_instances;
    let heavy = body.len() > INLINE_PARSE_LIMIT;
    let parsed = parse_off_executor(&state, heavy, move || {
        parse_request(&body, header_length, max_instances)
    })
    .await?;
    let n = parsed.images.len();
    let output = run_model(&state, &model, &parsed.images, deadline).await?;
    Ok(respond(
        &model,
        parsed.id.unwrap_or(request_id),
        &parsed.outputs,
        &output.probabilities,
        n,
    ))
}

fn respond(
    model: &LoadedModel,
    id: String,
    outputs: &[(Output, bool)],
    probabilities: &[f32],
    n: usize,
) -> Response {
    let classes = model.classes();
    let best: Vec<usize> = probabilities.chunks(classes).map(argmax).collect();
    let mut binary = Vec::new();
    let mut entries = Vec::with_capacity(outputs.len());
    for &(output, as_binary) in outputs {
        let (datatype, shape, data, bytes): (&str, Vec<usize>, Value, Vec<u8>) = match output {
            Output::Probabilities => (
                "FP32",
                vec![n, classes],
                json!(probabilities),
                probabilities.iter().flat_map(|p| p.to_le_bytes()).collect(),
            ),
            Output::Class => (
                "INT64",
                vec![n],
                json!(best),
                best.iter()
                    .flat_map(|&c| (c as i64).to_le_bytes())
                    .collect(),
            ),
            Output::Label => {
                let labels: Vec<&str> = best
                    .iter()
                    .map(|&c| model.manifest.class_names[c].as_str())
                    .collect();
                let bytes = labels
                    .iter()
                    .flat_map(|l| {
                        let mut b = (l.len() as u32).to_le_bytes().to_vec();
                        b.extend_from_slice(l.as_bytes());
                        b
                    })
                    .collect();
                ("BYTES", vec![n], json!(labels), bytes)
            }
        };
        let mut entry = json!({ "name": output.name(), "datatype": datatype, "shape": shape });
        if as_binary {
            entry["parameters"] = json!({ "binary_data_size": bytes.len() });
            binary.extend_from_slice(&bytes);
        } else {
            entry["data"] = data;
        }
        entries.push(entry);
    }
    let header_json = json!({
        "model_name": model.name(),
        "model_version": model.version,
        "id": id,
        "outputs": entries,
    });
    if binary.is_empty() {
        return Json(header_json).into_response();
    }
    let mut body = serde_json::to_vec(&header_json).unwrap_or_default();
    let header_len = body.len();
    body.extend_from_slice(&binary);
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(HEADER_LENGTH, HeaderValue::from(header_len));
    response
}
