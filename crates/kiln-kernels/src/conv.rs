//! The convolution kernels on plain slices, NCHW, `f32`: im2col into a per-thread buffer that is
//! reused across calls, then one GEMM per sample ([`kiln_gemm`]), samples spread over rayon's
//! threads (each GEMM single-threaded, so nothing nests).
//!
//! - forward: `out[b] = W [c_out, K] x cols(x[b]) [K, L] + bias`
//! - weight gradient: `dW = sum_b dY[b] [c_out, L] x cols(x[b])^T [L, K]`, one partial sum per
//!   thread
//! - input gradient: `dx[b] = col2im(W^T [K, c_out] x dY[b] [c_out, L])`
//!
//! with `K = c_in * kh * kw` and `L = out_h * out_w`. A 1x1 kernel with stride 1 and no padding
//! skips im2col: the image already is its column matrix.

use std::cell::RefCell;

use kiln_gemm::{Mat, matmul};
use rayon::prelude::*;

/// The geometry of one 2-D convolution (one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Samples in the batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input `[height, width]`.
    pub in_size: [usize; 2],
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride `[vertical, horizontal]`, non-zero.
    pub stride: [usize; 2],
    /// Padding `[(top, bottom), (left, right)]`.
    pub padding: [(usize, usize); 2],
    /// Dilation `[vertical, horizontal]`, non-zero.
    pub dilation: [usize; 2],
}

impl Conv2dShape {
    /// Output `[height, width]`, or `None` when the (dilated) kernel does not fit the padded
    /// input or a stride or dilation is zero.
    #[must_use]
    pub fn out_size(&self) -> Option<[usize; 2]> {
        let mut out = [0; 2];
        for (d, out) in out.iter_mut().enumerate() {
            let (stride, dilation) = (self.stride[d], self.dilation[d]);
            if stride == 0 || dilation == 0 || self.kernel[d] == 0 {
                return None;
            }
            let padded = self.in_size[d] + self.padding[d].0 + self.padding[d].1;
            let span = dilation * (self.kernel[d] - 1) + 1;
            *out = padded.checked_sub(span)? / stride + 1;
        }
        Some(out)
    }

    /// Elements of one input sample, `c_in * h * w`.
    #[must_use]
    pub fn input_len(&self) -> usize {
        self.in_channels * self.in_size[0] * self.in_size[1]
    }

    /// Elements of the weight, `c_out * K`.
    #[must_use]
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }

    /// Elements of one output sample, `c_out * L`.
    #[must_use]
    pub fn output_len(&self) -> usize {
        self.out_channels * self.positions()
    }

    /// `K`: one column of the im2col matrix, `c_in * kh * kw`.
    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// `L`: output positions per channel.
    fn positions(&self) -> usize {
        self.out_size().map_or(0, |[h, w]| h * w)
    }

    /// A 1x1 kernel, stride 1, no padding: each sample already is its column matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [(0, 0), (0, 0)]
    }

    fn check(&self, x: usize, w: usize, y: usize) {
        assert!(self.out_size().is_some(), "kernel does not fit: {self:?}");
        assert_eq!(
            x,
            self.batch * self.input_len(),
            "input length for {self:?}"
        );
        assert_eq!(w, self.weight_len(), "weight length for {self:?}");
        assert_eq!(
            y,
            self.batch * self.output_len(),
            "output length for {self:?}"
        );
    }
}

/// The forward pass: `[batch, c_out, out_h, out_w]` from `x` `[batch, c_in, h, w]`, `weight`
/// `[c_out, c_in, kh, kw]` and an optional `bias` `[c_out]`.
///
/// # Panics
/// When a slice's length does not match `shape`.
#[must_use]
pub fn forward(shape: &Conv2dShape, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (k, l) = (shape.patch_len(), shape.positions());
    let mut out = vec![0.0; shape.batch * shape.output_len()];
    shape.check(x.len(), weight.len(), out.len());
    if let Some(bias) = bias {
        assert_eq!(bias.len(), shape.out_channels, "bias length for {shape:?}");
    }
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(shape.output_len())
        .zip(x.par_chunks(shape.input_len()))
        .for_each(|(out, x)| {
            if let Some(bias) = bias {
                for (row, &b) in out.chunks_mut(l).zip(bias) {
                    row.fill(b);
                }
            }
            let w = Mat::row_major(weight, shape.out_channels, k);
            let add = bias.is_some();
            if shape.is_pointwise() {
                matmul(out, w, Mat::row_major(x, k, l), add);
            } else {
                with_scratch(k * l, |cols| {
                    im2col(shape, x, cols);
                    matmul(out, w, Mat::row_major(cols, k, l), add);
                });
            }
        });
    out
}

