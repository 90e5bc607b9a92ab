//! Integration tests of kiln-train on real MNIST with the smoke config: learning, tracking,
//! exact resume, refusing corrupt checkpoints, and the same model on cpu and wgpu.

mod backends;
#[path = "../../../kiln-model/tests/it/candle_net.rs"]
mod candle_net;
mod loop_control;
mod resume;
mod smoke;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use kiln_train::{RunDir, Silent, TrainConfig, TrainOptions, TrainReport, train};

#[must_use]
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The smoke config with runs under `root` and the data path made absolute.
pub fn smoke_config(root: &Path, extra: &[&str]) -> TrainConfig {
    let mut overrides = vec![
        format!("experiment.root={:?}", root.display().to_string()),
        format!(
            "data.dir={:?}",
            repo().join("datasets/mnist").display().to_string()
        ),
    ];
    overrides.extend(extra.iter().map(ToString::to_string));
    TrainConfig::load(&repo().join("configs/smoke.toml"), &overrides).unwrap()
}

/// burn's flex backend keeps one random generator per process, so two trainings running at
/// once in this test binary would draw from each other's dropout streams. Tests that train
/// hold this lock (kiln itself trains one model per process).
pub static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`TRAINING`], even after another test panicked while holding it.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    TRAINING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn run_new(config: &TrainConfig, options: &TrainOptions) -> (RunDir, TrainReport) {
    let mut run = RunDir::create(config, vec!["test".into()], "cpu").unwrap();
    let report = train(&mut run, &Device::flex(), options, &mut Silent).unwrap();
    (run, report)
}

/// Reopens the run in `dir` and trains it on with `options` (resume or an explicit checkpoint).
pub fn continue_run(
    dir: &Path,
    options: &TrainOptions,
) -> (RunDir, Result<TrainReport, kiln_train::TrainError>) {
    let mut run = RunDir::open(dir, vec!["resume".into()]).unwrap();
    let result = train(&mut run, &Device::flex(), options, &mut Silent);
    (run, result)
}

/// The validation accuracy of `artifact` on the CPU, on `config`'s validation split.
#[must_use]
pub fn cpu_accuracy(artifact: &kiln_model::Artifact, config: &TrainConfig) -> f64 {
    let data = kiln_train::data::prepare(&config.data).unwrap();
    kiln_train::evaluate(
        &artifact.model,
        &data.valid,
        &artifact.manifest.normalization.table(),
        &artifact.manifest.class_names,
        100,
        &Device::flex(),
    )
    .accuracy
}

/// An error and its causes, as the command line prints them.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text = format!("{text}: {e}");
        cause = e.source();
    }
    text
}

/// Options that resume from the newest checkpoint.
#[must_use]
pub fn resume_newest() -> TrainOptions {
    TrainOptions {
        resume: true,
        ..Default::default()
    }
}
