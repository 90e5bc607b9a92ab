/// What can go wrong exporting a kiln model to ONNX.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The model uses a layer setting this exporter cannot express in ONNX.
    #[error("{layer}: cannot export to ONNX: {setting}")]
    Unsupported {
        /// The layer, by its name in the exported graph (`conv1`, `hidden.0`, ...).
        layer: String,
        /// The setting and its value.
        setting: String,
    },
    /// A weight tensor's shape does not follow from the manifest and the previous layer.
    #[error("{layer}: {what} is {found:?}, expected {expected:?}")]
    Shape {
        /// The layer, by its name in the exported graph.
        layer: String,
        /// Which tensor or dimension.
        what: String,
        /// What the manifest and the previous layers imply.
        expected: Vec<usize>,
        /// What the model holds.
        found: Vec<usize>,
    },
    /// Bytes that are not an ONNX model (see [`crate::decode`]).
    #[error("not an ONNX model")]
    Decode {
        /// prost's error.
        #[source]
        source: prost::DecodeError,
    },
    /// The class names or architecture cannot be written as JSON metadata (not expected).
    #[error("cannot encode the model's metadata as JSON")]
    Metadata {
        /// `serde_json`'s error.
        #[source]
        source: serde_json::Error,
    },
}

impl OnnxError {
    /// Whether the input given is at fault: an artifact whose weights do not fit its manifest or
    /// that this exporter cannot express, or a file that is not ONNX.
    #[must_use]
    pub fn is_user_input(&self) -> bool {
        matches!(
            self,
            Self::Unsupported { .. } | Self::Shape { .. } | Self::Decode { .. }
        )
    }
}
