use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Hyperparameters of the classic MNIST convolutional net:
/// `conv3x3(c1) -> ReLU -> conv3x3(c2) -> ReLU -> maxpool 2 -> dropout -> fc(hidden) -> ReLU ->
/// dropout -> fc(classes)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// Channels of the first convolution.
    #[serde(default = "default_conv1")]
    pub conv1: usize,
    /// Channels of the second convolution.
    #[serde(default = "default_conv2")]
    pub conv2: usize,
    /// Width of the hidden fully connected layer.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Dropout after pooling.
    #[serde(default = "default_dropout_conv")]
    pub dropout_conv: f64,
    /// Dropout after the hidden fully connected layer.
    #[serde(default = "default_dropout_fc")]
    pub dropout_fc: f64,
}

fn default_conv1() -> usize {
    32
}
fn default_conv2() -> usize {
    64
}
fn default_hidden() -> usize {
    128
}
fn default_dropout_conv() -> f64 {
    0.25
}
fn default_dropout_fc() -> f64 {
    0.5
}

impl Default for CnnConfig {
    fn default() -> Self {
        Self {
            conv1: default_conv1(),
            conv2: default_conv2(),
            hidden: default_hidden(),
            dropout_conv: default_dropout_conv(),
            dropout_fc: default_dropout_fc(),
        }
    }
}

impl CnnConfig {
    /// Builds the network for `[channels, height, width]` inputs and `classes` outputs.
    #[must_use]
    pub fn init(&self, input: [usize; 3], classes: usize, device: &Device) -> Cnn {
        let [channels, height, width] = input;
        let pooled = (height.saturating_sub(4) / 2) * (width.saturating_sub(4) / 2);
        Cnn {
            conv1: Conv2dConfig::new([channels, self.conv1], [3, 3]).init(device),
            conv2: Conv2dConfig::new([self.conv1, self.conv2], [3, 3]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            dropout_conv: DropoutConfig::new(self.dropout_conv).init(),
            fc1: LinearConfig::new(self.conv2 * pooled, self.hidden).init(device),
            dropout_fc: DropoutConfig::new(self.dropout_fc).init(),
            fc2: LinearConfig::new(self.hidden, classes).init(device),
            activation: Relu::new(),
        }
    }
}

/// The classic MNIST convolutional net (see [`CnnConfig`]).
#[derive(Module, Debug)]
pub struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    dropout_conv: Dropout,
    fc1: Linear,
    dropout_fc: Dropout,
    fc2: Linear,
    activation: Relu,
}

impl Cnn {
    /// Class logits for a batch of images.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, classes]`
    #[must_use]
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let relu = &self.activation;
        let x = relu.forward(kiln_kernels::conv2d_layer(&self.conv1, images));
        let x = relu.forward(kiln_kernels::conv2d_layer(&self.conv2, x));
        let x = kiln_kernels::max_pool2d(&self.pool, x);
        let x: Tensor<2> = kiln_kernels::dropout(&self.dropout_conv, x).flatten(1, 3);
        let x = kiln_kernels::dropout(&self.dropout_fc, relu.forward(self.fc1.forward(x)));
        self.fc2.forward(x)
    }

    /// `(conv1, conv2, fc1, fc2)`, for inspection and cross-checks.
    #[must_use]
    pub fn parts(&self) -> (&Conv2d, &Conv2d, &Linear, &Linear) {
        (&self.conv1, &self.conv2, &self.fc1, &self.fc2)
    }
}
