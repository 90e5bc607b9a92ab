//! The training loop: forward, loss, backward and optimizer step per batch; validation,
//! tracking, artifacts and checkpoints per epoch; exact resume from any checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor};
use kiln_data::{Loader, LoaderOptions, SplitMix64};
use kiln_model::{Lineage, Manifest, Model, artifact};
use kiln_tensorboard::EventWriter;

use crate::checkpoint::{self, EpochRecord, LoopState};
use crate::config::Monitor;
use crate::data::{PreparedData, prepare};
use crate::error::TrainError;
use crate::eval::evaluate;
use crate::run::{RunDir, now};
use crate::step::train_step;
use crate::{optimizer, schedule, tracking};

/// Receives progress; the command line draws it, tests ignore it.
pub trait Observer {
    /// Training is about to start (or resume).
    fn started(&mut self, _info: &StartInfo) {}
    /// One optimizer step finished. `loss` and `accuracy` are set on logging steps only (reading
    /// them waits for the device).
    fn step(&mut self, _progress: &StepProgress) {}
    /// An epoch finished and was validated.
    fn epoch(&mut self, _record: &EpochRecord) {}
    /// Something worth a line of its own.
    fn message(&mut self, _text: &str) {}
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

/// How a call to [`train`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All epochs ran.
    Completed,
    /// Early stopping ended it.
    EarlyStopped,
    /// `stop_after_step` was reached; a checkpoint was saved.
    Stopped,
    /// The stop flag was raised (Ctrl-C); a checkpoint was saved.
    Interrupted,
}

impl Outcome {
    /// The status recorded in `run.json`.
    #[must_use]
    pub fn status(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::EarlyStopped => "early_stopped",
            Self::Stopped => "stopped",
            Self::Interrupted => "interrupted",
        }
    }
}

/// Knobs that are about this invocation rather than the experiment.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Resume from this checkpoint directory instead of the run's newest one.
    pub checkpoint: Option<PathBuf>,
    /// Resume from the run's newest checkpoint.
    pub resume: bool,
    /// Save a checkpoint and stop once this many steps have been taken.
    pub stop_after_step: Option<u64>,
    /// Raised (by a Ctrl-C handler) to save a checkpoint and stop at the next step boundary.
    pub stop: Arc<AtomicBool>,
}

/// What [`train`] returns.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// How it ended.
    pub outcome: Outcome,
    /// Steps taken in total.
    pub global_step: u64,
    /// Per-epoch metrics (the whole run, resumed parts included).
    pub history: Vec<EpochRecord>,
    /// The final model artifact, when training finished.
    pub final_artifact: Option<PathBuf>,
}

/// Trains the run in `run` on `device` (the plain device; autodiff is added here).
///
/// # Errors
/// Any [`TrainError`]; `run.json` then records the failure.
pub fn train(
    run: &mut RunDir,
    device: &Device,
    options: &TrainOptions,
    observer: &mut dyn Observer,
) -> Result<TrainReport, TrainError> {
    let result = train_inner(run, device, options, observer);
    let (status, error) = match &result {
        Ok(report) => (report.outcome.status(), None),
        Err(e) => ("failed", Some(e.to_string())),
    };
    run.finish(status, error)?;
    result
}

const DROPOUT_STREAM: u64 = 0x4452_4f50;

