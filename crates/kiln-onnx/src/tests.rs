use burn::tensor::Device;
use kiln_data::Normalization;
use kiln_model::{Architecture, CnnConfig, Lineage, Manifest, MlpConfig, Model};

use super::*;
use crate::proto::{TensorProto, ValueInfoProto, tensor_shape_proto::dimension::Value};

fn manifest(architecture: Architecture, input_shape: [usize; 3], classes: usize) -> Manifest {
    Manifest {
        format: kiln_model::artifact::FORMAT.into(),
        format_version: kiln_model::artifact::FORMAT_VERSION,
        name: "test-model".into(),
        version: "v1".into(),
        architecture,
        input_shape,
        normalization: Normalization {
            mean: 0.1307,
            std: 0.3081,
        },
        fit: None,
        class_names: (0..classes).map(|c| format!("class \"{c}\"")).collect(),
        weights_file: "weights-0.bpk".into(),
        weights_sha256: "0".repeat(64),
        lineage: Lineage::default(),
    }
}

fn build(architecture: Architecture, input_shape: [usize; 3], classes: usize) -> (Manifest, Model) {
    let model = architecture.init(input_shape, classes, &Device::flex());
    (manifest(architecture, input_shape, classes), model)
}

fn ops(model: &ModelProto) -> Vec<&str> {
    let graph = model.graph.as_ref().unwrap();
    graph
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect()
}

fn initializer<'a>(model: &'a ModelProto, name: &str) -> &'a TensorProto {
    let graph = model.graph.as_ref().unwrap();
    graph
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no initializer {name}"))
}

fn dims(value: &ValueInfoProto) -> Vec<String> {
    let Some(proto::type_proto::Value::TensorType(tensor)) = &value.r#type.as_ref().unwrap().value
    else {
        panic!("not a tensor")
    };
    tensor
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            Value::DimValue(n) => n.to_string(),
            Value::DimParam(p) => p.clone(),
        })
        .collect()
}

fn metadata_value<'a>(model: &'a ModelProto, key: &str) -> &'a str {
    model
        .metadata_props
        .iter()
        .find(|p| p.key.as_deref() == Some(key))
        .and_then(|p| p.value.as_deref())
        .unwrap_or_else(|| panic!("no metadata {key}"))
}

#[test]
fn cnn_graph_follows_the_forward_pass_with_checked_shapes() {
    let (manifest, model) = build(Architecture::Cnn(CnnConfig::default()), [1, 28, 28], 10);
    let onnx = export(&manifest, &model).unwrap();
    assert_eq!(onnx.ir_version, Some(IR_VERSION));
    assert_eq!(onnx.opset_import.len(), 1);
    assert_eq!(onnx.opset_import[0].version, Some(18));
    assert_eq!(
        ops(&onnx),
        [
            "Div", "Sub", "Div", "Conv", "Relu", "Conv", "Relu", "MaxPool", "Flatten", "Gemm",
            "Relu", "Gemm", "Softmax"
        ]
    );
    for (name, shape) in [
        ("conv1.weight", vec![32, 1, 3, 3]),
        ("conv1.bias", vec![32]),
        ("conv2.weight", vec![64, 32, 3, 3]),
        ("conv2.bias", vec![64]),
        ("fc1.weight", vec![64 * 12 * 12, 128]),
        ("fc1.bias", vec![128]),
        ("fc2.weight", vec![128, 10]),
        ("fc2.bias", vec![10]),
    ] {
        let tensor = initializer(&onnx, name);
        assert_eq!(tensor.dims, shape, "{name}");
        let count: i64 = shape.iter().product();
        assert_eq!(
            tensor.raw_data.as_ref().unwrap().len(),
            usize::try_from(count).unwrap() * 4,
            "{name}"
        );
    }
    let graph = onnx.graph.as_ref().unwrap();
    assert_eq!(graph.input[0].name.as_deref(), Some(INPUT));
    assert_eq!(dims(&graph.input[0]), ["batch", "1", "28", "28"]);
    assert_eq!(dims(&graph.output[0]), ["batch", "10"]);
    assert_eq!(graph.output[1].name.as_deref(), Some(PROBABILITIES));
}

