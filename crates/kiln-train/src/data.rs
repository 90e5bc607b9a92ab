//! Turns the `[data]` section into ready splits and a normalisation.

use std::sync::Arc;

use kiln_data::{Dataset, DatasetInfo, ImageSet, Normalization};

use crate::config::{DataConfig, NormalizationChoice, ValidationSplit};
use crate::error::TrainError;

/// Splits ready for training.
#[derive(Debug, Clone)]
pub struct PreparedData {
    /// What is trained on.
    pub train: Arc<ImageSet>,
    /// What is validated on each epoch.
    pub valid: ImageSet,
    /// The test split (the same data as `valid` when validating on the test split).
    pub test: ImageSet,
    /// Normalisation applied to every input.
    pub normalization: Normalization,
    /// Name and class names.
    pub info: DatasetInfo,
    /// `(file, sha256)` verified on load.
    pub verified: Vec<(String, String)>,
}

/// Loads the dataset and applies limits, the hold-out split and the normalisation choice.
///
/// # Errors
/// [`TrainError::Data`] for dataset problems, [`TrainError::Config`] for settings that do not
/// fit the data.
pub fn prepare(config: &DataConfig) -> Result<PreparedData, TrainError> {
    let Dataset {
        info,
        mut train,
        mut test,
        verified,
        ..
    } = kiln_data::load(
        &config.dir,
        config.format,
        config.num_classes,
        config.image_size,
    )?;
    if [train.height, train.width] != config.image_size {
        return Err(TrainError::Config(format!(
            "data.image_size is {:?} but {} holds {}x{} images",
            config.image_size,
            config.dir.display(),
            train.height,
            train.width
        )));
    }
    if info.class_names.len() != config.num_classes {
        return Err(TrainError::Config(format!(
            "data.num_classes is {} but the dataset names {} classes",
            config.num_classes,
            info.class_names.len()
        )));
    }
    if config.limit_train > 0 {
        train.truncate(config.limit_train);
    }
    if config.limit_test > 0 {
        test.truncate(config.limit_test);
    }
    let valid = match config.validation {
        ValidationSplit::Test => test.clone(),
        ValidationSplit::Holdout => {
            let count = (train.len() as f64 * config.holdout_fraction).round() as usize;
            train.split_off(count)
        }
    };
    if train.is_empty() || valid.is_empty() {
        return Err(TrainError::Config(
            "the training or validation split is empty".into(),
        ));
    }
    let normalization = match &config.normalization {
        NormalizationChoice::Named(_) => Normalization::from_pixels(&train.pixels),
        NormalizationChoice::Fixed(n) => *n,
    };
    Ok(PreparedData {
        train: Arc::new(train),
        valid,
        test,
        normalization,
        info,
        verified,
    })
}
