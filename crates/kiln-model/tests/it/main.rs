//! Integration tests of kiln-model: artifact round trips and refusals, and candle-core as an
//! independent oracle for the forward pass.

mod artifact;
mod candle_net;
mod oracle;

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use kiln_data::{DatasetFormat, ImageSet, Normalization, preprocess};

/// The first `n` MNIST test images, normalised, as a `[n, 1, 28, 28]` tensor, and as floats.
#[must_use]
pub fn mnist_batch(n: usize, device: &Device) -> (Tensor<4>, Vec<f32>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist");
    let d = kiln_data::load(&dir, DatasetFormat::Idx, 10, [28, 28]).unwrap();
    let set: &ImageSet = &d.test;
    let table = Normalization {
        mean: 0.1307,
        std: 0.3081,
    }
    .table();
    let mut values = Vec::new();
    for i in 0..n {
        preprocess(set.image(i), &table, &mut values);
    }
    let tensor = Tensor::from_data(TensorData::new(values.clone(), [n, 1, 28, 28]), device);
    (tensor, values)
}

/// A tensor's values as `f32`.
#[must_use]
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// burn's flex backend keeps one random generator per process: a test that seeds it and then
/// builds a model must not have another test draw from it in between. Every test here that
/// builds a model holds this lock.
static MODELS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`MODELS`], even after another test panicked while holding it.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    MODELS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
