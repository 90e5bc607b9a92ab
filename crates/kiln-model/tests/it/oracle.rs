//! The same weights in candle-core must give the same logits as burn: an implementation of the
//! forward pass that shares no code with burn.

use burn::module::Module;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::Device;
use candle_core::{Device as CDevice, Tensor as CTensor};
use kiln_model::{Architecture, CnnConfig, MlpConfig, Model};

use crate::{mnist_batch, values};

fn linear(l: &Linear) -> (CTensor, CTensor) {
    let w = l.weight.val();
    let [d_in, d_out] = w.dims();
    let w = CTensor::from_vec(values(w), (d_in, d_out), &CDevice::Cpu).unwrap();
    let b = l.bias.as_ref().unwrap().val();
    let b = CTensor::from_vec(values(b), d_out, &CDevice::Cpu).unwrap();
    (w, b)
}

fn conv(c: &Conv2d) -> (CTensor, CTensor) {
    let w = c.weight.val();
    let dims = w.dims();
    let w = CTensor::from_vec(
        values(w),
        (dims[0], dims[1], dims[2], dims[3]),
        &CDevice::Cpu,
    )
    .unwrap();
    let b = CTensor::from_vec(
        values(c.bias.as_ref().unwrap().val()),
        dims[0],
        &CDevice::Cpu,
    )
    .unwrap();
    (w, b.reshape((1, dims[0], 1, 1)).unwrap())
}

fn dense(x: &CTensor, (w, b): &(CTensor, CTensor)) -> CTensor {
    x.matmul(w).unwrap().broadcast_add(b).unwrap()
}

fn assert_close(burn: &[f32], candle: &[f32]) {
    assert_eq!(burn.len(), candle.len());
    let worst = burn
        .iter()
        .zip(candle)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "largest logit difference {worst}");
}

#[test]
fn mlp_logits_match_candle() {
    let _guard = crate::exclusive();
    let device = Device::flex();
    device.seed(3);
    let config = MlpConfig {
        hidden: vec![128, 64],
        dropout: 0.5,
    };
    let Model::Mlp(mlp) = Architecture::Mlp(config)
        .init([1, 28, 28], 10, &device)
        .valid()
    else {
        unreachable!()
    };
    let (images, raw) = mnist_batch(16, &device);
    let burn_logits = values(mlp.forward(images));

    let mut x = CTensor::from_vec(raw, (16, 784), &CDevice::Cpu).unwrap();
    let layers = mlp.layers();
    for layer in &layers[..layers.len() - 1] {
        x = dense(&x, &linear(layer)).relu().unwrap();
    }
    let logits = dense(&x, &linear(layers[layers.len() - 1]));
    assert_close(
        &burn_logits,
        &logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
}

#[test]
fn cnn_logits_match_candle() {
    let _guard = crate::exclusive();
    let device = Device::flex();
    device.seed(4);
    let Model::Cnn(cnn) = Architecture::Cnn(CnnConfig::default())
        .init([1, 28, 28], 10, &device)
        .valid()
    else {
        unreachable!()
    };
    let (images, raw) = mnist_batch(8, &device);
    let burn_logits = values(cnn.forward(images));

    let (conv1, conv2, fc1, fc2) = cnn.parts();
    let x = CTensor::from_vec(raw, (8, 1, 28, 28), &CDevice::Cpu).unwrap();
    let (w1, b1) = conv(conv1);
    let x = x
        .conv2d(&w1, 0, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b1)
        .unwrap()
        .relu()
        .unwrap();
    let (w2, b2) = conv(conv2);
    let x = x
        .conv2d(&w2, 0, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b2)
        .unwrap()
        .relu()
        .unwrap();
    let x = x.max_pool2d(2).unwrap().flatten_from(1).unwrap();
    let x = dense(&x, &linear(fc1)).relu().unwrap();
    let logits = dense(&x, &linear(fc2));
    assert_close(
        &burn_logits,
        &logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
}
