//! Dynamic batching: requests queue here and inference worker threads (never the async
//! executor) coalesce them into one forward pass.
//!
//! A free worker takes everything queued at once and runs it: requests that arrive during a
//! forward pass form the next batch, so batches grow with load while a lone request on an idle
//! server waits for nothing. Under concurrency a batch may also wait a little for company,
//! as `batching.wait` says (see [`Wait`]).
//!
//! A job carries the model it was admitted under, so a reload never mixes models in a batch
//! and a request that started on the old model finishes on it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::{BatchingConfig, Wait};
use crate::metrics::Metrics;
use crate::model::LoadedModel;

/// Why a job got no probabilities.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The queue is full.
    #[error("the inference queue is full")]
    QueueFull,
    /// The deadline passed before a worker reached the job.
    #[error("the request's deadline passed while it waited for inference")]
    DeadlineExceeded,
    /// The forward pass failed (a bug; logged).
    #[error("inference failed: {0}")]
    Failed(String),
    /// The workers have stopped.
    #[error("the server is shutting down")]
    Closed,
}

/// Probabilities for a job's images, `n * classes` values.
#[derive(Debug)]
pub struct BatchOutput {
    /// `n * classes` probabilities, row by row.
    pub probabilities: Vec<f32>,
}

struct Job {
    model: Arc<LoadedModel>,
    inputs: Vec<f32>,
    n: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<BatchOutput, BatchError>>,
}

/// The queue in front of the inference workers.
pub struct Batcher {
    tx: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("depth", &self.depth.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts `config.workers` inference threads. They stop when the batcher is dropped and the
    /// queue has drained.
    #[must_use]
    pub fn start(config: &BatchingConfig, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = sync_channel::<Job>(config.queue_capacity);
        let rx = Arc::new(Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        for i in 0..config.workers {
            let worker = Worker {
                rx: Arc::clone(&rx),
                depth: Arc::clone(&depth),
                metrics: Arc::clone(&metrics),
                max_batch: config.max_batch_size,
                wait: config.wait,
                max_delay: config.max_delay(),
                carry: None,
                last_jobs: 0,
                last_pass: Duration::ZERO,
            };
            std::thread::Builder::new()
                .name(format!("kiln-infer-{i}"))
                .spawn(move || worker.run())
                .expect("spawn inference worker");
        }
        Self { tx, depth }
    }

    /// Queues `n` preprocessed images (`n * model.pixels()` values) for `model` and waits for their
    /// probabilities, at most until `deadline`.
    ///
    /// # Errors
    /// [`BatchError::QueueFull`] at once when the queue is full; the others as they happen.
    pub async fn infer(
        &self,
        model: Arc<LoadedModel>,
        inputs: Vec<f32>,
        n: usize,
        deadline: Instant,
    ) -> Result<BatchOutput, BatchError> {
        debug_assert_eq!(inputs.len(), n * model.pixels());
        let (reply, answer) = oneshot::channel();
        let job = Job {
            model,
            inputs,
            n,
            deadline,
            reply,
        };
        self.depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(BatchError::QueueFull);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(BatchError::Closed);
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BatchError::Closed),
            Err(_) => Err(BatchError::DeadlineExceeded),
        }
    }

    /// Jobs waiting for a worker now.
    #[must_use]
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

struct Worker {
    rx: Arc<Mutex<Receiver<Job>>>,
    depth: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    max_batch: usize,
    wait: Wait,
    max_delay: Duration,
    /// A job taken from the queue that did not fit the last batch (other model, or too big).
    carry: Option<Job>,
    /// Jobs in the last batch, and how long its forward pass took: what [`Wait::Adaptive`]
    /// decides by.
    last_jobs: usize,
    last_pass: Duration,
}

impl Worker {
    fn run(mut self) {
        while let Some(batch) = self.collect() {
            self.last_jobs = batch.len();
            let started = Instant::now();
            // A panic anywhere in a batch fails that batch's requests (their reply channels
            // drop and each answers 503), never the worker.
            let metrics = &self.metrics;
            if std::panic::catch_unwind(AssertUnwindSafe(|| run_batch(batch, metrics))).is_err() {
                tracing::error!("inference batch panicked; its requests were failed");
            }
            self.last_pass = started.elapsed();
        }
    }

