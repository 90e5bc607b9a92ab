//! The training configuration: TOML parsed into typed structs (unknown keys rejected, every
//! field defaulted), `--set a.b=value` overrides applied to the resolved table, and the
//! resolved form written back into each run directory.

use std::path::{Path, PathBuf};

use kiln_data::{DatasetFormat, Normalization};
use kiln_model::Architecture;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// A whole training configuration (`configs/*.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Naming, seeding and device.
    pub experiment: ExperimentConfig,
    /// Where the data comes from and how it is fed.
    pub data: DataConfig,
    /// The network.
    pub model: Architecture,
    /// Optimisation.
    pub training: TrainingConfig,
    /// `TensorBoard` and checkpoints.
    pub logging: LoggingConfig,
}

/// `[experiment]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// Runs land in `<root>/<name>/<timestamp>/`.
    pub name: String,
    /// The directory holding experiments.
    pub root: PathBuf,
    /// Seed of initialisation, shuffling, augmentation and dropout.
    pub seed: u64,
    /// `cpu` (burn's flex backend), `wgpu`, `vulkan`, `cuda` or `cuda:N`.
    pub device: String,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            root: "experiments".into(),
            seed: 42,
            device: "cpu".into(),
        }
    }
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset directory.
    pub dir: PathBuf,
    /// `idx` or `folder`.
    pub format: DatasetFormat,
    /// Number of classes (labels must be below it).
    pub num_classes: usize,
    /// `[height, width]` images are resized to (folder datasets; IDX sets must already match).
    pub image_size: [usize; 2],
    /// What to validate on each epoch: `test` (the test split, as the classic MNIST recipes do)
    /// or `holdout` (the last `holdout_fraction` of the training split).
    pub validation: ValidationSplit,
    /// Fraction of the training split held out when `validation = "holdout"`.
    pub holdout_fraction: f64,
    /// `dataset` (mean and std of the training pixels) or `{ mean = .., std = .. }`.
    pub normalization: NormalizationChoice,
    /// Random translation of up to this many pixels (0 = no augmentation).
    pub augment_shift: usize,
    /// Batch-preparing worker threads.
    pub workers: usize,
    /// Use only the first N training items (0 = all); for smoke tests.
    pub limit_train: usize,
    /// Use only the first N validation/test items (0 = all).
    pub limit_test: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: "datasets/mnist".into(),
            format: DatasetFormat::Idx,
            num_classes: 10,
            image_size: [28, 28],
            validation: ValidationSplit::Test,
            holdout_fraction: 0.1,
            normalization: NormalizationChoice::Dataset,
            augment_shift: 0,
            workers: 1,
            limit_train: 0,
            limit_test: 0,
        }
    }
}

/// Which split validation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationSplit {
    /// The test split.
    Test,
    /// A held-out tail of the training split.
    Holdout,
}

/// How pixels are normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NormalizationChoice {
    /// The string `"dataset"`: mean and std computed from the training pixels.
    Named(NamedNormalization),
    /// Explicit values.
    Fixed(Normalization),
}

/// Named normalisations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamedNormalization {
    /// Statistics of the training split.
    Dataset,
}

#[expect(
    non_upper_case_globals,
    reason = "reads as the enum variant it stands for"
)]
impl NormalizationChoice {
    /// Statistics of the training split.
    pub const Dataset: Self = Self::Named(NamedNormalization::Dataset);
}

/// `[training]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Items per optimizer step.
    pub batch_size: usize,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Clip the global gradient norm to this value (0 = off).
    pub grad_clip_norm: f64,
    /// Stop when the validation metric has not improved for this many epochs (0 = off).
    pub early_stopping_patience: usize,
    /// `valid_accuracy` (higher is better) or `valid_loss` (lower is better): used for early
    /// stopping and for choosing the best artifact.
    pub monitor: Monitor,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 64,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            grad_clip_norm: 0.0,
            early_stopping_patience: 0,
            monitor: Monitor::ValidAccuracy,
        }
    }
}

/// The metric that decides "best" and early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Validation accuracy, higher is better.
    ValidAccuracy,
    /// Validation loss, lower is better.
    ValidLoss,
}

