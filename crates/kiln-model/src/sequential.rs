//! Networks described as a stack of standard layers, so that an architecture defined outside
//! kiln (see [`crate::registry`]) trains, checkpoints, serves and saves like the built-in ones.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu, Tanh};
use burn::tensor::{Device, Tensor};

/// One layer of a [`Sequential`] network, as an architecture describes it. Input sizes are
/// inferred from the layer before, so a spec names only what the layer produces.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    /// A 2-D convolution with a square kernel.
    Conv2d {
        /// Output channels.
        channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// A fully connected layer; a 4-D input is flattened first.
    Linear {
        /// Output features.
        features: usize,
    },
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// Max pooling over square windows (stride = size).
    MaxPool {
        /// Window side.
        size: usize,
    },
    /// Average pooling over square windows (stride = size).
    AvgPool {
        /// Window side.
        size: usize,
    },
    /// Dropout with probability `p` (the identity at inference).
    Dropout {
        /// Drop probability, in `[0, 1)`.
        p: f64,
    },
}

/// A built layer.
#[derive(Module, Debug)]
pub enum Layer {
    /// See [`LayerSpec::Conv2d`].
    Conv2d(Conv2d),
    /// See [`LayerSpec::Linear`].
    Linear(Linear),
    /// See [`LayerSpec::Relu`].
    Relu(Relu),
    /// See [`LayerSpec::Tanh`].
    Tanh(Tanh),
    /// See [`LayerSpec::MaxPool`].
    MaxPool(MaxPool2d),
    /// See [`LayerSpec::AvgPool`].
    AvgPool(AvgPool2d),
    /// See [`LayerSpec::Dropout`].
    Dropout(Dropout),
}

/// A network that applies its layers in order, ending in a linear classifier.
#[derive(Module, Debug)]
pub struct Sequential {
    layers: Vec<Layer>,
}

/// What flows between layers: images until the first linear layer, then feature vectors.
enum Flow {
    Images(Tensor<4>),
    Features(Tensor<2>),
}

/// The shape after a layer: `[channels, height, width]` or a feature count.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Image([usize; 3]),
    Features(usize),
}

impl Sequential {
    /// Builds `specs` followed by a linear classifier with `classes` outputs, for
    /// `[channels, height, width]` inputs.
    ///
    /// # Errors
    /// What does not fit, e.g. a convolution larger than its input, naming the layer.
    pub fn build(
        specs: &[LayerSpec],
        input: [usize; 3],
        classes: usize,
        device: &Device,
    ) -> Result<Self, String> {
        let mut shape = Shape::Image(input);
        let mut layers = Vec::with_capacity(specs.len() + 1);
        let classifier = LayerSpec::Linear { features: classes };
        for (i, spec) in specs.iter().chain([&classifier]).enumerate() {
            let (layer, next) = build_layer(spec, shape, device)
                .map_err(|why| format!("layer {i} ({spec:?}): {why}"))?;
            layers.push(layer);
            shape = next;
        }
        Ok(Self { layers })
    }

    /// Checks that `specs` make a network for this input, without building it.
    ///
    /// # Errors
    /// As [`Sequential::build`].
    pub fn check(specs: &[LayerSpec], input: [usize; 3]) -> Result<(), String> {
        let mut shape = Shape::Image(input);
        for (i, spec) in specs.iter().enumerate() {
            shape =
                output_shape(spec, shape).map_err(|why| format!("layer {i} ({spec:?}): {why}"))?;
        }
        Ok(())
    }

