//! The same artifact served on each CPU backend gives the same answers.

use burn::tensor::Device;
use kiln_serve::ServeConfig;
use serde_json::json;

use crate::*;

/// Classes and probabilities a `/predict` answer gives for each instance.
fn predictions(answer: &Answer) -> Vec<(u64, Vec<f32>)> {
    assert_eq!(answer.status, 200, "{}", answer.text());
    let n = answer.json()["predictions"].as_array().unwrap().len();
    (0..n)
        .map(|i| {
            let class = answer.json()["predictions"][i]["class"].as_u64().unwrap();
            (class, answer.probabilities(i))
        })
        .collect()
}

#[tokio::test]
async fn ndarray_serves_what_flex_serves() {
    #[expect(
        deprecated,
        reason = "burn 0.22 deprecates NdArray; kiln still serves on it for CPU inference speed"
    )]
    let ndarray = Device::ndarray();
    let digits = mnist_digits(32);
    let body = json!({ "instances": digits.iter().map(|(p, _)| p).collect::<Vec<_>>() });
    for (_tmp, dir) in [mlp_artifact(61), cnn_artifact(62)] {
        let flex = state(&dir, ServeConfig::default());
        let other = state_on(&dir, ServeConfig::default(), &ndarray);
        let expected = predictions(&call(&flex, post_json("/predict", &body)).await);
        let found = predictions(&call(&other, post_json("/predict", &body)).await);
        assert_eq!(found.len(), digits.len());
        for (i, ((class, p), (flex_class, flex_p))) in found.iter().zip(&expected).enumerate() {
            assert_eq!(class, flex_class, "digit {i} of {}", dir.display());
            assert_close(p, flex_p);
        }
    }
}
