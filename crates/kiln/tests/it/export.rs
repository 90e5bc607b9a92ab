//! `kiln export --format onnx`: the file it writes, read back with kiln-onnx's own messages.
//! (That ONNX tools accept it and compute what `/predict` does is `scripts/check_onnx.py`.)

use std::path::PathBuf;

use burn::tensor::Device;
use kiln_onnx::proto::{ModelProto, ValueInfoProto, tensor_shape_proto::dimension::Value};

use crate::{kiln, smoke, text};

fn dims(value: &ValueInfoProto) -> Vec<String> {
    let Some(kiln_onnx::proto::type_proto::Value::TensorType(tensor)) =
        &value.r#type.as_ref().unwrap().value
    else {
        panic!("{:?} is not a tensor", value.name)
    };
    assert_eq!(tensor.elem_type, Some(kiln_onnx::proto::FLOAT));
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

fn metadata(model: &ModelProto, key: &str) -> String {
    model
        .metadata_props
        .iter()
        .find(|p| p.key.as_deref() == Some(key))
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| panic!("no metadata {key}"))
}

#[test]
fn export_onnx_writes_the_smoke_mlp_with_its_weights_and_metadata() {
    let root = tempfile::tempdir().unwrap();
    let out = smoke(root.path(), &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let run_dir = PathBuf::from(stdout.lines().last().unwrap());

    let file = root.path().join("model.onnx");
    let out = kiln(&[
        "export",
        run_dir.to_str().unwrap(),
        "--format",
        "onnx",
        "-o",
        file.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().last(), file.to_str());
    assert!(stderr.contains("opset 18"), "{stderr}");

    let onnx = kiln_onnx::decode(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(onnx.ir_version, Some(8));
    let opsets: Vec<_> = onnx
        .opset_import
        .iter()
        .map(|o| (o.domain.clone().unwrap_or_default(), o.version))
        .collect();
    assert_eq!(opsets, [(String::new(), Some(18))]);

    let graph = onnx.graph.as_ref().unwrap();
    assert_eq!(graph.input.len(), 1);
    assert_eq!(graph.input[0].name.as_deref(), Some("pixels"));
    assert_eq!(dims(&graph.input[0]), ["batch", "1", "28", "28"]);
    let outputs: Vec<_> = graph
        .output
        .iter()
        .map(|o| o.name.clone().unwrap())
        .collect();
    assert_eq!(outputs, ["logits", "probabilities"]);
    for output in &graph.output {
        assert_eq!(dims(output), ["batch", "10"]);
    }
    let ops: Vec<_> = graph
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "Div", "Sub", "Div", "Flatten", "Gemm", "Relu", "Gemm", "Softmax"
        ]
    );

    // The normalisation constants, then the weights exactly as the artifact holds them:
    // Linear weights [in, out] (Gemm with transB = 0), biases [out].
    let artifact = kiln_model::artifact::load(&run_dir, &Device::flex()).unwrap();
    let constants: Vec<_> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone().unwrap(), t.dims.clone()))
        .collect();
    assert_eq!(
        constants,
        [
            ("pixel_scale".to_string(), vec![]),
            ("normalization_mean".into(), vec![]),
            ("normalization_std".into(), vec![]),
            ("hidden.0.weight".into(), vec![784, 32]),
            ("hidden.0.bias".into(), vec![32]),
            ("output.weight".into(), vec![32, 10]),
            ("output.bias".into(), vec![10]),
        ]
    );
    let floats = |raw: &[u8]| -> Vec<f32> {
        raw.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let values: Vec<Vec<f32>> = graph
        .initializer
        .iter()
        .map(|t| floats(t.raw_data.as_deref().unwrap()))
        .collect();
    assert_eq!(values[..3], [vec![255.0], vec![0.5], vec![0.5]]);
    let params: Vec<Vec<f32>> = kiln_model::parameters(&artifact.model)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values[3..], params[..]);

    let manifest = &artifact.manifest;
    assert_eq!(metadata(&onnx, "kiln.name"), manifest.name);
    assert_eq!(metadata(&onnx, "kiln.version"), manifest.version);
    let classes: Vec<String> = serde_json::from_str(&metadata(&onnx, "kiln.class_names")).unwrap();
    assert_eq!(classes, manifest.class_names);
    assert!(metadata(&onnx, "kiln.input").contains("raw pixels 0-255"));
    let norm: serde_json::Value =
        serde_json::from_str(&metadata(&onnx, "kiln.normalization")).unwrap();
    assert_eq!(
        (norm["mean"].as_f64(), norm["std"].as_f64()),
        (Some(0.5), Some(0.5))
    );
}

#[test]
fn export_of_a_path_without_an_artifact_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.onnx");
    let out = kiln(&[
        "export",
        dir.path().to_str().unwrap(),
        "-o",
        file.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no model artifact"), "{stderr}");
    assert!(!file.exists());
}
