//! kiln's convolution against two independent implementations, over random shapes: burn's own
//! flex operation (forward, and both gradients through autodiff) and candle-core (forward).

use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use candle_core::{Device as CDevice, Tensor as CTensor};
use kiln_kernels::conv::Conv2dShape;
use proptest::prelude::*;

/// Serialises the tests that seed the device's generator and then draw from it (the generator
/// is one per device, shared by the test threads).
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Largest difference relative to the largest reference magnitude (at least 1).
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    worst / scale
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

fn filled(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// A convolution problem: geometry and operand values.
#[derive(Debug, Clone)]
struct Case {
    shape: Conv2dShape,
    seed: u64,
}

impl Case {
    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new_with_padding(
            self.shape.stride,
            self.shape.padding,
            self.shape.dilation,
            1,
        )
    }

    fn out_dims(&self) -> [usize; 4] {
        let [oh, ow] = self.shape.out_size().expect("fits");
        [self.shape.batch, self.shape.out_channels, oh, ow]
    }

    fn x(&self) -> Vec<f32> {
        filled(self.shape.batch * self.shape.input_len(), self.seed)
    }

    fn weight(&self) -> Vec<f32> {
        filled(self.shape.weight_len(), self.seed + 1)
    }

    fn bias(&self) -> Vec<f32> {
        filled(self.shape.out_channels, self.seed + 2)
    }

    fn dy(&self) -> Vec<f32> {
        filled(self.out_dims().iter().product(), self.seed + 3)
    }

    fn tensors(&self, device: &Device) -> (Tensor<4>, Tensor<4>, Tensor<1>) {
        let s = &self.shape;
        let x = Tensor::from_data(
            TensorData::new(
                self.x(),
                [s.batch, s.in_channels, s.in_size[0], s.in_size[1]],
            ),
            device,
        );
        let w = Tensor::from_data(
            TensorData::new(
                self.weight(),
                [s.out_channels, s.in_channels, s.kernel[0], s.kernel[1]],
            ),
            device,
        );
        let b = Tensor::from_data(TensorData::new(self.bias(), [s.out_channels]), device);
        (x, w, b)
    }

    /// Output and the three gradients of `sum(conv(x) * dy)`, through `conv`.
    fn run(
        &self,
        conv: impl Fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>, ConvOptions<2>) -> Tensor<4>,
    ) -> [Vec<f32>; 4] {
        let device = Device::flex().autodiff();
        let (x, w, b) = self.tensors(&device);
        let (x, w, b) = (x.require_grad(), w.require_grad(), b.require_grad());
        let y = conv(x.clone(), w.clone(), Some(b.clone()), self.options());
        let dy = Tensor::<4>::from_data(TensorData::new(self.dy(), self.out_dims()), &device);
        let grads = (y.clone() * dy).sum().backward();
        [
            values(y),
            values(x.grad(&grads).expect("x gradient")),
            values(w.grad(&grads).expect("weight gradient")),
            values(b.grad(&grads).expect("bias gradient")),
        ]
    }
}

fn cases(square: bool) -> impl Strategy<Value = Case> {
    (
        (1usize..4, 1usize..5, 1usize..6),
        (3usize..11, 3usize..11, 1usize..4, 1usize..4),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        any::<u64>(),
    )
        .prop_map(
            move |(
                (batch, c_in, c_out),
                (h, w, kh, kw),
                (sh, sw, dh, dw),
                (pt, pb, pl, pr),
                seed,
            )| {
                // candle takes one padding, stride and dilation for both axes.
                let (sw, dw, pb, pl, pr) = if square {
                    (sh, dh, pt, pt, pt)
                } else {
                    (sw, dw, pb, pl, pr)
                };
                Case {
                    shape: Conv2dShape {
                        batch,
                        in_channels: c_in,
                        in_size: [h, w],
                        out_channels: c_out,
                        kernel: [kh, kw],
                        stride: [sh, sw],
                        padding: [(pt, pb), (pl, pr)],
                        dilation: [dh, dw],
                    },
                    seed: seed % 1_000_000,
                }
            },
        )
        .prop_filter("the kernel fits the padded input", |c| {
            c.shape.out_size().is_some()
        })
}

