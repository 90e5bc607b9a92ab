//! Datasets stored as folders of labelled images: `<split>/<class name>/<image>.png|jpg`.

use std::path::{Path, PathBuf};

use crate::dataset::ImageSet;
use crate::error::{DataError, Result};
use crate::image::{Fit, decode_to_shape};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Loads one split. Class names are the sorted sub-directory names; when `expected_classes` is
/// given (the training split's), the split must use exactly those. Every image is decoded,
/// converted to 8-bit grayscale and resized to `size` (`[height, width]`) when it differs
/// ([`crate::image`]'s [`Fit::Resize`]).
///
/// # Errors
/// [`DataError::MissingDir`], [`DataError::BadLayout`] or [`DataError::BadImage`] naming the file.
pub fn load_split(
    dir: &Path,
    expected_classes: Option<&[String]>,
    size: [usize; 2],
) -> Result<(ImageSet, Vec<String>)> {
    if !dir.is_dir() {
        return Err(DataError::MissingDir {
            path: dir.to_path_buf(),
        });
    }
    let mut classes: Vec<String> = read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::BadLayout {
            path: dir.to_path_buf(),
            message: "no class folders: expected <split>/<class name>/<image files>".into(),
        });
    }
    if classes.len() > 256 {
        return Err(DataError::BadLayout {
            path: dir.to_path_buf(),
            message: "more than 256 classes".into(),
        });
    }
    if let Some(expected) = expected_classes
        && expected != classes.as_slice()
    {
        return Err(DataError::BadLayout {
            path: dir.to_path_buf(),
            message: format!(
                "class folders {classes:?} differ from the training split's {expected:?}"
            ),
        });
    }
    let [height, width] = size;
    let mut set = ImageSet {
        height,
        width,
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for (label, class) in classes.iter().enumerate() {
        for path in read_dir_sorted(&dir.join(class))? {
            let is_image = path.extension().is_some_and(|e| {
                EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
            });
            if !is_image {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
            set.pixels.extend(decode_gray(&path, &bytes, size)?);
            set.labels.push(u8::try_from(label).unwrap_or(u8::MAX));
        }
    }
    if set.is_empty() {
        return Err(DataError::BadLayout {
            path: dir.to_path_buf(),
            message: "no .png or .jpg images found".into(),
        });
    }
    Ok((set, classes))
}

/// Decodes an encoded image to 8-bit grayscale of exactly `size` (`[height, width]`): the
/// shared pipeline's [`Fit::Resize`] rule, which serving applies to models trained here.
///
/// # Errors
/// [`DataError::BadImage`] when it cannot be decoded.
pub fn decode_gray(path: &Path, bytes: &[u8], size: [usize; 2]) -> Result<Vec<u8>> {
    decode_to_shape(path, bytes, size, Fit::Resize)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| DataError::io(dir, err)))
        .collect::<Result<_>>()?;
    entries.sort();
    Ok(entries)
}
