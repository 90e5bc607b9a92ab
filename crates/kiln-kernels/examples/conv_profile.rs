//! Times each convolution pass of the MNIST CNN at batch 64 on kiln's kernels and on burn's
//! flex operations, in one process: `cargo run --example conv_profile [-- REPS]`.

use std::time::Instant;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::tensor::TensorData;
use burn::tensor::ops::ConvOptions;
use kiln_kernels::conv::{self, Conv2dShape};

fn filled(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn flex(values: Vec<f32>, dims: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims.to_vec()))
}

fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    start.elapsed().as_secs_f64() * 1e3 / reps as f64
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    println!(
        "{:<28} {:>10} {:>10}",
        "pass (batch 64)", "kiln ms", "burn ms"
    );
    let mut totals = (0.0, 0.0);
    for (name, c_in, size, c_out) in [
        ("conv1 1->32 28x28", 1, 28, 32),
        ("conv2 32->64 26x26", 32, 26, 64),
    ] {
        let shape = Conv2dShape {
            batch: 64,
            in_channels: c_in,
            in_size: [size, size],
            out_channels: c_out,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [(0, 0), (0, 0)],
            dilation: [1, 1],
        };
        let [oh, ow] = shape.out_size().unwrap();
        let x = filled(shape.batch * shape.input_len());
        let w = filled(shape.weight_len());
        let b = filled(c_out);
        let dy = filled(shape.batch * shape.output_len());
        let xd = [64, c_in, size, size];
        let wd = [c_out, c_in, 3, 3];
        let dyd = [64, c_out, oh, ow];
        let opts = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let bias = || FlexTensor::from_data(TensorData::new(b.clone(), vec![c_out]));
        let rows: [(&str, f64, f64); 3] = [
            (
                "forward",
                time_ms(reps, || drop(conv::forward(&shape, &x, &w, Some(&b)))),
                time_ms(reps, || {
                    drop(Flex::conv2d(
                        flex(x.clone(), xd),
                        flex(w.clone(), wd),
                        Some(bias()),
                        opts.clone(),
                    ));
                }),
            ),
            (
                "weight gradient",
                time_ms(reps, || drop(conv::weight_grad(&shape, &x, &dy))),
                time_ms(reps, || {
                    drop(Flex::conv2d_weight_backward(
                        flex(x.clone(), xd),
                        flex(w.clone(), wd),
                        flex(dy.clone(), dyd),
                        opts.clone(),
                    ));
                }),
            ),
            (
                "input gradient",
                time_ms(reps, || drop(conv::input_grad(&shape, &w, &dy))),
                time_ms(reps, || {
                    drop(Flex::conv2d_x_backward(
                        flex(x.clone(), xd),
                        flex(w.clone(), wd),
                        flex(dy.clone(), dyd),
                        opts.clone(),
                    ));
                }),
            ),
        ];
        for (pass, kiln, burn) in rows {
            println!("{:<28} {kiln:>10.2} {burn:>10.2}", format!("{name} {pass}"));
            if !(c_in == 1 && pass == "input gradient") {
                totals.0 += kiln;
                totals.1 += burn;
            }
        }
    }
    println!(
        "{:<28} {:>10.2} {:>10.2}",
        "step total (no conv1 dx)", totals.0, totals.1
    );
}