proptest! {
    // 256 cases each unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig::default())]

    /// Forward, input gradient, weight gradient and bias gradient all match burn's own flex
    /// convolution to 1e-4 relative.
    #[test]
    fn matches_burn_forward_and_gradients(case in cases(false)) {
        let kiln = case.run(kiln_kernels::conv2d);
        let burn = case.run(burn::tensor::module::conv2d);
        for (name, (k, b)) in ["output", "x gradient", "weight gradient", "bias gradient"]
            .iter()
            .zip(kiln.iter().zip(&burn))
        {
            let err = relative_error(k, b);
            prop_assert!(err < 1e-4, "{name}: relative error {err} for {case:?}");
        }
    }

    /// The forward pass matches candle-core's convolution (an implementation that shares no code
    /// with burn), on the square cases candle can express.
    #[test]
    fn matches_candle_forward(case in cases(true)) {
        let s = &case.shape;
        let (x, w, b) = case.tensors(&Device::flex());
        let kiln = values(kiln_kernels::conv2d(x, w, Some(b), case.options()));

        let cpu = &CDevice::Cpu;
        let cx = CTensor::from_vec(case.x(), (s.batch, s.in_channels, s.in_size[0], s.in_size[1]), cpu).unwrap();
        let cw = CTensor::from_vec(case.weight(), (s.out_channels, s.in_channels, s.kernel[0], s.kernel[1]), cpu).unwrap();
        let cb = CTensor::from_vec(case.bias(), (1, s.out_channels, 1, 1), cpu).unwrap();
        let y = cx
            .conv2d(&cw, s.padding[0].0, s.stride[0], s.dilation[0], 1)
            .unwrap()
            .broadcast_add(&cb)
            .unwrap();
        let candle = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let err = relative_error(&kiln, &candle);
        prop_assert!(err < 1e-4, "relative error {err} for {case:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// Max pooling over non-overlapping windows: output and input gradient match burn's module.
    #[test]
    fn max_pooling_matches_burn(
        (batch, channels, h, w) in (1usize..4, 1usize..5, 2usize..13, 2usize..13),
        (kh, kw) in (1usize..4, 1usize..4),
        seed in 0u64..1_000_000,
    ) {
        let (kh, kw) = (kh.min(h), kw.min(w));
        let pool = burn::nn::pool::MaxPool2dConfig::new([kh, kw]).with_strides([kh, kw]).init();
        let device = Device::flex().autodiff();
        let dims = [batch, channels, h, w];
        let [oh, ow] = kiln_kernels::pool::out_size([h, w], [kh, kw]);
        let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let x = Tensor::<4>::from_data(TensorData::new(filled(dims.iter().product(), seed), dims), &device)
                .require_grad();
            let y = f(x.clone());
            let dy = Tensor::<4>::from_data(
                TensorData::new(filled(batch * channels * oh * ow, seed + 1), [batch, channels, oh, ow]),
                &device,
            );
            let grads = (y.clone() * dy).sum().backward();
            (values(y), values(x.grad(&grads).expect("x gradient")))
        };
        let (kiln_y, kiln_dx) = run(&|x| kiln_kernels::max_pool2d(&pool, x));
        let (burn_y, burn_dx) = run(&|x| pool.forward(x));
        prop_assert_eq!(kiln_y, burn_y);
        prop_assert_eq!(kiln_dx, burn_dx);
    }
}

/// The MNIST CNN's two layers at batch 64: the shapes the benchmarks time.
#[test]
fn matches_burn_on_the_mnist_layers() {
    for (c_in, size, c_out, seed) in [(1, 28, 32, 1), (32, 26, 64, 2)] {
        let case = Case {
            shape: Conv2dShape {
                batch: 64,
                in_channels: c_in,
                in_size: [size, size],
                out_channels: c_out,
                kernel: [3, 3],
                stride: [1, 1],
                padding: [(0, 0), (0, 0)],
                dilation: [1, 1],
            },
            seed,
        };
        let kiln = case.run(kiln_kernels::conv2d);
        let burn = case.run(burn::tensor::module::conv2d);
        for (k, b) in kiln.iter().zip(&burn) {
            let err = relative_error(k, b);
            assert!(err < 1e-4, "relative error {err} for {case:?}");
        }
    }
}

/// Shapes the kernels do not cover (groups) and non-flex inputs go to burn's operation, with
/// burn's result.
#[test]
fn grouped_convolutions_fall_back_to_burn() {
    let device = Device::flex();
    let x = Tensor::<4>::from_data(
        TensorData::new(filled(2 * 4 * 6 * 6, 7), [2, 4, 6, 6]),
        &device,
    );
    let w = Tensor::<4>::from_data(
        TensorData::new(filled(4 * 2 * 3 * 3, 8), [4, 2, 3, 3]),
        &device,
    );
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 2);
    assert!(!kiln_kernels::takes_fast_path(&device, &options));
    let kiln = values(kiln_kernels::conv2d(
        x.clone(),
        w.clone(),
        None,
        options.clone(),
    ));
    let burn = values(burn::tensor::module::conv2d(x, w, None, options));
    assert_eq!(kiln, burn);
}

