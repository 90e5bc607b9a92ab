//! Autodiff for the extension (feature `autodiff`, which kiln-train turns on): each operation
//! records a backward step that calls the inner backend's gradient kernels. Inference-only
//! builds (`kiln-serve`) leave burn's autodiff backend out.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, TensorMetadata};
use burn::tensor::ops::ConvOptions;

use crate::extension::{KilnOps, dims4};

/// The recorded step: the forward input and weight are kept (checkpointed) for the gradients.
#[derive(Debug)]
struct Conv2dBackward;

impl<B: KilnOps> Backward<B, 3> for Conv2dBackward {
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
            let dx =
                B::kiln_conv2d_x_backward(x.clone(), weight.clone(), dy.clone(), options.clone());
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            let dw = B::kiln_conv2d_weight_backward(x, weight, dy.clone(), options);
            grads.register::<B>(node.id, dw);
        }
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, B::kiln_conv2d_bias_backward(dy));
        }
    }
}

/// The recorded max-pooling step: its input is kept to find each window's maximum again.
#[derive(Debug)]
struct MaxPool2dBackward;

impl<B: KilnOps> Backward<B, 1> for MaxPool2dBackward {
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

impl<B: KilnOps, C: CheckpointStrategy> KilnOps for Autodiff<B, C> {
    fn kiln_conv2d(
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
                let out = B::kiln_conv2d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    options.clone(),
                );
                prep.finish((x_state, weight_state, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::kiln_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                options,
            )),
        }
    }

    // The autodiff backend differentiates `kiln_conv2d` itself; these run on the inner backend,
    // inside its backward step, never on tracked tensors.
    fn kiln_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, dy, options)
    }

    fn kiln_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, dy, options)
    }

    fn kiln_conv2d_bias_backward(dy: FloatTensor<Self>) -> FloatTensor<Self> {
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
