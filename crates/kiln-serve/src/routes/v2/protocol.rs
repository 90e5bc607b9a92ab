//! What a v2 inference request says, as sent (serde types) and once checked ([`Parsed`]).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::numbers::Flat;

/// The JSON part of `POST .../infer`.
#[derive(Debug, Deserialize)]
pub(super) struct InferRequest {
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    pub inputs: Vec<InferInput>,
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One input tensor: its values inline as `data`, or in the binary part
/// (`parameters.binary_data_size` bytes).
#[derive(Debug, Deserialize)]
pub(super) struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    pub data: Option<Flat>,
}

/// An output the client asks for, and whether it wants it as binary (`binary_data`).
#[derive(Debug, Deserialize)]
pub(super) struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// A checked request: the images to run and the outputs to send back.
#[derive(Debug)]
pub(super) struct Parsed {
    /// The client's id for the request, echoed back.
    pub id: Option<String>,
    /// `u8` images of the model's input shape.
    pub images: Vec<Vec<u8>>,
    /// Each output asked for, and whether it goes in the binary part.
    pub outputs: Vec<(Output, bool)>,
}

/// The outputs a model serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// `FP32 [N, classes]`
    Probabilities,
    /// `INT64 [N]`: the most likely class.
    Class,
    /// `BYTES [N]`: that class's name.
    Label,
}

impl Output {
    /// Every output, in the order they are sent when none is asked for.
    pub(super) const ALL: [Self; 3] = [Self::Probabilities, Self::Class, Self::Label];

    /// The output called `name`.
    pub(super) fn parse(name: &str) -> Result<Self, ApiError> {
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

    /// Its name in the protocol.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Probabilities => "probabilities",
            Self::Class => "class",
            Self::Label => "label",
        }
    }
}