/// [`kiln_kernels::conv2d_layer`] reads a `Conv2d` module the way `Conv2d::forward` does, padding rules
/// included.
#[test]
fn forward_matches_the_module_for_every_padding_rule() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    let _rng = RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let device = Device::flex();
    device.seed(5);
    let x = Tensor::<4>::from_data(
        TensorData::new(filled(2 * 3 * 9 * 8, 9), [2, 3, 9, 8]),
        &device,
    );
    for padding in [
        PaddingConfig2d::Valid,
        PaddingConfig2d::Same,
        PaddingConfig2d::Explicit(1, 2, 0, 1),
    ] {
        for stride in [[1, 1], [2, 3]] {
            let conv = Conv2dConfig::new([3, 4], [3, 2])
                .with_stride(stride)
                .with_padding(padding.clone())
                .init(&device);
            let want = values(conv.forward(x.clone()));
            let got = values(kiln_kernels::conv2d_layer(&conv, x.clone()));
            let err = relative_error(&got, &want);
            assert!(
                err < 1e-5,
                "{padding:?} stride {stride:?}: relative error {err}"
            );
        }
    }
}

/// kiln's dropout: the same mask for the same device seed (so a run seeded per step resumes
/// exactly), a different one for another seed, the kept fraction near `1 - p`, kept values scaled
/// by `1 / (1 - p)`, and the gradient equal to the mask. Outside training it is the identity.
#[test]
fn dropout_is_seeded_scaled_and_differentiable() {
    use burn::nn::DropoutConfig;
    let _rng = RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let layer = DropoutConfig::new(0.25).init();
    let device = Device::flex().autodiff();
    let n = 64.0 * 9216.0;
    let run = |seed: u64| {
        device.seed(seed);
        let x = Tensor::<2>::ones([64, 9216], &device).require_grad();
        let y = kiln_kernels::dropout(&layer, x.clone());
        let grads = y.clone().sum().backward();
        (values(y), values(x.grad(&grads).expect("x gradient")))
    };
    let (y, dx) = run(9);
    assert_eq!(run(9).0, y, "same seed, same mask");
    assert_ne!(run(10).0, y, "another seed, another mask");
    assert_eq!(dx, y, "d(x * mask)/dx = mask, and x = 1");
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n;
    assert!((kept - 0.75).abs() < 0.003, "kept {kept}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));

    let plain = Device::flex();
    let x = Tensor::<2>::from_data(TensorData::new(filled(100, 1), [10, 10]), &plain);
    assert_eq!(values(kiln_kernels::dropout(&layer, x.clone())), values(x));
}
