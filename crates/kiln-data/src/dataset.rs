//! In-memory labelled image sets and the loaders that fill them from IDX directories and from
//! folders of labelled images.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checksum;
use crate::error::{DataError, Result};
use crate::idx;

/// A split of a dataset: same-sized grayscale `u8` images and their labels, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// `len() * height * width` pixels, image after image.
    pub pixels: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
}

impl ImageSet {
    /// Number of items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    #[must_use]
    pub fn image_len(&self) -> usize {
        self.height * self.width
    }

    /// The pixels of item `index`.
    #[must_use]
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// Splits off the last `count` items into a new set (a held-out split).
    #[must_use]
    pub fn split_off(&mut self, count: usize) -> ImageSet {
        let keep = self.len().saturating_sub(count);
        ImageSet {
            height: self.height,
            width: self.width,
            pixels: self.pixels.split_off(keep * self.image_len()),
            labels: self.labels.split_off(keep),
        }
    }

    /// Keeps only the first `count` items.
    pub fn truncate(&mut self, count: usize) {
        if count < self.len() {
            self.labels.truncate(count);
            self.pixels.truncate(count * self.image_len());
        }
    }

    /// Items per class, for `num_classes` classes.
    #[must_use]
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(usize::from(l)) {
                *c += 1;
            }
        }
        counts
    }
}

/// How a dataset directory is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// The four MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, ...).
    #[default]
    Idx,
    /// `train/<class>/*.png|jpg` and `test/<class>/*.png|jpg`.
    Folder,
}

/// Descriptive facts kept in `dataset.json` beside a dataset's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DatasetInfo {
    /// Short name, such as `mnist`.
    pub name: String,
    /// One name per class index.
    pub class_names: Vec<String>,
    /// Where the files come from.
    #[serde(default)]
    pub source: String,
    /// The data's license and attribution.
    #[serde(default)]
    pub license: String,
}

/// File holding a dataset's [`DatasetInfo`].
pub const INFO_FILE: &str = "dataset.json";

/// A dataset: its train and test splits, its class names and where it came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Name and class names.
    pub info: DatasetInfo,
    /// The training split.
    pub train: ImageSet,
    /// The test split.
    pub test: ImageSet,
    /// The directory it was read from.
    pub dir: PathBuf,
    /// `(file name, sha256)` of each file verified against `SHA256SUMS` on load; empty when the
    /// directory has no checksum list.
    pub verified: Vec<(String, String)>,
}

/// IDX file stems in an MNIST-style directory: (train images, train labels, test images,
/// test labels).
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Loads a dataset directory in the given format, verifying `SHA256SUMS` first when present.
///
/// # Errors
/// Any [`DataError`]: missing directory or files, checksum mismatches, malformed files.
pub fn load(
    dir: &Path,
    format: DatasetFormat,
    num_classes: usize,
    image_size: [usize; 2],
) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(DataError::MissingDir {
            path: dir.to_path_buf(),
        });
    }
    let verified = verified_files(dir)?;
    let info = read_info(dir)?;
    let (train, test, names) = match format {
        DatasetFormat::Idx => {
            let train = load_idx_split(dir, IDX_FILES[0], IDX_FILES[1], num_classes)?;
            let test = load_idx_split(dir, IDX_FILES[2], IDX_FILES[3], num_classes)?;
            (train, test, None)
        }
        DatasetFormat::Folder => {
            let (train, names) = crate::folder::load_split(&dir.join("train"), None, image_size)?;
            let (test, _) = crate::folder::load_split(&dir.join("test"), Some(&names), image_size)?;
            (train, test, Some(names))
        }
    };
    let mut info = info.unwrap_or_default();
    if info.name.is_empty() {
        info.name = dir
            .file_name()
            .map_or_else(|| "dataset".into(), |n| n.to_string_lossy().into_owned());
    }
    if let Some(names) = names {
        info.class_names = names;
    }
    if info.class_names.is_empty() {
        info.class_names = (0..num_classes).map(|c| c.to_string()).collect();
    }
    Ok(Dataset {
        info,
        train,
        test,
        dir: dir.to_path_buf(),
        verified,
    })
}

fn verified_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let sums_path = dir.join(checksum::SUMS_FILE);
    if !sums_path.exists() {
        return Ok(Vec::new());
    }
    checksum::verify_dir(dir)?;
    checksum::read_sums(&sums_path)
}

/// Reads `dataset.json` from a directory, if there is one.
///
/// # Errors
/// [`DataError::BadLayout`] when it exists but is not valid.
pub fn read_info(dir: &Path) -> Result<Option<DatasetInfo>> {
    let path = dir.join(INFO_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DataError::BadLayout {
                path,
                message: format!("invalid dataset.json: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// Finds `<stem>` or `<stem>.gz` in `dir`.
///
/// # Errors
/// [`DataError::MissingFile`] when neither exists.
pub fn find_idx_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            name: stem.to_string(),
        })
}

fn load_idx_split(
    dir: &Path,
    images_stem: &str,
    labels_stem: &str,
    num_classes: usize,
) -> Result<ImageSet> {
    let images_path = find_idx_file(dir, images_stem)?;
    let labels_path = find_idx_file(dir, labels_stem)?;
    let images = idx::read_images(&images_path)?;
    let labels = idx::read_labels(&labels_path, num_classes)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images_path,
            images: images.count,
            labels_path,
            labels: labels.len(),
        });
    }
    Ok(ImageSet {
        height: images.rows,
        width: images.cols,
        pixels: images.pixels,
        labels,
    })
}
