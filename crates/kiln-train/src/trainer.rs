//! The training loop: forward, loss, backward and optimizer step per batch; validation,
//! tracking, artifacts and checkpoints per epoch; exact resume from any checkpoint.
//!
//! [`train`] drives a [`Trainer`] through its phases: `restore` (a checkpoint, or a fresh
//! start), `train_epoch` (the step loop with its mid-epoch checkpoints), `end_of_epoch`
//! (validation, tracking, the best artifact, the epoch checkpoint, early stopping) and
//! `finish` (the final artifact).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Int, Tensor};
use kiln_data::image::Fit;
use kiln_data::{DatasetFormat, HostBatch, Loader, LoaderOptions, SplitMix64};
use kiln_model::{Lineage, Manifest, Model, artifact};
use kiln_tensorboard::EventWriter;

use crate::checkpoint::{self, EpochRecord, LoopState};
use crate::config::{Monitor, TrainConfig};
use crate::data::{PreparedData, prepare};
use crate::error::TrainError;
use crate::eval::{EvalReport, evaluate};
use crate::observer::{Observer, Resumed, StartInfo, StepProgress};
use crate::run::{RunDir, now};
use crate::step::train_step;
use crate::{optimizer, schedule, tracking};

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
    /// Resume from the run's newest checkpoint (from the start when it has none yet).
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
/// Any [`TrainError`]; `run.json` then records the failure with its causes (where it can
/// still be written).
pub fn train(
    run: &mut RunDir,
    device: &Device,
    options: &TrainOptions,
    observer: &mut dyn Observer,
) -> Result<TrainReport, TrainError> {
    let result = Trainer::new(run, device, options, observer).and_then(Trainer::run);
    let (status, error) = match &result {
        Ok(report) => (report.outcome.status(), None),
        Err(e) => ("failed", Some(error_chain(e))),
    };
    let finished = run.finish(status, error);
    // A failure of training itself matters more than a failure to record it (on a full disk,
    // both happen).
    let report = result?;
    finished?;
    Ok(report)
}

/// An error and its causes on one line, as `run.json` records them.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

const DROPOUT_STREAM: u64 = 0x4452_4f50;

/// One training run in progress: the model, the optimizer, the loop position and where
/// everything is written.
struct Trainer<'a> {
    run: &'a mut RunDir,
    options: &'a TrainOptions,
    observer: &'a mut dyn Observer,
    config: TrainConfig,
    data: PreparedData,
    loader: Loader,
    /// The plain device, for validation.
    device: Device,
    /// The autodiff device the model trains on.
    device_ad: Device,
    model: Model,
    optim: ModuleOptimizer,
    loss_fn: CrossEntropyLoss,
    state: LoopState,
    events: EventWriter,
    steps_per_epoch: usize,
    total_steps: u64,
}

/// How the step loop of one epoch ended.
enum EpochEnd {
    /// Every batch ran: `items` trained in `seconds` of this session.
    Finished { items: usize, seconds: f64 },
    /// The run stops here (a checkpoint was saved).
    Stop(Outcome),
}

impl<'a> Trainer<'a> {
    /// Loads the data and builds the model, optimizer and event file of a fresh start.
    fn new(
        run: &'a mut RunDir,
        device: &Device,
        options: &'a TrainOptions,
        observer: &'a mut dyn Observer,
    ) -> Result<Self, TrainError> {
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
        let total_steps = (config.training.epochs * steps_per_epoch) as u64;
        let input = [1, data.train.height, data.train.width];

        let device_ad = device.clone().autodiff();
        device_ad.seed(seed);
        // burn draws each parameter lazily, on the device, at its first use: inside the first
        // training step, after that step's dropout seed. Every run of a build repeats those
        // draws exactly; another backend's generator draws other weights from the same seed.
        let model = config
            .model
            .init(input, config.data.num_classes, &device_ad);
        let optim = optimizer::build(&config.training.optimizer, config.training.grad_clip_norm);
        let events = EventWriter::create(&run.path).map_err(|e| TrainError::io(&run.path, e))?;
        Ok(Self {
            loss_fn: CrossEntropyLossConfig::new().init(&device_ad),
            run,
            options,
            observer,
            config,
            data,
            loader,
            device: device.clone(),
            device_ad,
            model,
            optim,
            state: LoopState::default(),
            events,
            steps_per_epoch,
            total_steps,
        })
    }

