//! Checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! Each checkpoint is a directory `checkpoints/step-<global step>/` holding the model and
//! optimizer records (burnpack) and `state.json` (loop position, counters, running sums and the
//! SHA-256 of both records). It is assembled under a temporary name, every file fsynced, then
//! renamed into place, so a crash leaves either a whole checkpoint or none. Learning rates,
//! shuffling, augmentation and dropout are all functions of the seed and the step, so there is
//! no random-generator state to save beyond the position.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use kiln_data::checksum::sha256_hex;
use kiln_model::Model;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Directory (inside a run) that holds checkpoints.
pub const DIR: &str = "checkpoints";
const MODEL_FILE: &str = "model.bpk";
const OPTIM_FILE: &str = "optim.bpk";
const STATE_FILE: &str = "state.json";

/// The loop position and bookkeeping saved with each checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LoopState {
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// The next batch index within that epoch.
    pub batch: usize,
    /// Optimizer steps taken so far.
    pub global_step: u64,
    /// Sum of per-item training loss in the current epoch so far.
    pub epoch_loss_sum: f64,
    /// Correct training predictions in the current epoch so far.
    pub epoch_correct: u64,
    /// Training items seen in the current epoch so far.
    pub epoch_items: u64,
    /// Best value of the monitored metric so far, and its epoch (1-based).
    pub best: Option<(f64, usize)>,
    /// Epochs since the monitored metric last improved.
    pub epochs_without_improvement: usize,
    /// Per-epoch metrics so far.
    pub history: Vec<EpochRecord>,
    /// Training seconds so far (excluding time spent stopped).
    pub train_seconds: f64,
}

impl LoopState {
    /// Books a finished epoch into the history and moves to the start of the next one.
    pub fn start_next_epoch(&mut self, record: EpochRecord) {
        self.history.push(record);
        self.epoch += 1;
        self.batch = 0;
        self.epoch_loss_sum = 0.0;
        self.epoch_correct = 0;
        self.epoch_items = 0;
    }

    /// The metrics of the best epoch so far.
    #[must_use]
    pub fn best_record(&self) -> Option<&EpochRecord> {
        let (_, epoch) = self.best?;
        self.history.iter().find(|r| r.epoch == epoch)
    }
}

/// Metrics of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Validation loss.
    pub valid_loss: f64,
    /// Validation accuracy.
    pub valid_accuracy: f64,
    /// Training throughput.
    pub samples_per_sec: f64,
    /// Wall time of the epoch's training part.
    pub seconds: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    state: LoopState,
    model_sha256: String,
    optim_sha256: String,
}

/// A checkpoint read back from disk, verified.
pub struct Checkpoint {
    /// Where it was read from.
    pub dir: PathBuf,
    /// The loop position and bookkeeping.
    pub state: LoopState,
    /// The model weights.
    pub model: ModuleRecord,
    /// The optimizer state.
    pub optim: OptimizerRecord,
}

