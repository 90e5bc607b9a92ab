//! The model artifact: weights plus everything needed to use them correctly (architecture,
//! input shape, normalisation, class names, lineage), in one directory.
//!
//! Layout: `model.json` (the manifest) names a content-addressed weights file
//! `weights-<sha256 prefix>.bpk` (burnpack) and carries its full SHA-256. The manifest is
//! written last and atomically, so a reader never sees a manifest pointing at weights that are
//! not all there, and a directory being rewritten keeps serving its previous state until then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use kiln_data::Normalization;
use kiln_data::checksum::sha256_hex;
use kiln_data::image::Fit;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::model::{Architecture, Model};

/// File name of the manifest inside an artifact directory.
pub const MANIFEST: &str = "model.json";
/// The `format` field every manifest carries.
pub const FORMAT: &str = "kiln-model";
/// The manifest version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Where a model came from: the data and the training run that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// Dataset name.
    pub dataset: String,
    /// `(file, sha256)` of the dataset files the run verified.
    #[serde(default)]
    pub dataset_files: Vec<(String, String)>,
    /// The run directory.
    #[serde(default)]
    pub run_dir: String,
    /// Epochs completed when these weights were taken.
    #[serde(default)]
    pub epoch: usize,
    /// Optimizer steps completed.
    #[serde(default)]
    pub step: u64,
    /// Source revision of the code that trained it, when known.
    #[serde(default)]
    pub git_commit: Option<String>,
    /// Validation metrics at that point.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// When the artifact was written (RFC 3339).
    #[serde(default)]
    pub created: String,
}

/// The manifest of a model artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] at the time of writing.
    pub format_version: u32,
    /// The model's name (by default the experiment name).
    pub name: String,
    /// A version string that changes whenever the weights do.
    pub version: String,
    /// The network and its hyperparameters.
    pub architecture: Architecture,
    /// `[channels, height, width]` the network expects.
    pub input_shape: [usize; 3],
    /// How pixels are normalised before the network sees them.
    pub normalization: Normalization,
    /// How an image of another size is fitted to `input_shape` (the rule the training data
    /// went through); `None` in artifacts written before the rule was recorded, which read as
    /// [`Fit::default_for`] their shape (see [`Manifest::fit_rule`]). Optional, so format
    /// version 1 is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<Fit>,
    /// One name per output class.
    pub class_names: Vec<String>,
    /// The weights file, relative to the manifest.
    pub weights_file: String,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
    /// Where the model came from.
    pub lineage: Lineage,
}

impl Manifest {
    /// Number of output classes.
    #[must_use]
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The rule serving fits images by: the recorded one, else the default for the shape.
    #[must_use]
    pub fn fit_rule(&self) -> Fit {
        self.fit
            .unwrap_or_else(|| Fit::default_for(self.input_shape))
    }