    fn run(mut self) -> Result<TrainReport, TrainError> {
        self.restore()?;
        let outcome = loop {
            if self.state.epoch >= self.config.training.epochs {
                break Outcome::Completed;
            }
            match self.train_epoch()? {
                EpochEnd::Stop(outcome) => break outcome,
                EpochEnd::Finished { items, seconds } => {
                    if self.end_of_epoch(items, seconds)? {
                        break Outcome::EarlyStopped;
                    }
                }
            }
        };
        self.finish(outcome)
    }

    /// Loads the checkpoint to resume from, if any, and opens the event stream.
    fn restore(&mut self) -> Result<(), TrainError> {
        let checkpoint = match (&self.options.checkpoint, self.options.resume) {
            (Some(dir), _) => {
                let ckpt = checkpoint::load(dir)?;
                for aside in checkpoint::supersede_newer(&self.run.path, dir)? {
                    tracing::warn!(moved = %aside.display(), "a checkpoint newer than the one resumed from was moved aside");
                }
                Some(ckpt)
            }
            (None, true) => checkpoint::load_latest(&self.run.path)?,
            (None, false) => None,
        };
        if let Some(ckpt) = checkpoint {
            self.model = self
                .model
                .clone()
                .try_load_record(ckpt.model)
                .map_err(|e| {
                    TrainError::checkpoint(
                        &ckpt.dir,
                        "weights do not fit the run's model",
                        Some(Box::new(e)),
                    )
                })?;
            // No step has run yet, so a freshly built optimizer takes the saved state.
            let training = &self.config.training;
            self.optim = optimizer::build(&training.optimizer, training.grad_clip_norm)
                .load_record(ckpt.optim);
            self.state = ckpt.state;
            self.observer.resumed(&Resumed {
                checkpoint: ckpt.dir.clone(),
                step: self.state.global_step,
                epoch: self.state.epoch + 1,
            });
            tracing::info!(checkpoint = %ckpt.dir.display(), step = self.state.global_step, "resuming");
            self.run
                .record
                .resumed
                .push((now(), self.state.global_step));
            self.run.save_record()?;
            let step = step_i64(self.state.global_step);
            self.events
                .session_start(step)
                .map_err(|e| TrainError::io(self.events.path(), e))?;
        } else {
            let hparams = tracking::hparams(&self.config);
            let events = &mut self.events;
            events
                .session_start(0)
                .and_then(|()| {
                    events.hparams(&hparams, &tracking::HPARAM_METRICS, &self.run.record.id)
                })
                .map_err(|e| TrainError::io(events.path(), e))?;
        }
        let info = StartInfo {
            run_dir: self.run.path.clone(),
            epochs: self.config.training.epochs,
            steps_per_epoch: self.steps_per_epoch,
            start_step: self.state.global_step,
            train_items: self.data.train.len(),
            valid_items: self.data.valid.len(),
            parameters: self.model.num_params(),
        };
        tracing::info!(
            run = %info.run_dir.display(), train_items = info.train_items,
            valid_items = info.valid_items, steps_per_epoch = info.steps_per_epoch,
            epochs = info.epochs, parameters = info.parameters, "training"
        );
        self.observer.started(&info);
        Ok(())
    }

    /// Runs the rest of the current epoch's batches, checkpointing where asked.
    fn train_epoch(&mut self) -> Result<EpochEnd, TrainError> {
        let clock = Instant::now();
        let mut items = 0usize;
        let mut interval = Interval::default();
        for batch in self.loader.epoch(self.state.epoch, self.state.batch) {
            if self.options.stop.load(Ordering::SeqCst) {
                interval.flush_into(&mut self.state);
                self.state.train_seconds += clock.elapsed().as_secs_f64();
                self.save_checkpoint(0.0)?;
                return Ok(EpochEnd::Stop(Outcome::Interrupted));
            }
            items += batch.len();
            self.step(&batch, &mut interval, items, clock)?;

            let step = self.state.global_step;
            let every = self.config.logging.checkpoint_every_steps;
            let stop_here = self.options.stop_after_step == Some(step);
            let periodic =
                every > 0 && step.is_multiple_of(every) && self.state.batch < self.steps_per_epoch;
            if periodic || stop_here {
                interval.flush_into(&mut self.state);
                self.save_checkpoint(clock.elapsed().as_secs_f64())?;
                self.events
                    .flush()
                    .map_err(|e| TrainError::io(self.events.path(), e))?;
            }
            if stop_here {
                self.state.train_seconds += clock.elapsed().as_secs_f64();
                return Ok(EpochEnd::Stop(Outcome::Stopped));
            }
        }
        interval.flush_into(&mut self.state);
        let seconds = clock.elapsed().as_secs_f64();
        self.state.train_seconds += seconds;
        Ok(EpochEnd::Finished { items, seconds })
    }

