//! The same model on `cpu` (flex with kiln-kernels) and on `wgpu`: forward logits, with
//! candle-core as a third implementation that shares no code with burn; one training step's loss
//! and every gradient; and a short training run whose accuracy must land near the CPU run's.
//!
//! CI installs Mesa's software Vulkan (lavapipe) and sets `KILN_REQUIRE_WGPU=1`, so there a
//! missing adapter fails these tests. On a machine without Vulkan each test says on standard
//! error that it did not run, and why. The comparison tables go to standard error too (written
//! past the test harness's capture, so `cargo test` shows them).
//!
//! One wgpu device per process, brought up once; the tests hold the training lock, so one runs
//! at a time.

use std::io::Write;
use std::sync::OnceLock;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLoss;
use burn::tensor::wgpu::WgpuBackend;
use burn::tensor::{Device, Gradients, Tensor};
use kiln_data::{HostBatch, Loader, LoaderOptions};
use kiln_model::{Architecture, CnnConfig, MlpConfig, Model, artifact};
use kiln_train::{RunDir, Silent, TrainConfig, TrainOptions, train};

use crate::{candle_net, exclusive, smoke_config};

/// Largest logit difference between two implementations, relative to the largest logit.
const LOGIT_TOLERANCE: f32 = 1e-4;
/// Largest gradient difference, relative to the largest gradient of that parameter.
const GRADIENT_TOLERANCE: f32 = 1e-3;
/// Largest loss difference, relative to the loss.
const LOSS_TOLERANCE: f32 = 1e-5;
/// How far the wgpu run's validation accuracy may land from the CPU run's. The runs see the same
/// batches; they start from different weights (each backend's generator draws its own from the
/// seed), draw different dropout masks, and round differently.
const ACCURACY_BAND: f64 = 0.03;

/// One line on standard error that the test harness does not capture.
fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "backends: {line}");
}

/// The wgpu device, brought up once per process; `None` (reported) where there is none and
/// `KILN_REQUIRE_WGPU` is not set.
fn wgpu(test: &str) -> Option<Device> {
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    match DEVICE.get_or_init(bring_up) {
        Ok(device) => Some(device.clone()),
        Err(why) if std::env::var_os("KILN_REQUIRE_WGPU").is_some_and(|v| v != "0") => {
            panic!("KILN_REQUIRE_WGPU is set but wgpu did not come up: {why}")
        }
        Err(why) => {
            say(&format!(
                "{test}: NOT RUN, wgpu did not come up ({why}). Install a Vulkan driver (Debian: \
                 mesa-vulkan-drivers libvulkan1) to run it; CI sets KILN_REQUIRE_WGPU=1."
            ));
            None
        }
    }
}

/// Creates the wgpu device on Vulkan and checks that it computes.
///
/// Vulkan is pinned: where Vulkan offers only a software adapter (lavapipe), wgpu's automatic
/// choice goes on to probe OpenGL through EGL, and that adapter's context lock gives up after
/// one second ("Could not lock adapter context. This is most-likely a deadlock."), which a
/// loaded machine hits now and then.
fn bring_up() -> Result<Device, String> {
    let device = Device::wgpu_options()
        .graphics_api(WgpuBackend::Vulkan)
        .init()
        .map_err(|e| e.to_string())?;
    let t = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device);
    match t.sum().into_data().iter::<f32>().next() {
        Some(6.0) => {
            say("wgpu is up on Vulkan");
            Ok(device)
        }
        other => Err(format!("1 + 2 + 3 came back as {other:?}")),
    }
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// `(max |a - b|, that divided by max |b|)`.
fn difference(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let abs = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    (abs, if scale > 0.0 { abs / scale } else { abs })
}

fn run_on(config: &TrainConfig, device: &Device, name: &str) -> (RunDir, kiln_train::TrainReport) {
    let mut run = RunDir::create(config, vec!["backends".into()], name).unwrap();
    let report = train(&mut run, device, &TrainOptions::default(), &mut Silent).unwrap();
    (run, report)
}

