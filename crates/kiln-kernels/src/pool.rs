//! Max pooling over non-overlapping windows (stride = kernel, no padding), NCHW, `f32`: the
//! shape every CNN in kiln pools with. One pass per (sample, channel) plane, planes spread over
//! rayon's threads. The backward pass finds each window's maximum again in the forward input
//! rather than keeping an index tensor.

use rayon::prelude::*;

/// Output `[height, width]` of pooling `size` with `kernel` windows (partial windows dropped).
#[must_use]
pub fn out_size(size: [usize; 2], kernel: [usize; 2]) -> [usize; 2] {
    [size[0] / kernel[0].max(1), size[1] / kernel[1].max(1)]
}

/// The forward pass: each window's maximum, `[planes, oh, ow]` from `x` `[planes, h, w]`.
///
/// # Panics
/// When `x`'s length is not a whole number of `h * w` planes, or a kernel side is zero.
#[must_use]
pub fn forward(x: &[f32], size: [usize; 2], kernel: [usize; 2]) -> Vec<f32> {
    let [oh, ow] = out_size(size, kernel);
    let plane = size[0] * size[1];
    assert!(kernel[0] > 0 && kernel[1] > 0, "zero pooling kernel");
    assert!(
        plane > 0 && x.len().is_multiple_of(plane),
        "input is not whole planes"
    );
    let mut out = vec![0.0; x.len() / plane * oh * ow];
    if oh * ow == 0 {
        return out;
    }
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(plane))
        .for_each(|(out, x)| {
            if kernel == [2, 2] {
                pool_2x2(x, size[1], out, ow);
                return;
            }
            for (oy, out_row) in out.chunks_mut(ow).enumerate() {
                for (ox, o) in out_row.iter_mut().enumerate() {
                    *o = window(x, size[1], kernel, oy, ox)
                        .map(|(_, v)| v)
                        .fold(f32::NEG_INFINITY, f32::max);
                }
            }
        });
    out
}

/// The common 2x2 case, two input rows at a time (the compiler vectorises the pairs).
fn pool_2x2(x: &[f32], width: usize, out: &mut [f32], ow: usize) {
    for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
        let top = &x[2 * oy * width..][..2 * ow];
        let bottom = &x[(2 * oy + 1) * width..][..2 * ow];
        for ((o, t), b) in out_row
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            *o = t[0].max(t[1]).max(b[0].max(b[1]));
        }
    }
}

/// The input gradient: each window's output gradient goes to the position of that window's
/// (first) maximum in `x`; every other position gets zero.
///
/// # Panics
/// When the lengths of `x` and `dy` do not match `size` and `kernel`.
#[must_use]
pub fn backward(x: &[f32], dy: &[f32], size: [usize; 2], kernel: [usize; 2]) -> Vec<f32> {
    let [oh, ow] = out_size(size, kernel);
    let plane = size[0] * size[1];
    assert!(
        plane > 0 && x.len().is_multiple_of(plane),
        "input is not whole planes"
    );
    assert_eq!(
        dy.len(),
        x.len() / plane * oh * ow,
        "output gradient length"
    );
    let mut dx = vec![0.0; x.len()];
    if oh * ow == 0 {
        return dx;
    }
    dx.par_chunks_mut(plane)
        .zip(x.par_chunks(plane).zip(dy.par_chunks(oh * ow)))
        .for_each(|(dx, (x, dy))| {
            if kernel == [2, 2] {
                unpool_2x2(x, dy, size[1], dx, ow);
                return;
            }
            for (oy, dy_row) in dy.chunks(ow).enumerate() {
                for (ox, &g) in dy_row.iter().enumerate() {
                    let (at, _) = window(x, size[1], kernel, oy, ox).fold(
                        (0, f32::NEG_INFINITY),
                        |best, (i, v)| {
                            if v > best.1 { (i, v) } else { best }
                        },
                    );
                    dx[at] += g;
                }
            }
        });
    dx
}

