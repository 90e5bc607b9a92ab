//! Concurrent requests share forward passes, and each still gets its own answer.

use kiln_serve::config::BatchingConfig;
use serde_json::json;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_coalesced() {
    let (_tmp, dir) = mlp_artifact(21);
    let state = state(
        &dir,
        with_batching(BatchingConfig {
            max_batch_size: 64,
            max_delay_us: 100_000,
            ..BatchingConfig::default()
        }),
    );
    let digits = mnist_digits(16);
    let answers = concurrently(&state, single_image_requests(&digits)).await;
    for (answer, (pixels, _)) in answers.iter().zip(&digits) {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_close(&answer.probabilities(0), &direct(&dir, pixels));
    }
    // 16 single-image requests within the 100 ms window ran in far fewer forward passes.
    let metrics = call(&state, get("/metrics")).await.text_full();
    let passes = metric(&metrics, "kiln_batch_size_count");
    let images = metric(&metrics, "kiln_batch_size_sum");
    assert_eq!(images, 16.0, "{metrics}");
    assert!(passes <= 4.0, "16 requests took {passes} forward passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_batching_off_each_request_is_its_own_pass() {
    let (_tmp, dir) = mlp_artifact(22);
    let state = state(
        &dir,
        with_batching(BatchingConfig {
            max_batch_size: 1,
            ..BatchingConfig::default()
        }),
    );
    for answer in concurrently(&state, single_image_requests(&mnist_digits(8))).await {
        assert_eq!(answer.status, 200);
    }
    let metrics = call(&state, get("/metrics")).await.text_full();
    assert_eq!(metric(&metrics, "kiln_batch_size_count"), 8.0);
}

/// The value of an unlabelled sample in Prometheus text.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in metrics"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_request_larger_than_the_batch_runs_as_one_pass() {
    let (_tmp, dir) = mlp_artifact(23);
    let state = state(
        &dir,
        with_batching(BatchingConfig {
            max_batch_size: 4,
            ..BatchingConfig::default()
        }),
    );
    let digits = mnist_digits(10);
    let instances: Vec<Vec<u8>> = digits.iter().map(|(p, _)| p.clone()).collect();
    let answer = call(
        &state,
        post_json("/predict", &json!({ "instances": instances })),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    for (i, (pixels, _)) in digits.iter().enumerate() {
        assert_close(&answer.probabilities(i), &direct(&dir, pixels));
    }
    let metrics = call(&state, get("/metrics")).await.text_full();
    assert_eq!(metric(&metrics, "kiln_batch_size_count"), 1.0);
    assert_eq!(metric(&metrics, "kiln_batch_size_sum"), 10.0);
}

/// One `/predict` request per digit.
fn single_image_requests(digits: &[(Vec<u8>, u8)]) -> Vec<axum::http::Request<axum::body::Body>> {
    digits
        .iter()
        .map(|(pixels, _)| post_json("/predict", &json!({ "instances": [pixels] })))
        .collect()
}
