//! What the training loop tells whoever watches it: the command line draws it, tests ignore it.

use std::path::PathBuf;

use crate::checkpoint::EpochRecord;

/// Receives progress. Every method has an empty default.
pub trait Observer {
    /// Training is about to start (or resume).
    fn started(&mut self, _info: &StartInfo) {}
    /// Training continues from a checkpoint.
    fn resumed(&mut self, _from: &Resumed) {}
    /// One optimizer step finished. `loss` and `accuracy` are set on logging steps only (reading
    /// them waits for the device).
    fn step(&mut self, _progress: &StepProgress) {}
    /// The epoch's training part finished; validation of that (1-based) epoch starts.
    fn validating(&mut self, _epoch: usize) {}
    /// An epoch finished and was validated.
    fn epoch(&mut self, _record: &EpochRecord) {}
    /// Early stopping ends the run: the monitored metric has not improved for `patience` epochs.
    fn early_stopped(&mut self, _patience: usize) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Facts about the run, given at start.
#[derive(Debug, Clone)]
pub struct StartInfo {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Epochs in the run.
    pub epochs: usize,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// The step training starts from (non-zero when resuming).
    pub start_step: u64,
    /// Training items.
    pub train_items: usize,
    /// Validation items.
    pub valid_items: usize,
    /// Trainable parameters.
    pub parameters: usize,
}

/// Where a resumed run continues from.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The checkpoint directory.
    pub checkpoint: PathBuf,
    /// Steps already taken.
    pub step: u64,
    /// The 1-based epoch it continues in.
    pub epoch: usize,
}

/// Progress after one step.
#[derive(Debug, Clone)]
pub struct StepProgress {
    /// 1-based epoch.
    pub epoch: usize,
    /// Epochs in the run.
    pub epochs: usize,
    /// 1-based batch within the epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Steps taken.
    pub global_step: u64,
    /// Steps in the whole run.
    pub total_steps: u64,
    /// Training throughput in this epoch so far.
    pub samples_per_sec: f64,
    /// Mean loss since the last logging step (logging steps only).
    pub loss: Option<f64>,
    /// Accuracy since the last logging step (logging steps only).
    pub accuracy: Option<f64>,
    /// Learning rate of this step.
    pub lr: f64,
}
