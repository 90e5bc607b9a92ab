//! The one image-to-pixels pipeline, shared by the folder dataset in training and by serving:
//! decode, make grayscale, then fit to the model's `height x width` by a [`Fit`] rule. The
//! result is `u8` levels, which [`crate::preprocess`] then normalises.
//!
//! Two rules, recorded in the model artifact so serving uses the one training used:
//! - [`Fit::Resize`]: a plain resize to `height x width` (triangle filter), what the folder
//!   dataset does; an image already that size is used as it is.
//! - [`Fit::MnistFit`]: after NIST's own preprocessing of MNIST, for photos and scans of digits:
//!   1. Ink must be light on a dark background. With [`Invert::Auto`] an image whose darkest
//!      pixels stand further from its median level than its brightest (a dark digit on paper,
//!      however grey or unevenly lit the paper) is inverted; `Invert::Yes`/`No` force it.
//!   2. An image that is already `height x width` is used as it is (after step 1), so a digit
//!      taken from MNIST and sent as a PNG gives exactly the answer its raw pixels give.
//!   3. Otherwise the paper is taken out (see [`paper`]): its level, estimated locally so that
//!      gradients go too, becomes 0 as MNIST's background is, the ink is stretched to the full
//!      range, and specks of noise are dropped.
//!   4. The digit is cropped to the bounding box of its ink (pixels above a quarter of the
//!      brightest), scaled with anti-aliasing so it fills 20/28 of the field (aspect kept; 20
//!      pixels for MNIST's 28), and placed so that its centre of mass is at the centre.

mod paper;

use std::path::Path;

use ::image::imageops::{self, FilterType};
use ::image::{GrayImage, Luma};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// How an image of any size becomes the model's `height x width` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// A plain resize to `height x width`, as the folder dataset loads its images.
    Resize,
    /// Crop to the ink, scale it to 20/28 of the field, centre it by its centre of mass.
    MnistFit,
}

impl Fit {
    /// The rule of an artifact that records none (written before the rule was recorded):
    /// [`Fit::MnistFit`] for one 28x28 grey image (MNIST), [`Fit::Resize`] otherwise.
    #[must_use]
    pub fn default_for(input_shape: [usize; 3]) -> Self {
        if input_shape == [1, 28, 28] {
            Self::MnistFit
        } else {
            Self::Resize
        }
    }

    /// The rule's name as the manifest spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Resize => "resize",
            Self::MnistFit => "mnist_fit",
        }
    }
}

/// Whether to invert an image before fitting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Invert {
    /// For [`Fit::MnistFit`], invert dark ink on light paper (see the module docs); for
    /// [`Fit::Resize`], never (the image is taken as the training images were).
    #[default]
    Auto,
    /// Always invert.
    Yes,
    /// Never invert.
    No,
}

impl Invert {
    /// Parses `auto`, `true`/`yes` or `false`/`no`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "true" | "yes" | "1" => Some(Self::Yes),
            "false" | "no" | "0" => Some(Self::No),
            _ => None,
        }
    }
}

/// Share of the pixels at each end taken as the image's extremes when deciding to invert (ink
/// can be a small part of a photo).
const EXTREME: f64 = 0.001;
/// MNIST's digit box (20) over its field (28): the share of the field a fitted digit fills.
const DIGIT_SHARE: f64 = 20.0 / 28.0;

/// Decodes an encoded image (PNG, JPEG, ...) and fits it to `size` (`[height, width]`) grey
/// levels by `fit`, without inversion: what the folder dataset does to each file.
///
/// # Errors
/// [`DataError::BadImage`] naming `path` when the bytes cannot be decoded.
pub fn decode_to_shape(path: &Path, bytes: &[u8], size: [usize; 2], fit: Fit) -> Result<Vec<u8>> {
    let image = ::image::load_from_memory(bytes).map_err(|e| DataError::BadImage {
        path: path.to_path_buf(),
        message: format!("cannot decode image: {e}"),
    })?;
    Ok(fit_gray(&image.to_luma8(), size, fit, Invert::No))
}