/// Comparisons in a markdown table, each asserted against its bound as it is added; printed at
/// the end (past the harness's capture).
#[derive(Default)]
struct Table {
    rows: Vec<String>,
}

impl Table {
    /// Compares `a` with `b` (see [`difference`]); fails when the relative difference exceeds
    /// `bound`. `label` fills the row's leading cells.
    fn compare(&mut self, label: &str, a: &[f32], b: &[f32], bound: f32) {
        let (abs, rel) = difference(a, b);
        self.rows
            .push(format!("| {label} | {abs:.2e} | {rel:.2e} |"));
        assert!(
            rel <= bound,
            "{label}: max difference {abs:e}, {rel:e} of the largest value (bound {bound:e})"
        );
    }

    fn print(self, header: &str) {
        say(header);
        say(&format!(
            "|{}",
            "---|".repeat(header.matches('|').count() - 1)
        ));
        for row in self.rows {
            say(&row);
        }
    }
}

/// The first batch of the smoke config's training split, as the training loop draws it.
fn first_batch(config: &TrainConfig, size: usize) -> HostBatch {
    let data = kiln_train::data::prepare(&config.data).unwrap();
    let options = LoaderOptions {
        batch_size: size,
        shuffle: false,
        seed: 1,
        workers: 0,
        max_shift: 0,
    };
    Loader::new(data.train, data.normalization.table(), options)
        .epoch(0, 0)
        .next()
        .unwrap()
}

#[test]
fn logits_agree_on_cpu_wgpu_and_candle() {
    let _turn = exclusive();
    let Some(gpu) = wgpu("logits_agree_on_cpu_wgpu_and_candle") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut table = Table::default();
    for kind in ["mlp", "cnn"] {
        // A briefly trained artifact, loaded as `kiln serve` loads it, on both devices.
        let config = smoke_config(
            root.path(),
            &[
                &format!("model.kind={kind:?}"),
                "data.limit_train=1000",
                "training.epochs=1",
            ],
        );
        let (run, _) = run_on(&config, &Device::flex(), "cpu");
        let dir = run.path.join("artifacts/final");
        let cpu = Device::flex();
        let on_cpu = artifact::load(&dir, &cpu).unwrap();
        let on_gpu = artifact::load(&dir, &gpu).unwrap();
        let batch = first_batch(&config, 64);
        let n = batch.len();

        let cpu_logits = floats(on_cpu.model.forward(batch.images_tensor(&cpu)));
        let gpu_logits = floats(on_gpu.model.forward(batch.images_tensor(&gpu)));
        let candle_logits = match &on_cpu.model {
            Model::Mlp(m) => candle_net::mlp_logits(m, batch.images.clone(), n),
            Model::Cnn(c) => candle_net::cnn_logits(c, batch.images.clone(), n),
            Model::Net(_) => unreachable!("the smoke config builds an mlp or a cnn"),
        };
        for (pair, a, b) in [
            ("wgpu vs cpu", &gpu_logits, &cpu_logits),
            ("candle vs cpu", &candle_logits, &cpu_logits),
            ("wgpu vs candle", &gpu_logits, &candle_logits),
        ] {
            table.compare(
                &format!("{kind} logits, batch {n} | {pair}"),
                a,
                b,
                LOGIT_TOLERANCE,
            );
        }
    }
    table.print("| what | pair | max abs difference | relative |");
}

/// Every parameter's gradient, named by its module path.
struct GradientsOf<'a> {
    grads: &'a Gradients,
    path: Vec<String>,
    found: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for GradientsOf<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = format!("{}#{}", self.path.join("/"), self.found.len());
        let grad = param
            .val()
            .grad(self.grads)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        self.found.push((name, floats(grad)));
    }
}