    /// One optimizer step, its logging on logging steps, and the observer's report.
    /// `items` were trained in this epoch since `clock` started, this batch included.
    fn step(
        &mut self,
        batch: &HostBatch,
        interval: &mut Interval,
        items: usize,
        clock: Instant,
    ) -> Result<(), TrainError> {
        let config = &self.config;
        let lr = schedule::learning_rate(
            &config.training.schedule,
            config.training.optimizer.lr,
            self.state.global_step,
            self.steps_per_epoch as u64,
            self.total_steps,
        );
        let mut dropout_seed = SplitMix64::derive(
            config.experiment.seed,
            &[DROPOUT_STREAM, self.state.global_step],
        );
        self.device_ad.seed(dropout_seed.next_u64());
        let (updated, loss, correct) = train_step(
            self.model.clone(),
            &mut self.optim,
            &self.loss_fn,
            batch,
            lr,
            &self.device_ad,
        );
        self.model = updated;
        interval.push(loss, correct, batch.len());
        self.state.global_step += 1;
        self.state.batch += 1;
        let samples_per_sec = items as f64 / clock.elapsed().as_secs_f64().max(1e-9);

        let (mut loss, mut accuracy) = (None, None);
        if self
            .state
            .global_step
            .is_multiple_of(config.logging.every_steps)
        {
            let (mean_loss, acc) = interval.flush_into(&mut self.state);
            let s = step_i64(self.state.global_step);
            let events = &mut self.events;
            events
                .scalar("train/loss", mean_loss, s)
                .and_then(|()| events.scalar("train/accuracy", acc, s))
                .and_then(|()| events.scalar("train/learning_rate", lr, s))
                .and_then(|()| events.scalar("train/samples_per_sec", samples_per_sec, s))
                .map_err(|e| TrainError::io(events.path(), e))?;
            (loss, accuracy) = (Some(mean_loss), Some(acc));
        }
        self.observer.step(&StepProgress {
            epoch: self.state.epoch + 1,
            epochs: config.training.epochs,
            batch: self.state.batch,
            batches: self.steps_per_epoch,
            global_step: self.state.global_step,
            total_steps: self.total_steps,
            samples_per_sec,
            loss,
            accuracy,
            lr,
        });
        Ok(())
    }

    /// Saves a checkpoint of the current position; `unbooked_seconds` of training in this
    /// epoch are counted in it without being added to the running state.
    fn save_checkpoint(&self, unbooked_seconds: f64) -> Result<PathBuf, TrainError> {
        let mut state = self.state.clone();
        state.train_seconds += unbooked_seconds;
        checkpoint::save(
            &self.run.path,
            &self.model,
            &self.optim,
            &state,
            self.config.logging.keep_checkpoints,
        )
    }

    /// Validates the finished epoch, logs it, keeps the best artifact, checkpoints, and says
    /// whether early stopping ends the run.
    fn end_of_epoch(&mut self, items: usize, seconds: f64) -> Result<bool, TrainError> {
        self.observer.validating(self.state.epoch + 1);
        let inference = self.model.valid();
        let report = evaluate(
            &inference,
            &self.data.valid,
            &self.data.normalization.table(),
            &self.data.info.class_names,
            1000,
            &self.device,
        );
        let seen = self.state.epoch_items.max(1) as f64;
        let record = EpochRecord {
            epoch: self.state.epoch + 1,
            train_loss: self.state.epoch_loss_sum / seen,
            train_accuracy: self.state.epoch_correct as f64 / seen,
            valid_loss: report.loss,
            valid_accuracy: report.accuracy,
            samples_per_sec: items as f64 / seconds.max(1e-9),
            seconds,
        };
        self.log_epoch(&record, &inference, &report)?;
        self.observer.epoch(&record);

        let value = match self.config.training.monitor {
            Monitor::ValidAccuracy => record.valid_accuracy,
            Monitor::ValidLoss => -record.valid_loss,
        };
        let improved = self.state.best.is_none_or(|(best, _)| value > best);
        self.state.start_next_epoch(record.clone());
        if improved {
            self.state.best = Some((value, record.epoch));
            self.state.epochs_without_improvement = 0;
            self.save_artifact("best", &inference, &record)?;
        } else {
            self.state.epochs_without_improvement += 1;
        }
        self.save_checkpoint(0.0)?;
        self.run.record.final_metrics = metrics_of(&record);
        if let Some(best) = self.state.best_record() {
            self.run.record.best_metrics = metrics_of(best);
        }
        self.run.save_record()?;

        let patience = self.config.training.early_stopping_patience;
        let stop = patience > 0
            && self.state.epochs_without_improvement >= patience
            && self.state.epoch < self.config.training.epochs;
        if stop {
            self.observer.early_stopped(patience);
        }
        Ok(stop)
    }

