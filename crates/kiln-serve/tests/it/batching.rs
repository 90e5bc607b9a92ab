//! Concurrent requests share forward passes, and each still gets its own answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_serve::ServeConfig;
use kiln_serve::config::{BatchingConfig, Wait};
use serde_json::json;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_coalesced() {
    let (_tmp, dir) = mlp_artifact(21);
    // Opted in to waiting: even a lone request waits 100 ms for company, so requests that
    // arrive close together share a pass whether or not the worker is busy.
    let state = state(
        &dir,
        with_batching(BatchingConfig {
            max_batch_size: 64,
            wait: Wait::Always,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_on_an_idle_server_does_not_wait_for_company() {
    let (_tmp, dir) = mlp_artifact(24);
    let digits = mnist_digits(3);
    // A half-second window that neither the default (adaptive) nor `never` may spend.
    for wait in [Wait::Adaptive, Wait::Never] {
        let state = state(
            &dir,
            with_batching(BatchingConfig {
                wait,
                max_delay_us: 500_000,
                ..BatchingConfig::default()
            }),
        );
        for (pixels, _) in &digits {
            let started = Instant::now();
            let body = json!({ "instances": [pixels] });
            let answer = call(&state, post_json("/predict", &body)).await;
            let took = started.elapsed();
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_close(&answer.probabilities(0), &direct(&dir, pixels));
            assert!(
                took < Duration::from_millis(100),
                "{wait:?}: answered after {took:?}"
            );
        }
        let metrics = call(&state, get("/metrics")).await.text_full();
        assert_eq!(metric(&metrics, "kiln_batch_size_count"), 3.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_always_a_lone_request_waits_out_the_window() {
    let (_tmp, dir) = mlp_artifact(25);
    let state = state(
        &dir,
        with_batching(BatchingConfig {
            wait: Wait::Always,
            max_delay_us: 150_000,
            ..BatchingConfig::default()
        }),
    );
    let (pixels, _) = &mnist_digits(1)[0];
    let started = Instant::now();
    let answer = call(
        &state,
        post_json("/predict", &json!({ "instances": [pixels] })),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_during_a_forward_pass_form_the_next_batch() {
    let (_tmp, dir) = cnn_artifact(26);
    // The default batching (adaptive waiting, 2 ms at most).
    let state = state(&dir, ServeConfig::default());
    // Keep the worker busy: 256 CNN images run as one long pass (a request larger than the
    // batch is never split).
    let busy = {
        let state = Arc::clone(&state);
        let body = json!({ "instances": vec![vec![0; 784]; 256] });
        tokio::spawn(async move { call(&state, post_json("/predict", &body)).await })
    };
    let started = wait_until(Duration::from_secs(30), || {
        state
            .metrics
            .render("", "", 0)
            .contains("kiln_batch_size_count 1\n")
    });
    assert!(started.await, "the long pass never started");
    // Sixteen single digits arrive while it runs, and queue.
    let digits = mnist_digits(16);
    let requests = single_image_requests(&digits);
    let waiting = {
        let state = Arc::clone(&state);
        tokio::spawn(async move { concurrently(&state, requests).await })
    };
    let queued = wait_until(Duration::from_secs(30), || state.batcher.depth() == 16);
    assert!(
        queued.await,
        "the requests did not queue behind the busy worker"
    );
    assert!(
        !busy.is_finished(),
        "the long pass ended before the requests queued"
    );
    assert_eq!(busy.await.unwrap().status, 200);
    for (answer, (pixels, _)) in waiting.await.unwrap().iter().zip(&digits) {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_close(&answer.probabilities(0), &direct(&dir, pixels));
    }
    // Two passes: the long one, then all sixteen together.
    let metrics = call(&state, get("/metrics")).await.text_full();
    assert_eq!(metric(&metrics, "kiln_batch_size_count"), 2.0, "{metrics}");
    assert_eq!(metric(&metrics, "kiln_batch_size_sum"), 272.0, "{metrics}");
}

/// One `/predict` request per digit.
fn single_image_requests(digits: &[(Vec<u8>, u8)]) -> Vec<axum::http::Request<axum::body::Body>> {
    digits
        .iter()
        .map(|(pixels, _)| post_json("/predict", &json!({ "instances": [pixels] })))
        .collect()
}

#[test]
fn wait_is_read_from_serve_toml() {
    assert_eq!(ServeConfig::default().batching.wait, Wait::Adaptive);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("serve.toml");
    std::fs::write(&path, "[batching]\nwait = \"always\"\n").unwrap();
    let config = ServeConfig::from_file(&path).unwrap();
    assert_eq!(config.batching.wait, Wait::Always);
    std::fs::write(&path, "[batching]\nwait = \"sometimes\"\n").unwrap();
    assert!(ServeConfig::from_file(&path).is_err());
}
