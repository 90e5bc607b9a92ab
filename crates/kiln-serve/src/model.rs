//! The model being served, and the slot that lets a reload swap it atomically.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use burn::tensor::{Device, Tensor, TensorData, activation::softmax};
use kiln_data::PixelTable;
use kiln_data::image::Fit;
use kiln_model::{Manifest, Model, artifact};

use crate::error::ServeError;

/// What a served model takes, from its artifact: the shape of one image and the rule that
/// fits a client's image of another size to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSchema {
    /// `[channels, height, width]`.
    pub shape: [usize; 3],
    /// How an encoded image is fitted to `height x width`.
    pub fit: Fit,
}

impl InputSchema {
    /// Values per image: `channels * height * width`.
    #[must_use]
    pub fn pixels(&self) -> usize {
        self.shape.iter().product()
    }

    /// `[height, width]`.
    #[must_use]
    pub fn size(&self) -> [usize; 2] {
        [self.shape[1], self.shape[2]]
    }

    /// The shape as text, `CxHxW`.
    #[must_use]
    pub fn describe(&self) -> String {
        let [c, h, w] = self.shape;
        format!("{c}x{h}x{w}")
    }
}

/// A loaded artifact, ready to run.
#[derive(Debug)]
pub struct LoadedModel {
    /// The artifact's manifest.
    pub manifest: Manifest,
    /// The network, in inference mode.
    pub model: Model,
    /// The artifact's normalisation as a lookup table, the same `preprocess()` training used.
    pub table: PixelTable,
    /// The version clients see: the manifest's version and the weights' checksum prefix, so two
    /// artifacts of one run never look alike.
    pub version: String,
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// The device it runs on.
    pub device: Device,
}

impl LoadedModel {
    /// Loads and checks the artifact at `path` (an artifact or run directory).
    ///
    /// # Errors
    /// [`ServeError::Model`] for a missing, corrupt or mismatched artifact, and
    /// [`ServeError::Unservable`] for one whose input is not grey images (one channel; the
    /// training data are grayscale) or that names no classes.
    pub fn load(path: &Path, device: &Device) -> Result<Self, ServeError> {
        let loaded = artifact::load(path, device)?;
        let manifest = loaded.manifest;
        if manifest.input_shape[0] != 1 {
            return Err(ServeError::Unservable {
                path: loaded.dir,
                message: format!(
                    "input shape {:?}, but kiln serve takes grey images ([1, height, width])",
                    manifest.input_shape
                ),
            });
        }
        if manifest.class_names.is_empty() {
            return Err(ServeError::Unservable {
                path: loaded.dir,
                message: "the manifest names no classes".into(),
            });
        }
        let version = format!(
            "{}-{}",
            manifest.version,
            &manifest.weights_sha256[..12.min(manifest.weights_sha256.len())]
        );
        Ok(Self {
            table: manifest.normalization.table(),
            version,
            model: loaded.model,
            dir: loaded.dir,
            device: device.clone(),
            manifest,
        })
    }

    /// The model's name, as clients address it.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The input the model takes, from its manifest.
    #[must_use]
    pub fn schema(&self) -> InputSchema {
        InputSchema {
            shape: self.manifest.input_shape,
            fit: self.manifest.fit_rule(),
        }
    }

    /// Values per image (`channels * height * width`).
    #[must_use]
    pub fn pixels(&self) -> usize {
        self.schema().pixels()
    }

    /// Number of classes.
    #[must_use]
    pub fn classes(&self) -> usize {
        self.manifest.class_names.len()
    }

    /// Class probabilities for `n` preprocessed images laid out one after another
    /// (`n * channels * height * width` values), as `n * classes` values.
    ///
    /// # Panics
    /// If `inputs.len()` is not `n` images' worth (callers build inputs through
    /// [`crate::input`]).
    #[must_use]
    pub fn probabilities(&self, inputs: Vec<f32>, n: usize) -> Vec<f32> {
        assert_eq!(inputs.len(), n * self.pixels(), "input length");
        let [c, h, w] = self.manifest.input_shape;
        let images = Tensor::<4>::from_data(TensorData::new(inputs, [n, c, h, w]), &self.device);
        let probs = softmax(self.model.forward(images), 1);
        probs
            .into_data()
            .try_into_vec::<f32>()
            .unwrap_or_else(|e| panic!("model output is not f32: {e:?}"))
    }
}

/// Holds the model in use. Readers take an `Arc` to it, so a request that started on one model
/// finishes on it even if a reload swaps in another meanwhile.
#[derive(Debug)]
pub struct ModelSlot {
    current: RwLock<Arc<LoadedModel>>,
    /// Where to reload from when no path is given.
    source: PathBuf,
}

impl ModelSlot {
    /// A slot holding `model`, reloaded from `source` by default.
    #[must_use]
    pub fn new(model: LoadedModel, source: PathBuf) -> Self {
        Self {
            current: RwLock::new(Arc::new(model)),
            source,
        }
    }

    /// The model in use now.
    #[must_use]
    pub fn get(&self) -> Arc<LoadedModel> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Swaps in `model`, returning the one it replaces.
    pub fn swap(&self, model: LoadedModel) -> Arc<LoadedModel> {
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *guard, Arc::new(model))
    }

    /// The path given at start, which a reload without a path reads again.
    #[must_use]
    pub fn source(&self) -> &Path {
        &self.source
    }
}
