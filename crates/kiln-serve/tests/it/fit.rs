//! The fit rule on photo-like pages: grey, uneven, noisy, blurred, JPEG-compressed paper gives
//! the digit a clean page gives, with a background of 0.

use image::{GrayImage, Luma};
use kiln_serve::fit::{Invert, fit_digit};

use crate::*;

/// A page `w` x `h` with `digit` (28x28, MNIST levels) drawn `scale` times larger at
/// `(left, top)`, dark on light: `paper(x, y)` is the paper's level, ink darkens it by
/// `contrast` of the way to black at full MNIST level.
fn page(
    digit: &[u8],
    (w, h): (u32, u32),
    (left, top, scale): (u32, u32, u32),
    paper: impl Fn(u32, u32) -> f64,
    contrast: f64,
) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x.wrapping_sub(left) / scale, y.wrapping_sub(top) / scale);
        let ink = if dx < 28 && dy < 28 {
            f64::from(digit[(dy * 28 + dx) as usize]) / 255.0
        } else {
            0.0
        };
        let level = paper(x, y) * (1.0 - contrast * ink);
        Luma([level.round().clamp(0.0, 255.0) as u8])
    })
}

/// Gaussian noise of `sigma` levels (a fixed xorshift generator, Box-Muller).
fn add_noise(image: &mut GrayImage, sigma: f64, mut seed: u64) {
    let mut uniform = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    for p in image.pixels_mut() {
        let (u, v) = (uniform(), uniform());
        let n = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * sigma;
        p.0[0] = (f64::from(p.0[0]) + n).round().clamp(0.0, 255.0) as u8;
    }
}

/// Through a JPEG encoder and decoder (the `image` crate's default quality, 75).
fn through_jpeg(image: &GrayImage) -> GrayImage {
    let bytes = jpeg(image.width(), image.height(), image.as_raw());
    image::load_from_memory(&bytes).unwrap().to_luma8()
}

/// Inclusive box `(x0, y0, x1, y1)` of the non-zero pixels of a 28x28 field.
fn ink_box(field: &[u8]) -> (usize, usize, usize, usize) {
    let ink = || field.iter().enumerate().filter(|(_, v)| **v > 0);
    let xs = || ink().map(|(i, _)| i % 28);
    let ys = || ink().map(|(i, _)| i / 28);
    (
        xs().min().unwrap(),
        ys().min().unwrap(),
        xs().max().unwrap(),
        ys().max().unwrap(),
    )
}

#[test]
fn a_digit_on_grey_noisy_paper_fits_like_the_clean_one() {
    let digits = mnist_digits(6);
    for (k, (digit, label)) in digits.iter().enumerate() {
        let k = k as u32;
        let (size, at) = (
            (360 + 40 * k, 300 + 20 * k),
            (30 + 17 * k, 20 + 9 * k, 8 + k % 3),
        );
        let clean = fit_digit(&page(digit, size, at, |_, _| 255.0, 1.0), Invert::Auto);
        // Grey paper, lit from one side and darker in the corners; grey ink; noise, blur, JPEG.
        let (w, h) = (f64::from(size.0), f64::from(size.1));
        let paper = |x: u32, y: u32| {
            let (u, v) = (f64::from(x) / w - 0.5, f64::from(y) / h - 0.5);
            175.0 + 40.0 * u - 60.0 * (u * u + v * v)
        };
        let mut photo = page(digit, size, at, paper, 0.7);
        add_noise(&mut photo, 14.0, 0x9E37_79B9_7F4A_7C15 + u64::from(k));
        let photo = through_jpeg(&image::imageops::blur(&photo, 1.5));
        let fitted = fit_digit(&photo, Invert::Auto);

        let (a, b) = (ink_box(&clean), ink_box(&fitted));
        let near = |p: usize, q: usize| p.abs_diff(q) <= 2;
        assert!(
            near(a.0, b.0) && near(a.1, b.1) && near(a.2, b.2) && near(a.3, b.3),
            "digit {k} (a {label}): clean box {a:?}, photo box {b:?}"
        );
        // Background is 0: nothing lies more than a pixel outside the clean digit's box.
        let stray = fitted
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                let (x, y) = (i % 28, i / 28);
                **v > 0 && (x + 1 < a.0 || y + 1 < a.1 || x > a.2 + 1 || y > a.3 + 1)
            })
            .count();
        assert_eq!(stray, 0, "digit {k}: {stray} background pixels are not 0");
        // And the ink itself looks alike: a small mean difference over the field.
        let diff = clean
            .iter()
            .zip(&fitted)
            .map(|(p, q)| f64::from(p.abs_diff(*q)))
            .sum::<f64>()
            / 784.0;
        assert!(diff < 24.0, "digit {k}: mean difference {diff:.1} levels");
    }
}

#[test]
fn dark_grey_paper_under_dim_light_is_still_inverted() {
    let (digit, _) = &mnist_digits(1)[0];
    // Paper at 105, ink at 30: the border is below 127, yet it is the light part.
    let photo = page(digit, (200, 180), (40, 30, 4), |_, _| 105.0, 0.7);
    let white = page(digit, (200, 180), (40, 30, 4), |_, _| 255.0, 1.0);
    let fitted = fit_digit(&photo, Invert::Auto);
    assert_eq!(ink_box(&fit_digit(&white, Invert::Yes)), ink_box(&fitted));
    assert_eq!(fitted, fit_digit(&photo, Invert::Yes));
}

#[test]
fn a_speck_of_dirt_does_not_move_the_ink_box() {
    let (digit, _) = &mnist_digits(1)[0];
    let clean = page(digit, (300, 300), (60, 50, 6), |_, _| 200.0, 0.8);
    let mut dirty = clean.clone();
    for y in 280..284 {
        for x in 10..14 {
            dirty.put_pixel(x, y, Luma([40]));
        }
    }
    assert_eq!(
        ink_box(&fit_digit(&clean, Invert::Auto)),
        ink_box(&fit_digit(&dirty, Invert::Auto))
    );
}

#[test]
fn a_vignette_that_darkens_the_border_does_not_flip_the_ink() {
    let (digit, _) = &mnist_digits(2)[1];
    let (w, h) = (500.0, 420.0);
    // Paper 200 in the middle, 110 in the corners: the border is darker than most of the page.
    let paper = |x: u32, y: u32| {
        let (u, v) = (f64::from(x) / w - 0.5, f64::from(y) / h - 0.5);
        200.0 - 180.0 * (u * u + v * v)
    };
    let mut photo = page(digit, (500, 420), (150, 100, 8), paper, 0.75);
    add_noise(&mut photo, 8.0, 7);
    let clean = page(digit, (500, 420), (150, 100, 8), |_, _| 255.0, 1.0);
    let (a, b) = (
        ink_box(&fit_digit(&clean, Invert::Auto)),
        ink_box(&fit_digit(&photo, Invert::Auto)),
    );
    let near = |p: usize, q: usize| p.abs_diff(q) <= 2;
    assert!(
        near(a.0, b.0) && near(a.1, b.1) && near(a.2, b.2) && near(a.3, b.3),
        "clean box {a:?}, photo box {b:?}"
    );
}