fn train_inner(
    run: &mut RunDir,
    device: &Device,
    options: &TrainOptions,
    observer: &mut dyn Observer,
) -> Result<TrainReport, TrainError> {
    let config = run.config.clone();
    let data = prepare(&config.data)?;
    let seed = config.experiment.seed;
    let loader = Loader::new(
        Arc::clone(&data.train),
        data.normalization.table(),
        LoaderOptions {
            batch_size: config.training.batch_size,
            shuffle: true,
            seed,
            workers: config.data.workers,
            max_shift: config.data.augment_shift,
        },
    );
    let steps_per_epoch = loader.batches_per_epoch();
    let epochs = config.training.epochs;
    let total_steps = (epochs * steps_per_epoch) as u64;
    let input = [1, data.train.height, data.train.width];
    let classes = config.data.num_classes;

    let device_ad = device.clone().autodiff();
    device_ad.seed(seed);
    // Parameters initialise lazily; materialise them now so their random draws happen here,
    // not inside the first training step after its dropout seed.
    let mut model = config.model.init(input, classes, &device_ad).materialize();
    let mut optim = optimizer::build(&config.training.optimizer, config.training.grad_clip_norm);
    let mut state = LoopState::default();
    let mut events = EventWriter::create(&run.path).map_err(|e| TrainError::io(&run.path, e))?;

    let checkpoint = match (&options.checkpoint, options.resume) {
        (Some(dir), _) => Some(checkpoint::load(dir)?),
        (None, true) => Some(checkpoint::load_latest(&run.path)?),
        (None, false) => None,
    };
    if let Some(ckpt) = checkpoint {
        model = model
            .try_load_record(ckpt.model)
            .map_err(|e| TrainError::Checkpoint {
                path: ckpt.dir.clone(),
                message: format!("weights do not fit the run's model: {e}"),
            })?;
        optim = optim.load_record(ckpt.optim);
        state = ckpt.state;
        observer.message(&format!(
            "resuming from {} (step {}, epoch {})",
            ckpt.dir.display(),
            state.global_step,
            state.epoch + 1
        ));
        tracing::info!(checkpoint = %ckpt.dir.display(), step = state.global_step, "resuming");
        run.record.resumed.push((now(), state.global_step));
        run.save_record()?;
        events
            .session_start(i64::try_from(state.global_step).unwrap_or(i64::MAX))
            .map_err(|e| TrainError::io(events.path(), e))?;
    } else {
        events
            .session_start(0)
            .map_err(|e| TrainError::io(events.path(), e))?;
        events
            .hparams(
                &tracking::hparams(&config),
                &tracking::HPARAM_METRICS,
                &run.record.id,
            )
            .map_err(|e| TrainError::io(events.path(), e))?;
    }

    observer.started(&StartInfo {
        run_dir: run.path.clone(),
        epochs,
        steps_per_epoch,
        start_step: state.global_step,
        train_items: data.train.len(),
        valid_items: data.valid.len(),
        parameters: model.num_params(),
    });
    tracing::info!(
        run = %run.path.display(), train_items = data.train.len(), valid_items = data.valid.len(),
        steps_per_epoch, epochs, parameters = model.num_params(), "training"
    );

    let loss_fn = CrossEntropyLossConfig::new().init(&device_ad);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| TrainError::io(path, e)
    };
    let mut outcome = Outcome::Completed;
    let keep = config.logging.keep_checkpoints;

    'epochs: while state.epoch < epochs {
        let epoch_start = Instant::now();
        let mut session_items = 0usize;
        let mut interval = Interval::default();
        for batch in loader.epoch(state.epoch, state.batch) {
            if options.stop.load(Ordering::SeqCst) {
                interval.flush_into(&mut state);
                state.train_seconds += epoch_start.elapsed().as_secs_f64();
                checkpoint::save(&run.path, &model, &optim, &state, keep)?;
                outcome = Outcome::Interrupted;
                break 'epochs;
            }
            let step = state.global_step;
            let lr = schedule::learning_rate(
                &config.training.schedule,
                config.training.optimizer.lr,
                step,
                steps_per_epoch as u64,
                total_steps,
            );
            device_ad.seed(SplitMix64::derive(seed, &[DROPOUT_STREAM, step]).next_u64());
            let n = batch.len();
            let (updated, loss, correct) =
                train_step(model, &mut optim, &loss_fn, &batch, lr, &device_ad);
            model = updated;
            interval.push(loss, correct, n);
            state.global_step += 1;
            state.batch += 1;
            session_items += n;

            let samples_per_sec =
                session_items as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            let is_log_step = state.global_step % config.logging.every_steps == 0;
            let (mut loss_value, mut accuracy) = (None, None);
            if is_log_step {
                let (mean_loss, acc) = interval.flush_into(&mut state);
                let s = i64::try_from(state.global_step).unwrap_or(i64::MAX);
                (|| {
                    events.scalar("train/loss", mean_loss, s)?;
                    events.scalar("train/accuracy", acc, s)?;
                    events.scalar("train/learning_rate", lr, s)?;
                    events.scalar("train/samples_per_sec", samples_per_sec, s)
                })()
                .map_err(io(events.path()))?;
                loss_value = Some(mean_loss);
                accuracy = Some(acc);
            }
            observer.step(&StepProgress {
                epoch: state.epoch + 1,
                epochs,
                batch: state.batch,
                batches: steps_per_epoch,
                global_step: state.global_step,
                total_steps,
                samples_per_sec,
                loss: loss_value,
                accuracy,
                lr,
            });
            let every = config.logging.checkpoint_every_steps;
            let stop_here = options.stop_after_step == Some(state.global_step);
            if (every > 0 && state.global_step % every == 0 && state.batch < steps_per_epoch)
                || stop_here
            {
                interval.flush_into(&mut state);
                let elapsed = epoch_start.elapsed().as_secs_f64();
                state.train_seconds += elapsed;
                checkpoint::save(&run.path, &model, &optim, &state, keep)?;
                state.train_seconds -= elapsed;
                events.flush().map_err(io(events.path()))?;
            }
            if stop_here {
                state.train_seconds += epoch_start.elapsed().as_secs_f64();
                outcome = Outcome::Stopped;
                break 'epochs;
            }
        }
        interval.flush_into(&mut state);
        let seconds = epoch_start.elapsed().as_secs_f64();
        state.train_seconds += seconds;

        // Validation and tracking.
        observer.message(&format!("validating epoch {}", state.epoch + 1));
        let inference = model.valid();
        let table = data.normalization.table();
        let report = evaluate(
            &inference,
            &data.valid,
            &table,
            &data.info.class_names,
            1000,
            device,
        );
        let items = state.epoch_items.max(1) as f64;
        let record = EpochRecord {
            epoch: state.epoch + 1,
            train_loss: state.epoch_loss_sum / items,
            train_accuracy: state.epoch_correct as f64 / items,
            valid_loss: report.loss,
            valid_accuracy: report.accuracy,
            samples_per_sec: session_items as f64 / seconds.max(1e-9),
            seconds,
        };
        let s = i64::try_from(state.global_step).unwrap_or(i64::MAX);
        (|| {
            events.scalar("epoch/train_loss", record.train_loss, s)?;
            events.scalar("epoch/train_accuracy", record.train_accuracy, s)?;
            events.scalar("epoch/samples_per_sec", record.samples_per_sec, s)?;
            events.scalar("valid/loss", record.valid_loss, s)?;
            events.scalar("valid/accuracy", record.valid_accuracy, s)?;
            if config.logging.histograms {
                tracking::weight_histograms(&mut events, &inference, s)?;
            }
            if config.logging.error_images
                && let Some((pixels, h, w)) = tracking::image_grid(
                    &data.valid,
                    &report.misclassified(&data.valid.labels),
                    4,
                    8,
                )
            {
                events.gray_image("valid/misclassified", &pixels, h, w, s)?;
            }
            events.flush()
        })()
        .map_err(io(events.path()))?;
        tracing::info!(
            epoch = record.epoch,
            train_loss = record.train_loss,
            train_accuracy = record.train_accuracy,
            valid_loss = record.valid_loss,
            valid_accuracy = record.valid_accuracy,
            samples_per_sec = record.samples_per_sec,
            "epoch finished"
        );
        observer.epoch(&record);

        let value = match config.training.monitor {
            Monitor::ValidAccuracy => record.valid_accuracy,
            Monitor::ValidLoss => -record.valid_loss,
        };
        let improved = state.best.is_none_or(|(best, _)| value > best);
        state.history.push(record.clone());
        state.epoch += 1;
        state.batch = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_correct = 0;
        state.epoch_items = 0;
        if improved {
            state.best = Some((value, record.epoch));
            state.epochs_without_improvement = 0;
            save_artifact(
                &run.path.join("artifacts/best"),
                run,
                &data,
                &inference,
                &state,
                &record,
            )?;
        } else {
            state.epochs_without_improvement += 1;
        }
        checkpoint::save(&run.path, &model, &optim, &state, keep)?;
        run.record.final_metrics = metrics_of(&record);
        if let Some((_, best_epoch)) = state.best
            && let Some(best) = state.history.iter().find(|r| r.epoch == best_epoch)
        {
            run.record.best_metrics = metrics_of(best);
        }
        run.save_record()?;
        let patience = config.training.early_stopping_patience;
        if patience > 0 && state.epochs_without_improvement >= patience && state.epoch < epochs {
            observer.message(&format!(
                "early stopping: no improvement for {patience} epochs"
            ));
            outcome = Outcome::EarlyStopped;
            break;
        }
    }

    let mut final_artifact = None;
    if matches!(outcome, Outcome::Completed | Outcome::EarlyStopped)
        && let Some(last) = state.history.last()
    {
        let dir = run.path.join("artifacts/final");
        save_artifact(&dir, run, &data, &model.valid(), &state, last)?;
        final_artifact = Some(dir);
        events.hparams_end(true).map_err(io(events.path()))?;
    }
    events.flush().map_err(io(events.path()))?;
    Ok(TrainReport {
        outcome,
        global_step: state.global_step,
        history: state.history,
        final_artifact,
    })
}

