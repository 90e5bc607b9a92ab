use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Args;
use kiln_train::{Outcome, RunDir, TrainConfig, TrainOptions, run::LOG_FILE};

use crate::output::{out, outln};
use crate::progress::Progress;
use crate::{EXIT_INTERRUPTED, UsageError, device};

/// `kiln train`
#[derive(Args)]
pub(crate) struct TrainArgs {
    /// The TOML config (see configs/).
    #[arg(long, short, value_name = "FILE", required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set training.epochs=3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Experiment name (same as `--set experiment.name=NAME`).
    #[arg(long)]
    name: Option<String>,
    /// Device: cpu (default), wgpu, vulkan, cuda or cuda:N (same as `--set experiment.device=..`).
    #[arg(long)]
    device: Option<String>,
    /// Print the resolved config and exit.
    #[arg(long)]
    print_config: bool,
    /// Resume the run in this directory from its newest checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "set", "name", "print_config"])]
    resume: Option<PathBuf>,
    /// With --resume: resume from this checkpoint directory instead of the newest.
    #[arg(long, value_name = "DIR", requires = "resume")]
    checkpoint: Option<PathBuf>,
    /// Save a checkpoint and stop after this many optimizer steps (resume later with --resume).
    #[arg(long, value_name = "STEPS")]
    stop_after_step: Option<u64>,
    /// Plain progress lines even on a terminal.
    #[arg(long)]
    plain: bool,
}

pub(crate) fn run(args: TrainArgs) -> Result<u8> {
    let argv: Vec<String> = std::env::args().collect();
    let mut run = if let Some(dir) = &args.resume {
        RunDir::open(dir, argv)?
    } else {
        let config_path = args
            .config
            .as_ref()
            .ok_or_else(|| UsageError("--config is required".into()))?;
        let mut overrides = args.set.clone();
        if let Some(name) = &args.name {
            overrides.push(format!("experiment.name={}", toml_string(name)));
        }
        if let Some(device) = &args.device {
            overrides.push(format!("experiment.device={}", toml_string(device)));
        }
        let config = TrainConfig::load(config_path, &overrides)?;
        if args.print_config {
            out!("{}", config.to_toml()?);
            return Ok(0);
        }
        let (_, device_name) =
            device::parse(&config.experiment.device).map_err(|e| UsageError(format!("{e:#}")))?;
        let mut run = RunDir::create(&config, argv, &device_name)?;
        run.record.overrides.clone_from(&args.set);
        run
    };
    let device_spec = args
        .device
        .clone()
        .unwrap_or_else(|| run.config.experiment.device.clone());
    let (device, device_name) =
        device::parse(&device_spec).map_err(|e| UsageError(format!("{e:#}")))?;
    run.record.device = device_name;
    let _lock = run.lock()?;
    init_logging(&run.path)?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C while the checkpoint is written: give up at once.
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!("\ninterrupted: saving a checkpoint (Ctrl-C again to abort)");
    })
    .context("installing the Ctrl-C handler")?;

    let options = TrainOptions {
        checkpoint: args.checkpoint.clone(),
        resume: args.resume.is_some(),
        stop_after_step: args.stop_after_step,
        stop,
    };
    let mut progress = Progress::new(args.plain);
    let report = kiln_train::train(&mut run, &device, &options, &mut progress);
    drop(progress);
    let report = report.with_context(|| format!("training run {}", run.path.display()))?;
    if let Some(last) = report.history.last() {
        eprintln!(
            "{}: {} steps, valid accuracy {:.4}, valid loss {:.4}",
            report.outcome.status(),
            report.global_step,
            last.valid_accuracy,
            last.valid_loss
        );
    }
    if let Some(artifact) = &report.final_artifact {
        eprintln!("model artifact: {}", artifact.display());
    }
    // The run directory is the last line of standard output, for scripts.
    outln!("{}", run.path.display());
    Ok(match report.outcome {
        Outcome::Interrupted => EXIT_INTERRUPTED,
        _ => 0,
    })
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn init_logging(run_dir: &std::path::Path) -> Result<()> {
    let path = run_dir.join(LOG_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
    Ok(())
}
