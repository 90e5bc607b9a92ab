use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::cnn::{Cnn, CnnConfig};
use crate::mlp::{Mlp, MlpConfig};

/// Which network to build, with its hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Architecture {
    /// A multi-layer perceptron.
    Mlp(MlpConfig),
    /// The classic MNIST convolutional net.
    Cnn(CnnConfig),
}

impl Default for Architecture {
    fn default() -> Self {
        Self::Mlp(MlpConfig::default())
    }
}

impl Architecture {
    /// Short name: `mlp` or `cnn`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mlp(_) => "mlp",
            Self::Cnn(_) => "cnn",
        }
    }

    /// Builds the network for `[channels, height, width]` inputs and `classes` outputs.
    ///
    /// Parameter ids are numbered in module order rather than drawn at random (burn's default),
    /// so equal weights serialise to equal bytes and a weights file's hash addresses its content.
    #[must_use]
    pub fn init(&self, input: [usize; 3], classes: usize, device: &Device) -> Model {
        let model = match self {
            Self::Mlp(c) => Model::Mlp(c.init(input.iter().product(), classes, device)),
            Self::Cnn(c) => Model::Cnn(c.init(input, classes, device)),
        };
        model.map(&mut StableIds::default())
    }

    /// Checks the hyperparameters make a buildable network for this input; returns what is wrong.
    #[must_use]
    pub fn problem(&self, input: [usize; 3]) -> Option<String> {
        let dropout_ok = |p: f64| p.is_finite() && (0.0..1.0).contains(&p);
        match self {
            Self::Mlp(c) if c.hidden.contains(&0) => {
                Some("model.hidden: layer widths must be positive".into())
            }
            Self::Mlp(c) if !dropout_ok(c.dropout) => {
                Some("model.dropout must be in [0, 1)".into())
            }
            Self::Cnn(c) if input[1] < 6 || input[2] < 6 => {
                Some("the CNN needs images of at least 6x6".into())
            }
            Self::Cnn(c) if c.conv1 == 0 || c.conv2 == 0 || c.hidden == 0 => {
                Some("model.conv1, model.conv2 and model.hidden must be positive".into())
            }
            Self::Cnn(c) if !dropout_ok(c.dropout_conv) || !dropout_ok(c.dropout_fc) => {
                Some("model.dropout_conv and model.dropout_fc must be in [0, 1)".into())
            }
            _ => None,
        }
    }
}

/// A kiln network: one of the supported architectures.
#[derive(Module, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one model per process; burn's Module derive does not see through Box"
)]
pub enum Model {
    /// A multi-layer perceptron.
    Mlp(Mlp),
    /// The classic MNIST convolutional net.
    Cnn(Cnn),
}

impl Model {
    /// Class logits for a batch of images.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, classes]`
    #[must_use]
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Mlp(m) => m.forward(images),
            Self::Cnn(m) => m.forward(images),
        }
    }
}

/// Renumbers parameters `BASE, BASE + 1, ...` in module order.
#[derive(Default)]
struct StableIds {
    next: u64,
}

impl StableIds {
    /// An arbitrary base ("kiln" in ASCII), far from small numbers a reader might confuse.
    const BASE: u64 = 0x6b69_6c6e_0000_0000;

    fn renumber<T: burn::module::ParameterValue>(&mut self, mut param: Param<T>) -> Param<T> {
        param.id = ParamId::from(Self::BASE + self.next);
        self.next += 1;
        param
    }
}

impl ModuleMapper for StableIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.renumber(param)
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        self.renumber(param)
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<D, Bool>>,
    ) -> Param<Tensor<D, Bool>> {
        self.renumber(param)
    }
}