/// [`backward`] for 2x2 windows: the same first-maximum rule (row by row, left to right; a later
/// position wins only when strictly greater). Every position of a window is written, without
/// branches: the gradient at the maximum, zero elsewhere.
fn unpool_2x2(x: &[f32], dy: &[f32], width: usize, dx: &mut [f32], ow: usize) {
    for (oy, dy_row) in dy.chunks_exact(ow).enumerate() {
        let top = 2 * oy * width;
        let (x_top, x_bottom) = (&x[top..][..2 * ow], &x[top + width..][..2 * ow]);
        let (upper, lower) = dx[top..].split_at_mut(width);
        let (dx_top, dx_bottom) = (&mut upper[..2 * ow], &mut lower[..2 * ow]);
        for ((((&g, t), b), dt), db) in dy_row
            .iter()
            .zip(x_top.chunks_exact(2))
            .zip(x_bottom.chunks_exact(2))
            .zip(dx_top.chunks_exact_mut(2))
            .zip(dx_bottom.chunks_exact_mut(2))
        {
            // `+ 0.0` turns -0.0 into 0.0, as adding onto a zeroed gradient does.
            let g = g + 0.0;
            let mut best = t[0];
            let mut at = 0;
            if t[1] > best {
                best = t[1];
                at = 1;
            }
            if b[0] > best {
                best = b[0];
                at = 2;
            }
            if b[1] > best {
                at = 3;
            }
            dt[0] = if at == 0 { g } else { 0.0 };
            dt[1] = if at == 1 { g } else { 0.0 };
            db[0] = if at == 2 { g } else { 0.0 };
            db[1] = if at == 3 { g } else { 0.0 };
        }
    }
}

/// The `(index, value)` pairs of window `(oy, ox)`, row by row.
fn window(
    x: &[f32],
    width: usize,
    kernel: [usize; 2],
    oy: usize,
    ox: usize,
) -> impl Iterator<Item = (usize, f32)> + '_ {
    (0..kernel[0]).flat_map(move |i| {
        let start = (oy * kernel[0] + i) * width + ox * kernel[1];
        (start..start + kernel[1]).map(move |at| (at, x[at]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2x2 fast path and the general path agree, ties included.
    #[test]
    fn the_2x2_path_matches_the_general_one() {
        let x: Vec<f32> = (0..3 * 6 * 7).map(|i| ((i * 37) % 11) as f32).collect();
        let dy: Vec<f32> = (0..3 * 3 * 3).map(|i| i as f32 + 1.0).collect();
        let general = |x: &[f32], dy: &[f32]| {
            let mut out = Vec::new();
            let mut dx = vec![0.0; x.len()];
            for (p, (x, dx)) in x.chunks(42).zip(dx.chunks_mut(42)).enumerate() {
                for oy in 0..3 {
                    for ox in 0..3 {
                        let (at, v) = window(x, 7, [2, 2], oy, ox).fold(
                            (0, f32::NEG_INFINITY),
                            |b, (i, v)| if v > b.1 { (i, v) } else { b },
                        );
                        out.push(v);
                        dx[at] += dy[p * 9 + oy * 3 + ox];
                    }
                }
            }
            (out, dx)
        };
        let (want_out, want_dx) = general(&x, &dy);
        assert_eq!(forward(&x, [6, 7], [2, 2]), want_out);
        assert_eq!(backward(&x, &dy, [6, 7], [2, 2]), want_dx);
    }

    #[test]
    fn pools_and_routes_gradients_to_the_maximum() {
        // One 4x5 plane, 2x2 windows: the last column is dropped.
        #[rustfmt::skip]
        let x = [
            1.0, 5.0, 2.0, 0.0, 9.0,
            3.0, 4.0, 8.0, 7.0, 9.0,
            -1.0, -2.0, 0.5, 0.25, 9.0,
            -3.0, -0.5, 0.75, 1.0, 9.0,
        ];
        assert_eq!(forward(&x, [4, 5], [2, 2]), vec![5.0, 8.0, -0.5, 1.0]);
        let dx = backward(&x, &[10.0, 20.0, 30.0, 40.0], [4, 5], [2, 2]);
        #[rustfmt::skip]
        let want = vec![
            0.0, 10.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 20.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 30.0, 0.0, 40.0, 0.0,
        ];
        assert_eq!(dx, want);
    }
}