    /// Writes an epoch's scalars, histograms and misclassified images.
    fn log_epoch(
        &mut self,
        record: &EpochRecord,
        inference: &Model,
        report: &EvalReport,
    ) -> Result<(), TrainError> {
        let s = step_i64(self.state.global_step);
        let logging = &self.config.logging;
        let valid = &self.data.valid;
        let events = &mut self.events;
        let mut write = || -> std::io::Result<()> {
            events.scalar("epoch/train_loss", record.train_loss, s)?;
            events.scalar("epoch/train_accuracy", record.train_accuracy, s)?;
            events.scalar("epoch/samples_per_sec", record.samples_per_sec, s)?;
            events.scalar("valid/loss", record.valid_loss, s)?;
            events.scalar("valid/accuracy", record.valid_accuracy, s)?;
            if logging.histograms {
                tracking::weight_histograms(events, inference, s)?;
            }
            let wrong = report.misclassified(&valid.labels);
            if logging.error_images
                && let Some((pixels, h, w)) = tracking::image_grid(valid, &wrong, 4, 8)
            {
                events.gray_image("valid/misclassified", &pixels, h, w, s)?;
            }
            events.flush()
        };
        write().map_err(|e| TrainError::io(self.events.path(), e))?;
        tracing::info!(
            epoch = record.epoch,
            train_loss = record.train_loss,
            train_accuracy = record.train_accuracy,
            valid_loss = record.valid_loss,
            valid_accuracy = record.valid_accuracy,
            samples_per_sec = record.samples_per_sec,
            "epoch finished"
        );
        Ok(())
    }

    /// Writes the final artifact of a run that trained to its end, and closes the event stream.
    fn finish(mut self, outcome: Outcome) -> Result<TrainReport, TrainError> {
        let mut final_artifact = None;
        if matches!(outcome, Outcome::Completed | Outcome::EarlyStopped)
            && let Some(last) = self.state.history.last().cloned()
        {
            final_artifact = Some(self.save_artifact("final", &self.model.valid(), &last)?);
            self.events
                .hparams_end(true)
                .map_err(|e| TrainError::io(self.events.path(), e))?;
        }
        self.events
            .flush()
            .map_err(|e| TrainError::io(self.events.path(), e))?;
        Ok(TrainReport {
            outcome,
            global_step: self.state.global_step,
            history: self.state.history,
            final_artifact,
        })
    }

    /// Writes `model` as the run's artifact `artifacts/<which>`.
    fn save_artifact(
        &self,
        which: &str,
        model: &Model,
        record: &EpochRecord,
    ) -> Result<PathBuf, TrainError> {
        let dir = self.run.path.join("artifacts").join(which);
        let (run, data) = (&self.run, &self.data);
        let manifest = Manifest {
            format: artifact::FORMAT.into(),
            format_version: artifact::FORMAT_VERSION,
            name: run.config.experiment.name.clone(),
            version: format!("{}-e{}", run.record.id, record.epoch),
            architecture: run.config.model.clone(),
            input_shape: [1, data.train.height, data.train.width],
            normalization: data.normalization,
            // The rule the training images went through: the folder dataset resizes; IDX
            // sets are MNIST-style digits, which photos reach by the MNIST fit.
            fit: Some(match run.config.data.format {
                DatasetFormat::Folder => Fit::Resize,
                DatasetFormat::Idx => Fit::MnistFit,
            }),
            class_names: data.info.class_names.clone(),
            weights_file: String::new(),
            weights_sha256: String::new(),
            lineage: Lineage {
                dataset: data.info.name.clone(),
                dataset_files: data.verified.clone(),
                run_dir: run.path.display().to_string(),
                epoch: record.epoch,
                step: self.state.global_step,
                git_commit: run.record.git_commit.clone(),
                metrics: metrics_of(record),
                created: now(),
            },
        };
        artifact::save(&dir, model, manifest)?;
        Ok(dir)
    }
}

fn step_i64(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
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

fn metrics_of(record: &EpochRecord) -> BTreeMap<String, f64> {
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

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn error_chain_keeps_every_cause() {
        let io = std::io::Error::other("No space left on device");
        let err = crate::TrainError::io("/runs/x/run.json", io);
        assert_eq!(
            error_chain(&err),
            "/runs/x/run.json: No space left on device"
        );
    }
}
