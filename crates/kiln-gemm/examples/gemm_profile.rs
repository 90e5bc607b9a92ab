//! Times one thread's GEMMs on the MNIST CNN's shapes (per sample at batch 64), kiln-gemm
//! against matrixmultiply (through ndarray, with its AVX-512 kernels), in one process:
//! `MATMUL_NUM_THREADS=1 cargo run --example gemm_profile [-- REPS]`. burn-ndarray builds
//! matrixmultiply with its own thread pool, which the variable turns off for a fair comparison.

use std::time::Instant;

use kiln_gemm::{Mat, matmul};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ShapeBuilder};

fn filled(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn time_us(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / reps as f64
}

/// `[rows, cols]` over `data`, row-major, or column-major (a transposed operand) when `t`.
fn view(data: &[f32], rows: usize, cols: usize, t: bool) -> ArrayView2<'_, f32> {
    let shape = if t {
        (rows, cols).f()
    } else {
        (rows, cols).into_shape_with_order()
    };
    ArrayView2::from_shape(shape, data).expect("matrix view")
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    if std::env::var("MATMUL_NUM_THREADS").as_deref() != Ok("1") {
        eprintln!(
            "note: MATMUL_NUM_THREADS is not 1, so matrixmultiply may use more than one thread"
        );
    }
    println!(
        "{:<40} {:>9} {:>9} {:>15} {:>9}",
        "product (one thread)", "kiln us", "mm us", "kiln GFLOP/s", "mm vs kiln"
    );
    // (name, m, k, n, a transposed, b transposed)
    for (name, m, k, n, ta, tb) in [
        ("conv2 forward W x cols", 64, 288, 576, false, false),
        ("conv2 weight grad dY x cols^T", 64, 576, 288, false, true),
        ("conv2 input grad W^T x dY", 288, 64, 576, true, false),
        ("fc1 forward x W (batch 64)", 64, 9216, 128, false, false),
    ] {
        let (a, b) = (filled(m * k, 1), filled(k * n, 2));
        let a_kiln = if ta {
            Mat::row_major(&a, k, m).t()
        } else {
            Mat::row_major(&a, m, k)
        };
        let b_kiln = if tb {
            Mat::row_major(&b, n, k).t()
        } else {
            Mat::row_major(&b, k, n)
        };
        let (a_mm, b_mm) = (view(&a, m, k, ta), view(&b, k, n, tb));
        let mut out = vec![0.0; m * n];
        let mut out_mm = Array2::<f32>::zeros((m, n));
        let kiln = time_us(reps, || matmul(&mut out, a_kiln, b_kiln, false));
        let mm = time_us(reps, || {
            general_mat_mul(1.0, &a_mm, &b_mm, 0.0, &mut out_mm);
        });
        let worst = out
            .iter()
            .zip(out_mm.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{name}: the two disagree by {worst}");
        let gflops = 2.0 * (m * k * n) as f64 / kiln / 1e3;
        println!(
            "{name:<40} {kiln:>9.1} {mm:>9.1} {gflops:>15.0} {:>8.2}x",
            mm / kiln
        );
    }
}
