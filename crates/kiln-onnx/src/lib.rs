//! ONNX export of kiln models.
//!
//! [`export`] turns a loaded artifact's manifest and network into an ONNX `ModelProto` (opset
//! [`OPSET`], IR version [`IR_VERSION`]) written with hand-made `prost` messages
//! ([`proto`]); [`to_bytes`] encodes it. The graph takes raw pixels and folds in kiln's
//! preprocessing, so a consumer needs nothing but the file:
//!
//! - input [`INPUT`]: `float32 [batch, C, H, W]`, pixel levels 0-255 (`batch` is symbolic);
//! - `(pixels / 255 - mean) / std` with the artifact's normalisation (`Div`, `Sub`, `Div`), the
//!   same arithmetic as `kiln_data::preprocess`;
//! - the network: MLP `Flatten -> (Gemm -> Relu)* -> Gemm`, or CNN `Conv -> Relu -> Conv ->
//!   Relu -> MaxPool 2x2 -> Flatten -> Gemm -> Relu -> Gemm` (dropout is the identity at
//!   inference and leaves no node);
//! - outputs [`LOGITS`] `[batch, classes]` and [`PROBABILITIES`] (`Softmax`, axis 1).
//!
//! burn keeps a `Linear` weight as `[in, out]`, which is ONNX `Gemm`'s `B` with `transB = 0`;
//! a `Conv2d` weight is `[out, in / groups, kh, kw]`, as ONNX `Conv` wants. Initializers are
//! named by module path (`hidden.0.weight`, `conv1.bias`, ...). The model's name, version,
//! class names, input description and normalisation go into `metadata_props`
//! (see [`metadata`]).

#![warn(missing_docs)]

mod error;
mod graph;
mod layers;
pub mod proto;

use kiln_model::{Manifest, Model};
use prost::Message;

pub use error::OnnxError;

use crate::graph::{Dim, GraphBuilder, int, tensor_value};
use crate::proto::{GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto};

/// The ONNX operator set the graph is written against.
pub const OPSET: i64 = 18;
/// The ONNX IR version matching [`OPSET`] (ONNX 1.13).
pub const IR_VERSION: i64 = 8;
/// Name of the symbolic batch dimension on the graph's input and outputs.
pub const BATCH: &str = "batch";
/// Name of the graph input: raw pixels.
pub const INPUT: &str = "pixels";
/// Name of the graph output holding class logits.
pub const LOGITS: &str = "logits";
/// Name of the graph output holding class probabilities.
pub const PROBABILITIES: &str = "probabilities";

/// Keys of `metadata_props`, each with what its value holds.
pub mod metadata {
    /// The model's name (the manifest's `name`).
    pub const NAME: &str = "kiln.name";
    /// The model's version (the manifest's `version`).
    pub const VERSION: &str = "kiln.version";
    /// The class names, a JSON array of strings, in output order.
    pub const CLASS_NAMES: &str = "kiln.class_names";
    /// What the input holds, in words.
    pub const INPUT: &str = "kiln.input";
    /// The normalisation folded into the graph: JSON `{"mean", "std", "formula"}`.
    pub const NORMALIZATION: &str = "kiln.normalization";
    /// The architecture and its hyperparameters, JSON as in `model.json`.
    pub const ARCHITECTURE: &str = "kiln.architecture";
    /// SHA-256 of the burnpack weights the graph was exported from.
    pub const WEIGHTS_SHA256: &str = "kiln.weights_sha256";
}