/// The weight gradient `[c_out, c_in, kh, kw]` from the forward input `x` and the output
/// gradient `dy` `[batch, c_out, out_h, out_w]`.
///
/// # Panics
/// When a slice's length does not match `shape`.
#[must_use]
pub fn weight_grad(shape: &Conv2dShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, l) = (shape.patch_len(), shape.positions());
    shape.check(x.len(), shape.weight_len(), dy.len());
    let zeros = || vec![0.0; shape.weight_len()];
    if dy.is_empty() || x.is_empty() {
        return zeros();
    }
    // One partial sum per thread, added at the end: no locks, no shared writes.
    let per_task = shape.batch.div_ceil(rayon::current_num_threads().max(1));
    x.par_chunks(per_task * shape.input_len())
        .zip(dy.par_chunks(per_task * shape.output_len()))
        .map(|(xs, dys)| {
            let mut dw = zeros();
            for (x, dy) in xs
                .chunks(shape.input_len())
                .zip(dys.chunks(shape.output_len()))
            {
                let dy = Mat::row_major(dy, shape.out_channels, l);
                if shape.is_pointwise() {
                    matmul(&mut dw, dy, Mat::row_major(x, k, l).t(), true);
                } else {
                    with_scratch(k * l, |cols| {
                        im2col(shape, x, cols);
                        matmul(&mut dw, dy, Mat::row_major(cols, k, l).t(), true);
                    });
                }
            }
            dw
        })
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_else(zeros)
}

/// The input gradient `[batch, c_in, h, w]` from `weight` and the output gradient `dy`.
///
/// # Panics
/// When a slice's length does not match `shape`.
#[must_use]
pub fn input_grad(shape: &Conv2dShape, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, l) = (shape.patch_len(), shape.positions());
    let mut dx = vec![0.0; shape.batch * shape.input_len()];
    shape.check(dx.len(), weight.len(), dy.len());
    if dx.is_empty() || dy.is_empty() {
        return dx;
    }
    let wt = Mat::row_major(weight, shape.out_channels, k).t();
    dx.par_chunks_mut(shape.input_len())
        .zip(dy.par_chunks(shape.output_len()))
        .for_each(|(dx, dy)| {
            let dy = Mat::row_major(dy, shape.out_channels, l);
            if shape.is_pointwise() {
                matmul(dx, wt, dy, false);
            } else {
                with_scratch(k * l, |dcols| {
                    matmul(dcols, wt, dy, false);
                    col2im(shape, dcols, dx);
                });
            }
        });
    dx
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The bias gradient `[c_out]`: `dy` `[batch, c_out, positions]` summed over the batch and the
/// positions.
///
/// # Panics
/// When `dy`'s length is not `batch * out_channels * positions`.
#[must_use]
pub fn bias_grad(batch: usize, out_channels: usize, positions: usize, dy: &[f32]) -> Vec<f32> {
    assert_eq!(dy.len(), batch * out_channels * positions, "dy length");
    let zeros = || vec![0.0; out_channels];
    if positions == 0 || dy.is_empty() {
        return zeros();
    }
    // One partial sum per thread, as for the weight gradient.
    let per_task = batch.div_ceil(rayon::current_num_threads().max(1));
    dy.par_chunks(per_task * out_channels * positions)
        .map(|samples| {
            let mut db = zeros();
            for (i, row) in samples.chunks_exact(positions).enumerate() {
                db[i % out_channels] += lane_sum(row);
            }
            db
        })
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_else(zeros)
}

/// The sum of `values` in 16 interleaved lanes, which the compiler keeps in vector registers
/// (a plain `sum` adds one element at a time, in order).
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Runs `f` on this thread's scratch buffer of at least `len` elements (grown, never shrunk,
/// so steady-state training allocates no column buffers).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        f(&mut scratch[..len])
    })
}