    fn check(&self, path: &Path) -> Result<(), ModelError> {
        let invalid = |message: String| {
            Err(ModelError::Invalid {
                path: path.to_path_buf(),
                message,
            })
        };
        if self.format != FORMAT {
            return invalid(format!("format is {:?}, expected {FORMAT:?}", self.format));
        }
        if self.format_version != FORMAT_VERSION {
            return invalid(format!(
                "format_version {} is not supported by this kiln (reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.input_shape.contains(&0) {
            return invalid(format!(
                "input_shape {:?} has a zero dimension",
                self.input_shape
            ));
        }
        if !self.normalization.is_valid() {
            return invalid(format!(
                "normalization {:?} is not usable (std must be > 0)",
                self.normalization
            ));
        }
        if self.class_names.len() < 2 {
            return invalid("class_names must name at least two classes".into());
        }
        if let Some(problem) = self.architecture.problem(self.input_shape) {
            return invalid(problem);
        }
        if self.weights_file.contains('/') || self.weights_file.contains('\\') {
            return invalid("weights_file must be a plain file name beside the manifest".into());
        }
        Ok(())
    }
}

/// A loaded artifact: the manifest and the network on a device.
#[derive(Debug)]
pub struct Artifact {
    /// The manifest.
    pub manifest: Manifest,
    /// The network, in inference mode.
    pub model: Model,
    /// The directory it was loaded from.
    pub dir: PathBuf,
}

/// Finds the artifact directory for `path`: an artifact directory itself, its `model.json`, or a
/// run directory (whose best artifact is preferred over its final one).
///
/// # Errors
/// [`ModelError::NotFound`] when none of these exist.
pub fn resolve(path: &Path) -> Result<PathBuf, ModelError> {
    if path.is_file() && path.file_name().is_some_and(|n| n == MANIFEST) {
        return Ok(path.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    for candidate in [
        path.to_path_buf(),
        path.join("artifacts/best"),
        path.join("artifacts/final"),
    ] {
        if candidate.join(MANIFEST).is_file() {
            return Ok(candidate);
        }
    }
    Err(ModelError::NotFound {
        path: path.to_path_buf(),
    })
}

/// Reads and checks a manifest without loading weights.
///
/// # Errors
/// [`ModelError::NotFound`], [`ModelError::Io`] or [`ModelError::Invalid`].
pub fn read_manifest(path: &Path) -> Result<(PathBuf, Manifest), ModelError> {
    let dir = resolve(path)?;
    let manifest_path = dir.join(MANIFEST);
    let text = std::fs::read(&manifest_path).map_err(|e| ModelError::io(&manifest_path, e))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| ModelError::Invalid {
        path: manifest_path.clone(),
        message: e.to_string(),
    })?;
    manifest.check(&manifest_path)?;
    Ok((dir, manifest))
}

/// Loads an artifact onto `device`, checking the manifest, the weights' checksum and that the
/// weights fit the architecture.
///
/// # Errors
/// Any [`ModelError`]; nothing is loaded from a corrupt or mismatched artifact.
pub fn load(path: &Path, device: &Device) -> Result<Artifact, ModelError> {
    let (dir, manifest) = read_manifest(path)?;
    let weights_path = dir.join(&manifest.weights_file);
    let bytes = std::fs::read(&weights_path).map_err(|e| ModelError::io(&weights_path, e))?;
    let found = sha256_hex(&bytes);
    if found != manifest.weights_sha256 {
        return Err(ModelError::Corrupt {
            path: weights_path,
            expected: manifest.weights_sha256.clone(),
            found,
        });
    }
    let model = load_weights(&manifest, &weights_path, bytes, device)?;
    Ok(Artifact {
        manifest,
        model,
        dir,
    })
}

fn load_weights(
    manifest: &Manifest,
    path: &Path,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<Model, ModelError> {
    let mismatch = |message: String| ModelError::Mismatch {
        path: path.to_path_buf(),
        message,
    };
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| mismatch(e.to_string()))?;
    let model = manifest
        .architecture
        .init(manifest.input_shape, manifest.num_classes(), device);
    let model = model
        .try_load_record(record)
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(model.valid())
}

/// Serialises a network's weights to burnpack bytes.
///
/// # Errors
/// [`ModelError::Serialize`] when burn cannot serialise the record.
pub fn weights_bytes(model: &Model) -> Result<Vec<u8>, ModelError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|source| ModelError::Serialize { source })?;
    Ok(bytes.to_vec())
}

/// Writes an artifact into `dir` (created if needed). `manifest.weights_file` and
/// `weights_sha256` are filled in here; other weights files in the directory are removed once
/// the new manifest is in place.
///
/// # Errors
/// [`ModelError::Io`] when a file cannot be written; the previous artifact then stays intact.
pub fn save(dir: &Path, model: &Model, mut manifest: Manifest) -> Result<Manifest, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let bytes = weights_bytes(model)?;
    manifest.weights_sha256 = sha256_hex(&bytes);
    manifest.weights_file = format!("weights-{}.bpk", &manifest.weights_sha256[..16]);
    manifest.format = FORMAT.to_string();
    manifest.format_version = FORMAT_VERSION;
    let weights_path = dir.join(&manifest.weights_file);
    kiln_fs::write_atomic(&weights_path, &bytes).map_err(|e| ModelError::io(&weights_path, e))?;
    let manifest_path = dir.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ModelError::Invalid {
        path: manifest_path.clone(),
        message: e.to_string(),
    })?;
    kiln_fs::write_atomic(&manifest_path, &json).map_err(|e| ModelError::io(&manifest_path, e))?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("weights-")
                && Path::new(&name)
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("bpk"))
                && name != manifest.weights_file
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(manifest)
}