/// The ONNX model of `model`, described by `manifest` (normally both from
/// `kiln_model::artifact::load`).
///
/// # Errors
/// [`OnnxError::Shape`] when a weight does not fit the manifest's input shape, the previous
/// layer or the class count; [`OnnxError::Unsupported`] for a layer setting ONNX export does not
/// cover (e.g. `Same` padding).
pub fn export(manifest: &Manifest, model: &Model) -> Result<ModelProto, OnnxError> {
    let [channels, height, width] = manifest.input_shape;
    let classes = manifest.num_classes();
    let mut g = GraphBuilder::default();

    let normalization = manifest.normalization;
    let scale = g.constant("pixel_scale", &[], &[255.0]);
    let mean = g.constant("normalization_mean", &[], &[normalization.mean]);
    let std = g.constant("normalization_std", &[], &[normalization.std]);
    let unit = g.node("Div", &[INPUT, &scale], "unit_pixels", vec![]);
    let centred = g.node("Sub", &[&unit, &mean], "centred_pixels", vec![]);
    let normalized = g.node("Div", &[&centred, &std], "normalized_pixels", vec![]);

    let logits = match model {
        Model::Mlp(mlp) => layers::mlp(&mut g, mlp, &normalized, manifest.input_shape, classes)?,
        Model::Cnn(cnn) => layers::cnn(&mut g, cnn, &normalized, manifest.input_shape, classes)?,
        Model::Net(net) => {
            layers::sequential(&mut g, net, &normalized, manifest.input_shape, classes)?
        }
    };
    g.node("Softmax", &[&logits], PROBABILITIES, vec![int("axis", 1)]);

    let input_doc = format!(
        "raw pixels 0-255 as float32, [batch, {channels}, {height}, {width}]; normalisation is part of the graph"
    );
    let graph = GraphProto {
        name: Some(manifest.name.clone()),
        doc_string: Some(format!(
            "kiln {} model {} version {}",
            manifest.architecture.kind(),
            manifest.name,
            manifest.version
        )),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![tensor_value(
            INPUT,
            &[
                Dim::Batch,
                Dim::Fixed(channels),
                Dim::Fixed(height),
                Dim::Fixed(width),
            ],
            &input_doc,
        )],
        output: vec![
            tensor_value(LOGITS, &[Dim::Batch, Dim::Fixed(classes)], "class logits"),
            tensor_value(
                PROBABILITIES,
                &[Dim::Batch, Dim::Fixed(classes)],
                "softmax of the logits over axis 1",
            ),
        ],
        value_info: Vec::new(),
    };

    let class_names = serde_json::to_string(&manifest.class_names)
        .map_err(|source| OnnxError::Metadata { source })?;
    let architecture = serde_json::to_string(&manifest.architecture)
        .map_err(|source| OnnxError::Metadata { source })?;
    let props = [
        (metadata::NAME, manifest.name.clone()),
        (metadata::VERSION, manifest.version.clone()),
        (metadata::CLASS_NAMES, class_names),
        (metadata::INPUT, input_doc),
        (
            metadata::NORMALIZATION,
            // f32 `Display` is the shortest decimal that reads back to the same f32, as in
            // model.json (a `serde_json::Value` would widen it to f64 digits first).
            format!(
                r#"{{"mean":{},"std":{},"formula":"(pixel / 255 - mean) / std"}}"#,
                normalization.mean, normalization.std
            ),
        ),
        (metadata::ARCHITECTURE, architecture),
        (metadata::WEIGHTS_SHA256, manifest.weights_sha256.clone()),
    ];

    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("kiln".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: None,
        doc_string: Some(format!(
            "{} {}: {} classes from raw pixels",
            manifest.name, manifest.version, classes
        )),
        graph: Some(graph),
        metadata_props: props
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: Some(key.to_string()),
                value: Some(value),
            })
            .collect(),
    })
}

/// [`export`], encoded as the bytes of a `.onnx` file.
///
/// # Errors
/// As [`export`].
pub fn to_bytes(manifest: &Manifest, model: &Model) -> Result<Vec<u8>, OnnxError> {
    Ok(export(manifest, model)?.encode_to_vec())
}

/// Decodes an ONNX file's bytes, to read back what [`to_bytes`] wrote (tests, inspection).
///
/// # Errors
/// [`OnnxError::Decode`] when the bytes are not a `ModelProto`.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    ModelProto::decode(bytes).map_err(|source| OnnxError::Decode { source })
}

#[cfg(test)]
mod tests;
