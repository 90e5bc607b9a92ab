//! Bounds-checked `f32` matrix products on the `gemm` crate, whose AVX-512 kernels run where the
//! CPU has them: kiln's one crate with `unsafe` code, one call, checked before it is made.
//!
//! `gemm` takes raw pointers and strides. [`matmul`] takes slices, checks that every element the
//! product will read or write lies inside them, and only then calls it. The borrow checker
//! already keeps the destination apart from the operands (`&mut` against `&`).

/// A read-only matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// `data` as a row-major `[rows, cols]` matrix.
    ///
    /// # Panics
    /// When `data` holds fewer than `rows * cols` elements.
    #[must_use]
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        let len = rows.checked_mul(cols).expect("matrix size overflows");
        assert!(
            data.len() >= len,
            "a [{rows}, {cols}] matrix needs {len} elements, got {}",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view of the same data.
    #[must_use]
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// `[rows, cols]`.
    #[must_use]
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Whether every element lies inside `data`: the last one, the farthest, does.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.cols - 1).checked_mul(self.col_stride))
            .and_then(|(r, c)| r.checked_add(c));
        last.is_some_and(|last| last < self.data.len())
    }

    fn strides(&self) -> (isize, isize) {
        let stride = |s: usize| isize::try_from(s).expect("stride fits in isize");
        (stride(self.row_stride), stride(self.col_stride))
    }
}

/// `dst = a x b`, or `dst += a x b` when `accumulate`, with `dst` a row-major
/// `[a.rows, b.cols]` matrix. Single-threaded: callers spread independent products over their
/// own threads.
///
/// # Panics
/// When `a.cols != b.rows`, or `dst` holds fewer than `a.rows * b.cols` elements.
pub fn matmul(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    let ([m, k], [k2, n]) = (a.dims(), b.dims());
    assert_eq!(k, k2, "inner dimensions differ: [{m}, {k}] x [{k2}, {n}]");
    let len = m.checked_mul(n).expect("product size overflows");
    assert!(
        dst.len() >= len,
        "a [{m}, {n}] product needs {len} elements, got {}",
        dst.len()
    );
    // Constructors check their own extent; a transposed or hand-strided view is checked again.
    assert!(a.in_bounds() && b.in_bounds(), "matrix view out of bounds");
    if len == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..len].fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let dst_rs = isize::try_from(n).expect("row stride fits in isize");
    #[allow(unsafe_code)]
    // SAFETY: gemm reads `a` at `i * a_rs + p * a_cs` for i < m, p < k and `b` at
    // `p * b_rs + j * b_cs` for p < k, j < n, and writes (and, when accumulating, reads) `dst`
    // at `i * n + j`: `in_bounds` put the largest of the first two inside their slices, the
    // length check above the largest of the third (`(m - 1) * n + n - 1 < m * n <= dst.len()`).
    // Strides are non-negative, so the largest offsets are the last elements'. `dst` is borrowed
    // mutably and the operands shared, so they cannot overlap. `Parallelism::None` keeps the
    // call on this thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The definition in f64.
    fn reference(a: Mat<'_>, b: Mat<'_>) -> Vec<f64> {
        let ([m, k], [_, n]) = (a.dims(), b.dims());
        let at = |x: &Mat<'_>, i: usize, j: usize| {
            f64::from(x.data[i * x.row_stride + j * x.col_stride])
        };
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| at(&a, i, p) * at(&b, p, j)).sum();
            }
        }
        out
    }

    /// Every layout the kernels use (plain, transposed left, transposed right), over shapes
    /// that cross the kernels' register-block edges and gemm's 512-deep blocks (whose later
    /// blocks add onto what the first wrote: conv1's weight gradient is 32 x 676 x 9), and
    /// accumulation onto existing values. Overwriting starts from NaN: a product that read
    /// `dst` when told not to would show it.
    #[test]
    fn matches_the_definition_in_every_layout() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 9),
            (64, 288, 576),
            (31, 1, 40),
            (5, 70, 1),
            (32, 676, 9),
            (9, 1100, 40),
        ] {
            let a_data = values(m * k, 1);
            let b_data = values(k * n, 2);
            let a_rm = Mat::row_major(&a_data, m, k);
            let a_cm = Mat::row_major(&a_data, k, m).t();
            let b_rm = Mat::row_major(&b_data, k, n);
            let b_cm = Mat::row_major(&b_data, n, k).t();
            for (a, b) in [(a_rm, b_rm), (a_cm, b_rm), (a_rm, b_cm), (a_cm, b_cm)] {
                let want = reference(a, b);
                let start = values(m * n, 3);
                let mut set = vec![f32::NAN; m * n];
                matmul(&mut set, a, b, false);
                let mut add = start.clone();
                matmul(&mut add, a, b, true);
                for i in 0..m * n {
                    let tol = 1e-5 * (1.0 + k as f64).sqrt();
                    assert!(
                        (f64::from(set[i]) - want[i]).abs() < tol,
                        "({m},{k},{n}) set {i}"
                    );
                    let sum = want[i] + f64::from(start[i]);
                    assert!(
                        (f64::from(add[i]) - sum).abs() < tol,
                        "({m},{k},{n}) add {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_empty_inner_dimension_gives_zeros_or_leaves_the_sum() {
        let (a, b) = (Mat::row_major(&[], 2, 0), Mat::row_major(&[], 0, 3));
        let mut dst = vec![7.0; 6];
        matmul(&mut dst, a, b, true);
        assert_eq!(dst, vec![7.0; 6]);
        matmul(&mut dst, a, b, false);
        assert_eq!(dst, vec![0.0; 6]);
    }

    #[test]
    #[should_panic(expected = "needs 6 elements")]
    fn a_short_slice_is_refused() {
        let _ = Mat::row_major(&[1.0; 5], 2, 3);
    }

    #[test]
    #[should_panic(expected = "product needs 4 elements")]
    fn a_short_destination_is_refused() {
        let a = [1.0; 4];
        matmul(
            &mut [0.0; 3],
            Mat::row_major(&a, 2, 2),
            Mat::row_major(&a, 2, 2),
            false,
        );
    }

    #[test]
    #[should_panic(expected = "inner dimensions differ")]
    fn mismatched_shapes_are_refused() {
        let a = [1.0; 6];
        matmul(
            &mut [0.0; 4],
            Mat::row_major(&a, 2, 3),
            Mat::row_major(&a, 2, 3),
            false,
        );
    }
}
