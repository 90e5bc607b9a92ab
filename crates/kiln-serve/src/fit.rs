//! Fitting an arbitrary grey image into a 28x28 MNIST-style digit.
//!
//! The rule, after NIST's own preprocessing of MNIST:
//! 1. Ink must be light on a dark background. With [`Invert::Auto`] an image whose darkest
//!    pixels stand further from its median level than its brightest (a dark digit on paper,
//!    however grey or unevenly lit the paper) is inverted; `Invert::Yes`/`No` force it.
//! 2. An image that is already 28x28 is used as it is (after step 1), so a digit taken from
//!    MNIST and sent as a PNG gives exactly the answer its raw pixels give.
//! 3. Otherwise the paper is taken out (see [`paper`]): its level, estimated locally so that
//!    gradients go too, becomes 0 as MNIST's background is, the ink is stretched to the full
//!    range, and specks of noise are dropped; the ink is found on a smoothed, thresholded
//!    image, so noise and blur do not move it.
//! 4. The digit is cropped to the bounding box of its ink (pixels above a quarter of the
//!    brightest), scaled with anti-aliasing so its longer side is 20 pixels (aspect kept), and
//!    placed in a 28x28 field so that its centre of mass is at the centre.

mod paper;

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma};
use serde::Deserialize;

/// Whether to invert an image before fitting it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Invert {
    /// Invert when the border is mostly light.
    #[default]
    Auto,
    /// Always invert (dark ink on light paper).
    Yes,
    /// Never invert (light ink on dark, as MNIST).
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

/// Side of the square the model takes.
const SIDE: u32 = 28;
/// Share of the pixels at each end taken as the image's extremes when deciding to invert (ink
/// can be a small part of a photo).
const EXTREME: f64 = 0.001;
/// Side of the box the digit is scaled into.
const DIGIT_BOX: u32 = 20;

/// The 28x28 pixels (row-major) for `image`, by the rule in the module docs.
#[must_use]
pub fn fit_digit(image: &GrayImage, invert: Invert) -> Vec<u8> {
    let mut image = image.clone();
    let invert = match invert {
        Invert::Auto => dark_on_light(&image),
        Invert::Yes => true,
        Invert::No => false,
    };
    if invert {
        imageops::invert(&mut image);
    }
    if image.dimensions() == (SIDE, SIDE) {
        return image.into_raw();
    }
    let image = paper::ink_only(&image);
    let mut field = vec![0u8; (SIDE * SIDE) as usize];
    let max = image.pixels().map(|p| p.0[0]).max().unwrap_or(0);
    if max == 0 {
        return field;
    }
    let Some((x0, y0, x1, y1)) = ink_box(&image, max / 4) else {
        return field;
    };
    let crop = imageops::crop_imm(&image, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let (w, h) = crop.dimensions();
    let scale = f64::from(DIGIT_BOX) / f64::from(w.max(h));
    let (nw, nh) = (
        ((f64::from(w) * scale).round() as u32).clamp(1, DIGIT_BOX),
        ((f64::from(h) * scale).round() as u32).clamp(1, DIGIT_BOX),
    );
    let digit = imageops::resize(&crop, nw, nh, FilterType::Triangle);
    let (cx, cy) = centre_of_mass(&digit);
    let offset = |centre: f64, size: u32| -> i64 {
        ((f64::from(SIDE) / 2.0 - centre).round() as i64).clamp(0, i64::from(SIDE - size))
    };
    let (ox, oy) = (offset(cx, nw), offset(cy, nh));
    for (x, y, Luma([v])) in digit.enumerate_pixels() {
        let (fx, fy) = (i64::from(x) + ox, i64::from(y) + oy);
        field[(fy * i64::from(SIDE) + fx) as usize] = *v;
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
    fn a_28x28_image_passes_through() {
        let img = GrayImage::from_fn(28, 28, |x, y| Luma([((x * 9 + y) % 200) as u8]));
        assert_eq!(fit_digit(&img, Invert::No), img.clone().into_raw());
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
    fn blank_image_gives_blank_field() {
        let img = GrayImage::from_pixel(50, 50, Luma([0]));
        assert!(fit_digit(&img, Invert::No).iter().all(|&v| v == 0));
    }
}
