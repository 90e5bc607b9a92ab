//! Training progress for people: a progress bar on a terminal, plain periodic lines otherwise
//! (CI logs, files, pipes).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kiln_train::checkpoint::EpochRecord;
use kiln_train::{Observer, Resumed, StartInfo, StepProgress};

/// Draws progress on standard error.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    last_line: Instant,
    line_every: Duration,
    last_loss: Option<(f64, f64)>,
}

impl Progress {
    /// A bar when standard error is a terminal (and `plain` is false), lines otherwise.
    pub(crate) fn new(plain: bool) -> Self {
        Self {
            bar: None,
            last_line: Instant::now(),
            line_every: Duration::from_secs(10),
            last_loss: None,
        }
        .with_bar(!plain && std::io::stderr().is_terminal())
    }

    fn with_bar(mut self, bar: bool) -> Self {
        if bar {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>11} [{bar:30.cyan/blue}] {pos}/{len} {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            self.bar = Some(b);
        }
        self
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Observer for Progress {
    fn started(&mut self, info: &StartInfo) {
        self.line(&format!(
            "run {}: {} training / {} validation items, {} parameters, {} epochs x {} steps",
            info.run_dir.display(),
            info.train_items,
            info.valid_items,
            info.parameters,
            info.epochs,
            info.steps_per_epoch
        ));
        if let Some(b) = &self.bar {
            b.set_length(info.steps_per_epoch as u64);
        }
    }

    fn step(&mut self, p: &StepProgress) {
        if let (Some(loss), Some(acc)) = (p.loss, p.accuracy) {
            self.last_loss = Some((loss, acc));
        }
        let loss = self
            .last_loss
            .map_or_else(String::new, |(l, a)| format!("loss {l:.4} acc {a:.3} "));
        match &self.bar {
            Some(b) => {
                b.set_prefix(format!("epoch {}/{}", p.epoch, p.epochs));
                b.set_position(p.batch as u64);
                b.set_message(format!("{loss}{:.0} samples/s", p.samples_per_sec));
            }
            None => {
                if self.last_line.elapsed() >= self.line_every || p.batch == p.batches {
                    self.last_line = Instant::now();
                    eprintln!(
                        "epoch {}/{} step {}/{} {loss}lr {:.2e} {:.0} samples/s",
                        p.epoch, p.epochs, p.batch, p.batches, p.lr, p.samples_per_sec
                    );
                }
            }
        }
    }

    fn epoch(&mut self, r: &EpochRecord) {
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
        self.line(&format!(
            "epoch {:>3}: train loss {:.4} acc {:.4} | valid loss {:.4} acc {:.4} | {:.0} samples/s, {:.1} s",
            r.epoch, r.train_loss, r.train_accuracy, r.valid_loss, r.valid_accuracy, r.samples_per_sec, r.seconds
        ));
    }

    fn resumed(&mut self, from: &Resumed) {
        self.line(&format!(
            "resuming from {} (step {}, epoch {})",
            from.checkpoint.display(),
            from.step,
            from.epoch
        ));
    }

    fn validating(&mut self, epoch: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!("validating epoch {epoch}"));
        }
    }

    fn early_stopped(&mut self, patience: usize) {
        self.line(&format!(
            "early stopping: no improvement for {patience} epochs"
        ));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
