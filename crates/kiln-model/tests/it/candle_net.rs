//! kiln's MLP and CNN forward passes written again in candle-core, which shares no code with
//! burn: an independent oracle for logits. Also used by kiln-train's cross-backend tests
//! (`#[path]`-included there), so it names nothing from this test binary.

use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use candle_core::{Device as CDevice, Tensor as CTensor};
use kiln_model::{Cnn, Mlp};

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

fn linear(l: &Linear) -> (CTensor, CTensor) {
    let w = l.weight.val();
    let [d_in, d_out] = w.dims();
    let w = CTensor::from_vec(floats(w), (d_in, d_out), &CDevice::Cpu).unwrap();
    let b = l.bias.as_ref().unwrap().val();
    let b = CTensor::from_vec(floats(b), d_out, &CDevice::Cpu).unwrap();
    (w, b)
}

fn conv(c: &Conv2d) -> (CTensor, CTensor) {
    let w = c.weight.val();
    let dims = w.dims();
    let w = CTensor::from_vec(
        floats(w),
        (dims[0], dims[1], dims[2], dims[3]),
        &CDevice::Cpu,
    )
    .unwrap();
    let b = CTensor::from_vec(
        floats(c.bias.as_ref().unwrap().val()),
        dims[0],
        &CDevice::Cpu,
    )
    .unwrap();
    (w, b.reshape((1, dims[0], 1, 1)).unwrap())
}

fn dense(x: &CTensor, (w, b): &(CTensor, CTensor)) -> CTensor {
    x.matmul(w).unwrap().broadcast_add(b).unwrap()
}

fn conv_relu(x: &CTensor, (w, b): &(CTensor, CTensor)) -> CTensor {
    x.conv2d(w, 0, 1, 1, 1)
        .unwrap()
        .broadcast_add(b)
        .unwrap()
        .relu()
        .unwrap()
}

fn flat(logits: &CTensor) -> Vec<f32> {
    logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The MLP's logits (inference: dropout off) for `n` images given as `[n, 784]` floats.
#[must_use]
pub(crate) fn mlp_logits(mlp: &Mlp, images: Vec<f32>, n: usize) -> Vec<f32> {
    let inputs = images.len() / n;
    let mut x = CTensor::from_vec(images, (n, inputs), &CDevice::Cpu).unwrap();
    let layers = mlp.layers();
    for layer in &layers[..layers.len() - 1] {
        x = dense(&x, &linear(layer)).relu().unwrap();
    }
    flat(&dense(&x, &linear(layers[layers.len() - 1])))
}

/// The CNN's logits (inference: dropout off) for `n` images given as `[n, 1, 28, 28]` floats.
#[must_use]
pub(crate) fn cnn_logits(cnn: &Cnn, images: Vec<f32>, n: usize) -> Vec<f32> {
    let (conv1, conv2, fc1, fc2) = cnn.parts();
    let x = CTensor::from_vec(images, (n, 1, 28, 28), &CDevice::Cpu).unwrap();
    let x = conv_relu(&x, &conv(conv1));
    let x = conv_relu(&x, &conv(conv2));
    let x = x.max_pool2d(2).unwrap().flatten_from(1).unwrap();
    let x = dense(&x, &linear(fc1)).relu().unwrap();
    flat(&dense(&x, &linear(fc2)))
}
