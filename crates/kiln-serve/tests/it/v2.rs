//! The `KServe` v2 / Open Inference Protocol routes.

use kiln_serve::ServeConfig;
use serde_json::json;

use crate::*;

#[tokio::test]
async fn health_and_metadata() {
    let (_tmp, dir) = mlp_artifact(11);
    let state = state(&dir, ServeConfig::default());
    for uri in [
        "/v2/health/live",
        "/v2/health/ready",
        "/healthz",
        "/readyz",
        "/v2",
    ] {
        let answer = call(&state, get(uri)).await;
        assert_eq!(answer.status, 200, "{uri}: {}", answer.text());
    }
    let meta = call(&state, get("/v2/models/mnist-mlp")).await.json();
    assert_eq!(meta["name"], "mnist-mlp");
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 10]));
    let version = meta["versions"][0].as_str().unwrap().to_string();
    let ready = call(&state, get("/v2/models/mnist-mlp/ready")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
    let by_version = call(
        &state,
        get(&format!("/v2/models/mnist-mlp/versions/{version}/ready")),
    )
    .await;
    assert_eq!(by_version.status, 200);
    for uri in [
        "/v2/models/other",
        "/v2/models/other/ready",
        "/v2/models/mnist-mlp/versions/nope",
    ] {
        let answer = call(&state, get(uri)).await;
        assert_eq!(answer.status, 404, "{uri}");
        assert!(
            answer.json()["error"].is_string(),
            "{uri}: v2 errors are strings"
        );
    }
}

#[tokio::test]
async fn infer_accepts_each_shape_and_datatype() {
    let (_tmp, dir) = cnn_artifact(12);
    let state = state(&dir, ServeConfig::default());
    let digits = mnist_digits(3);
    let u8s: Vec<u32> = digits
        .iter()
        .flat_map(|(p, _)| p.iter().map(|&v| u32::from(v)))
        .collect();
    let unit: Vec<f32> = digits
        .iter()
        .flat_map(|(p, _)| p.iter().map(|&v| f32::from(v) / 255.0))
        .collect();
    let expected: Vec<Vec<f32>> = digits.iter().map(|(p, _)| direct(&dir, p)).collect();
    let bodies = [
        json!({ "inputs": [{ "name": "input", "shape": [3, 28, 28], "datatype": "UINT8", "data": u8s }] }),
        json!({ "inputs": [{ "name": "input", "shape": [3, 784], "datatype": "FP32", "data": unit }] }),
        json!({ "inputs": [{ "name": "input", "shape": [3, 1, 28, 28], "datatype": "FP32", "data": u8s }] }),
    ];
    for body in bodies {
        let answer = call(&state, post_json("/v2/models/mnist-cnn/infer", &body)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let v = answer.json();
        assert_eq!(v["model_name"], "mnist-cnn");
        let probs = v["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "probabilities")
            .unwrap();
        assert_eq!(probs["shape"], json!([3, 10]));
        assert_eq!(probs["datatype"], "FP32");
        let data: Vec<f32> = probs["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        for (i, e) in expected.iter().enumerate() {
            assert_close(&data[i * 10..(i + 1) * 10], e);
        }
        let classes = v["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "class")
            .unwrap();
        assert_eq!(classes["datatype"], "INT64");
        assert_eq!(classes["data"].as_array().unwrap().len(), 3);
    }
}

#[tokio::test]
async fn binary_tensor_extension_round_trips() {
    let (_tmp, dir) = mlp_artifact(13);
    let state = state(&dir, ServeConfig::default());
    let digits = mnist_digits(2);
    let raw: Vec<u8> = digits.iter().flat_map(|(p, _)| p.clone()).collect();
    let header = serde_json::to_vec(&json!({
        "inputs": [{ "name": "input", "shape": [2, 28, 28], "datatype": "UINT8",
                     "parameters": { "binary_data_size": raw.len() } }],
        "outputs": [{ "name": "probabilities", "parameters": { "binary_data": true } },
                    { "name": "class", "parameters": { "binary_data": false } }],
    }))
    .unwrap();
    let mut body = header.clone();
    body.extend_from_slice(&raw);
    let request = axum::http::Request::post("/v2/models/mnist-mlp/infer")
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header.len())
        .body(axum::body::Body::from(body))
        .unwrap();
    let answer = call(&state, request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json_len: usize = answer.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&answer.body[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 80);
    assert_eq!(head["outputs"][1]["data"].as_array().unwrap().len(), 2);
    let probs: Vec<f32> = answer.body[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (i, (p, _)) in digits.iter().enumerate() {
        assert_close(&probs[i * 10..(i + 1) * 10], &direct(&dir, p));
    }
}

#[tokio::test]
async fn bad_v2_requests_are_4xx() {
    let (_tmp, dir) = mlp_artifact(14);
    let state = state(&dir, ServeConfig::default());
    let cases = [
        json!({ "inputs": [] }),
        json!({ "inputs": [{ "name": "input", "shape": [1, 27, 28], "datatype": "UINT8", "data": vec![0; 756] }] }),
        json!({ "inputs": [{ "name": "input", "shape": [2, 784], "datatype": "UINT8", "data": vec![0; 784] }] }),
        json!({ "inputs": [{ "name": "input", "shape": [1, 784], "datatype": "INT8", "data": vec![0; 784] }] }),
        json!({ "inputs": [{ "name": "input", "shape": [1, 784], "datatype": "UINT8", "data": vec![300; 784] }] }),
        json!({ "inputs": [{ "name": "input", "shape": [1, 784], "datatype": "FP32", "data": vec![-0.5; 784] }] }),
        json!({ "inputs": [{ "name": "input", "shape": [1, 784], "datatype": "UINT8", "data": vec![0.5; 784] }] }),
        json!({ "inputs": [{ "name": "input", "shape": [0, 784], "datatype": "UINT8", "data": [] }] }),
        json!({ "inputs": [{ "name": "input", "shape": [-1, 784], "datatype": "UINT8", "data": [] }] }),
        json!({ "inputs": [{ "name": "input", "shape": [1, 784], "datatype": "UINT8" }] }),
        json!({ "inputs": [{ "name": "input", "shape": [1, 784], "datatype": "UINT8", "data": vec![0; 784] }],
                "outputs": [{ "name": "logits" }] }),
    ];
    for body in cases {
        let answer = call(&state, post_json("/v2/models/mnist-mlp/infer", &body)).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.text());
        assert!(
            answer.json()["error"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let answer = call(
        &state,
        post("/v2/models/mnist-mlp/infer", "application/json", "{nope"),
    )
    .await;
    assert_eq!(answer.status, 400);
    let answer = call(&state, post_json("/v2/models/nope/infer", &json!({}))).await;
    assert_eq!(answer.status, 404);
    // Errors made outside the v2 handlers keep the v2 shape too.
    let answer = call(&state, get("/v2/no/such/route")).await;
    assert_eq!(answer.status, 404);
    assert!(answer.json()["error"].is_string(), "{}", answer.text());
}
