//! Builds burn's optimizer from the `[training.optimizer]` section.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig};

use crate::config::{OptimizerConfig, OptimizerKind};

/// The optimizer `config` describes, clipping the global gradient norm at `clip_norm` (0 = off).
#[must_use]
pub fn build(config: &OptimizerConfig, clip_norm: f64) -> ModuleOptimizer {
    let clipping = (clip_norm > 0.0).then_some(GradientClippingConfig::Norm(clip_norm as f32));
    let decay = (config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay));
    match config.kind {
        OptimizerKind::Adam => AdamConfig::new()
            .with_beta_1(config.beta1)
            .with_beta_2(config.beta2)
            .with_epsilon(config.epsilon)
            .with_weight_decay(decay)
            .with_grad_clipping(clipping)
            .init(),
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_beta_1(config.beta1)
            .with_beta_2(config.beta2)
            .with_epsilon(config.epsilon)
            .with_weight_decay(config.weight_decay)
            .with_grad_clipping(clipping)
            .init(),
        OptimizerKind::Sgd => {
            let momentum = (config.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(config.momentum)
                    .with_dampening(0.0)
                    .with_nesterov(config.nesterov)
            });
            SgdConfig::new()
                .with_momentum(momentum)
                .with_weight_decay(decay)
                .with_gradient_clipping(clipping)
                .init()
        }
    }
}