/// `[training.optimizer]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// `adam`, `adamw` or `sgd`.
    pub kind: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Adam/AdamW first-moment decay.
    pub beta1: f32,
    /// Adam/AdamW second-moment decay.
    pub beta2: f32,
    /// Adam/AdamW epsilon (`PyTorch`'s default 1e-8).
    pub epsilon: f32,
    /// L2 penalty (Adam, SGD) or decoupled weight decay (`AdamW`).
    pub weight_decay: f32,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    /// Nesterov momentum for SGD.
    pub nesterov: bool,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
            momentum: 0.9,
            nesterov: false,
        }
    }
}

/// Optimizer families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (L2 weight decay).
    Adam,
    /// `AdamW` (decoupled weight decay).
    Adamw,
    /// Stochastic gradient descent with optional momentum.
    Sgd,
}

/// `[training.schedule]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// `constant`, `step` or `cosine`.
    pub kind: ScheduleKind,
    /// Linear warm-up from 0 over this many epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// `step`: multiply the rate by `gamma` every `step_epochs` epochs.
    pub step_epochs: usize,
    /// `step`: the decay factor.
    pub gamma: f64,
    /// `cosine`: the final rate, as a fraction of the peak.
    pub min_lr_fraction: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Constant,
            warmup_epochs: 0.0,
            step_epochs: 1,
            gamma: 0.7,
            min_lr_fraction: 0.0,
        }
    }
}

/// Learning-rate schedule shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The peak rate throughout (after warm-up).
    Constant,
    /// Piecewise constant, decayed every `step_epochs`.
    Step,
    /// Cosine annealing from the peak to `min_lr_fraction` of it.
    Cosine,
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Write training scalars every this many steps.
    pub every_steps: u64,
    /// Also checkpoint every this many steps (0 = only at epoch ends).
    pub checkpoint_every_steps: u64,
    /// Step checkpoints to keep besides the newest (epoch-end checkpoints included).
    pub keep_checkpoints: usize,
    /// Weight histograms each epoch.
    pub histograms: bool,
    /// An image of misclassified validation items each epoch.
    pub error_images: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            every_steps: 50,
            checkpoint_every_steps: 0,
            keep_checkpoints: 3,
            histograms: true,
            error_images: true,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file, applies `overrides` (`a.b=value`), and checks the result.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the file, the key and what is wrong.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::Config(format!("reading {}: {e}", path.display())))?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML text (`origin` names it in errors) and applies `overrides`.
    ///
    /// # Errors
    /// [`TrainError::Config`].
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self, TrainError> {
        let parsed: Self =
            toml::from_str(text).map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        let mut config = parsed;
        // Re-resolve after each override so the next one sees every default (a new model kind's
        // fields included).
        for o in overrides {
            let mut table =
                toml::Table::try_from(&config).map_err(|e| TrainError::Config(e.to_string()))?;
            apply_override(&mut table, o)?;
            config = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| TrainError::Config(format!("--set {o}: {e}")))?;
        }
        config.validate()?;
        Ok(config)
    }

    /// The resolved configuration as TOML (every field, defaults included).
    ///
    /// # Errors
    /// [`TrainError::Config`] if serialisation fails.
    pub fn to_toml(&self) -> Result<String, TrainError> {
        toml::to_string_pretty(self).map_err(|e| TrainError::Config(e.to_string()))
    }

    /// Checks values that types alone cannot.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let fail = |m: &str| Err(TrainError::Config(m.to_string()));
        let t = &self.training;
        if t.epochs == 0 {
            return fail("training.epochs must be at least 1");
        }
        if t.batch_size == 0 {
            return fail("training.batch_size must be at least 1");
        }
        if !(t.optimizer.lr.is_finite() && t.optimizer.lr > 0.0) {
            return fail("training.optimizer.lr must be a positive number");
        }
        if !(t.grad_clip_norm.is_finite() && t.grad_clip_norm >= 0.0) {
            return fail("training.grad_clip_norm must be >= 0 (0 turns clipping off)");
        }
        if t.schedule.kind == ScheduleKind::Step && t.schedule.step_epochs == 0 {
            return fail("training.schedule.step_epochs must be at least 1");
        }
        if !(0.0..1.0).contains(&self.data.holdout_fraction) {
            return fail("data.holdout_fraction must be in [0, 1)");
        }
        if self.data.num_classes < 2 || self.data.num_classes > 256 {
            return fail("data.num_classes must be between 2 and 256");
        }
        if let NormalizationChoice::Fixed(n) = &self.data.normalization
            && !n.is_valid()
        {
            return fail("data.normalization.std must be > 0");
        }
        if self.logging.every_steps == 0 {
            return fail("logging.every_steps must be at least 1");
        }
        if self.experiment.name.is_empty()
            || self.experiment.name.contains(['/', '\\'])
            || self.experiment.name.starts_with('.')
        {
            return fail("experiment.name must be a plain, non-empty name");
        }
        let input = [1, self.data.image_size[0], self.data.image_size[1]];
        if let Some(problem) = self.model.problem(input) {
            return fail(&problem);
        }
        Ok(())
    }
}

