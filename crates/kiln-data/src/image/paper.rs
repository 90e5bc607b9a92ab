//! Separating ink from paper: the background of a photo (grey, uneven, noisy) becomes 0 and
//! the ink is stretched to the full range, as MNIST's digits are.
//!
//! Input: ink brighter than paper (after any inversion). Steps:
//! 1. Very large images are box-averaged down to [`WORK_SIDE`] (a digit still keeps far more
//!    than the 20 pixels it ends at), then smoothed with a small box blur so that noise cannot
//!    reach the ink threshold.
//! 2. The paper's level is estimated tile by tile and interpolated between tiles, so a gradient
//!    or vignette is removed with it: first from a low percentile of each tile (the median over
//!    neighbouring tiles, so a tile inside a thick stroke borrows its neighbours' paper), then,
//!    once Otsu's threshold has marked the ink, from the median of each tile's paper alone.
//! 3. Otsu's threshold on the flattened image gives the ink mask; connected specks much smaller
//!    than the largest stroke are dropped.
//! 4. Levels: the paper's noise ceiling becomes 0 and the ink's typical level 255; everything
//!    beyond a few pixels of the kept ink is 0.

use ::image::imageops;
use ::image::{GrayImage, Luma};

/// Longest side the cleaning works at; larger images are box-averaged down to it first.
const WORK_SIDE: u32 = 1024;
/// Tiles per side for the paper estimate.
const TILES: usize = 8;
/// Smallest tile side, in pixels.
const MIN_TILE: usize = 8;
/// Percentile of a tile taken as its paper in the first estimate (ink is the brighter part).
const PAPER_PERCENTILE: f64 = 0.2;
/// A tile with less paper than this share (after the first ink mask) borrows its neighbours'.
const MIN_PAPER_SHARE: f64 = 0.1;
/// Ink and paper must differ by at least this many levels, or the image is blank.
const MIN_CONTRAST: f64 = 16.0;
/// A connected piece of ink smaller than the largest one divided by this is a speck.
const SPECK_RATIO: usize = 20;

/// `image` with its paper at 0 and its ink stretched to 255 (ink brighter than paper). The
/// result may be smaller than `image` (see [`WORK_SIDE`]); it is all 0 when nothing stands out.
pub(super) fn ink_only(image: &GrayImage) -> GrayImage {
    let image = work_size(image);
    let (w, h) = (image.width() as usize, image.height() as usize);
    let radius = 1 + w.max(h) / 512;
    let smooth = box_blur(image.as_raw(), w, h, radius);

    let grid = Grid::new(w, h);
    let first = grid.interpolate(&grid.neighbourhood_median(&grid.tile_levels(&smooth, None)));
    let flat = subtract(&smooth, &first);
    let Some(threshold) = otsu(&histogram(flat.iter().copied())) else {
        return blank(w, h);
    };
    let ink = flat
        .iter()
        .map(|&v| u8::from(v > threshold))
        .collect::<Vec<_>>();
    let near_ink = dilate(&ink, w, h, radius + 2);
    let second = grid.interpolate(&grid.filled(&grid.tile_levels(&smooth, Some(&near_ink))));
    let flat = subtract(&smooth, &second);

    let hist = histogram(flat.iter().copied());
    let Some(threshold) = otsu(&hist) else {
        return blank(w, h);
    };
    if class_means_gap(&hist, threshold) < MIN_CONTRAST {
        return blank(w, h);
    }
    let mask = without_specks(
        &flat
            .iter()
            .map(|&v| u8::from(v > threshold))
            .collect::<Vec<_>>(),
        w,
        h,
    );
    let region = dilate(&mask, w, h, radius + 2);
    let paper = histogram(
        flat.iter()
            .zip(&region)
            .filter(|(_, r)| **r == 0)
            .map(|(v, _)| *v),
    );
    let ink = histogram(
        flat.iter()
            .zip(&mask)
            .filter(|(_, m)| **m != 0)
            .map(|(v, _)| *v),
    );
    let low = f64::from(percentile(&paper, 0.99).unwrap_or(0));
    let high = f64::from(percentile(&ink, 0.9).unwrap_or(255));
    if high - low < MIN_CONTRAST {
        return blank(w, h);
    }
    let pixels = flat
        .iter()
        .zip(&region)
        .map(|(&v, &r)| {
            if r == 0 {
                0
            } else {
                ((f64::from(v) - low) / (high - low) * 255.0)
                    .round()
                    .clamp(0.0, 255.0) as u8
            }
        })
        .collect();
    GrayImage::from_raw(w as u32, h as u32, pixels).unwrap_or_else(|| blank(w, h))
}

