//! The IDX format of MNIST-style datasets: a big-endian header (magic, then one `u32` per
//! dimension) followed by the raw `u8` payload, optionally gzip-compressed.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Magic number of an IDX file of `u8` images with three dimensions `[n, rows, cols]`.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of `u8` labels with one dimension `[n]`.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// A stack of same-sized grayscale `u8` images read from an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixels, image after image, row-major.
    pub pixels: Vec<u8>,
}

/// Reads a file, gunzipping it when it starts with the gzip magic bytes.
///
/// # Errors
/// [`DataError::Io`] when it cannot be read, [`DataError::Gzip`] when the gzip stream is corrupt
/// or truncated.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX image bytes (already decompressed). `path` only names the source in errors.
///
/// # Errors
/// [`DataError::BadMagic`] or [`DataError::SizeMismatch`] when the bytes are not a whole IDX
/// image file.
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<IdxImages> {
    let dims = parse_header(path, bytes, IMAGES_MAGIC, "images: u8, 3 dimensions")?;
    let [count, rows, cols] = [dims[0], dims[1], dims[2]];
    let payload = &bytes[16..];
    let declared = count
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| size_mismatch(path, usize::MAX, payload.len()))?;
    if payload.len() != declared {
        return Err(size_mismatch(path, declared, payload.len()));
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: payload.to_vec(),
    })
}

/// Parses IDX label bytes (already decompressed) and checks every label is below
/// `num_classes`. `path` only names the source in errors.
///
/// # Errors
/// [`DataError::BadMagic`], [`DataError::SizeMismatch`] or [`DataError::LabelOutOfRange`].
pub fn parse_labels(path: &Path, bytes: &[u8], num_classes: usize) -> Result<Vec<u8>> {
    let dims = parse_header(path, bytes, LABELS_MAGIC, "labels: u8, 1 dimension")?;
    let payload = &bytes[8..];
    if payload.len() != dims[0] {
        return Err(size_mismatch(path, dims[0], payload.len()));
    }
    if let Some((index, &label)) = payload
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= num_classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label,
            num_classes,
        });
    }
    Ok(payload.to_vec())
}

/// Reads and parses an IDX image file (gzip or raw).
///
/// # Errors
/// As [`read_maybe_gzip`] and [`parse_images`].
pub fn read_images(path: &Path) -> Result<IdxImages> {
    parse_images(path, &read_maybe_gzip(path)?)
}

/// Reads and parses an IDX label file (gzip or raw).
///
/// # Errors
/// As [`read_maybe_gzip`] and [`parse_labels`].
pub fn read_labels(path: &Path, num_classes: usize) -> Result<Vec<u8>> {
    parse_labels(path, &read_maybe_gzip(path)?, num_classes)
}

/// Encodes images as IDX bytes (uncompressed); the inverse of [`parse_images`].
#[must_use]
pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + images.pixels.len());
    for v in [
        IMAGES_MAGIC,
        dim(images.count),
        dim(images.rows),
        dim(images.cols),
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as IDX bytes (uncompressed); the inverse of [`parse_labels`].
#[must_use]
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&dim(labels.len()).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

fn dim(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn parse_header(path: &Path, bytes: &[u8], magic: u32, kind: &'static str) -> Result<Vec<usize>> {
    let ndim = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndim;
    let found_magic = bytes
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    if found_magic != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            kind,
            expected: magic,
            found: found_magic,
        });
    }
    if bytes.len() < header_len {
        return Err(size_mismatch(path, header_len, bytes.len()));
    }
    Ok(bytes[4..header_len]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect())
}

fn size_mismatch(path: &Path, declared: usize, found: usize) -> DataError {
    DataError::SizeMismatch {
        path: PathBuf::from(path),
        declared,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn images_round_trip(count in 0usize..5, rows in 1usize..6, cols in 1usize..6, seed: u8) {
            let pixels = (0..count * rows * cols).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let images = IdxImages { count, rows, cols, pixels };
            let parsed = parse_images(Path::new("x"), &encode_images(&images)).unwrap();
            prop_assert_eq!(parsed, images);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_images(Path::new("x"), &bytes);
            let _ = parse_labels(Path::new("x"), &bytes, 10);
        }
    }

    #[test]
    fn truncated_payload_is_reported_with_sizes() {
        let images = IdxImages {
            count: 2,
            rows: 2,
            cols: 2,
            pixels: vec![1; 8],
        };
        let mut bytes = encode_images(&images);
        bytes.pop();
        let err = parse_images(Path::new("a.idx"), &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::SizeMismatch {
                    declared: 8,
                    found: 7,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn labels_file_given_as_images_is_a_magic_error() {
        let err = parse_images(Path::new("l.idx"), &encode_labels(&[1, 2])).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    found: LABELS_MAGIC,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("l.idx"));
    }

    #[test]
    fn label_out_of_range_names_index_and_value() {
        let err = parse_labels(Path::new("l"), &encode_labels(&[1, 2, 12]), 10).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    index: 2,
                    label: 12,
                    ..
                }
            ),
            "{err}"
        );
    }
}
