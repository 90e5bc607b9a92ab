//! Embedded inference: load a kiln model artifact and classify images in-process, with no
//! server. Shows `kiln_model::artifact::load` (which checks the manifest and the weights'
//! checksum) and `kiln_data::preprocess` (the same normalisation as training and serving).
//!
//! Run with (after `cargo run -- train --config configs/smoke.toml`, which prints a run dir):
//!
//! ```sh
//! cargo run --example embedded_inference -- experiments/smoke/<run> [COUNT]
//! ```
//!
//! It classifies the first COUNT (default 1000) digits of MNIST's test set, prints the first
//! few predictions and the accuracy, and exits 1 if the accuracy is below 50 %.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::{Device, Tensor, TensorData};
use kiln_data::idx::{read_images, read_labels};
use kiln_data::preprocess;
use kiln_model::artifact;

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
    let mut args = std::env::args().skip(1);
    let model_path = PathBuf::from(
        args.next()
            .ok_or("usage: embedded_inference RUN_OR_ARTIFACT [COUNT]")?,
    );
    let count: usize = args.next().map_or(Ok(1000), |c| c.parse())?;

    let device = Device::flex();
    let loaded = artifact::load(&model_path, &device)?;
    let manifest = &loaded.manifest;
    let [channels, height, width] = manifest.input_shape;
    println!(
        "{} version {} ({} classes, input {channels}x{height}x{width})",
        manifest.name,
        manifest.version,
        manifest.num_classes()
    );

    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist");
    let images = read_images(&data.join("t10k-images-idx3-ubyte.gz"))?;
    let labels = read_labels(
        &data.join("t10k-labels-idx1-ubyte.gz"),
        manifest.num_classes(),
    )?;
    let count = count.min(images.count);
    let pixels_per_image = images.rows * images.cols;

    // One batch: normalise exactly as training did, then a forward pass.
    let table = manifest.normalization.table();
    let mut input = Vec::with_capacity(count * pixels_per_image);
    preprocess(
        &images.pixels[..count * pixels_per_image],
        &table,
        &mut input,
    );
    let batch = Tensor::<4>::from_data(
        TensorData::new(input, [count, channels, height, width]),
        &device,
    );
    let classes: Vec<i64> = loaded
        .model
        .forward(batch)
        .argmax(1)
        .into_data()
        .iter::<i64>()
        .collect();

    let mut correct = 0;
    for (i, (&predicted, &label)) in classes.iter().zip(&labels).enumerate() {
        let predicted = usize::try_from(predicted)?;
        correct += usize::from(predicted == usize::from(label));
        if i < 5 {
            println!(
                "digit {i}: predicted {} (label {label})",
                manifest.class_names[predicted]
            );
        }
    }
    let accuracy = correct as f64 / count as f64;
    println!("accuracy on {count} test digits: {:.2} %", accuracy * 100.0);
    Ok(accuracy >= 0.5)
}