/// Loss and accuracy accumulated on the device between logging steps, so ordinary steps never
/// wait for the device to report numbers.
#[derive(Default)]
struct Interval {
    losses: Vec<(Tensor<1>, usize)>,
    correct: Vec<Tensor<1, Int>>,
}

impl Interval {
    fn push(&mut self, mean_loss: Tensor<1>, correct: Tensor<1, Int>, items: usize) {
        self.losses.push((mean_loss, items));
        self.correct.push(correct);
    }

    /// Adds the interval into the epoch sums and returns its mean loss and accuracy.
    fn flush_into(&mut self, state: &mut LoopState) -> (f64, f64) {
        if self.losses.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let items: usize = self.losses.iter().map(|(_, n)| n).sum();
        let mut loss_sum = 0.0;
        for (loss, n) in self.losses.drain(..) {
            let batch_sum = loss.into_data().iter::<f64>().next().unwrap_or(f64::NAN) * n as f64;
            loss_sum += batch_sum;
            // Added batch by batch so the epoch sum does not depend on where intervals (or a
            // stop and resume) split the epoch.
            state.epoch_loss_sum += batch_sum;
        }
        let correct: u64 = self
            .correct
            .drain(..)
            .map(|c| {
                c.into_data()
                    .iter::<i64>()
                    .next()
                    .map_or(0, |v| u64::try_from(v).unwrap_or(0))
            })
            .sum();
        state.epoch_correct += correct;
        state.epoch_items += items as u64;
        (loss_sum / items as f64, correct as f64 / items as f64)
    }
}

