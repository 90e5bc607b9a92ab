use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Hyperparameters of a multi-layer perceptron over flattened images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Width of each hidden layer, in order; `[128]` gives the classic 784-128-10 net.
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden activation (0 disables it).
    #[serde(default)]
    pub dropout: f64,
}

fn default_hidden() -> Vec<usize> {
    vec![128]
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: default_hidden(),
            dropout: 0.0,
        }
    }
}

impl MlpConfig {
    /// Builds the network for `inputs` input values and `classes` outputs on `device`.
    #[must_use]
    pub fn init(&self, inputs: usize, classes: usize, device: &Device) -> Mlp {
        let mut width = inputs;
        let mut hidden = Vec::with_capacity(self.hidden.len());
        for &h in &self.hidden {
            hidden.push(LinearConfig::new(width, h).init(device));
            width = h;
        }
        Mlp {
            hidden,
            output: LinearConfig::new(width, classes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: Relu::new(),
        }
    }
}

/// A multi-layer perceptron: flatten, then `Linear -> ReLU -> Dropout` per hidden layer, then a
/// final `Linear` to class logits.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Vec<Linear>,
    output: Linear,
    dropout: Dropout,
    activation: Relu,
}

impl Mlp {
    /// Class logits for a batch of images.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, classes]`
    #[must_use]
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x: Tensor<2> = images.flatten(1, 3);
        for layer in &self.hidden {
            x = kiln_kernels::dropout(&self.dropout, self.activation.forward(layer.forward(x)));
        }
        self.output.forward(x)
    }

    /// The linear layers in order (hidden layers, then the output layer).
    #[must_use]
    pub fn layers(&self) -> Vec<&Linear> {
        self.hidden
            .iter()
            .chain(std::iter::once(&self.output))
            .collect()
    }
}
