//! The burn side: a backend extension whose flex implementation runs [`crate::conv`] and whose
//! autodiff implementation records a backward step that calls them again.

use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, TensorData};

use crate::conv::{self, Conv2dShape};
use crate::pool;

/// A 2-D convolution with its own backward passes; kiln implements it for flex, and for autodiff
/// over any backend that implements it.
#[backend_extension(Flex, Autodiff: cfg(feature = "autodiff"))]
pub trait KilnOps: Backend {
    /// The forward pass (see [`crate::conv2d`]).
    fn kiln_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The gradient with respect to `x`, given the output gradient `dy`.
    fn kiln_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The gradient with respect to the weight, given the output gradient `dy`.
    fn kiln_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The gradient with respect to the bias, given the output gradient `dy`.
    fn kiln_conv2d_bias_backward(dy: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Max pooling over non-overlapping `kernel` windows (see [`crate::max_pool2d`]); `f32` only.
    fn kiln_max_pool2d(x: FloatTensor<Self>, kernel: [usize; 2]) -> FloatTensor<Self>;

    /// The input gradient of [`KilnOps::kiln_max_pool2d`], given its input and `dy`.
    fn kiln_max_pool2d_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        kernel: [usize; 2],
    ) -> FloatTensor<Self>;
}

/// Contiguous `f32` operands and their geometry, or `None` for what the kernels do not cover
/// (other dtypes, groups), which then goes to burn's own operation.
struct Operands {
    shape: Conv2dShape,
    x: FlexTensor,
    weight: FlexTensor,
}

impl Operands {
    fn new(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<Self> {
        if x.dtype() != DType::F32 || weight.dtype() != DType::F32 || options.groups != 1 {
            return None;
        }
        let (xs, ws) = (x.shape(), weight.shape());
        let ([batch, in_channels, h, w], [out_channels, w_in, kh, kw]) = (dims4(&xs)?, dims4(&ws)?);
        if w_in != in_channels {
            return None;
        }
        let shape = Conv2dShape {
            batch,
            in_channels,
            in_size: [h, w],
            out_channels,
            kernel: [kh, kw],
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
        };
        shape.out_size()?;
        Some(Self {
            shape,
            x: contiguous(x),
            weight: contiguous(weight),
        })
    }

    fn x(&self) -> &[f32] {
        self.x.as_slice().expect("contiguous f32")
    }

    fn weight(&self) -> &[f32] {
        self.weight.as_slice().expect("contiguous f32")
    }

    fn output_dims(&self) -> [usize; 4] {
        let [oh, ow] = self.shape.out_size().unwrap_or([0, 0]);
        [self.shape.batch, self.shape.out_channels, oh, ow]
    }
}

pub(crate) fn dims4(shape: &burn::tensor::Shape) -> Option<[usize; 4]> {
    let dims: &[usize] = shape.as_ref();
    dims.try_into().ok()
}

fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

fn tensor(values: Vec<f32>, dims: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims.to_vec()))
}

impl KilnOps for Flex {
    fn kiln_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        let Some(ops) = Operands::new(&x, &weight, &options) else {
            return Self::conv2d(x, weight, Some(bias), options);
        };
        let bias = contiguous(&bias);
        let out = conv::forward(&ops.shape, ops.x(), ops.weight(), bias.as_slice::<f32>());
        tensor(out, &ops.output_dims())
    }

    fn kiln_conv2d_x_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        let Some(ops) = Operands::new(&x, &weight, &options) else {
            return Self::conv2d_x_backward(x, weight, dy, options);
        };
        let dy = contiguous(&dy);
        let dx = conv::input_grad(&ops.shape, ops.weight(), dy.as_slice().expect("f32"));
        tensor(dx, x.shape().as_ref())
    }

    fn kiln_conv2d_weight_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        let Some(ops) = Operands::new(&x, &weight, &options) else {
            return Self::conv2d_weight_backward(x, weight, dy, options);
        };
        let dy = contiguous(&dy);
        let dw = conv::weight_grad(&ops.shape, ops.x(), dy.as_slice().expect("f32"));
        tensor(dw, weight.shape().as_ref())
    }

    fn kiln_conv2d_bias_backward(dy: FlexTensor) -> FlexTensor {
        let dims = dims4(&dy.shape()).expect("4-D output gradient");
        let [batch, channels, h, w] = dims;
        if dy.dtype() != DType::F32 {
            let summed = Self::float_sum_dim(Self::float_sum_dim(Self::float_sum_dim(dy, 3), 2), 0);
            return Self::float_reshape(summed, burn::tensor::Shape::new([channels]));
        }
        let dy = contiguous(&dy);
        let db = conv::bias_grad(batch, channels, h * w, dy.as_slice().expect("f32"));
        tensor(db, &[channels])
    }

    fn kiln_max_pool2d(x: FlexTensor, kernel: [usize; 2]) -> FlexTensor {
        let ([b, c, h, w], x) = planes(&x);
        let [oh, ow] = pool::out_size([h, w], kernel);
        let out = pool::forward(x.as_slice().expect("f32"), [h, w], kernel);
        tensor(out, &[b, c, oh, ow])
    }

    fn kiln_max_pool2d_backward(x: FlexTensor, dy: FlexTensor, kernel: [usize; 2]) -> FlexTensor {
        let (dims, x) = planes(&x);
        let dy = contiguous(&dy);
        let dx = pool::backward(
            x.as_slice().expect("f32"),
            dy.as_slice().expect("f32"),
            [dims[2], dims[3]],
            kernel,
        );
        tensor(dx, &dims)
    }
}

/// `[batch, channels, h, w]` and a contiguous `f32` copy-free view of `t` (or a contiguous copy).
fn planes(t: &FlexTensor) -> ([usize; 4], FlexTensor) {
    let dims = dims4(&t.shape()).expect("4-D tensor");
    assert_eq!(
        t.dtype(),
        DType::F32,
        "kiln's max pooling takes f32 tensors"
    );
    (dims, contiguous(t))
}
