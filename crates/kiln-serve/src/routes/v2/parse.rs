//! From a request body to images: the JSON part, its one input tensor (inline `data` or
//! Triton's binary part), the shape and datatype, and the outputs asked for.

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use super::HEADER_LENGTH;
use super::protocol::{InferInput, InferRequest, Output, Parsed, RequestedOutput};
use crate::error::ApiError;
use crate::input::{self, Scale};
use crate::model::InputSchema;
use crate::numbers::{Flat, with_pixel_cap};

/// The length of the JSON part, from the `Inference-Header-Content-Length` header; `None`
/// when the whole body is JSON.
pub(super) fn header_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_header_length",
                format!("{HEADER_LENGTH} must be a byte count"),
            )
        })
}

/// Checks a request body (`header_length` bytes of JSON, then binary tensor data) and returns
/// what it asks for, at most `max_instances` images of the model's `schema`.
pub(super) fn parse_request(
    body: &[u8],
    header_length: Option<usize>,
    max_instances: usize,
    schema: InputSchema,
) -> Result<Parsed, ApiError> {
    let (json_part, binary) = split_body(body, header_length)?;
    let parsed = with_pixel_cap(schema.pixels(), || {
        serde_json::from_slice::<InferRequest>(json_part)
    });
    let request = parsed.map_err(|e| {
        ApiError::bad_request("bad_json", format!("malformed inference request: {e}"))
    })?;
    let mut input = single_input(request.inputs)?;
    let n = batch_of(&input, max_instances, schema)?;
    let values = input_values(&mut input, binary)?;
    let images = images(&input, &values, n, schema)?;
    let outputs = requested_outputs(&request.parameters, request.outputs.as_deref())?;
    Ok(Parsed {
        id: request.id,
        images,
        outputs,
    })
}

/// The JSON part and the binary part of a body.
fn split_body(body: &[u8], header_length: Option<usize>) -> Result<(&[u8], &[u8]), ApiError> {
    match header_length {
        None => Ok((body, &[])),
        Some(n) if n <= body.len() => Ok(body.split_at(n)),
        Some(n) => Err(ApiError::bad_request(
            "bad_header_length",
            format!(
                "{HEADER_LENGTH} is {n} but the body has {} bytes",
                body.len()
            ),
        )),
    }
}

/// The request's one input tensor.
fn single_input(mut inputs: Vec<InferInput>) -> Result<InferInput, ApiError> {
    if inputs.len() != 1 {
        return Err(ApiError::bad_request(
            "bad_inputs",
            format!("send exactly one input tensor, got {}", inputs.len()),
        ));
    }
    Ok(inputs.remove(0))
}

