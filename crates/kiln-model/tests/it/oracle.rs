//! The same weights in candle-core must give the same logits as burn: an implementation of the
//! forward pass that shares no code with burn.

use burn::module::Module;
use burn::tensor::Device;
use kiln_model::{Architecture, CnnConfig, MlpConfig, Model};

use crate::candle_net::{cnn_logits, mlp_logits};
use crate::{mnist_batch, values};

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
    assert_close(&values(mlp.forward(images)), &mlp_logits(&mlp, raw, 16));
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
    assert_close(&values(cnn.forward(images)), &cnn_logits(&cnn, raw, 8));
}
