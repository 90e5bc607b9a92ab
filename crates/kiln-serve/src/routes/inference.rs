//! Running images through the batcher, and what its failures answer.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;

use crate::batcher::{BatchError, BatchOutput};
use crate::error::ApiError;
use crate::model::LoadedModel;
use crate::request::deadline_exceeded;
use crate::state::AppState;

/// Normalises `images` (`u8` levels of the model's input shape) with the model's own `preprocess()` table and runs
/// them through the batcher on `model`.
pub(super) async fn run_model(
    state: &AppState,
    model: &Arc<LoadedModel>,
    images: &[Vec<u8>],
    deadline: Instant,
) -> Result<BatchOutput, ApiError> {
    let mut inputs = Vec::with_capacity(images.len() * model.pixels());
    for pixels in images {
        kiln_data::preprocess(pixels, &model.table, &mut inputs);
    }
    state
        .batcher
        .infer(Arc::clone(model), inputs, images.len(), deadline)
        .await
        .map_err(|e| batch_error(state, &e))
}

/// The answer for a job the batcher could not run.
fn batch_error(state: &AppState, e: &BatchError) -> ApiError {
    match e {
        BatchError::QueueFull => {
            state.metrics.overloaded();
            ApiError::overloaded("the inference queue is full; retry")
        }
        BatchError::DeadlineExceeded => deadline_exceeded(),
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

/// Index of the largest value.
pub(super) fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}
