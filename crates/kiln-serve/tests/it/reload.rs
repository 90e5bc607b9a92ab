//! Hot reload: a good artifact is swapped in, a bad one refused while the old keeps serving;
//! and reloading the served path on request, from a channel and from a real SIGHUP.

use std::time::Duration;

use kiln_model::{Architecture, MlpConfig};
use kiln_serve::ServeConfig;
use serde_json::json;

use crate::*;

fn reload_to(path: &std::path::Path) -> axum::http::Request<axum::body::Body> {
    let mut r = post_json("/admin/reload", &json!({ "path": path }));
    r.headers_mut()
        .insert("x-admin-key", "secret".parse().unwrap());
    r
}

async fn version(state: &Arc<kiln_serve::AppState>) -> String {
    call(state, get("/v2/models/mnist-mlp")).await.json()["versions"][0]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn reload_swaps_a_good_artifact_and_refuses_a_bad_one() {
    let (_tmp, first) = mlp_artifact(41);
    let tmp2 = tempfile::tempdir().unwrap();
    let second = write_artifact(
        &tmp2.path().join("second"),
        kiln_model::Architecture::Mlp(kiln_model::MlpConfig::default()),
        42,
        "mnist-mlp",
    );
    let state = state(&first, ServeConfig::default());
    let pixels = mnist_digits(1)[0].0.clone();
    let ask = || post_json("/predict", &json!({ "instances": [pixels.clone()] }));
    let v1 = version(&state).await;
    assert!(v1.starts_with("seed41-"));
    assert_close(
        &call(&state, ask()).await.probabilities(0),
        &direct(&first, &pixels),
    );

    // A good artifact: the version and the answers change.
    let answer = call(&state, reload_to(&second)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["previous_version"], v1.as_str());
    let v2 = version(&state).await;
    assert!(v2.starts_with("seed42-"), "{v2}");
    assert_close(
        &call(&state, ask()).await.probabilities(0),
        &direct(&second, &pixels),
    );
    let metrics = call(&state, get("/metrics")).await.text_full();
    assert!(metrics.contains(&format!("version=\"{v2}\"")), "{metrics}");

    // A corrupt artifact: refused with the reason, and the second model keeps serving.
    let bad = tempfile::tempdir().unwrap();
    let bad_dir = write_artifact(
        &bad.path().join("bad"),
        kiln_model::Architecture::Mlp(kiln_model::MlpConfig::default()),
        43,
        "mnist-mlp",
    );
    let weights = std::fs::read_dir(&bad_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "bpk"))
        .unwrap();
    let mut bytes = std::fs::read(&weights).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();
    let answer = call(&state, reload_to(&bad_dir)).await;
    assert_eq!(answer.status, 422, "{}", answer.text());
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("corrupt")
    );
    // A path with no artifact at all.
    let answer = call(&state, reload_to(std::path::Path::new("/nonexistent/run"))).await;
    assert_eq!(answer.status, 422);
    assert_eq!(version(&state).await, v2);
    assert_close(
        &call(&state, ask()).await.probabilities(0),
        &direct(&second, &pixels),
    );
    let metrics = call(&state, get("/metrics")).await.text_full();
    assert!(metrics.contains("kiln_reloads_total{outcome=\"ok\"} 1"));
    assert!(metrics.contains("kiln_reloads_total{outcome=\"failed\"} 2"));
}

/// Writes a new MLP artifact from `seed` over the one at `dir`, as a deploy would.
fn replace_artifact(dir: &std::path::Path, seed: u64) {
    let _ = write_artifact(
        dir,
        Architecture::Mlp(MlpConfig::default()),
        seed,
        "mnist-mlp",
    );
}

/// Asserts the server answers `pixels` as the artifact now at `dir` does.
async fn assert_serves(state: &Arc<kiln_serve::AppState>, dir: &std::path::Path, pixels: &[u8]) {
    let request = post_json("/predict", &json!({ "instances": [pixels] }));
    assert_close(
        &call(state, request).await.probabilities(0),
        &direct(dir, pixels),
    );
}

/// Polls the served version until it starts with `prefix`, for at most `within`.
async fn version_becomes(
    state: &Arc<kiln_serve::AppState>,
    prefix: &str,
    within: Duration,
) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if version(state).await.starts_with(prefix) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_request_loads_the_artifact_now_at_the_served_path() {
    let (_tmp, dir) = mlp_artifact(44);
    let state = state(&dir, ServeConfig::default());
    let pixels = mnist_digits(1)[0].0.clone();
    let (request_reload, reload_requests) = tokio::sync::mpsc::channel::<()>(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reloader = tokio::spawn(kiln_serve::reload_until(
        Arc::clone(&state),
        reload_requests,
        async move {
            let _ = stopped.await;
        },
    ));

    // New files at the served path change nothing by themselves.
    replace_artifact(&dir, 45);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(version(&state).await.starts_with("seed44-"));

    request_reload.send(()).await.unwrap();
    assert!(
        version_becomes(&state, "seed45-", Duration::from_secs(10)).await,
        "still serving {}",
        version(&state).await
    );
    assert_serves(&state, &dir, &pixels).await;
    let metrics = call(&state, get("/metrics")).await.text_full();
    assert!(metrics.contains("kiln_reloads_total{outcome=\"ok\"} 1"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloader)
        .await
        .expect("the reloader stops when asked")
        .unwrap();
}

/// Sends SIGHUP to this test process. Safe once a SIGHUP handler is installed: tokio installs
/// one for the process on the first `signal(SignalKind::hangup())` and never removes it.
#[cfg(unix)]
fn raise_sighup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP: {status}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_artifact_at_the_served_path() {
    use tokio::signal::unix::{SignalKind, signal};
    // Before any SIGHUP is sent, so that none can end the process.
    let _handler = signal(SignalKind::hangup()).expect("install a SIGHUP handler");
    let (_tmp, dir) = mlp_artifact(46);
    let state = state(&dir, ServeConfig::default());
    let pixels = mnist_digits(1)[0].0.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reloader = tokio::spawn(kiln_serve::reload_on_sighup(
        Arc::clone(&state),
        async move {
            let _ = stopped.await;
        },
    ));
    replace_artifact(&dir, 47);
    // The reloader may not listen yet when the first signal arrives: signal until it reloads.
    let mut reloaded = false;
    for _ in 0..50 {
        raise_sighup();
        if version_becomes(&state, "seed47-", Duration::from_millis(200)).await {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "still serving {}", version(&state).await);
    assert_serves(&state, &dir, &pixels).await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloader)
        .await
        .expect("the reloader stops when asked")
        .unwrap();
}
