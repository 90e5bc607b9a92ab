//! One optimizer step, shared by the training loop and the benchmark.

use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use kiln_data::HostBatch;
use kiln_model::Model;

/// Forward, cross-entropy, backward and update on one batch. `device` is the autodiff device
/// the model lives on. Returns the updated model, the batch's mean loss and its number of
/// correct predictions, both still on the device (reading them waits for it).
///
/// Nothing here waits for the device: on a GPU, this batch's upload is queued behind the
/// previous step's work while the host moves on to the next batch.
pub fn train_step(
    model: Model,
    optim: &mut ModuleOptimizer,
    loss_fn: &CrossEntropyLoss,
    batch: &HostBatch,
    lr: f64,
    device: &Device,
) -> (Model, Tensor<1>, Tensor<1, Int>) {
    let images = batch.images_tensor(device);
    let labels = batch.labels_tensor(device);
    train_step_on(model, optim, loss_fn, images, labels, lr)
}

/// [`train_step`] on a batch already on the model's device.
///
/// # Shapes
/// - images: `[batch, channels, height, width]`
/// - labels: `[batch]`
pub fn train_step_on(
    model: Model,
    optim: &mut ModuleOptimizer,
    loss_fn: &CrossEntropyLoss,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    lr: f64,
) -> (Model, Tensor<1>, Tensor<1, Int>) {
    let logits = model.forward(images);
    let loss = loss_fn.forward(logits.clone(), labels.clone());
    let correct = correct_count(logits.inner(), labels.inner());
    let mean_loss = loss.clone().inner();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), mean_loss, correct)
}

/// How many rows of `logits` have their arg-max at the label.
#[must_use]
pub fn correct_count(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1, Int> {
    let n = labels.dims()[0];
    logits.argmax(1).reshape([n]).equal(labels).int().sum()
}
