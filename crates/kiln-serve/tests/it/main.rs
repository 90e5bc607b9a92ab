//! Integration tests for kiln-serve: through `app(...).oneshot(...)` and over real sockets.

mod auth;
mod backends;
mod bad_input;
mod batching;
mod fit;
mod fuzz;
mod limits;
mod page;
mod predict;
mod redis_limits;
mod reload;
mod socket;
mod tls;
mod v2;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use burn::module::Module as _;
use burn::tensor::Device;
use kiln_data::Normalization;
use kiln_model::artifact::{self, FORMAT, FORMAT_VERSION};
use kiln_model::{Architecture, CnnConfig, Lineage, Manifest, MlpConfig};
use kiln_serve::{AppState, LoadedModel, ServeConfig};
use serde_json::Value;
use tower::ServiceExt;

/// Writes an artifact for `arch` (weights from `seed`) into `dir` and returns its directory.
#[must_use]
pub fn write_artifact(dir: &Path, arch: Architecture, seed: u64, name: &str) -> PathBuf {
    let device = Device::flex();
    device.seed(seed);
    let model = arch.init([1, 28, 28], 10, &device).valid();
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: name.into(),
        version: format!("seed{seed}"),
        architecture: arch,
        input_shape: [1, 28, 28],
        normalization: Normalization {
            mean: 0.1307,
            std: 0.3081,
        },
        fit: None,
        class_names: (0..10).map(|c| format!("digit-{c}")).collect(),
        weights_file: String::new(),
        weights_sha256: String::new(),
        lineage: Lineage {
            dataset: "mnist".into(),
            ..Lineage::default()
        },
    };
    artifact::save(dir, &model, manifest).expect("save artifact");
    dir.to_path_buf()
}

/// An MLP artifact in a fresh temp dir.
#[must_use]
pub fn mlp_artifact(seed: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_artifact(
        &tmp.path().join("mlp"),
        Architecture::Mlp(MlpConfig::default()),
        seed,
        "mnist-mlp",
    );
    (tmp, dir)
}

/// A CNN artifact in a fresh temp dir.
#[must_use]
pub fn cnn_artifact(seed: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_artifact(
        &tmp.path().join("cnn"),
        Architecture::Cnn(CnnConfig::default()),
        seed,
        "mnist-cnn",
    );
    (tmp, dir)
}

/// Server state for the artifact at `dir` with `config` and an admin key of "secret".
#[must_use]
pub fn state(dir: &Path, config: ServeConfig) -> Arc<AppState> {
    state_on(dir, config, &Device::flex())
}

/// As [`state`], with the model on `device`.
#[must_use]
pub fn state_on(dir: &Path, config: ServeConfig, device: &Device) -> Arc<AppState> {
    let model = LoadedModel::load(dir, device).expect("load artifact");
    AppState::new(config, model, dir.to_path_buf(), Some("secret".into()))
}

/// Polls `done` every 5 ms until it holds or `within` has passed; whether it held.
pub async fn wait_until(within: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    true
}

/// A config whose batching window (400 ms, waited out even by an idle worker) holds requests
/// inside the server, so a test can act while they are in flight.
#[must_use]
pub fn holding_requests() -> ServeConfig {
    ServeConfig {
        batching: kiln_serve::config::BatchingConfig {
            wait: kiln_serve::config::Wait::Always,
            max_delay_us: 400_000,
            max_batch_size: 256,
            ..kiln_serve::config::BatchingConfig::default()
        },
        ..ServeConfig::default()
    }
}

/// Raises `stop` and waits for the server task to return.
pub async fn stop_server(
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
) {
    stop.send(()).unwrap();
    join_server(server).await;
}

/// Waits (10 s at most) for the server task to return.
async fn join_server(server: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("server stopped")
        .unwrap();
}

/// Waits until `clients` are all inside the server, stops it, and checks each was answered
/// with a 200 and the server returned.
pub async fn stop_with_requests_in_flight<E: std::fmt::Debug>(
    state: &AppState,
    clients: Vec<tokio::task::JoinHandle<Result<(u16, String), E>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
) {
    let n = clients.len();
    wait_until(std::time::Duration::from_secs(10), || {
        state.metrics.in_flight_now() >= n
    })
    .await;
    stop.send(()).unwrap();
    for client in clients {
        let (status, body) = client.await.unwrap().expect("request in flight was lost");
        assert_eq!(status, 200, "{body}");
    }
    join_server(server).await;
}

/// An answer: status, headers and the body as JSON (`Value::Null` when it is not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Probabilities of prediction `i` of a `/predict` answer.
    #[must_use]
    pub fn probabilities(&self, i: usize) -> Vec<f32> {
        self.json()["predictions"][i]["probabilities"]
            .as_array()
            .unwrap_or_else(|| panic!("no predictions in {}", self.text()))
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }

    #[must_use]
    pub fn text_full(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(600)]).into_owned()
    }
}

/// Sends `requests` through the app at once, each from its own task; answers in order.
pub async fn concurrently(state: &Arc<AppState>, requests: Vec<Request<Body>>) -> Vec<Answer> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let state = Arc::clone(state);
            tokio::spawn(async move { call(&state, request).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

/// The default config with these batching settings.
#[must_use]
pub fn with_batching(batching: kiln_serve::config::BatchingConfig) -> ServeConfig {
    ServeConfig {
        batching,
        ..ServeConfig::default()
    }
}

/// Sends `request` through the app once.
pub async fn call(state: &Arc<AppState>, request: Request<Body>) -> Answer {
    let response = kiln_serve::app(Arc::clone(state))
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

/// A POST with a body and content type.
pub fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

/// A GET.
#[must_use]
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// A JSON POST.
#[must_use]
pub fn post_json(uri: &str, value: &Value) -> Request<Body> {
    post(uri, "application/json", serde_json::to_vec(value).unwrap())
}

/// The first `n` test digits of the committed MNIST and their labels.
#[must_use]
pub fn mnist_digits(n: usize) -> Vec<(Vec<u8>, u8)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist");
    let images = kiln_data::idx::read_images(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = kiln_data::idx::read_labels(&dir.join("t10k-labels-idx1-ubyte.gz"), 10).unwrap();
    images
        .pixels
        .chunks(784)
        .zip(labels)
        .take(n)
        .map(|(p, l)| (p.to_vec(), l))
        .collect()
}

/// Probabilities the model at `dir` gives `pixels` directly, without the server.
#[must_use]
pub fn direct(dir: &Path, pixels: &[u8]) -> Vec<f32> {
    let model = LoadedModel::load(dir, &Device::flex()).unwrap();
    let mut inputs = Vec::new();
    kiln_data::preprocess(pixels, &model.table, &mut inputs);
    model.probabilities(inputs, 1)
}

/// Encodes grey pixels as PNG.
#[must_use]
pub fn png(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    image::GrayImage::from_raw(width, height, pixels.to_vec())
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// Encodes grey pixels as JPEG.
#[must_use]
pub fn jpeg(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    image::GrayImage::from_raw(width, height, pixels.to_vec())
        .unwrap()
        .write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    out
}

/// Asserts two probability vectors agree closely.
pub fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}
