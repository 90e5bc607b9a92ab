//! A custom architecture from outside kiln's crates: `LeNet-5` (the 1998 classic), defined
//! here, registered in one line, then trained with kiln's own loop (checkpoints, `TensorBoard`
//! events, the model artifact) and served over HTTP by `kiln-serve`, all in this process.
//!
//! Adding an architecture is this file alone: a config struct that implements
//! `kiln_model::Network` (its layers, from kiln's standard ones) and a call to
//! `kiln_model::registry::register`. Training, resume, evaluation, serving and ONNX export
//! then handle `[model] kind = "lenet5"` like the built-in `mlp` and `cnn`.
//!
//! Run with:
//!
//! ```sh
//! cargo run --example custom_model -- [EXPERIMENTS_ROOT] [TRAIN_IMAGES]
//! ```
//!
//! (defaults: `experiments`, 60000). It prints the run directory and the accuracy, then serves
//! the artifact on a free loopback port, classifies real test digits through `POST /predict`,
//! and exits 1 if fewer than half come back with their label.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Device;
use kiln_data::idx::{read_images, read_labels};
use kiln_model::{LayerSpec, Network};
use kiln_serve::{AppState, LoadedModel, ServeConfig};
use kiln_train::checkpoint::EpochRecord;
use kiln_train::{Observer, RunDir, TrainConfig, TrainOptions};
use serde::{Deserialize, Serialize};

/// LeNet-5's hyperparameters: what `[model]` holds besides `kind = "lenet5"`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeNet5 {
    /// `tanh` as in the paper, or `relu`.
    #[serde(default = "tanh")]
    activation: String,
}

fn tanh() -> String {
    "tanh".into()
}

impl Network for LeNet5 {
    const KIND: &'static str = "lenet5";

    /// conv 5x5 (6, padded to keep 28x28) -> pool -> conv 5x5 (16) -> pool -> fc 120 -> fc 84;
    /// kiln appends the classifier.
    fn layers(&self, _input: [usize; 3]) -> Vec<LayerSpec> {
        let act = if self.activation == "relu" {
            LayerSpec::Relu
        } else {
            LayerSpec::Tanh
        };
        let conv = |channels, padding| LayerSpec::Conv2d {
            channels,
            kernel: 5,
            stride: 1,
            padding,
        };
        vec![
            conv(6, 2),
            act.clone(),
            LayerSpec::AvgPool { size: 2 },
            conv(16, 0),
            act.clone(),
            LayerSpec::AvgPool { size: 2 },
            LayerSpec::Linear { features: 120 },
            act.clone(),
            LayerSpec::Linear { features: 84 },
            act,
        ]
    }
}

/// Prints one line per epoch.
struct Lines;

impl Observer for Lines {
    fn epoch(&mut self, r: &EpochRecord) {
        println!(
            "epoch {}: train loss {:.4}, valid accuracy {:.4} ({:.0} samples/s)",
            r.epoch, r.train_loss, r.valid_accuracy, r.samples_per_sec
        );
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    // The one place LeNet-5 is made known.
    kiln_model::registry::register::<LeNet5>();

    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| "experiments".into());
    let train_images: usize = args.next().map_or(Ok(60_000), |n| n.parse())?;
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist");
    let config = TrainConfig::from_toml(
        &format!(
            r#"
            [experiment]
            name = "lenet5"
            root = {root:?}
            [data]
            dir = {data:?}
            normalization = {{ mean = 0.5, std = 0.5 }}
            limit_train = {train_images}
            [model]
            kind = "lenet5"
            activation = "relu"
            [training]
            epochs = 1
            batch_size = 64
            [training.optimizer]
            kind = "adam"
            lr = 2e-3
            [logging]
            every_steps = 20
            checkpoint_every_steps = 100
            "#,
            data = data.display().to_string(),
        ),
        "custom_model.rs",
        &[],
    )?;

    let mut run = RunDir::create(&config, std::env::args().collect(), "cpu (flex)")?;
    println!("run {}", run.path.display());
    let report = kiln_train::train(
        &mut run,
        &Device::flex(),
        &TrainOptions::default(),
        &mut Lines,
    )?;
    let artifact = report
        .final_artifact
        .ok_or("training stopped before its end")?;
    println!("model artifact: {}", artifact.display());

    serve_and_ask(&artifact)
}

/// Serves `artifact` on a free loopback port and classifies 200 test digits through it.
fn serve_and_ask(artifact: &std::path::Path) -> Result<bool, Box<dyn std::error::Error>> {
    let model = LoadedModel::load(artifact, &Device::flex())?;
    let state = AppState::new(ServeConfig::default(), model, artifact.to_path_buf(), None);
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(kiln_serve::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist");
    let images = read_images(&data.join("t10k-images-idx3-ubyte.gz"))?;
    let labels = read_labels(&data.join("t10k-labels-idx1-ubyte.gz"), 10)?;
    let size = images.rows * images.cols;
    let count = 200;
    let instances: Vec<&[u8]> = (0..count)
        .map(|i| &images.pixels[i * size..(i + 1) * size])
        .collect();
    let body = serde_json::json!({ "instances": instances }).to_string();
    let text = ureq::post(format!("http://{addr}/predict"))
        .header("content-type", "application/json")
        .send(&body)?
        .body_mut()
        .read_to_string()?;
    let answer: serde_json::Value = serde_json::from_str(&text)?;
    let predictions = answer["predictions"].as_array().ok_or("no predictions")?;
    let correct = predictions
        .iter()
        .zip(&labels)
        .filter(|(p, label)| p["class"].as_u64() == Some(u64::from(**label)))
        .count();
    println!(
        "served {} at http://{addr}: {correct} of {count} test digits classified as labelled",
        answer["model"]
    );

    let _ = stop.send(());
    runtime.block_on(server)??;
    Ok(correct * 2 >= count)
}
