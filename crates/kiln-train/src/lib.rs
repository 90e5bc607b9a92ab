//! Training for kiln: configs, run directories, the training loop, checkpoints and exact resume.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
mod error;
pub mod eval;
mod observer;
pub mod optimizer;
pub mod run;
pub mod runs;
pub mod schedule;
pub mod step;
pub mod sweep;
mod tracking;
mod trainer;

pub use config::TrainConfig;
pub use error::TrainError;
pub use eval::{EvalReport, evaluate};
pub use observer::{Observer, Resumed, Silent, StartInfo, StepProgress};
pub use run::RunDir;
pub use trainer::{Outcome, TrainOptions, TrainReport, train};
