//! Property tests: random bodies and random image bytes never give a 5xx (or a panic).

use proptest::prelude::*;
use serde_json::json;

use crate::*;

/// One artifact for every case (writing one per case would dominate the run).
fn artifact() -> &'static std::path::Path {
    static ARTIFACT: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    &ARTIFACT.get_or_init(|| mlp_artifact(61)).1
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_bodies_never_give_5xx(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        route in 0usize..3,
        content_type in prop::sample::select(vec!["application/json", "image/png", "image/jpeg", "application/octet-stream"]),
    ) {
        let state = state(artifact(), kiln_serve::ServeConfig::default());
        let uri = ["/predict", "/v2/models/mnist-mlp/infer", "/admin/reload"][route];
        let answer = runtime().block_on(call(&state, post(uri, content_type, body)));
        prop_assert!(answer.status.is_client_error() || answer.status.is_success(), "{} {}", answer.status, answer.text());
    }

    #[test]
    fn mutated_images_never_give_5xx(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
        as_jpeg in any::<bool>(),
    ) {
        let state = state(artifact(), kiln_serve::ServeConfig::default());
        let pixels = &mnist_digits(1)[0].0;
        let mut bytes = if as_jpeg { jpeg(28, 28, pixels) } else { png(28, 28, pixels) };
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len()) + 1);
        let content_type = if as_jpeg { "image/jpeg" } else { "image/png" };
        let rt = runtime();
        let answer = rt.block_on(call(&state, post("/predict", content_type, bytes.clone())));
        prop_assert!(answer.status.as_u16() < 500, "{} {}", answer.status, answer.text());
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
        let answer = rt.block_on(call(&state, post_json("/predict", &json!({ "instances": [b64] }))));
        prop_assert!(answer.status.as_u16() < 500, "{} {}", answer.status, answer.text());
    }
}