/// The batch size a shape declares, for a model of input `[C,H,W]`: `[N,C,H,W]`, `[N,C*H*W]`,
/// or `[N,H,W]` when `C` is 1.
fn batch_of(
    input: &InferInput,
    max_instances: usize,
    schema: InputSchema,
) -> Result<usize, ApiError> {
    let [c, h, w] = schema.shape;
    let pixels = schema.pixels();
    let bad = || {
        let three = if c == 1 {
            format!("[N,{h},{w}], ")
        } else {
            String::new()
        };
        ApiError::bad_request(
            "bad_shape",
            format!(
                "shape {:?} is not accepted: the model takes {} images ({c} channel(s) of \
                 {h}x{w}); use {three}[N,{pixels}] or [N,{c},{h},{w}]",
                input.shape,
                schema.describe()
            ),
        )
    };
    let dims: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let n = match *dims.as_slice() {
        [n, dh, dw] if c == 1 && [dh, dw] == [h, w] => n,
        [n, flat] if flat == pixels => n,
        [n, dc, dh, dw] if [dc, dh, dw] == [c, h, w] => n,
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

/// The input's values, from its `data` or from the binary part, which it must use up.
fn input_values(input: &mut InferInput, binary: &[u8]) -> Result<Vec<f64>, ApiError> {
    let (values, unclaimed) = match (input.data.take(), input.parameters.get("binary_data_size")) {
        (Some(data), None) => (inline_values(data)?, binary),
        (None, Some(size)) => {
            let (mine, rest) = take_binary(size, binary)?;
            (from_binary(mine, &input.datatype)?, rest)
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
    if !unclaimed.is_empty() {
        return Err(ApiError::bad_request(
            "bad_binary",
            format!(
                "{} bytes of binary data are not claimed by any input",
                unclaimed.len()
            ),
        ));
    }
    Ok(values)
}

/// The values of an inline `data` array, or why they are not numbers.
fn inline_values(data: Flat) -> Result<Vec<f64>, ApiError> {
    match data.problem {
        Some(problem) => Err(ApiError::bad_request("bad_pixels", problem)),
        None => Ok(data.values),
    }
}

/// Splits the first `size` bytes off the binary part.
fn take_binary<'a>(size: &Value, binary: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
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
    Ok(binary.split_at(size))
}

/// Values of a binary tensor: bytes for `UINT8`, little-endian floats for `FP32`.
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
        other => Err(bad_datatype(other)),
    }
}

/// `n` images from the input's values, scaled as its datatype says.
fn images(
    input: &InferInput,
    values: &[f64],
    n: usize,
    schema: InputSchema,
) -> Result<Vec<Vec<u8>>, ApiError> {
    let pixels = schema.pixels();
    if values.len() != n * pixels {
        return Err(ApiError::bad_request(
            "wrong_pixel_count",
            format!(
                "shape {:?} needs {} values, found {}",
                input.shape,
                n * pixels,
                values.len()
            ),
        ));
    }
    let scale = match input.datatype.as_str() {
        "UINT8" => Scale::U8,
        "FP32" => Scale::Auto,
        other => return Err(bad_datatype(other)),
    };
    if scale == Scale::U8 && values.iter().any(|v| v.fract() != 0.0) {
        return Err(ApiError::bad_request(
            "bad_pixels",
            "UINT8 values must be integers",
        ));
    }
    values
        .chunks(pixels)
        .enumerate()
        .map(|(i, chunk)| {
            input::pixels_from_numbers(chunk, scale, schema).map_err(|mut e| {
                e.message = format!("image {i}: {}", e.message);
                e
            })
        })
        .collect()
}

fn bad_datatype(datatype: &str) -> ApiError {
    ApiError::bad_request(
        "bad_datatype",
        format!("datatype {datatype:?} is not accepted: use UINT8 or FP32"),
    )
}

/// The outputs asked for, each with whether it goes in the binary part; all of them when the
/// request names none. `binary_data_output` sets the default, `binary_data` each output's.
fn requested_outputs(
    parameters: &Map<String, Value>,
    requested: Option<&[RequestedOutput]>,
) -> Result<Vec<(Output, bool)>, ApiError> {
    let binary_default = parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(requested) = requested else {
        return Ok(Output::ALL.map(|o| (o, binary_default)).to_vec());
    };
    requested
        .iter()
        .map(|o| {
            let binary = o
                .parameters
                .get("binary_data")
                .and_then(Value::as_bool)
                .unwrap_or(binary_default);
            Output::parse(&o.name).map(|output| (output, binary))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_data::image::Fit;

    fn input(shape: &[i64]) -> InferInput {
        InferInput {
            name: "input".into(),
            shape: shape.to_vec(),
            datatype: "UINT8".into(),
            parameters: Map::new(),
            data: None,
        }
    }

    #[test]
    fn shapes_follow_the_schema() {
        let grey = InputSchema {
            shape: [1, 16, 12],
            fit: Fit::Resize,
        };
        for shape in [[3, 16, 12].as_slice(), &[3, 192], &[3, 1, 16, 12]] {
            assert_eq!(batch_of(&input(shape), 8, grey).unwrap(), 3, "{shape:?}");
        }
        for shape in [
            [1, 28, 28].as_slice(),
            &[1, 784],
            &[1, 12, 16],
            &[1, 2, 16, 12],
        ] {
            let e = batch_of(&input(shape), 8, grey).unwrap_err();
            assert!(
                e.message.contains("[N,16,12]") && e.message.contains("[N,192]"),
                "{}",
                e.message
            );
        }
        // Channels: [N,C,H,W] and [N,C*H*W] only.
        let colour = InputSchema {
            shape: [3, 4, 5],
            fit: Fit::Resize,
        };
        assert_eq!(batch_of(&input(&[2, 3, 4, 5]), 8, colour).unwrap(), 2);
        assert_eq!(batch_of(&input(&[2, 60]), 8, colour).unwrap(), 2);
        assert!(batch_of(&input(&[2, 4, 5]), 8, colour).is_err());
    }
}
