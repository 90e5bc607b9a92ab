//! A small builder for an ONNX graph: nodes in order, float initializers, typed values.

use burn::module::Param;
use burn::tensor::Tensor;

use crate::BATCH;
use crate::error::OnnxError;
use crate::proto::{
    AttributeProto, FLOAT, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_type, tensor_shape_proto, type_proto,
};

/// A dimension of a graph input or output.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dim {
    /// The symbolic batch dimension, [`BATCH`].
    Batch,
    /// A fixed size.
    Fixed(usize),
}

/// Nodes and initializers, added in topological order.
#[derive(Default)]
pub(crate) struct GraphBuilder {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
}

impl GraphBuilder {
    /// Adds a `float32` initializer named `name`; returns its name.
    pub(crate) fn constant(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len(), "{name}");
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| to_i64(d)).collect(),
            data_type: Some(FLOAT),
            name: Some(name.to_string()),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..TensorProto::default()
        });
        name.to_string()
    }

    /// Adds the values of a burn parameter as an initializer named `name`, checking that its
    /// shape is `expected`; returns its name.
    ///
    /// # Errors
    /// [`OnnxError::Shape`] naming `layer` when the shapes differ.
    pub(crate) fn parameter<const D: usize>(
        &mut self,
        layer: &str,
        name: &str,
        param: &Param<Tensor<D>>,
        expected: [usize; D],
    ) -> Result<String, OnnxError> {
        let tensor = param.val();
        let found = tensor.dims();
        if found != expected {
            return Err(OnnxError::Shape {
                layer: layer.to_string(),
                what: format!("{name} shape"),
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
        }
        let values: Vec<f32> = tensor.into_data().iter::<f32>().collect();
        Ok(self.constant(name, &expected, &values))
    }

    /// Adds a node of the default domain with one output, named `output` (the node too); returns
    /// the output's name.
    pub(crate) fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(ToString::to_string).collect(),
            output: vec![output.to_string()],
            name: Some(output.to_string()),
            op_type: Some(op_type.to_string()),
            attribute: attributes,
            ..NodeProto::default()
        });
        output.to_string()
    }
}

/// An `INT` attribute.
pub(crate) fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(attribute_type::INT),
        i: Some(value),
        ..AttributeProto::default()
    }
}

/// An `INTS` attribute.
pub(crate) fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(attribute_type::INTS),
        ints: values.iter().map(|&v| to_i64(v)).collect(),
        ..AttributeProto::default()
    }
}

/// A `float32` tensor value of the given shape, for graph inputs and outputs.
pub(crate) fn tensor_value(name: &str, dims: &[Dim], doc: &str) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match *d {
                Dim::Batch => tensor_shape_proto::dimension::Value::DimParam(BATCH.to_string()),
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(to_i64(n)),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        doc_string: Some(doc.to_string()),
    }
}

/// A tensor size as ONNX's `int64`.
pub(crate) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
