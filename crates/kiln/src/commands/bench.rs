//! `kiln bench`: training and inference throughput on real MNIST batches, and the data
//! pipeline alone, so the numbers say what bounds training.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor};
use clap::{Args, ValueEnum};
use kiln_data::{DatasetFormat, HostBatch, Loader, LoaderOptions, Normalization};
use kiln_model::{Architecture, CnnConfig, MlpConfig};
use kiln_train::config::OptimizerConfig;
use kiln_train::optimizer;
use kiln_train::step::train_step_on;

use crate::output::outln;
use crate::{UsageError, device};

/// `kiln bench`
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Which model(s) to measure.
    #[arg(long, value_enum, default_value = "all")]
    model: Which,
    /// Items per training step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Seconds to measure each training figure for (after a warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// MNIST-style dataset directory.
    #[arg(long, default_value = "datasets/mnist")]
    data: PathBuf,
    /// Device: cpu (default), wgpu, vulkan, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Mlp,
    Cnn,
    All,
}

pub(crate) fn run(args: &BenchArgs) -> Result<u8> {
    let (device, device_name) =
        device::parse(&args.device).map_err(|e| UsageError(format!("{e:#}")))?;
    let dataset = kiln_data::load(&args.data, DatasetFormat::Idx, 10, [28, 28])?;
    let train = Arc::new(dataset.train);
    let table = Normalization::SYMMETRIC.table();
    outln!(
        "kiln bench on {device_name}, batch {}, {} threads",
        args.batch_size,
        std::thread::available_parallelism().map_or(1, usize::from)
    );

    for workers in [0, 1] {
        let loader = Loader::new(
            Arc::clone(&train),
            table.clone(),
            options(args.batch_size, workers),
        );
        let start = Instant::now();
        let items: usize = loader.epoch(0, 0).map(|b| b.len()).sum();
        let rate = items as f64 / start.elapsed().as_secs_f64();
        outln!(
            "data pipeline ({workers} workers): {rate:>12.0} samples/s (one shuffled epoch, host batches)"
        );
    }

    let models: Vec<(&str, Architecture)> = [
        ("mlp", Architecture::Mlp(MlpConfig::default())),
        ("cnn", Architecture::Cnn(CnnConfig::default())),
    ]
    .into_iter()
    .filter(|(name, _)| args.model == Which::All || (args.model == Which::Mlp) == (*name == "mlp"))
    .collect();
    for (name, arch) in models {
        let loader = Loader::new(
            Arc::clone(&train),
            table.clone(),
            options(args.batch_size, 1),
        );
        let mut batches = loader.epoch(0, 0).cycle_epochs(&loader);
        let rate = bench_training(&arch, &device, args.seconds, |d| {
            let batch = batches.next_batch();
            (batch.images_tensor(d), batch.labels_tensor(d), batch.len())
        });
        outln!("train {name} (Adam):          {rate:>12.0} samples/s");
        // The same steps on one batch kept on the device: what the device alone sustains. Near
        // the figure above, the data pipeline and the uploads keep up with it.
        let first = loader.epoch(0, 0).next().unwrap_or_else(empty_batch);
        let mut resident = None;
        let rate = bench_training(&arch, &device, args.seconds, |d| {
            let (images, labels) = resident
                .get_or_insert_with(|| (first.images_tensor(d), first.labels_tensor(d)))
                .clone();
            (images, labels, first.len())
        });
        outln!(
            "train {name}, resident batch: {rate:>12.0} samples/s (compute alone: no data pipeline, no upload)"
        );
        let (latency_ms, throughput) = bench_inference(&arch, &loader, &device);
        outln!("infer {name} batch 1:         {latency_ms:>12.4} ms");
        outln!("infer {name} batch 256:       {throughput:>12.0} samples/s");
    }
    Ok(0)
}

fn options(batch_size: usize, workers: usize) -> LoaderOptions {
    LoaderOptions {
        batch_size,
        shuffle: true,
        seed: 1,
        workers,
        max_shift: 0,
    }
}

