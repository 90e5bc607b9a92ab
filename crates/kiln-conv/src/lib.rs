//! kiln's CPU convolution: im2col + GEMM forward and both backward passes, plugged into burn's
//! `flex` backend and its autodiff so that models, optimisers and checkpoints keep working.
//!
//! burn 0.22's flex backend computes the weight gradient as a convolution whose kernel is the
//! whole output map, and its forward pass allocates per tile; this crate replaces the three
//! passes with one GEMM per sample on buffers reused across calls (see [`kernels`]).
//! [`conv2d`] takes that path on the `cpu` device and falls back to burn's own operation for
//! other devices and for shapes it does not cover (groups), so nothing is lost.
//!
//! `KILN_CONV=burn` in the environment turns the fast path off, for side-by-side measurements.

#![warn(missing_docs)]

mod extension;
pub mod kernels;
pub mod pool;

use std::sync::OnceLock;

use burn::backend::Dispatch;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor};

pub use extension::KilnConv;

/// A 2-D convolution, NCHW, like [`burn::tensor::module::conv2d`], on kiln's kernels where they
/// apply (the `cpu` device, one group) and burn's otherwise.
///
/// # Shapes
/// - x: `[batch, channels_in, height, width]`
/// - weight: `[channels_out, channels_in, kernel_height, kernel_width]`
/// - bias: `[channels_out]`
/// - output: `[batch, channels_out, out_height, out_width]`
#[must_use]
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if !takes_fast_path(&x.device(), &options) {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    let bias = bias.unwrap_or_else(|| Tensor::zeros([weight.dims()[0]], &weight.device()));
    Tensor::from_dispatch(<Dispatch as KilnConv>::kiln_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        options,
    ))
}

/// [`Conv2d::forward`] on [`conv2d`]: same parameters, same padding rules, same result.
#[must_use]
pub fn forward(conv: &Conv2d, input: Tensor<4>) -> Tensor<4> {
    let [_, _, height, width] = input.dims();
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Same => [
            same_padding(conv.kernel_size[0], conv.stride[0], height),
            same_padding(conv.kernel_size[1], conv.stride[1], width),
        ],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
    };
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    conv2d(
        input,
        conv.weight.val(),
        conv.bias.as_ref().map(burn::module::Param::val),
        options,
    )
}

/// [`MaxPool2d::forward`] on kiln's pooling where it applies (the `cpu` device, `f32`,
/// non-overlapping windows without padding or dilation) and burn's otherwise.
#[must_use]
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let kernel = pool.kernel_size;
    let no_padding = match pool.padding {
        PaddingConfig2d::Valid => true,
        PaddingConfig2d::Explicit(top, left, bottom, right) => top + left + bottom + right == 0,
        PaddingConfig2d::Same => false,
    };
    let whole_windows = !pool.ceil_mode || (h % kernel[0] == 0 && w % kernel[1] == 0);
    let fast = enabled()
        && x.device() == Device::flex()
        && x.dtype() == DType::F32
        && pool.stride == kernel
        && pool.dilation == [1, 1]
        && no_padding
        && whole_windows
        && kernel[0] > 0
        && kernel[1] > 0;
    if !fast {
        return pool.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as KilnConv>::kiln_max_pool2d(
        x.into_dispatch(),
        kernel,
    ))
}

/// burn's `Same` padding (the ONNX convention: an odd total puts the extra row at the end), which
/// burn keeps crate-private.
fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = if out > 0 {
        ((out - 1) * stride + kernel).saturating_sub(size)
    } else {
        0
    };
    (total / 2, total - total / 2)
}

/// Whether [`conv2d`] uses kiln's kernels for this device and these options.
#[must_use]
pub fn takes_fast_path(device: &Device, options: &ConvOptions<2>) -> bool {
    enabled() && options.groups == 1 && *device == Device::flex()
}

/// False when `KILN_CONV=burn` asks for burn's own convolution everywhere.
fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("KILN_CONV").map_or(true, |v| v != "burn"))
}