fn blank(w: usize, h: usize) -> GrayImage {
    GrayImage::from_pixel(w as u32, h as u32, Luma([0]))
}

/// `image`, box-averaged so its longer side is at most [`WORK_SIDE`].
fn work_size(image: &GrayImage) -> GrayImage {
    let (w, h) = image.dimensions();
    let factor = w.max(h).div_ceil(WORK_SIDE);
    if factor <= 1 {
        return image.clone();
    }
    imageops::thumbnail(image, (w / factor).max(1), (h / factor).max(1))
}

/// Counts of each level.
pub(super) fn histogram(values: impl Iterator<Item = u8>) -> [u64; 256] {
    let mut hist = [0u64; 256];
    for v in values {
        hist[usize::from(v)] += 1;
    }
    hist
}

/// Otsu's threshold: the level `t` that best separates `<= t` from `> t` (largest
/// between-class variance). `None` when all values are one level.
fn otsu(hist: &[u64; 256]) -> Option<u8> {
    let total: u64 = hist.iter().sum();
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &n)| i as f64 * n as f64)
        .sum();
    let (mut weight, mut mass) = (0u64, 0.0);
    let mut best: Option<(f64, u8)> = None;
    for (t, &n) in hist.iter().enumerate().take(255) {
        weight += n;
        mass += t as f64 * n as f64;
        if weight == 0 || weight == total {
            continue;
        }
        let (w0, w1) = (weight as f64, (total - weight) as f64);
        let (m0, m1) = (mass / w0, (sum - mass) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if best.is_none_or(|(b, _)| between > b) {
            best = Some((between, t as u8));
        }
    }
    best.map(|(_, t)| t)
}

/// Mean of the levels above `threshold` minus the mean of those at or below it.
fn class_means_gap(hist: &[u64; 256], threshold: u8) -> f64 {
    let mean = |range: std::ops::RangeInclusive<usize>| {
        let (mut n, mut s) = (0u64, 0.0);
        for i in range {
            n += hist[i];
            s += i as f64 * hist[i] as f64;
        }
        if n == 0 { 0.0 } else { s / n as f64 }
    };
    let t = usize::from(threshold);
    mean(t + 1..=255) - mean(0..=t)
}

/// The level below which a share `q` of the values lie; `None` for an empty histogram.
pub(super) fn percentile(hist: &[u64; 256], q: f64) -> Option<u8> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64 - 1.0) * q).round() as u64;
    let mut seen = 0;
    for (level, &n) in hist.iter().enumerate() {
        seen += n;
        if seen > rank {
            return Some(level as u8);
        }
    }
    Some(255)
}

