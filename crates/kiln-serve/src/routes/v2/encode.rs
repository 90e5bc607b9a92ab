//! The answer to an inference request: each output as JSON `data`, or as raw bytes after the
//! JSON (Triton's binary tensor extension) when the client asked for binary.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HEADER_LENGTH;
use super::protocol::Output;
use crate::model::LoadedModel;
use crate::routes::inference::argmax;

/// The answer for `outputs` of `model`, given `probabilities` (`n * classes` values).
pub(super) fn respond(
    model: &LoadedModel,
    id: String,
    outputs: &[(Output, bool)],
    probabilities: &[f32],
) -> Response {
    let best: Vec<usize> = probabilities.chunks(model.classes()).map(argmax).collect();
    let mut binary = Vec::new();
    let entries: Vec<Value> = outputs
        .iter()
        .map(|&(output, as_binary)| {
            let tensor = Tensor::of(output, model, probabilities, &best);
            tensor.entry(output, as_binary, &mut binary)
        })
        .collect();
    let header = json!({
        "model_name": model.name(),
        "model_version": model.version,
        "id": id,
        "outputs": entries,
    });
    if binary.is_empty() {
        Json(header).into_response()
    } else {
        with_binary(&header, &binary)
    }
}

/// One output tensor, ready for either encoding.
struct Tensor {
    datatype: &'static str,
    shape: Vec<usize>,
    /// The values as JSON.
    data: Value,
    /// The values as Triton's binary encoding.
    bytes: Vec<u8>,
}

impl Tensor {
    /// `output` for a batch whose most likely classes are `best`.
    fn of(output: Output, model: &LoadedModel, probabilities: &[f32], best: &[usize]) -> Self {
        let n = best.len();
        match output {
            Output::Probabilities => Self {
                datatype: "FP32",
                shape: vec![n, model.classes()],
                data: json!(probabilities),
                bytes: probabilities.iter().flat_map(|p| p.to_le_bytes()).collect(),
            },
            Output::Class => Self {
                datatype: "INT64",
                shape: vec![n],
                data: json!(best),
                bytes: best
                    .iter()
                    .flat_map(|&c| (c as i64).to_le_bytes())
                    .collect(),
            },
            Output::Label => {
                let labels: Vec<&str> = best
                    .iter()
                    .map(|&c| model.manifest.class_names[c].as_str())
                    .collect();
                Self {
                    datatype: "BYTES",
                    shape: vec![n],
                    data: json!(labels),
                    bytes: labels.iter().flat_map(|l| bytes_element(l)).collect(),
                }
            }
        }
    }

    /// Its entry in `outputs`: with `data`, or with `binary_data_size` and its bytes appended
    /// to `binary`.
    fn entry(self, output: Output, as_binary: bool, binary: &mut Vec<u8>) -> Value {
        let mut entry = json!({
            "name": output.name(),
            "datatype": self.datatype,
            "shape": self.shape,
        });
        if as_binary {
            entry["parameters"] = json!({ "binary_data_size": self.bytes.len() });
            binary.extend_from_slice(&self.bytes);
        } else {
            entry["data"] = self.data;
        }
        entry
    }
}

/// One `BYTES` element: its length as a little-endian `u32`, then the bytes.
fn bytes_element(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// The JSON `header`, then the `binary` tensors, with the header's length in
/// `Inference-Header-Content-Length`.
fn with_binary(header: &Value, binary: &[u8]) -> Response {
    let mut body = serde_json::to_vec(header).unwrap_or_default();
    let header_len = body.len();
    body.extend_from_slice(binary);
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(header_len));
    response
}