fn metrics_of(record: &EpochRecord) -> std::collections::BTreeMap<String, f64> {
    [
        ("epoch", record.epoch as f64),
        ("train_loss", record.train_loss),
        ("train_accuracy", record.train_accuracy),
        ("valid_loss", record.valid_loss),
        ("valid_accuracy", record.valid_accuracy),
        ("samples_per_sec", record.samples_per_sec),
        ("epoch_seconds", record.seconds),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn save_artifact(
    dir: &Path,
    run: &RunDir,
    data: &PreparedData,
    model: &Model,
    state: &LoopState,
    record: &EpochRecord,
) -> Result<(), TrainError> {
    let manifest = Manifest {
        format: artifact::FORMAT.into(),
        format_version: artifact::FORMAT_VERSION,
        name: run.config.experiment.name.clone(),
        version: format!("{}-e{}", run.record.id, record.epoch),
        architecture: run.config.model.clone(),
        input_shape: [1, data.train.height, data.train.width],
        normalization: data.normalization,
        class_names: data.info.class_names.clone(),
        weights_file: String::new(),
        weights_sha256: String::new(),
        lineage: Lineage {
            dataset: data.info.name.clone(),
            dataset_files: data.verified.clone(),
            run_dir: run.path.display().to_string(),
            epoch: record.epoch,
            step: state.global_step,
            git_commit: run.record.git_commit.clone(),
            metrics: metrics_of(record),
            created: now(),
        },
    };
    artifact::save(dir, model, manifest)?;
    Ok(())
}