/// `a - b`, pixel by pixel, at least 0.
fn subtract(a: &[u8], b: &[f32]) -> Vec<u8> {
    a.iter()
        .zip(b)
        .map(|(&v, &p)| (f32::from(v) - p).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// The tiles the paper is estimated on (as equal as whole pixels allow), and interpolation
/// between their centres.
struct Grid {
    w: usize,
    h: usize,
    nx: usize,
    ny: usize,
}

impl Grid {
    fn new(w: usize, h: usize) -> Self {
        let side = (w.max(h) / TILES).max(MIN_TILE);
        Self {
            w,
            h,
            nx: w.div_ceil(side),
            ny: h.div_ceil(side),
        }
    }

    /// Pixels `[start, end)` of tile `i` of `n` along a side of `len`.
    fn span(i: usize, n: usize, len: usize) -> std::ops::Range<usize> {
        i * len / n..(i + 1) * len / n
    }

    /// Per tile, the paper's level: [`PAPER_PERCENTILE`] of all its pixels, or (given an ink
    /// mask) the median of the pixels off the ink, `None` where too few are.
    fn tile_levels(&self, pixels: &[u8], ink: Option<&[u8]>) -> Vec<Option<f32>> {
        let mut tiles = Vec::with_capacity(self.nx * self.ny);
        for ty in 0..self.ny {
            for tx in 0..self.nx {
                let mut hist = [0u64; 256];
                let mut area = 0u64;
                for y in Self::span(ty, self.ny, self.h) {
                    for x in Self::span(tx, self.nx, self.w) {
                        let i = y * self.w + x;
                        area += 1;
                        if ink.is_none_or(|m| m[i] == 0) {
                            hist[usize::from(pixels[i])] += 1;
                        }
                    }
                }
                let paper: u64 = hist.iter().sum();
                let level = match ink {
                    None => percentile(&hist, PAPER_PERCENTILE),
                    Some(_) if (paper as f64) < MIN_PAPER_SHARE * area as f64 => None,
                    Some(_) => percentile(&hist, 0.5),
                };
                tiles.push(level.map(f32::from));
            }
        }
        tiles
    }

    /// Each tile's median over itself and its (up to eight) neighbours: a tile inside a thick
    /// stroke takes its neighbours' paper, while a gradient passes unchanged.
    fn neighbourhood_median(&self, tiles: &[Option<f32>]) -> Vec<f32> {
        let mut out = Vec::with_capacity(tiles.len());
        let mut around = Vec::with_capacity(9);
        for ty in 0..self.ny {
            for tx in 0..self.nx {
                around.clear();
                for y in ty.saturating_sub(1)..(ty + 2).min(self.ny) {
                    for x in tx.saturating_sub(1)..(tx + 2).min(self.nx) {
                        around.extend(tiles[y * self.nx + x]);
                    }
                }
                around.sort_by(f32::total_cmp);
                out.push(match around.len() {
                    0 => 0.0,
                    n if n % 2 == 1 => around[n / 2],
                    n => f32::midpoint(around[n / 2 - 1], around[n / 2]),
                });
            }
        }
        out
    }

    /// Tiles without an estimate take the mean of their estimated neighbours, ring by ring;
    /// 0 if no tile has one.
    fn filled(&self, tiles: &[Option<f32>]) -> Vec<f32> {
        let mut tiles = tiles.to_vec();
        while tiles.iter().any(Option::is_none) {
            if tiles.iter().all(Option::is_none) {
                return vec![0.0; tiles.len()];
            }
            let before = tiles.clone();
            for ty in 0..self.ny {
                for tx in 0..self.nx {
                    if before[ty * self.nx + tx].is_some() {
                        continue;
                    }
                    let (mut sum, mut n) = (0.0, 0.0);
                    for y in ty.saturating_sub(1)..(ty + 2).min(self.ny) {
                        for x in tx.saturating_sub(1)..(tx + 2).min(self.nx) {
                            if let Some(v) = before[y * self.nx + x] {
                                sum += v;
                                n += 1.0;
                            }
                        }
                    }
                    if n > 0.0 {
                        tiles[ty * self.nx + tx] = Some(sum / n);
                    }
                }
            }
        }
        tiles.into_iter().map(|v| v.unwrap_or(0.0)).collect()
    }

    /// A level per pixel, bilinear between tile centres and extrapolated linearly beyond the
    /// outer ones (so a vignette keeps deepening into the corners).
    fn interpolate(&self, tiles: &[f32]) -> Vec<f32> {
        // A pixel centre in tile-centre units: the pair of tiles to mix, and the weight of the
        // second (below 0 or above 1 beyond the outer centres).
        let axis = |p: usize, n: usize, len: usize| -> (usize, usize, f32) {
            if n == 1 {
                return (0, 0, 0.0);
            }
            let t = (p as f32 + 0.5) * n as f32 / len as f32 - 0.5;
            let i = (t.floor().max(0.0) as usize).min(n - 2);
            (i, i + 1, t - i as f32)
        };
        let xs: Vec<_> = (0..self.w).map(|x| axis(x, self.nx, self.w)).collect();
        let mut out = Vec::with_capacity(self.w * self.h);
        for y in 0..self.h {
            let (y0, y1, fy) = axis(y, self.ny, self.h);
            let (top, bottom) = (&tiles[y0 * self.nx..], &tiles[y1 * self.nx..]);
            for &(x0, x1, fx) in &xs {
                let upper = top[x0] + (top[x1] - top[x0]) * fx;
                let lower = bottom[x0] + (bottom[x1] - bottom[x0]) * fx;
                out.push(upper + (lower - upper) * fy);
            }
        }
        out
    }
}

/// Sums over a `(2r + 1)`-square window around each pixel, cut off at the edges: a running
/// sum along each row, then one down the columns a whole row at a time (memory in order).
fn window_sums(src: &[u32], w: usize, h: usize, r: usize) -> Vec<u32> {
    let mut across = vec![0u32; src.len()];
    for (row, out) in src.chunks_exact(w).zip(across.chunks_exact_mut(w)) {
        let mut sum: u32 = row[..=r.min(w - 1)].iter().sum();
        for (x, slot) in out.iter_mut().enumerate() {
            *slot = sum;
            if x + r + 1 < w {
                sum += row[x + r + 1];
            }
            if x >= r {
                sum -= row[x - r];
            }
        }
    }
    let mut out = vec![0u32; src.len()];
    let mut sum = vec![0u32; w];
    for row in across.chunks_exact(w).take(r + 1) {
        sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    for y in 0..h {
        out[y * w..(y + 1) * w].copy_from_slice(&sum);
        if y + r + 1 < h {
            let row = &across[(y + r + 1) * w..(y + r + 2) * w];
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        if y >= r {
            let row = &across[(y - r) * w..(y - r + 1) * w];
            sum.iter_mut().zip(row).for_each(|(s, v)| *s -= v);
        }
    }
    out
}

/// The mean over a `(2r + 1)`-square window (cut off at the edges).
fn box_blur(pixels: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let wide = pixels.iter().map(|&v| u32::from(v)).collect::<Vec<_>>();
    let sums = window_sums(&wide, w, h, r);
    let spans = |len: usize| -> Vec<u32> {
        (0..len)
            .map(|p| ((p + r).min(len - 1) + 1 - p.saturating_sub(r)) as u32)
            .collect()
    };
    let (across, down) = (spans(w), spans(h));
    let mut out = Vec::with_capacity(pixels.len());
    for (row, &dy) in sums.chunks_exact(w).zip(&down) {
        out.extend(row.iter().zip(&across).map(|(&sum, &dx)| {
            let count = dx * dy;
            ((sum + count / 2) / count) as u8
        }));
    }
    out
}

/// 1 within `r` pixels (a square) of a non-zero pixel of `mask`.
fn dilate(mask: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let wide = mask.iter().map(|&v| u32::from(v != 0)).collect::<Vec<_>>();
    let sums = window_sums(&wide, w, h, r);
    sums.iter().map(|&s| u8::from(s > 0)).collect()
}

/// `mask` without its connected pieces (8-connected) smaller than the largest over
/// [`SPECK_RATIO`].
fn without_specks(mask: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut label = vec![0u32; mask.len()];
    let mut areas = vec![0usize]; // label 0: no ink
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if mask[start] == 0 || label[start] != 0 {
            continue;
        }
        let id = areas.len() as u32;
        let mut area = 0;
        label[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            area += 1;
            let (x, y) = (i % w, i / w);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let j = ny * w + nx;
                    if mask[j] != 0 && label[j] == 0 {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        areas.push(area);
    }
    let largest = areas.iter().copied().max().unwrap_or(0);
    let keep: Vec<bool> = areas
        .iter()
        .enumerate()
        .map(|(id, &a)| id != 0 && a * SPECK_RATIO >= largest)
        .collect();
    label.iter().map(|&l| u8::from(keep[l as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_levels() {
        let hist = histogram([20u8, 20, 22, 200, 201, 199].into_iter());
        let t = otsu(&hist).unwrap();
        assert!((22..199).contains(&t), "{t}");
        assert_eq!(otsu(&histogram([7u8; 9].into_iter())), None);
    }

    #[test]
    fn a_speck_is_dropped_and_a_stroke_kept() {
        let (w, h) = (40, 20);
        let mut mask = vec![0u8; w * h];
        for y in 2..18 {
            for x in 5..9 {
                mask[y * w + x] = 1; // a 64-pixel stroke
            }
        }
        mask[10 * w + 30] = 1; // a 1-pixel speck
        let kept = without_specks(&mask, w, h);
        assert_eq!(kept.iter().filter(|&&v| v != 0).count(), 64);
        assert_eq!(kept[10 * w + 30], 0);
    }

    #[test]
    fn a_gradient_with_no_ink_is_blank() {
        let page = GrayImage::from_fn(120, 90, |x, _| Luma([(30 + x / 4) as u8]));
        assert!(ink_only(&page).pixels().all(|p| p.0[0] == 0));
    }

    #[test]
    fn box_blur_keeps_a_flat_image_and_its_mean() {
        let flat = vec![90u8; 12 * 7];
        assert_eq!(box_blur(&flat, 12, 7, 2), flat);
        let mut spot = vec![0u8; 9 * 9];
        spot[4 * 9 + 4] = 225;
        assert_eq!(box_blur(&spot, 9, 9, 1)[4 * 9 + 4], 25);
    }
}