/// Applies one `a.b.c=value` override to a resolved table. The key must already exist (every
/// field is present after defaults are resolved), so a typo is an error, not a silent new key.
/// `value` is read as a TOML value when it parses as one, else as a string.
///
/// # Errors
/// [`TrainError::Config`] for a malformed override or a key that does not exist.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), TrainError> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("--set {assignment:?}: expected key=value")))?;
    let key = key.trim();
    let value = parse_value(raw.trim());
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| TrainError::Config("--set: empty key".into()))?;
    let mut current = table;
    for (i, part) in parents.iter().enumerate() {
        current = current
            .get_mut(*part)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| {
                TrainError::Config(format!(
                    "--set {key}: there is no section `{}`",
                    parts[..=i].join(".")
                ))
            })?;
    }
    if !current.contains_key(*last) {
        let known: Vec<&str> = current.keys().map(String::as_str).collect();
        return Err(TrainError::Config(format!(
            "--set {key}: no such key; keys here are: {}",
            known.join(", ")
        )));
    }
    // Switching the model kind drops the old kind's fields, so the new one starts from defaults.
    if key == "model.kind" && current.get("kind") != Some(&value) {
        current.clear();
    }
    current.insert((*last).to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = TrainConfig::from_toml("", "t", &[]).unwrap();
        assert_eq!(c, TrainConfig::default());
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = TrainConfig::from_toml("[training]\nepochz = 3\n", "t.toml", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("epochz") && msg.contains("t.toml"), "{msg}");
    }

    #[test]
    fn wrong_type_is_rejected() {
        let err = TrainConfig::from_toml("[training]\nepochs = \"five\"\n", "t", &[]).unwrap_err();
        assert!(err.to_string().contains("epochs"), "{err}");
    }

    #[test]
    fn overrides_apply_and_typos_fail() {
        let c = TrainConfig::from_toml(
            "",
            "t",
            &[
                "training.optimizer.lr=0.01".into(),
                "experiment.name=x".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.training.optimizer.lr, 0.01);
        assert_eq!(c.experiment.name, "x");
        let err = TrainConfig::from_toml("", "t", &["training.lr=0.01".into()]).unwrap_err();
        assert!(err.to_string().contains("training.lr"), "{err}");
        let err = TrainConfig::from_toml("", "t", &["training.epochs=abc".into()]).unwrap_err();
        assert!(err.to_string().contains("epochs"), "{err}");
    }

    #[test]
    fn switching_model_kind_starts_from_that_kinds_defaults() {
        let c = TrainConfig::from_toml(
            "",
            "t",
            &["model.kind=\"cnn\"".into(), "model.conv1=8".into()],
        )
        .unwrap();
        let Architecture::Cnn(cnn) = c.model else {
            panic!("{:?}", c.model)
        };
        assert_eq!(cnn.conv1, 8);
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = TrainConfig::from_toml("[model]\nkind = \"cnn\"\n", "t", &[]).unwrap();
        let again = TrainConfig::from_toml(&c.to_toml().unwrap(), "resolved", &[]).unwrap();
        assert_eq!(c, again);
    }
}
