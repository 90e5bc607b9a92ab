//! The one preprocessing step shared by training and serving: `u8` pixels to normalised `f32`.

use serde::{Deserialize, Serialize};

/// Per-channel normalisation applied after scaling pixels to `[0, 1]`:
/// `x = (pixel / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Mean subtracted from the `[0, 1]` pixel value.
    pub mean: f32,
    /// Standard deviation the centred value is divided by.
    pub std: f32,
}

impl Normalization {
    /// Maps `[0, 1]` to `[-1, 1]` (mean 0.5, std 0.5).
    pub const SYMMETRIC: Self = Self {
        mean: 0.5,
        std: 0.5,
    };

    /// The mean and standard deviation of `pixels` scaled to `[0, 1]`.
    #[must_use]
    pub fn from_pixels(pixels: &[u8]) -> Self {
        let mut histogram = [0u64; 256];
        for &p in pixels {
            histogram[usize::from(p)] += 1;
        }
        let n = pixels.len().max(1) as f64;
        let mean = histogram
            .iter()
            .enumerate()
            .map(|(v, &c)| v as f64 / 255.0 * c as f64)
            .sum::<f64>()
            / n;
        let var = histogram
            .iter()
            .enumerate()
            .map(|(v, &c)| (v as f64 / 255.0 - mean).powi(2) * c as f64)
            .sum::<f64>()
            / n;
        Self {
            mean: mean as f32,
            std: var.sqrt().max(1e-6) as f32,
        }
    }

    /// The normalised value of every possible pixel, so preprocessing is one table lookup.
    #[must_use]
    pub fn table(&self) -> PixelTable {
        PixelTable(std::array::from_fn(|p| {
            (p as f32 / 255.0 - self.mean) / self.std
        }))
    }

    /// Whether both values are finite and the deviation positive.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.mean.is_finite() && self.std.is_finite() && self.std > 0.0
    }
}

/// A lookup table from pixel value to normalised value (see [`Normalization::table`]).
#[derive(Debug, Clone)]
pub struct PixelTable([f32; 256]);

impl PixelTable {
    /// Normalised value of one `u8` pixel.
    #[must_use]
    pub fn get(&self, pixel: u8) -> f32 {
        self.0[usize::from(pixel)]
    }
}

/// Appends the normalised values of `pixels` to `out`. Training and serving both call this, so
/// a served model sees exactly the inputs it was trained on.
pub fn preprocess(pixels: &[u8], table: &PixelTable, out: &mut Vec<f32>) {
    out.extend(pixels.iter().map(|&p| table.get(p)));
}

/// Normalises `[0, 1]` floating-point pixels (as some clients send) the same way; values are
/// first quantised to the nearest `u8` level so they match the integer path exactly.
pub fn preprocess_unit_floats(pixels: &[f32], table: &PixelTable, out: &mut Vec<f32>) {
    out.extend(pixels.iter().map(|&v| table.get(unit_to_u8(v))));
}

/// The `u8` level nearest to a `[0, 1]` value (clamped).
#[must_use]
pub fn unit_to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_maps_extremes_to_plus_minus_one() {
        let t = Normalization::SYMMETRIC.table();
        assert_eq!(t.get(0), -1.0);
        assert_eq!(t.get(255), 1.0);
    }

    #[test]
    fn stats_of_a_two_level_image() {
        let n = Normalization::from_pixels(&[0, 255, 0, 255]);
        assert!(
            (n.mean - 0.5).abs() < 1e-6 && (n.std - 0.5).abs() < 1e-6,
            "{n:?}"
        );
    }

    #[test]
    fn float_and_integer_paths_agree() {
        let t = Normalization {
            mean: 0.1307,
            std: 0.3081,
        }
        .table();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let ints: Vec<u8> = (0..=255).collect();
        let floats: Vec<f32> = ints.iter().map(|&p| f32::from(p) / 255.0).collect();
        preprocess(&ints, &t, &mut a);
        preprocess_unit_floats(&floats, &t, &mut b);
        assert_eq!(a, b);
    }
}