/// For kernel offset `offset` along one axis: the output range `[lo, hi)` whose input index
/// `o * stride + offset - pad` lands inside `0..size`.
fn valid_range(
    out: usize,
    size: usize,
    stride: usize,
    offset: usize,
    pad: usize,
) -> (usize, usize) {
    // o * stride + offset >= pad  <=>  o >= ceil((pad - offset) / stride)
    let lo = pad.saturating_sub(offset).div_ceil(stride).min(out);
    // o * stride + offset - pad < size  <=>  o * stride < size + pad - offset
    let hi = (size + pad)
        .saturating_sub(offset)
        .div_ceil(stride)
        .min(out);
    (lo, hi.max(lo))
}

/// The numbers im2col and col2im walk by, unpacked once (`pad` is the top and left padding).
struct Taps {
    size: [usize; 2],
    out: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
}

impl Taps {
    fn of(shape: &Conv2dShape) -> Self {
        Self {
            size: shape.in_size,
            out: shape.out_size().unwrap_or([0, 0]),
            kernel: shape.kernel,
            stride: shape.stride,
            dilation: shape.dilation,
            pad: [shape.padding[0].0, shape.padding[1].0],
        }
    }
}

/// One sample's column matrix `[K, L]`: row `(c, i, j)` holds input channel `c` seen through
/// kernel tap `(i, j)` at every output position (zero where that falls in the padding).
fn im2col(shape: &Conv2dShape, x: &[f32], cols: &mut [f32]) {
    let Taps {
        size: [h, w],
        out: [oh, ow],
        kernel: [kh, kw],
        stride: [sh, sw],
        dilation: [dh, dw],
        pad: [pt, pl],
    } = Taps::of(shape);
    let l = oh * ow;
    let mut rows = cols.chunks_exact_mut(l);
    for plane in x.chunks_exact(h * w) {
        for i in 0..kh {
            let (y_lo, y_hi) = valid_range(oh, h, sh, i * dh, pt);
            for j in 0..kw {
                let row = rows.next().expect("K rows");
                let (x_lo, x_hi) = valid_range(ow, w, sw, j * dw, pl);
                if x_lo == x_hi {
                    // This tap falls in the padding at every output column.
                    row.fill(0.0);
                    continue;
                }
                row[..y_lo * ow].fill(0.0);
                row[y_hi * ow..].fill(0.0);
                for oy in y_lo..y_hi {
                    let src = &plane[(oy * sh + i * dh - pt) * w..][..w];
                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                    dst[..x_lo].fill(0.0);
                    dst[x_hi..].fill(0.0);
                    let first = x_lo * sw + j * dw - pl;
                    if sw == 1 {
                        dst[x_lo..x_hi].copy_from_slice(&src[first..first + (x_hi - x_lo)]);
                    } else {
                        for (d, s) in dst[x_lo..x_hi]
                            .iter_mut()
                            .zip(src[first..].iter().step_by(sw))
                        {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back onto the input pixel it was read from.
fn col2im(shape: &Conv2dShape, cols: &[f32], dx: &mut [f32]) {
    let Taps {
        size: [h, w],
        out: [oh, ow],
        kernel: [kh, kw],
        stride: [sh, sw],
        dilation: [dh, dw],
        pad: [pt, pl],
    } = Taps::of(shape);
    let l = oh * ow;
    let mut rows = cols.chunks_exact(l);
    for plane in dx.chunks_exact_mut(h * w) {
        for i in 0..kh {
            let (y_lo, y_hi) = valid_range(oh, h, sh, i * dh, pt);
            for j in 0..kw {
                let row = rows.next().expect("K rows");
                let (x_lo, x_hi) = valid_range(ow, w, sw, j * dw, pl);
                if x_lo == x_hi {
                    continue;
                }
                for oy in y_lo..y_hi {
                    let dst = &mut plane[(oy * sh + i * dh - pt) * w..][..w];
                    let src = &row[oy * ow + x_lo..oy * ow + x_hi];
                    let first = x_lo * sw + j * dw - pl;
                    if sw == 1 {
                        for (d, s) in dst[first..first + src.len()].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (d, s) in dst[first..].iter_mut().step_by(sw).zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, term by term, in f64.
    fn direct(shape: &Conv2dShape, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
        let [h, wd] = shape.in_size;
        let [oh, ow] = shape.out_size().unwrap();
        let [kh, kw] = shape.kernel;
        let mut out = vec![0.0; shape.batch * shape.out_channels * oh * ow];
        for n in 0..shape.batch {
            for co in 0..shape.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = f64::from(b[co]);
                        for ci in 0..shape.in_channels {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (oy * shape.stride[0] + i * shape.dilation[0])
                                        as isize
                                        - shape.padding[0].0 as isize;
                                    let ix = (ox * shape.stride[1] + j * shape.dilation[1])
                                        as isize
                                        - shape.padding[1].0 as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = x[((n * shape.in_channels + ci) * h + iy as usize)
                                        * wd
                                        + ix as usize];
                                    let wv = w[((co * shape.in_channels + ci) * kh + i) * kw + j];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        out[((n * shape.out_channels + co) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                (v >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn shapes() -> Vec<Conv2dShape> {
        let base = Conv2dShape {
            batch: 3,
            in_channels: 2,
            in_size: [7, 6],
            out_channels: 4,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [(0, 0), (0, 0)],
            dilation: [1, 1],
        };
        vec![
            base,
            Conv2dShape {
                stride: [2, 3],
                ..base
            },
            Conv2dShape {
                padding: [(1, 2), (2, 0)],
                ..base
            },
            Conv2dShape {
                dilation: [2, 1],
                padding: [(1, 1), (1, 1)],
                ..base
            },
            Conv2dShape {
                kernel: [1, 1],
                ..base
            },
            Conv2dShape {
                kernel: [2, 3],
                stride: [2, 2],
                padding: [(1, 0), (0, 1)],
                ..base
            },
            // Dilated taps that land in the padding at every output position (found by the
            // property test against burn).
            Conv2dShape {
                in_size: [3, 3],
                kernel: [1, 3],
                padding: [(0, 0), (0, 2)],
                dilation: [1, 2],
                ..base
            },
            Conv2dShape {
                in_size: [3, 3],
                kernel: [3, 1],
                stride: [2, 1],
                padding: [(2, 0), (0, 0)],
                dilation: [2, 1],
                ..base
            },
        ]
    }

    #[test]
    fn forward_matches_the_definition() {
        for shape in shapes() {
            let x = values(shape.batch * shape.input_len(), 1);
            let w = values(shape.weight_len(), 2);
            let b = values(shape.out_channels, 3);
            let got = forward(&shape, &x, &w, Some(&b));
            let want = direct(&shape, &x, &w, &b);
            for (g, w) in got.iter().zip(&want) {
                assert!((f64::from(*g) - w).abs() < 1e-5, "{shape:?}: {g} vs {w}");
            }
        }
    }

    /// `<conv(x), dy> = <x, dx(dy)> = <w, dw(x, dy)>`: both gradients are the adjoints of the
    /// forward pass, which the definition pins down.
    #[test]
    fn gradients_are_the_adjoints_of_the_forward_pass() {
        for shape in shapes() {
            let x = values(shape.batch * shape.input_len(), 4);
            let w = values(shape.weight_len(), 5);
            let dy = values(shape.batch * shape.output_len(), 6);
            let zero = vec![0.0; shape.out_channels];
            let y = direct(&shape, &x, &w, &zero);
            let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| a * f64::from(*b)).sum();
            let dx = input_grad(&shape, &w, &dy);
            let dw = weight_grad(&shape, &x, &dy);
            let via_x: f64 = x
                .iter()
                .zip(&dx)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let via_w: f64 = w
                .iter()
                .zip(&dw)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            assert!(
                (lhs - via_x).abs() < 1e-4 * (1.0 + lhs.abs()),
                "{shape:?}: {lhs} vs {via_x}"
            );
            assert!(
                (lhs - via_w).abs() < 1e-4 * (1.0 + lhs.abs()),
                "{shape:?}: {lhs} vs {via_w}"
            );
        }
    }

    #[test]
    fn the_bias_gradient_sums_batch_and_positions() {
        let dy: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
        // channel c: rows c and c + 3, e.g. channel 0: (0+1+2+3) + (12+13+14+15)
        assert_eq!(bias_grad(2, 3, 4, &dy), vec![60.0, 92.0, 124.0]);
    }
}