#[test]
fn mlp_weights_are_exported_as_burn_holds_them() {
    let architecture = Architecture::Mlp(MlpConfig {
        hidden: vec![16, 8],
        dropout: 0.2,
    });
    let (manifest, model) = build(architecture, [3, 5, 4], 3);
    let onnx = export(&manifest, &model).unwrap();
    assert_eq!(
        ops(&onnx),
        [
            "Div", "Sub", "Div", "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"
        ]
    );
    let params = kiln_model::parameters(&model);
    let names = [
        "hidden.0.weight",
        "hidden.0.bias",
        "hidden.1.weight",
        "hidden.1.bias",
        "output.weight",
        "output.bias",
    ];
    assert_eq!(params.len(), names.len());
    for ((_, values), name) in params.iter().zip(names) {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            initializer(&onnx, name).raw_data.as_deref(),
            Some(&raw[..]),
            "{name}"
        );
    }
    assert_eq!(initializer(&onnx, "hidden.0.weight").dims, [60, 16]);
    assert_eq!(initializer(&onnx, "output.weight").dims, [8, 3]);

    let classes: Vec<String> =
        serde_json::from_str(metadata_value(&onnx, metadata::CLASS_NAMES)).unwrap();
    assert_eq!(classes, manifest.class_names);
    let norm: serde_json::Value =
        serde_json::from_str(metadata_value(&onnx, metadata::NORMALIZATION)).unwrap();
    assert_eq!(norm["mean"].to_string(), "0.1307");
    assert_eq!(norm["std"].to_string(), "0.3081");
    assert_eq!(metadata_value(&onnx, metadata::VERSION), "v1");
    assert!(metadata_value(&onnx, metadata::INPUT).contains("raw pixels 0-255"));
}

#[test]
fn encoding_round_trips() {
    let (manifest, model) = build(Architecture::default(), [1, 28, 28], 10);
    let onnx = export(&manifest, &model).unwrap();
    let bytes = to_bytes(&manifest, &model).unwrap();
    assert_eq!(decode(&bytes).unwrap(), onnx);
    assert!(matches!(
        decode(b"\xff\xff not onnx"),
        Err(OnnxError::Decode { .. })
    ));
}

#[test]
fn weights_that_do_not_fit_the_manifest_are_refused() {
    let (mut manifest, model) = build(Architecture::default(), [1, 28, 28], 10);
    manifest.class_names.pop();
    let err = export(&manifest, &model).unwrap_err();
    assert!(
        matches!(&err, OnnxError::Shape { layer, .. } if layer == "output"),
        "{err}"
    );
    let (mut manifest, model) = build(Architecture::default(), [1, 28, 28], 10);
    manifest.input_shape = [1, 28, 27];
    let err = export(&manifest, &model).unwrap_err();
    assert!(err.to_string().contains("hidden.0"), "{err}");
    assert!(err.is_user_input());
}

#[test]
fn a_registered_layer_stack_exports_layer_by_layer() {
    use kiln_model::{LayerSpec, RegisteredArchitecture, Sequential};
    // LeNet-5's stack, as examples/custom_model.rs registers it.
    let conv = |channels, padding| LayerSpec::Conv2d {
        channels,
        kernel: 5,
        stride: 1,
        padding,
    };
    let specs = [
        conv(6, 2),
        LayerSpec::Tanh,
        LayerSpec::AvgPool { size: 2 },
        conv(16, 0),
        LayerSpec::Tanh,
        LayerSpec::AvgPool { size: 2 },
        LayerSpec::Dropout { p: 0.1 },
        LayerSpec::Linear { features: 120 },
        LayerSpec::Relu,
        LayerSpec::Linear { features: 84 },
        LayerSpec::Relu,
    ];
    let net = Sequential::build(&specs, [1, 28, 28], 10, &Device::flex()).unwrap();
    let architecture = Architecture::Registered(RegisteredArchitecture {
        kind: "lenet5".into(),
        params: serde_json::json!({}),
    });
    let onnx = export(&manifest(architecture, [1, 28, 28], 10), &Model::Net(net)).unwrap();
    assert_eq!(
        ops(&onnx),
        [
            "Div",
            "Sub",
            "Div",
            "Conv",
            "Tanh",
            "AveragePool",
            "Conv",
            "Tanh",
            "AveragePool",
            "Flatten",
            "Gemm",
            "Relu",
            "Gemm",
            "Relu",
            "Gemm",
            "Softmax"
        ],
        "dropout leaves no node; the first linear layer flattens"
    );
    for (name, shape) in [
        ("layers.0.weight", vec![6, 1, 5, 5]),
        ("layers.3.weight", vec![16, 6, 5, 5]),
        ("layers.7.weight", vec![16 * 5 * 5, 120]),
        ("layers.11.weight", vec![84, 10]),
    ] {
        assert_eq!(initializer(&onnx, name).dims, shape, "{name}");
    }
    let graph = onnx.graph.as_ref().unwrap();
    assert_eq!(dims(&graph.output[0]), ["batch", "10"]);
}