/// Training samples per second over `seconds`, after a warm-up; `next` gives each step's
/// images, labels and item count on the (autodiff) device it is handed.
fn bench_training(
    arch: &Architecture,
    device: &Device,
    seconds: f64,
    mut next: impl FnMut(&Device) -> (Tensor<4>, Tensor<1, Int>, usize),
) -> f64 {
    let device_ad = device.clone().autodiff();
    device_ad.seed(1);
    let mut model = arch.init([1, 28, 28], 10, &device_ad).initialized();
    let mut optim = optimizer::build(&OptimizerConfig::default(), 0.0);
    let loss_fn = CrossEntropyLossConfig::new().init(&device_ad);
    // Warm-up: allocation pools, autotuning, first-touch costs.
    for _ in 0..5 {
        let (images, labels, _) = next(&device_ad);
        model = train_step_on(model, &mut optim, &loss_fn, images, labels, 1e-3).0;
    }
    let _ = device_ad.sync();
    let start = Instant::now();
    let mut items = 0;
    let mut last_loss = None;
    while start.elapsed().as_secs_f64() < seconds {
        let (images, labels, n) = next(&device_ad);
        let (m, loss, _) = train_step_on(model, &mut optim, &loss_fn, images, labels, 1e-3);
        model = m;
        items += n;
        last_loss = Some(loss);
    }
    if let Some(loss) = last_loss {
        let _ = loss.into_data();
    }
    items as f64 / start.elapsed().as_secs_f64()
}

fn bench_inference(arch: &Architecture, loader: &Loader, device: &Device) -> (f64, f64) {
    device.seed(1);
    let model = arch.init([1, 28, 28], 10, device).valid();
    let batch = loader.epoch(0, 0).next().unwrap_or_else(empty_batch);
    let one = HostBatch {
        images: batch.images[..784].to_vec(),
        labels: vec![batch.labels[0]],
        items: vec![0],
        ..batch.clone()
    };
    let runs = 200;
    for _ in 0..20 {
        let _ = model.forward(one.images_tensor(device)).into_data();
    }
    let start = Instant::now();
    for _ in 0..runs {
        let _ = model.forward(one.images_tensor(device)).into_data();
    }
    let latency_ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(runs);

    let big_loader = Loader::new(
        Arc::new(loader.set().clone()),
        Normalization::SYMMETRIC.table(),
        options(256, 0),
    );
    let big = big_loader.epoch(0, 0).next().unwrap_or_else(empty_batch);
    let _ = model.forward(big.images_tensor(device)).into_data();
    let start = Instant::now();
    let mut items = 0;
    while start.elapsed().as_secs_f64() < 3.0 {
        let _ = model.forward(big.images_tensor(device)).into_data();
        items += big.len();
    }
    (latency_ms, items as f64 / start.elapsed().as_secs_f64())
}

fn empty_batch() -> HostBatch {
    HostBatch {
        index: 0,
        images: vec![0.0; 784],
        labels: vec![0],
        items: vec![0],
        height: 28,
        width: 28,
    }
}

/// Endless batches, epoch after epoch.
struct Endless<'a> {
    loader: &'a Loader,
    epoch: usize,
    current: kiln_data::loader::EpochBatches,
}

trait CycleEpochs<'a> {
    fn cycle_epochs(self, loader: &'a Loader) -> Endless<'a>;
}

impl<'a> CycleEpochs<'a> for kiln_data::loader::EpochBatches {
    fn cycle_epochs(self, loader: &'a Loader) -> Endless<'a> {
        Endless {
            loader,
            epoch: 0,
            current: self,
        }
    }
}

impl Endless<'_> {
    fn next_batch(&mut self) -> HostBatch {
        loop {
            if let Some(b) = self.current.next() {
                return b;
            }
            self.epoch += 1;
            self.current = self.loader.epoch(self.epoch, 0);
        }
    }
}