    fn take(&self, job: Job) -> Job {
        self.depth.fetch_sub(1, Ordering::Relaxed);
        job
    }

    /// Waits for a first job, then adds every job already queued, up to `max_batch` images;
    /// then keeps gathering, for as long as [`Wait`] allows (see [`Self::linger`]), until the
    /// batch is full. `None` once the queue is closed and empty.
    ///
    /// Jobs that arrive while this worker runs a batch are queued when it comes back, so under
    /// load batches fill without any waiting, and on an idle server a request runs at once.
    fn collect(&mut self) -> Option<Vec<Job>> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = if let Some(job) = self.carry.take() {
            job
        } else {
            let job = rx.recv().ok()?;
            self.take(job)
        };
        let taken = Instant::now();
        let mut batch = Batch::new(first, self.max_batch);
        // Everything queued now joins at once.
        while !batch.full() {
            let Ok(job) = rx.try_recv() else { break };
            let job = self.take(job);
            if let Err(job) = batch.add(job) {
                self.carry = Some(job);
                break;
            }
        }
        let window = taken + self.linger(batch.jobs.len());
        while self.carry.is_none() && !batch.full() {
            let left = window.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let job = match rx.recv_timeout(left) {
                Ok(job) => self.take(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            };
            if let Err(job) = batch.add(job) {
                self.carry = Some(job);
            }
        }
        drop(rx);
        Some(batch.jobs)
    }

    /// How long a batch that starts with `queued` jobs may wait for more.
    ///
    /// [`Wait::Adaptive`] waits only under concurrency (this batch or the last one held more
    /// than one job; a lone client never waits) and at most half the last forward pass, so it
    /// adds little to a cheap model's latency (an MLP pass is tens of microseconds) while an
    /// expensive one (a CNN) gathers the clients it has just answered into one larger pass.
    fn linger(&self, queued: usize) -> Duration {
        match self.wait {
            Wait::Always => self.max_delay,
            Wait::Adaptive if queued > 1 || self.last_jobs > 1 => {
                self.max_delay.min(self.last_pass / 2)
            }
            Wait::Adaptive | Wait::Never => Duration::ZERO,
        }
    }
}

/// Jobs for one forward pass: one model, at most `max` images (or one job larger than that).
struct Batch {
    jobs: Vec<Job>,
    images: usize,
    max: usize,
}

impl Batch {
    fn new(first: Job, max: usize) -> Self {
        Self {
            images: first.n,
            jobs: vec![first],
            max,
        }
    }

    fn full(&self) -> bool {
        self.images >= self.max
    }

    /// Adds `job`, or gives it back when it is for another model or would overfill the batch.
    fn add(&mut self, job: Job) -> Result<(), Job> {
        if !Arc::ptr_eq(&job.model, &self.jobs[0].model) || self.images + job.n > self.max {
            return Err(job);
        }
        self.images += job.n;
        self.jobs.push(job);
        Ok(())
    }
}

fn run_batch(batch: Vec<Job>, metrics: &Metrics) {
    let now = Instant::now();
    let mut live = Vec::with_capacity(batch.len());
    for job in batch {
        if job.reply.is_closed() {
            continue; // the client gave up; do not spend a forward pass on it
        }
        if job.deadline <= now {
            let _ = job.reply.send(Err(BatchError::DeadlineExceeded));
            continue;
        }
        live.push(job);
    }
    if live.is_empty() {
        return;
    }
    let n: usize = live.iter().map(|j| j.n).sum();
    let model = Arc::clone(&live[0].model);
    let mut inputs = Vec::with_capacity(n * model.pixels());
    for job in &mut live {
        inputs.append(&mut job.inputs);
    }
    metrics.observe_batch(n);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| model.probabilities(inputs, n)));
    match result {
        Ok(probabilities) => {
            let classes = model.classes();
            let mut offset = 0;
            for job in live {
                let end = offset + job.n * classes;
                let _ = job.reply.send(Ok(BatchOutput {
                    probabilities: probabilities[offset..end].to_vec(),
                }));
                offset = end;
            }
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "panic in the forward pass".into());
            tracing::error!(%message, "inference failed");
            for job in live {
                let _ = job.reply.send(Err(BatchError::Failed(message.clone())));
            }
        }
    }
}
