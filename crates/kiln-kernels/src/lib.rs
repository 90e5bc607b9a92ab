//! kiln's CPU kernels for small vision models (convolution, max pooling, dropout masks), plugged
//! into burn's `flex` backend and its autodiff so that models, optimisers and checkpoints keep
//! working.
//!
//! burn 0.22's flex backend computes the convolution's weight gradient as a convolution whose
//! kernel is the whole output map, and its forward pass allocates per tile; this crate replaces
//! the three passes with one GEMM per sample on buffers reused across calls (see [`conv`]).
//! [`conv2d`] and [`max_pool2d`] take that path on the `cpu` device and fall back to burn's own
//! operations for other devices and for shapes they do not cover, so nothing is lost.
//!
//! `KILN_KERNELS=burn` in the environment turns the fast path off, for side-by-side measurements.

#![warn(missing_docs)]

#[cfg(feature = "autodiff")]
mod autodiff;
pub mod conv;
pub mod dropout;
mod extension;
pub mod pool;

use std::sync::OnceLock;

use burn::backend::Dispatch;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{Dropout, PaddingConfig2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};

pub use extension::KilnOps;

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
    Tensor::from_dispatch(<Dispatch as KilnOps>::kiln_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        options,
    ))
}

/// [`Conv2d::forward`] on [`conv2d`]: same parameters, same padding rules, same result.
#[must_use]
pub fn conv2d_layer(conv: &Conv2d, input: Tensor<4>) -> Tensor<4> {
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
    let fast = on_flex(&x.device())
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
    Tensor::from_dispatch(<Dispatch as KilnOps>::kiln_max_pool2d(
        x.into_dispatch(),
        kernel,
    ))
}

/// [`Dropout::forward`] with kiln's mask generator on the `cpu` device (see [`dropout`]); burn's
/// otherwise. Deterministic for a given device seed: the mask's seed is drawn from burn's
/// generator, so a run seeded per step resumes exactly.
#[must_use]
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let fast = on_flex(&device)
        && device.is_autodiff()
        && layer.training.is_enabled()
        && layer.prob > 0.0
        && layer.prob < 1.0
        && x.dtype() == DType::F32;
    if !fast {
        return layer.forward(x);
    }
    let draws: Vec<f32> = Tensor::<1>::random([2], Distribution::Default, &device)
        .into_data()
        .try_to_vec()
        .unwrap_or_default();
    let seed = draws
        .iter()
        .fold(0u64, |acc, v| (acc << 32) | u64::from(v.to_bits()));
    let shape = x.shape();
    let mask = dropout::mask(shape.num_elements(), (1.0 - layer.prob) as f32, seed);
    x * Tensor::from_data(TensorData::new(mask, shape), &device)
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
    on_flex(device) && options.groups == 1
}

/// kiln's kernels are on and `device` is flex, with autodiff only where this build has kiln's
/// backward steps (feature `autodiff`).
fn on_flex(device: &Device) -> bool {
    enabled() && *device == Device::flex() && (cfg!(feature = "autodiff") || !device.is_autodiff())
}

/// False when `KILN_KERNELS=burn` asks for burn's own convolution everywhere.
fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("KILN_KERNELS").map_or(true, |v| v != "burn"))
}