    /// The layers, in order (the classifier last).
    #[must_use]
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Class logits for a batch of images.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, classes]`
    #[must_use]
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut flow = Flow::Images(images);
        for layer in &self.layers {
            flow = match (layer, flow) {
                (Layer::Conv2d(c), Flow::Images(x)) => {
                    Flow::Images(kiln_kernels::conv2d_layer(c, x))
                }
                (Layer::MaxPool(p), Flow::Images(x)) => {
                    Flow::Images(kiln_kernels::max_pool2d(p, x))
                }
                (Layer::AvgPool(p), Flow::Images(x)) => Flow::Images(p.forward(x)),
                (Layer::Linear(l), Flow::Images(x)) => Flow::Features(l.forward(x.flatten(1, 3))),
                (Layer::Linear(l), Flow::Features(x)) => Flow::Features(l.forward(x)),
                (Layer::Relu(r), Flow::Images(x)) => Flow::Images(r.forward(x)),
                (Layer::Relu(r), Flow::Features(x)) => Flow::Features(r.forward(x)),
                (Layer::Tanh(t), Flow::Images(x)) => Flow::Images(t.forward(x)),
                (Layer::Tanh(t), Flow::Features(x)) => Flow::Features(t.forward(x)),
                (Layer::Dropout(d), Flow::Images(x)) => Flow::Images(kiln_kernels::dropout(d, x)),
                (Layer::Dropout(d), Flow::Features(x)) => {
                    Flow::Features(kiln_kernels::dropout(d, x))
                }
                // `build` refuses image layers after a linear one.
                (_, Flow::Features(x)) => Flow::Features(x),
            };
        }
        match flow {
            Flow::Features(x) => x,
            // `build` always ends in a linear classifier.
            Flow::Images(x) => x.flatten(1, 3),
        }
    }
}

fn output_shape(spec: &LayerSpec, shape: Shape) -> Result<Shape, String> {
    let positive = |n: usize, what: &str| {
        if n == 0 {
            Err(format!("{what} must be positive"))
        } else {
            Ok(())
        }
    };
    match (spec, shape) {
        (
            LayerSpec::Conv2d {
                channels,
                kernel,
                stride,
                padding,
            },
            Shape::Image([_, h, w]),
        ) => {
            positive(*channels, "channels")?;
            positive(*kernel, "kernel")?;
            positive(*stride, "stride")?;
            let out = |side: usize| {
                (side + 2 * padding)
                    .checked_sub(*kernel)
                    .map(|s| s / stride + 1)
                    .ok_or_else(|| {
                        format!("a {kernel}x{kernel} kernel does not fit {h}x{w} inputs")
                    })
            };
            Ok(Shape::Image([*channels, out(h)?, out(w)?]))
        }
        (LayerSpec::MaxPool { size } | LayerSpec::AvgPool { size }, Shape::Image([c, h, w])) => {
            positive(*size, "size")?;
            if h < *size || w < *size {
                return Err(format!(
                    "a {size}x{size} window does not fit {h}x{w} inputs"
                ));
            }
            Ok(Shape::Image([c, h / size, w / size]))
        }
        (LayerSpec::Linear { features }, _) => {
            positive(*features, "features")?;
            Ok(Shape::Features(*features))
        }
        (LayerSpec::Dropout { p }, s) => {
            if p.is_finite() && (0.0..1.0).contains(p) {
                Ok(s)
            } else {
                Err("p must be in [0, 1)".into())
            }
        }
        (LayerSpec::Relu | LayerSpec::Tanh, s) => Ok(s),
        (_, Shape::Features(_)) => Err("an image layer cannot follow a linear layer".into()),
    }
}

fn build_layer(spec: &LayerSpec, shape: Shape, device: &Device) -> Result<(Layer, Shape), String> {
    let next = output_shape(spec, shape)?;
    let layer = match (spec, shape) {
        (
            LayerSpec::Conv2d {
                channels,
                kernel,
                stride,
                padding,
            },
            Shape::Image([c, _, _]),
        ) => Layer::Conv2d(
            Conv2dConfig::new([c, *channels], [*kernel, *kernel])
                .with_stride([*stride, *stride])
                .with_padding(PaddingConfig2d::Explicit(
                    *padding, *padding, *padding, *padding,
                ))
                .init(device),
        ),
        (LayerSpec::Linear { features }, shape) => {
            let inputs = match shape {
                Shape::Image([c, h, w]) => c * h * w,
                Shape::Features(n) => n,
            };
            Layer::Linear(LinearConfig::new(inputs, *features).init(device))
        }
        (LayerSpec::MaxPool { size }, _) => {
            Layer::MaxPool(MaxPool2dConfig::new([*size, *size]).init())
        }
        (LayerSpec::AvgPool { size }, _) => {
            Layer::AvgPool(AvgPool2dConfig::new([*size, *size]).init())
        }
        (LayerSpec::Relu, _) => Layer::Relu(Relu::new()),
        (LayerSpec::Tanh, _) => Layer::Tanh(Tanh::new()),
        (LayerSpec::Dropout { p }, _) => Layer::Dropout(DropoutConfig::new(*p).init()),
        (LayerSpec::Conv2d { .. }, Shape::Features(_)) => {
            return Err("an image layer cannot follow a linear layer".into());
        }
    };
    Ok((layer, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenet() -> Vec<LayerSpec> {
        vec![
            LayerSpec::Conv2d {
                channels: 6,
                kernel: 5,
                stride: 1,
                padding: 2,
            },
            LayerSpec::Relu,
            LayerSpec::AvgPool { size: 2 },
            LayerSpec::Conv2d {
                channels: 16,
                kernel: 5,
                stride: 1,
                padding: 0,
            },
            LayerSpec::Relu,
            LayerSpec::AvgPool { size: 2 },
            LayerSpec::Linear { features: 120 },
            LayerSpec::Relu,
            LayerSpec::Linear { features: 84 },
            LayerSpec::Relu,
        ]
    }

    #[test]
    fn shapes_flow_through_the_layers() {
        let device = Device::flex();
        let net = Sequential::build(&lenet(), [1, 28, 28], 10, &device).unwrap();
        // 16 x 5 x 5 features reach the first linear layer, as in LeCun's LeNet-5.
        let Layer::Linear(fc1) = &net.layers()[6] else {
            panic!("layer 6 is linear");
        };
        assert_eq!(fc1.weight.dims(), [400, 120]);
        let logits = net.forward(Tensor::zeros([3, 1, 28, 28], &device));
        assert_eq!(logits.dims(), [3, 10]);
    }

    #[test]
    fn misfits_are_named() {
        let err = Sequential::check(&lenet(), [1, 8, 8]).unwrap_err();
        assert!(
            err.contains("layer 3") && err.contains("does not fit"),
            "{err}"
        );
        let err = Sequential::check(
            &[
                LayerSpec::Linear { features: 4 },
                LayerSpec::MaxPool { size: 2 },
            ],
            [1, 28, 28],
        )
        .unwrap_err();
        assert!(err.contains("cannot follow a linear layer"), "{err}");
    }
}
