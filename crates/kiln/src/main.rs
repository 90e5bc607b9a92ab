//! The kiln command line: train, evaluate, fetch data and serve small vision models.

mod commands;
mod device;
mod output;
mod probe;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tensors are allocated and freed by the megabyte every step; glibc's malloc hands such blocks
/// back to the kernel at once, so every step page-faults them in again (a third of a CNN step
/// here). mimalloc keeps them for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kiln: train, track and serve small vision models on burn.
#[derive(Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config into a fresh run directory (or resume one).
    Train(commands::train::TrainArgs),
    /// Evaluate a run or model artifact: accuracy, per-class accuracy, confusion matrix.
    Eval(commands::eval::EvalArgs),
    /// Export a run or model artifact for other runtimes (ONNX).
    Export(commands::export::ExportArgs),
    /// Fetch and verify datasets.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Measure training and inference throughput on this machine.
    Bench(commands::bench::BenchArgs),
    /// List the backends compiled in, what each finds on this machine, and why one cannot run.
    Devices(commands::devices::DevicesArgs),
    /// Serve a trained model over HTTP: /predict and the `KServe` v2 protocol.
    Serve(commands::serve::ServeArgs),
    /// List the runs below a directory with the hyperparameters that differ, or diff two runs.
    Runs(commands::runs::RunsArgs),
    /// Train a grid of configs (locally, or as a Kubernetes or Slurm job), resumably.
    Sweep(commands::sweep::SweepArgs),
}

/// An error in how kiln was invoked (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Exit code of a successful run cut short by Ctrl-C, after saving state.
pub const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Train(_) | Command::Eval(_) | Command::Bench(_) | Command::Sweep(_)
    ) {
        join_compute_pool();
    }
    let result = match cli.command {
        Command::Train(args) => commands::train::run(args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Export(args) => commands::export::run(&args),
        Command::Data(command) => commands::data::run(command),
        Command::Bench(args) => commands::bench::run(&args),
        Command::Devices(args) => commands::devices::run(&args),
        Command::Serve(args) => commands::serve::run(&args),
        Command::Runs(args) => commands::runs::run(&args),
        Command::Sweep(args) => commands::sweep::run(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Training, evaluation and benchmarks run their loop on this thread and their kernels on
/// rayon's pool. Making this thread one of the pool's workers keeps one busy thread per core:
/// otherwise a pool worker spinning for work competes for a core with this thread's serial part
/// of each step (burn's element-wise ops, the optimizer). Not for `serve`, whose main thread
/// stays in the async runtime and would never take a share of the work.
fn join_compute_pool() {
    // Fails only when the pool already exists; the default pool then serves.
    let _ = rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global();
}

/// 2 when the user's input is at fault (config, data, paths, arguments), 1 otherwise. The
/// outermost kiln error in the chain decides, through its crate's own classifier.
fn exit_code(err: &anyhow::Error) -> u8 {
    let user_input = err.chain().find_map(|cause| {
        if cause.is::<UsageError>() {
            Some(true)
        } else if let Some(e) = cause.downcast_ref::<kiln_train::TrainError>() {
            Some(e.is_user_input())
        } else if let Some(e) = cause.downcast_ref::<kiln_serve::ServeError>() {
            Some(e.is_user_input())
        } else if let Some(e) = cause.downcast_ref::<kiln_model::ModelError>() {
            Some(e.is_user_input())
        } else {
            cause
                .downcast_ref::<kiln_data::DataError>()
                .map(kiln_data::DataError::is_user_input)
        }
    });
    if user_input == Some(true) { 2 } else { 1 }
}
