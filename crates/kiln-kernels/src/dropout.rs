//! Dropout masks from a counter-based generator: element `i` of a mask depends only on the seed
//! and `i`, so the mask is the same however the work is split over threads, and generating it
//! costs a few integer operations per element (burn's `Bernoulli` draws each element from a
//! `ChaCha` stream through a generic sampler, ~6 % of a CNN training step).

use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// A dropout mask of `len` elements: `1 / keep` with probability `keep`, else 0.
///
/// # Panics
/// When `keep` is not in `(0, 1]`.
#[must_use]
pub fn mask(len: usize, keep: f32, seed: u64) -> Vec<f32> {
    assert!(
        keep > 0.0 && keep <= 1.0,
        "keep probability {keep} not in (0, 1]"
    );
    // Compare 24 random bits against keep * 2^24: exact for every f32 keep in (0, 1].
    let threshold = (f64::from(keep) * f64::from(1u32 << 24)) as u64;
    let scale = 1.0 / keep;
    let mut out = vec![0.0; len];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, out)| {
            let first = (chunk * CHUNK) as u64;
            for (i, o) in out.iter_mut().enumerate() {
                let bits = splitmix64(seed ^ (first + i as u64).wrapping_mul(GOLDEN)) >> 40;
                *o = if bits < threshold { scale } else { 0.0 };
            }
        });
    out
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// `SplitMix64`'s output function: a bijective 64-bit mix with full avalanche.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_requested_fraction_scaled() {
        for keep in [0.5f32, 0.75, 0.9] {
            let m = mask(200_000, keep, 7);
            let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
            // Binomial standard deviation at n = 200,000 is at most 0.0011: 5 sigma.
            assert!(
                (kept - f64::from(keep)).abs() < 0.0056,
                "keep {keep}: kept {kept}"
            );
            assert!(m.iter().all(|&v| v == 0.0 || v == 1.0 / keep));
        }
    }

    #[test]
    fn depends_on_the_seed_only() {
        assert_eq!(mask(50_000, 0.5, 3), mask(50_000, 0.5, 3));
        assert_ne!(mask(50_000, 0.5, 3), mask(50_000, 0.5, 4));
        // A longer mask starts with the shorter one: no dependence on the split into tasks.
        assert_eq!(mask(70_000, 0.5, 3)[..50_000], mask(50_000, 0.5, 3)[..]);
    }

    #[test]
    fn neighbouring_elements_are_uncorrelated() {
        let m = mask(100_000, 0.5, 11);
        let both = m.windows(2).filter(|w| w[0] != 0.0 && w[1] != 0.0).count() as f64;
        let pairs = (m.len() - 1) as f64;
        assert!(
            (both / pairs - 0.25).abs() < 0.01,
            "P(both kept) = {}",
            both / pairs
        );
    }
}
