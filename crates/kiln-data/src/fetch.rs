//! `kiln data fetch`: the datasets kiln knows by name, brought in from their canonical mirrors
//! or from a local directory, verified file by file before anything is kept.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::checksum::{self, sha256_hex};
use crate::dataset::{DatasetInfo, IDX_FILES, INFO_FILE};
use crate::error::{DataError, Result};
use crate::idx::read_maybe_gzip;

/// A dataset kiln can fetch by name.
#[derive(Debug, Clone, Copy)]
pub struct KnownDataset {
    /// The name used on the command line and as the directory name.
    pub name: &'static str,
    /// Base addresses tried in order; a file's address is the base plus its name.
    pub mirrors: &'static [&'static str],
    /// SHA-256 of each IDX file's *decompressed* content, in [`IDX_FILES`] order. Checking the
    /// content rather than the `.gz` bytes accepts any faithful re-compression.
    pub content_sha256: [&'static str; 4],
    /// One name per class.
    pub class_names: &'static [&'static str],
    /// License and attribution.
    pub license: &'static str,
}

/// The datasets `kiln data fetch` knows.
pub const KNOWN: &[KnownDataset] = &[
    KnownDataset {
        name: "mnist",
        mirrors: &[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        content_sha256: [
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ],
        class_names: &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        license: "MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges; CC BY-SA 3.0",
    },
    KnownDataset {
        name: "fashion-mnist",
        mirrors: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        content_sha256: [
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ],
        class_names: &[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        license: "Fashion-MNIST, Copyright 2017 Zalando SE; MIT license",
    },
];

/// Looks a dataset up by name.
///
/// # Errors
/// [`DataError::UnknownDataset`] listing the known names.
pub fn known(name: &str) -> Result<&'static KnownDataset> {
    KNOWN
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| DataError::UnknownDataset {
            name: name.to_string(),
            known: KNOWN.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
        })
}

/// Where `fetch` takes the files from.
#[derive(Debug, Clone)]
pub enum FetchSource {
    /// The dataset's mirrors, or these base addresses instead when non-empty.
    Network(Vec<String>),
    /// A local directory holding the `.gz` (or raw) IDX files.
    Dir(PathBuf),
}

/// Progress of a fetch: (file name, bytes so far, total bytes when known).
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, Option<u64>);

/// Brings `dataset` into `dest` (created if needed): each file is fetched to a temporary name,
/// its decompressed content checked against the known SHA-256, then renamed into place.
/// Finally `SHA256SUMS` and `dataset.json` are written. A file already present with the right
/// content is kept as is.
///
/// # Errors
/// [`DataError::ChecksumMismatch`] when a file's content is not the known one (nothing of it is
/// kept), [`DataError::Download`] or [`DataError::Io`] otherwise.
pub fn fetch(
    dataset: &KnownDataset,
    source: &FetchSource,
    dest: &Path,
    progress: Progress<'_>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dest).map_err(|e| DataError::io(dest, e))?;
    let mut names = Vec::new();
    for (stem, expected) in IDX_FILES.iter().zip(dataset.content_sha256) {
        let name = format!("{stem}.gz");
        let target = dest.join(&name);
        if target.is_file() && content_matches(&target, expected)? {
            names.push(name);
            continue;
        }
        let tmp = dest.join(format!(".{name}.part"));
        let result = match source {
            FetchSource::Dir(dir) => copy_local(dir, stem, &tmp),
            FetchSource::Network(bases) => {
                let bases: Vec<&str> = if bases.is_empty() {
                    dataset.mirrors.to_vec()
                } else {
                    bases.iter().map(String::as_str).collect()
                };
                download_any(&bases, &name, &tmp, progress)
            }
        }
        .and_then(|()| {
            let found = sha256_hex(&read_maybe_gzip(&tmp)?);
            if found == expected {
                Ok(())
            } else {
                Err(DataError::ChecksumMismatch {
                    path: target.clone(),
                    expected: expected.to_string(),
                    found,
                })
            }
        });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        kiln_fs::rename(&tmp, &target).map_err(|e| DataError::io(&target, e))?;
        names.push(name);
    }
    checksum::write_sums(dest, &names)?;
    let info = DatasetInfo {
        name: dataset.name.to_string(),
        class_names: dataset
            .class_names
            .iter()
            .map(ToString::to_string)
            .collect(),
        source: match source {
            FetchSource::Dir(dir) => format!("copied from {}", dir.display()),
            FetchSource::Network(_) => "downloaded by `kiln data fetch`".to_string(),
        },
        license: dataset.license.to_string(),
    };
    let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
    let info_path = dest.join(INFO_FILE);
    kiln_fs::write_atomic(&info_path, &json).map_err(|e| DataError::io(&info_path, e))?;
    Ok(dest.to_path_buf())
}

/// Checks the decompressed content of every IDX file in `dir` against `dataset`'s known hashes.
///
/// # Errors
/// [`DataError::ChecksumMismatch`] or [`DataError::MissingFile`] for the first bad file.
pub fn verify_content(dataset: &KnownDataset, dir: &Path) -> Result<()> {
    for (stem, expected) in IDX_FILES.iter().zip(dataset.content_sha256) {
        let path = crate::dataset::find_idx_file(dir, stem)?;
        let found = sha256_hex(&read_maybe_gzip(&path)?);
        if found != expected {
            return Err(DataError::ChecksumMismatch {
                path,
                expected: expected.to_string(),
                found,
            });
        }
    }
    Ok(())
}

fn content_matches(path: &Path, expected: &str) -> Result<bool> {
    Ok(read_maybe_gzip(path).is_ok_and(|bytes| sha256_hex(&bytes) == expected))
}

fn copy_local(dir: &Path, stem: &str, tmp: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(DataError::MissingDir {
            path: dir.to_path_buf(),
        });
    }
    let src = crate::dataset::find_idx_file(dir, stem)?;
    let bytes = std::fs::read(&src).map_err(|e| DataError::io(&src, e))?;
    // Store compressed either way, so the directory looks the same whatever the source.
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        bytes
    } else {
        gzip(&bytes).map_err(|e| DataError::io(&src, e))?
    };
    kiln_fs::write_atomic(tmp, &bytes).map_err(|e| DataError::io(tmp, e))
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn download_any(bases: &[&str], name: &str, tmp: &Path, progress: Progress<'_>) -> Result<()> {
    let mut last = None;
    for base in bases {
        let url = format!("{}/{name}", base.trim_end_matches('/'));
        match download(&url, name, tmp, progress) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| DataError::Download {
        url: name.to_string(),
        message: "no mirror configured".into(),
    }))
}

/// The largest file `download` accepts, far above any IDX file it fetches.
const MAX_DOWNLOAD: u64 = 256 << 20;

fn download(url: &str, name: &str, tmp: &Path, progress: Progress<'_>) -> Result<()> {
    let err = |message: String| DataError::Download {
        url: url.to_string(),
        message,
    };
    let response = ureq::get(url).call().map_err(|e| err(e.to_string()))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut reader = response
        .into_body()
        .into_with_config()
        .limit(MAX_DOWNLOAD)
        .reader();
    let mut file = std::fs::File::create(tmp).map_err(|e| DataError::io(tmp, e))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| err(e.to_string()))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .map_err(|e| DataError::io(tmp, e))?;
        done += n as u64;
        progress(name, done, total);
    }
    file.sync_all().map_err(|e| DataError::io(tmp, e))?;
    Ok(())
}
