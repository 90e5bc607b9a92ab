//! The burn side: a backend extension whose flex implementation runs [`crate::conv`] and whose
//! autodiff implementation records a backward step that calls them again.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, TensorData};

use crate::conv::{self, Conv2dShape};
use crate::pool;

/// A 2-D convolution with its own backward passes; kiln implements it for flex, and for autodiff
/// over any backend that implements it.
#[backend_extension(Flex, Autodiff)]
pub trait KilnConv: Backend {
    /// The forward pass (see [`crate::conv2d`]).
    fn kiln_kernels2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The gradient with respect to `x`, given the output gradient `dy`.
    fn kiln_kernels2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The gradient with respect to the weight, given the output gradient `dy`.
    fn kiln_kernels2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The gradient with respect to the bias, given the output gradient `dy`.
    fn kiln_kernels2d_bias_backward(dy: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Max pooling over non-overlapping `kernel` windows (see [`crate::max_pool2d`]); `f32` only.
    fn kiln_max_pool2d(x: FloatTensor<Self>, kernel: [usize; 2]) -> FloatTensor<Self>;

    /// The input gradient of [`KilnConv::kiln_max_pool2d`], given its input and `dy`.
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

fn dims4(shape: &burn::tensor::Shape) -> Option<[usize; 4]> {
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

impl KilnConv for Flex {
    fn kiln_kernels2d(
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

    fn kiln_kernels2d_x_backward(
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

    fn kiln_kernels2d_weight_backward(
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

    fn kiln_kernels2d_bias_backward(dy: FlexTensor) -> FlexTensor {
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

/// The recorded step: the forward input and weight are kept (checkpointed) for the gradients.
#[derive(Debug)]
struct Conv2dBackward;

impl<B: KilnConv> Backward<B, 3> for Conv2dBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let weight = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight_state);

        // An untracked input (the images into the first layer) gets no gradient at all.
        if let Some(node) = node_x {
            let dx = B::kiln_kernels2d_x_backward(
                x.clone(),
                weight.clone(),
                dy.clone(),
                options.clone(),
            );
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            let dw = B::kiln_kernels2d_weight_backward(x, weight, dy.clone(), options);
            grads.register::<B>(node.id, dw);
        }
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, B::kiln_kernels2d_bias_backward(dy));
        }
    }
}

/// The recorded max-pooling step: its input is kept to find each window's maximum again.
#[derive(Debug)]
struct MaxPool2dBackward;

impl<B: KilnConv> Backward<B, 1> for MaxPool2dBackward {
    type State = (NodeId, [usize; 2]);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, kernel) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::kiln_max_pool2d_backward(x, dy, kernel));
        }
    }
}

impl<B: KilnConv, C: CheckpointStrategy> KilnConv for Autodiff<B, C> {
    fn kiln_kernels2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match Conv2dBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let out = B::kiln_kernels2d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    options.clone(),
                );
                prep.finish((x_state, weight_state, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::kiln_kernels2d(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                options,
            )),
        }
    }

    // The autodiff backend differentiates `kiln_kernels2d` itself; these run on the inner backend,
    // inside its backward step, never on tracked tensors.
    fn kiln_kernels2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, dy, options)
    }

    fn kiln_kernels2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, dy, options)
    }

    fn kiln_kernels2d_bias_backward(dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let [_, channels, _, _] = dims4(&dy.shape()).expect("4-D output gradient");
        let summed = Self::float_sum_dim(Self::float_sum_dim(Self::float_sum_dim(dy, 3), 2), 0);
        Self::float_reshape(summed, burn::tensor::Shape::new([channels]))
    }

    fn kiln_max_pool2d(x: FloatTensor<Self>, kernel: [usize; 2]) -> FloatTensor<Self> {
        match MaxPool2dBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                prep.finish(
                    (x_state, kernel),
                    B::kiln_max_pool2d(x.into_primitive(), kernel),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::kiln_max_pool2d(x.into_primitive(), kernel)),
        }
    }

    // Like the convolution's gradients: called on the inner backend inside the backward step.
    fn kiln_max_pool2d_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        kernel: [usize; 2],
    ) -> FloatTensor<Self> {
        let indices_dtype = burn::tensor::IntDType::I64;
        let pooled = Self::max_pool2d_with_indices(
            x.clone(),
            kernel,
            kernel,
            [0, 0],
            [1, 1],
            false,
            indices_dtype,
        );
        Self::max_pool2d_with_indices_backward(
            x,
            kernel,
            kernel,
            [0, 0],
            [1, 1],
            false,
            dy,
            pooled.indices,
        )
        .x_grad
    }
}
