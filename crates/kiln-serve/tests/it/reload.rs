//! Hot reload: a good artifact is swapped in, a bad one refused while the old keeps serving.

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
