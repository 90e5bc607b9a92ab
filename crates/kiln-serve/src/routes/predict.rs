//! `POST /predict`: JSON instances (numbers, base64 PNG/JPEG) or one raw PNG/JPEG body.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::body::{INLINE_PARSE_LIMIT, media_type, parse_off_executor, read_body};
use super::inference::{argmax, run_model};
use crate::error::ApiError;
use crate::fit::Invert;
use crate::input::{self, ImageLimits, Scale};
use crate::model::InputSchema;
use crate::numbers::{Instance, bounded_instances, with_pixel_cap};
use crate::request::{Deadline, RequestId, deadline_exceeded};
use crate::state::AppState;

/// The JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    /// Images: the model's `channels * height * width` numbers (flat or nested), a base64
    /// PNG/JPEG, or `{"b64": ...}`.
    #[serde(deserialize_with = "bounded_instances")]
    instances: Vec<Instance>,
    /// How numeric pixels are scaled.
    #[serde(default)]
    scale: Scale,
    /// Whether encoded images are inverted before fitting.
    #[serde(default)]
    invert: Invert,
    /// Also answer, per instance, the input the model saw, as a base64 PNG.
    #[serde(default)]
    explain: bool,
}

/// Query parameters, for raw image bodies.
#[derive(Debug, Deserialize)]
pub(super) struct PredictQuery {
    invert: Option<String>,
    explain: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Prediction {
    class: usize,
    label: String,
    probabilities: Vec<f32>,
    /// The fitted input as a base64 PNG, when the request asked to `explain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    fitted_png: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct ModelRef {
    name: String,
    version: String,
}

#[derive(Debug, Serialize)]
pub(super) struct PredictResponse {
    request_id: String,
    model: ModelRef,
    predictions: Vec<Prediction>,
}

/// `POST /predict`
pub(super) async fn predict(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(Deadline(deadline)): Extension<Deadline>,
    Query(query): Query<PredictQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PredictResponse>, ApiError> {
    let media = media_type(&headers);
    let query_invert = match query.invert.as_deref() {
        None => None,
        Some(text) => Some(Invert::parse(text).ok_or_else(|| {
            ApiError::bad_request("bad_query", "invert must be auto, true or false")
        })?),
    };
    let query_explain = match query.explain.as_deref() {
        Some("true" | "1" | "yes") => true,
        None | Some("false" | "0" | "no") => false,
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "explain must be true or false",
            ));
        }
    };
    let limits = ImageLimits::from(&state.config.limits);
    let max_instances = state.config.limits.max_instances;
    let body = read_body(&state, &headers, body).await?;
    // The model is taken once, here: its schema shapes the parsing and it runs the request,
    // so a reload meanwhile (even to another input shape) does not split the two.
    let model = state.slot.get();
    let schema = model.schema();
    let (images, explain) = match media.as_str() {
        "application/json" => {
            let heavy = body.len() > INLINE_PARSE_LIMIT;
            let request = parse_off_executor(&state, heavy, move || {
                parse_json(&body, max_instances, schema)
            })
            .await?;
            let explain = request.explain || query_explain;
            // Images are decoded off the executor, however small the body.
            let images = request
                .instances
                .iter()
                .any(|i| matches!(i, Instance::Image(_)));
            let images = parse_off_executor(&state, heavy || images, move || {
                decode(&request, limits, query_invert, deadline, schema)
            })
            .await?;
            (images, explain)
        }
        "image/png" | "image/jpeg" => {
            let invert = query_invert.unwrap_or_default();
            let images = parse_off_executor(&state, true, move || {
                let mut budget = limits.max_pixels;
                input::pixels_from_image(&body, limits, invert, &mut budget, schema)
                    .map(|p| vec![p])
            })
            .await?;
            (images, query_explain)
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type {:?} is not accepted: send application/json, image/png or image/jpeg",
                    if other.is_empty() { "(none)" } else { other }
                ),
            ));
        }
    };

    let output = run_model(&state, &model, &images, deadline).await?;
    let classes = model.classes();
    let predictions = output
        .probabilities
        .chunks(classes)
        .zip(&images)
        .map(|(p, pixels)| {
            let class = argmax(p);
            Prediction {
                class,
                label: model.manifest.class_names[class].clone(),
                probabilities: p.to_vec(),
                fitted_png: explain.then(|| input::png_base64(pixels, schema)),
            }
        })
        .collect();
    Ok(Json(PredictResponse {
        request_id,
        model: ModelRef {
            name: model.name().to_string(),
            version: model.version.clone(),
        },
        predictions,
    }))
}

fn parse_json(
    body: &[u8],
    max_instances: usize,
    schema: InputSchema,
) -> Result<PredictRequest, ApiError> {
    let parsed = with_pixel_cap(schema.pixels(), || {
        serde_json::from_slice::<PredictRequest>(body)
    });
    let request = parsed.map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("malformed request: {e}; expected {{\"instances\": [...]}}"),
        )
    })?;
    if request.instances.is_empty() {
        return Err(ApiError::bad_request(
            "no_instances",
            "instances is empty: send at least one image",
        ));
    }
    if request.instances.len() > max_instances {
        return Err(ApiError::bad_request(
            "too_many_instances",
            format!(
                "{} instances in one request; the limit is {max_instances}",
                request.instances.len()
            ),
        ));
    }
    Ok(request)
}

/// Pixels of every instance, giving up once the request's deadline has passed.
fn decode(
    request: &PredictRequest,
    limits: ImageLimits,
    query_invert: Option<Invert>,
    deadline: Instant,
    schema: InputSchema,
) -> Result<Vec<Vec<u8>>, ApiError> {
    let invert = query_invert.unwrap_or(request.invert);
    let mut budget = limits.max_pixels;
    request
        .instances
        .iter()
        .enumerate()
        .map(|(i, instance)| {
            if Instant::now() > deadline {
                return Err(deadline_exceeded());
            }
            input::pixels_from_instance(
                instance,
                request.scale,
                limits,
                invert,
                &mut budget,
                schema,
            )
            .map_err(|mut e| {
                e.message = format!("instance {i}: {}", e.message);
                e
            })
        })
        .collect()
}