/// Writes a checkpoint of `model`, `optim` and `state` into `run_dir/checkpoints/`, then keeps
/// only the newest `keep` checkpoints.
///
/// # Errors
/// [`TrainError::Io`] naming the file and the OS error, or [`TrainError::Record`]; earlier
/// checkpoints are untouched and no partial checkpoint is left under a `step-` name.
pub fn save(
    run_dir: &Path,
    model: &Model,
    optim: &ModuleOptimizer,
    state: &LoopState,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    let root = run_dir.join(DIR);
    std::fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
    let name = format!("step-{:09}", state.global_step);
    let final_dir = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let result = write_files(&tmp, model, optim, state).and_then(|()| {
        // A checkpoint of the same step (saved again after a stop at an epoch's end) is moved
        // aside by one rename before the new one takes its name, so a crash in between leaves
        // whole checkpoints only; the old one is deleted once the new one is in place.
        let old = root.join(format!(".{name}.old"));
        if final_dir.exists() {
            let _ = std::fs::remove_dir_all(&old);
            kiln_fs::rename(&final_dir, &old).map_err(|e| TrainError::io(&final_dir, e))?;
        }
        kiln_fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
        kiln_fs::sync_dir(&root).map_err(|e| TrainError::io(&root, e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    prune(run_dir, keep.max(1));
    Ok(final_dir)
}

/// Writes the three files of a checkpoint into `dir`, each atomically and fsynced.
fn write_files(
    dir: &Path,
    model: &Model,
    optim: &ModuleOptimizer,
    state: &LoopState,
) -> Result<(), TrainError> {
    let record_err = |what: &'static str| {
        let path = dir.join(what);
        move |e: burn::store::RecordError| TrainError::Record {
            path,
            what,
            source: Box::new(e),
        }
    };
    let model_bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(record_err(MODEL_FILE))?
        .to_vec();
    let optim_bytes = optim
        .to_record()
        .into_bytes()
        .map_err(record_err(OPTIM_FILE))?
        .to_vec();
    let file = StateFile {
        state: state.clone(),
        model_sha256: sha256_hex(&model_bytes),
        optim_sha256: sha256_hex(&optim_bytes),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| TrainError::Record {
        path: dir.join(STATE_FILE),
        what: STATE_FILE,
        source: Box::new(e),
    })?;
    for (name, bytes) in [
        (MODEL_FILE, &model_bytes),
        (OPTIM_FILE, &optim_bytes),
        (STATE_FILE, &json),
    ] {
        let path = dir.join(name);
        kiln_fs::write_atomic(&path, bytes).map_err(|e| TrainError::io(&path, e))?;
    }
    Ok(())
}

/// Moves the checkpoints newer than `kept` out of the way (to hidden `.superseded-step-*`
/// names, never read again), so that a run resumed from an earlier checkpoint, because a newer
/// one was corrupt, is not pulled back to the newer ones by the next `--resume` or pruning.
///
/// # Errors
/// [`TrainError::Io`] when one cannot be renamed.
pub fn supersede_newer(run_dir: &Path, kept: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let mut moved = Vec::new();
    for dir in list(run_dir)? {
        if dir.file_name() > kept.file_name() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let aside = dir.with_file_name(format!(".superseded-{name}"));
            let _ = std::fs::remove_dir_all(&aside);
            kiln_fs::rename(&dir, &aside).map_err(|e| TrainError::io(&dir, e))?;
            moved.push(aside);
        }
    }
    Ok(moved)
}

/// Checkpoint directories of a run, oldest first.
///
/// # Errors
/// [`TrainError::Io`] when the directory cannot be listed.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let root = run_dir.join(DIR);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| TrainError::io(&root, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Removes all but the newest `keep` checkpoints of a run. Best effort: a checkpoint that
/// cannot be removed costs disk space, not correctness.
fn prune(run_dir: &Path, keep: usize) {
    let Ok(dirs) = list(run_dir) else {
        return;
    };
    let excess = dirs.len().saturating_sub(keep);
    for dir in &dirs[..excess] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Reads and verifies one checkpoint directory. Nothing is returned unless every file is
/// present and matches its recorded checksum.
///
/// # Errors
/// [`TrainError::Checkpoint`] saying what is wrong with it.
pub fn load(dir: &Path) -> Result<Checkpoint, TrainError> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| {
            TrainError::checkpoint(dir, format!("cannot read {name}"), Some(Box::new(e)))
        })
    };
    let file: StateFile = serde_json::from_slice(&read(STATE_FILE)?).map_err(|e| {
        TrainError::checkpoint(dir, format!("{STATE_FILE} is corrupt"), Some(Box::new(e)))
    })?;
    let read_checked = |name: &str, expected: &str| -> Result<Vec<u8>, TrainError> {
        let bytes = read(name)?;
        let found = sha256_hex(&bytes);
        if found == expected {
            Ok(bytes)
        } else {
            Err(TrainError::checkpoint(
                dir,
                format!("{name} is corrupt (sha256 {found}, expected {expected})"),
                None,
            ))
        }
    };
    let model_bytes = read_checked(MODEL_FILE, &file.model_sha256)?;
    let optim_bytes = read_checked(OPTIM_FILE, &file.optim_sha256)?;
    let unreadable = |name: &'static str| {
        move |e: burn::store::RecordError| {
            TrainError::checkpoint(dir, format!("{name} is unreadable"), Some(Box::new(e)))
        }
    };
    let model = ModuleRecord::from_bytes(Bytes::from_bytes_vec(model_bytes))
        .map_err(unreadable(MODEL_FILE))?;
    let optim = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(optim_bytes))
        .map_err(unreadable(OPTIM_FILE))?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state: file.state,
        model,
        optim,
    })
}

/// The newest checkpoint of a run, verified, or `None` when the run has none yet (it was
/// stopped before its first checkpoint). A corrupt newest checkpoint is an error (it is never
/// skipped silently); the message lists the earlier ones to resume from instead.
///
/// # Errors
/// [`TrainError::Checkpoint`] when the newest is corrupt.
pub fn load_latest(run_dir: &Path) -> Result<Option<Checkpoint>, TrainError> {
    let dirs = list(run_dir)?;
    let Some(newest) = dirs.last() else {
        return Ok(None);
    };
    load(newest).map(Some).map_err(|e| {
        let earlier: Vec<String> = dirs[..dirs.len() - 1]
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let hint = if earlier.is_empty() {
            "there is no earlier checkpoint; start a new run".to_string()
        } else {
            format!(
                "not loading it; resume from an earlier one with --checkpoint <dir>: {}",
                earlier.join(", ")
            )
        };
        TrainError::checkpoint(
            newest,
            format!("newest checkpoint is unusable; {hint}"),
            Some(Box::new(e)),
        )
    })
}