/// The batch's mean cross-entropy and every parameter's gradient, with `model` on `device`.
fn loss_and_gradients(
    model: &Model,
    batch: &HostBatch,
    device: &Device,
) -> (f32, Vec<(String, Vec<f32>)>) {
    let device = device.clone().autodiff();
    // `fork`: trainable copies (a plain move of trained-on parameters is not a leaf).
    let model = model.clone().fork(&device);
    let logits = model.forward(batch.images_tensor(&device));
    let loss = CrossEntropyLoss::new(None, &device).forward(logits, batch.labels_tensor(&device));
    let value = floats(loss.clone().inner())[0];
    let grads = loss.backward();
    let mut visitor = GradientsOf {
        grads: &grads,
        path: Vec::new(),
        found: Vec::new(),
    };
    model.visit(&mut visitor);
    (value, visitor.found)
}

#[test]
fn one_training_step_agrees_on_cpu_and_wgpu() {
    let _turn = exclusive();
    let Some(gpu) = wgpu("one_training_step_agrees_on_cpu_and_wgpu") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let batch = first_batch(&smoke_config(root.path(), &[]), 64);
    // No dropout: each backend draws its own masks, and the step must be the same function.
    let nets = [
        Architecture::Mlp(MlpConfig {
            hidden: vec![128, 64],
            dropout: 0.0,
        }),
        Architecture::Cnn(CnnConfig {
            dropout_conv: 0.0,
            dropout_fc: 0.0,
            ..CnnConfig::default()
        }),
    ];
    let mut table = Table::default();
    for (seed, net) in nets.into_iter().enumerate() {
        let cpu = Device::flex();
        cpu.seed(seed as u64 + 11);
        let model = net
            .init([1, 28, 28], 10, &cpu.clone().autodiff())
            .initialized();
        let (cpu_loss, cpu_grads) = loss_and_gradients(&model, &batch, &cpu);
        let (gpu_loss, gpu_grads) = loss_and_gradients(&model, &batch, &gpu);
        let kind = net.kind();

        table.compare(
            &format!("{kind} loss"),
            &[gpu_loss],
            &[cpu_loss],
            LOSS_TOLERANCE,
        );
        assert_eq!(cpu_grads.len(), gpu_grads.len());
        assert!(
            cpu_grads.len() >= 4,
            "{kind}: {} gradients",
            cpu_grads.len()
        );
        for ((name, on_cpu), (_, on_gpu)) in cpu_grads.iter().zip(&gpu_grads) {
            let label = format!("{kind} {name} gradient");
            table.compare(&label, on_gpu, on_cpu, GRADIENT_TOLERANCE);
        }
    }
    table.print("| one step, batch 64, wgpu vs cpu | max abs difference | relative |");
}

#[test]
fn smoke_run_on_wgpu_lands_near_the_cpu_run() {
    let _turn = exclusive();
    let Some(gpu) = wgpu("smoke_run_on_wgpu_lands_near_the_cpu_run") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let config = smoke_config(root.path(), &[]);
    let (_, on_cpu) = run_on(&config, &Device::flex(), "cpu");
    let (run, on_gpu) = run_on(&config, &gpu, "wgpu");
    let cpu_acc = on_cpu.history.last().unwrap().valid_accuracy;
    let gpu_acc = on_gpu.history.last().unwrap().valid_accuracy;
    say(&format!(
        "smoke run (configs/smoke.toml, 2 epochs): valid accuracy cpu {cpu_acc:.4}, wgpu {gpu_acc:.4}"
    ));
    assert_eq!(on_gpu.global_step, on_cpu.global_step);
    assert!(gpu_acc >= 0.85, "wgpu smoke run reached only {gpu_acc}");
    assert!(
        (gpu_acc - cpu_acc).abs() <= ACCURACY_BAND,
        "wgpu {gpu_acc} vs cpu {cpu_acc}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.path.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["device"], "wgpu");
    // The wgpu run's artifact serves on the CPU with the accuracy it reported.
    let art = artifact::load(&run.path.join("artifacts/final"), &Device::flex()).unwrap();
    let again = crate::cpu_accuracy(&art, &config);
    assert!(
        (again - gpu_acc).abs() <= 0.004,
        "the wgpu-trained artifact scores {again} on cpu, {gpu_acc} on wgpu"
    );
}