/// The `height * width` grey levels (row-major) for `image`, by `fit`.
#[must_use]
pub fn fit_gray(image: &GrayImage, size: [usize; 2], fit: Fit, invert: Invert) -> Vec<u8> {
    let [height, width] = size.map(|s| u32::try_from(s).unwrap_or(u32::MAX));
    let invert = match (invert, fit) {
        (Invert::Yes, _) => true,
        (Invert::No, _) | (Invert::Auto, Fit::Resize) => false,
        (Invert::Auto, Fit::MnistFit) => dark_on_light(image),
    };
    let mut image = image.clone();
    if invert {
        imageops::invert(&mut image);
    }
    if image.dimensions() == (width, height) {
        return image.into_raw();
    }
    match fit {
        Fit::Resize => imageops::resize(&image, width, height, FilterType::Triangle).into_raw(),
        Fit::MnistFit => mnist_fit(&image, width, height),
    }
}

/// An MNIST-style digit (light on dark) as the 28x28 field MNIST models take.
#[must_use]
pub fn fit_digit(image: &GrayImage, invert: Invert) -> Vec<u8> {
    fit_gray(image, [28, 28], Fit::MnistFit, invert)
}

/// Steps 3 and 4 of [`Fit::MnistFit`] into a `width x height` field.
fn mnist_fit(image: &GrayImage, width: u32, height: u32) -> Vec<u8> {
    let image = paper::ink_only(image);
    let mut field = vec![0u8; width as usize * height as usize];
    let max = image.pixels().map(|p| p.0[0]).max().unwrap_or(0);
    if max == 0 {
        return field;
    }
    let Some((x0, y0, x1, y1)) = ink_box(&image, max / 4) else {
        return field;
    };
    let crop = imageops::crop_imm(&image, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let (w, h) = crop.dimensions();
    let box_w = ((f64::from(width) * DIGIT_SHARE).round() as u32).max(1);
    let box_h = ((f64::from(height) * DIGIT_SHARE).round() as u32).max(1);
    let scale = (f64::from(box_w) / f64::from(w)).min(f64::from(box_h) / f64::from(h));
    let (nw, nh) = (
        ((f64::from(w) * scale).round() as u32).clamp(1, box_w),
        ((f64::from(h) * scale).round() as u32).clamp(1, box_h),
    );
    let digit = imageops::resize(&crop, nw, nh, FilterType::Triangle);
    let (cx, cy) = centre_of_mass(&digit);
    let offset = |centre: f64, size: u32, side: u32| -> i64 {
        ((f64::from(side) / 2.0 - centre).round() as i64).clamp(0, i64::from(side - size))
    };
    let (ox, oy) = (offset(cx, nw, width), offset(cy, nh, height));
    for (x, y, Luma([v])) in digit.enumerate_pixels() {
        let (fx, fy) = (i64::from(x) + ox, i64::from(y) + oy);
        field[(fy * i64::from(width) + fx) as usize] = *v;
    }
    field
}

/// Whether the image is dark ink on light paper: its darkest pixels lie further below its
/// median (the paper, which most of a page is) than its brightest lie above it. Percentiles,
/// not the border, so a vignette that darkens the border does not fool it.
fn dark_on_light(image: &GrayImage) -> bool {
    let hist = paper::histogram(image.pixels().map(|p| p.0[0]));
    let level = |q| f64::from(paper::percentile(&hist, q).unwrap_or(0));
    let (dark, median, light) = (level(EXTREME), level(0.5), level(1.0 - EXTREME));
    if dark == light {
        return median > 127.0; // one level, no ink either way: a light page becomes dark
    }
    median - dark > light - median
}

/// Inclusive bounding box of pixels brighter than `threshold`.
fn ink_box(image: &GrayImage, threshold: u8) -> Option<(u32, u32, u32, u32)> {
    let mut bounds: Option<(u32, u32, u32, u32)> = None;
    for (x, y, Luma([v])) in image.enumerate_pixels() {
        if *v > threshold {
            bounds = Some(match bounds {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
    }
    bounds
}

/// Intensity-weighted centre, in pixel coordinates (a pixel's centre is at +0.5).
fn centre_of_mass(image: &GrayImage) -> (f64, f64) {
    let (mut sx, mut sy, mut total) = (0.0, 0.0, 0.0);
    for (x, y, Luma([v])) in image.enumerate_pixels() {
        let v = f64::from(*v);
        sx += (f64::from(x) + 0.5) * v;
        sy += (f64::from(y) + 0.5) * v;
        total += v;
    }
    if total == 0.0 {
        let (w, h) = image.dimensions();
        (f64::from(w) / 2.0, f64::from(h) / 2.0)
    } else {
        (sx / total, sy / total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_of_the_right_size_passes_through() {
        let img = GrayImage::from_fn(28, 28, |x, y| Luma([((x * 9 + y) % 200) as u8]));
        assert_eq!(fit_digit(&img, Invert::No), img.clone().into_raw());
        let img = GrayImage::from_fn(12, 16, |x, y| Luma([((x * 9 + y) % 200) as u8]));
        assert_eq!(
            fit_gray(&img, [16, 12], Fit::Resize, Invert::Auto),
            img.clone().into_raw()
        );
    }

    #[test]
    fn dark_on_light_is_inverted_and_centred() {
        // A 100x60 white page with a black bar off to one side.
        let img = GrayImage::from_fn(100, 60, |x, y| {
            Luma([if (10..20).contains(&x) && (5..45).contains(&y) {
                0
            } else {
                255
            }])
        });
        let out = fit_digit(&img, Invert::Auto);
        assert_eq!(out.len(), 784);
        // Corners are background (dark after inversion), the centre is ink.
        assert_eq!(out[0], 0);
        assert_eq!(out[783], 0);
        assert!(out[14 * 28 + 14] > 200, "centre {}", out[14 * 28 + 14]);
        // The bar is 40 tall: scaled to 20 rows.
        let rows = (0..28).filter(|r| out[r * 28 + 14] > 100).count();
        assert!((19..=21).contains(&rows), "rows {rows}");
    }

    #[test]
    fn mnist_fit_fills_a_non_square_field() {
        let img = GrayImage::from_fn(100, 60, |x, y| {
            Luma([if (10..20).contains(&x) && (5..45).contains(&y) {
                255
            } else {
                0
            }])
        });
        // 32 rows x 16 columns: the 40-tall bar fills round(32 * 20 / 28) = 23 rows.
        let out = fit_gray(&img, [32, 16], Fit::MnistFit, Invert::No);
        assert_eq!(out.len(), 32 * 16);
        let rows = (0..32).filter(|r| out[r * 16 + 8] > 100).count();
        assert!((22..=24).contains(&rows), "rows {rows}");
    }

    #[test]
    fn resize_scales_and_keeps_levels() {
        let img = GrayImage::from_pixel(40, 30, Luma([200]));
        let out = fit_gray(&img, [6, 8], Fit::Resize, Invert::Auto);
        assert_eq!(out, vec![200; 48]);
        let out = fit_gray(&img, [6, 8], Fit::Resize, Invert::Yes);
        assert_eq!(out, vec![55; 48]);
    }

    #[test]
    fn blank_image_gives_blank_field() {
        let img = GrayImage::from_pixel(50, 50, Luma([0]));
        assert!(fit_digit(&img, Invert::No).iter().all(|&v| v == 0));
    }

    #[test]
    fn old_artifacts_get_their_rule() {
        assert_eq!(Fit::default_for([1, 28, 28]), Fit::MnistFit);
        assert_eq!(Fit::default_for([1, 16, 12]), Fit::Resize);
        assert_eq!(Fit::MnistFit.name(), "mnist_fit");
    }
}
