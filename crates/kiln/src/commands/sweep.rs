//! `kiln sweep`: a grid (or a seeded random sample of it) of training runs, each trial a child
//! `kiln train` process and a normal run directory under one sweep directory; resumable, and
//! emittable as a Kubernetes Indexed Job or a Slurm job array.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use kiln_train::TrainConfig;
use kiln_train::config::Monitor;
use kiln_train::run::{CONFIG_FILE, RUN_FILE, RunRecord};
use kiln_train::sweep::{Axis, BASE_CONFIG, Plan, SWEEP_FILE, Trial};
use serde::{Deserialize, Serialize};

use crate::output::outln;
use crate::{EXIT_INTERRUPTED, UsageError};

/// `kiln sweep`
#[derive(Args)]
pub(crate) struct SweepArgs {
    /// The base TOML config of every trial.
    #[arg(long, short, value_name = "FILE", required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Override a base config value for every trial (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// An axis of the grid: `key=v1,v2,...` (repeatable; the trials are the product).
    #[arg(
        long = "grid",
        value_name = "KEY=V1,V2",
        required_unless_present = "resume"
    )]
    grid: Vec<String>,
    /// Run only N points of the grid, drawn at random (without replacement).
    #[arg(long, value_name = "N")]
    random: Option<usize>,
    /// Seed of the random draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Trials run at once (default: one per two cores).
    #[arg(long, value_name = "P")]
    parallel: Option<usize>,
    /// The sweep directory (default: `<experiment.root>/<name>/sweep-<YYYYMMDD-HHMMSS>`).
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    dir: Option<PathBuf>,
    /// Continue the sweep in this directory: finished trials are skipped, interrupted ones
    /// resume exactly, the rest start.
    #[arg(long, value_name = "SWEEP_DIR", conflicts_with_all = ["config", "set", "grid", "random"])]
    resume: Option<PathBuf>,
    /// Run only trial I (0-based) and return: what each task of a cluster job runs.
    #[arg(long, value_name = "I", requires = "resume")]
    trial: Option<usize>,
    /// Write a cluster job that runs the trials, instead of running them here.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// With --emit: the container image holding kiln (Kubernetes).
    #[arg(long, default_value = "kiln:latest")]
    image: String,
    /// With --emit: the `PersistentVolumeClaim` mounted at the sweep directory (Kubernetes).
    #[arg(long, default_value = "kiln-sweeps")]
    volume_claim: String,
}

/// Cluster schedulers `--emit` writes a job for.
#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// A Kubernetes Indexed Job (`k8s-job.yaml`).
    K8s,
    /// A Slurm job array (`slurm-array.sh`).
    Slurm,
}

/// `sweep.json`: the plan, and what became of each trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SweepFile {
    /// The config file the sweep started from.
    source_config: String,
    /// Base overrides applied to every trial.
    base_overrides: Vec<String>,
    plan: Plan,
    /// Trials run at once.
    parallel: usize,
    /// One entry per trial, by index.
    trials: Vec<TrialResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrialResult {
    #[serde(flatten)]
    trial: Trial,
    /// `pending`, or the run's status (`completed`, `interrupted`, `failed`, ...).
    status: String,
    run_dir: Option<String>,
    /// The monitored metric of the best epoch.
    best: Option<f64>,
    /// The final epoch's metrics.
    final_metrics: std::collections::BTreeMap<String, f64>,
}

pub(crate) fn run(args: &SweepArgs) -> Result<u8> {
    let (dir, mut sweep) = match &args.resume {
        Some(dir) => (dir.clone(), read_sweep(dir)?),
        None => create(args)?,
    };
    if let Some(p) = args.parallel
        && p.max(1) != sweep.parallel
    {
        sweep.parallel = p.max(1);
        write_sweep(&dir, &sweep)?;
    }
    if let Some(kind) = args.emit {
        return emit(kind, &dir, &sweep, args);
    }
    let monitor = base_config(&dir)?.training.monitor;
    refresh(&dir, &mut sweep, monitor);
    if let Some(index) = args.trial {
        let trial = sweep
            .trials
            .get(index)
            .map(|t| t.trial.clone())
            .ok_or_else(|| {
                UsageError(format!(
                    "--trial {index}: the sweep has {} trials (0..{})",
                    sweep.trials.len(),
                    sweep.trials.len()
                ))
            })?;
        if is_finished(&sweep.trials[index].status) {
            eprintln!("{} already finished; nothing to do", trial.name());
            return Ok(0);
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let code = run_one(&dir, &trial, cores)?;
        return Ok(u8::try_from(code).unwrap_or(1));
    }
    let interrupted = run_all(&dir, &mut sweep, monitor)?;
    refresh(&dir, &mut sweep, monitor);
    write_sweep(&dir, &sweep)?;
    print_summary(&dir, &sweep, monitor);
    outln!("{}", dir.display());
    Ok(if interrupted { EXIT_INTERRUPTED } else { 0 })
}

/// Resolves the base config, checks every trial's overrides against it, and writes the sweep
/// directory's `base.toml` and `sweep.json`.
fn create(args: &SweepArgs) -> Result<(PathBuf, SweepFile)> {
    let config_path = args
        .config
        .as_ref()
        .ok_or_else(|| UsageError("--config is required".into()))?;
    let base = TrainConfig::load(config_path, &args.set)?;
    let axes = args
        .grid
        .iter()
        .map(|g| Axis::parse(g))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = Plan {
        axes,
        random: args.random,
        seed: args.seed,
    };
    let trials = plan.trials();
    if trials.is_empty() {
        return Err(UsageError("the sweep has no trials".into()).into());
    }
    let base_toml = base.to_toml()?;
    for trial in &trials {
        // A key that does not exist fails here, before any trial starts.
        TrainConfig::from_toml(&base_toml, &trial.name(), &trial.overrides)
            .with_context(|| format!("{}: {}", trial.name(), trial.overrides.join(" ")))?;
    }
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => base
            .experiment
            .root
            .join(&base.experiment.name)
            .join(format!(
                "sweep-{}",
                chrono::Local::now().format("%Y%m%d-%H%M%S")
            )),
    };
    if dir.join(SWEEP_FILE).exists() {
        return Err(UsageError(format!(
            "{} already holds a sweep: continue it with `kiln sweep --resume {}`",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let base_path = dir.join(BASE_CONFIG);
    kiln_fs::write_atomic(&base_path, base_toml.as_bytes())
        .with_context(|| format!("writing {}", base_path.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let sweep = SweepFile {
        source_config: config_path.display().to_string(),
        base_overrides: args.set.clone(),
        plan,
        parallel: args.parallel.unwrap_or(cores / 2).max(1),
        trials: trials
            .into_iter()
            .map(|trial| TrialResult {
                trial,
                status: "pending".into(),
                run_dir: None,
                best: None,
                final_metrics: std::collections::BTreeMap::new(),
            })
            .collect(),
    };
    write_sweep(&dir, &sweep)?;
    Ok((dir, sweep))
}

fn read_sweep(dir: &Path) -> Result<SweepFile> {
    let path = dir.join(SWEEP_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        UsageError(format!(
            "{}: not a sweep directory ({e}); pass the directory `kiln sweep` printed",
            dir.display()
        ))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| UsageError(format!("{}: corrupt sweep file: {e}", path.display())).into())
}

fn write_sweep(dir: &Path, sweep: &SweepFile) -> Result<()> {
    let path = dir.join(SWEEP_FILE);
    let json = serde_json::to_vec_pretty(sweep)?;
    kiln_fs::write_atomic(&path, &json).with_context(|| format!("writing {}", path.display()))
}

fn base_config(dir: &Path) -> Result<TrainConfig> {
    Ok(TrainConfig::load(&dir.join(BASE_CONFIG), &[])?)
}

/// The trial's run directory, if it has started: the newest one holding a config.
fn run_dir_of(sweep_dir: &Path, trial: &Trial) -> Option<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(trial.dir(sweep_dir))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(CONFIG_FILE).is_file())
        .collect();
    runs.sort();
    runs.pop()
}

fn read_record(run_dir: &Path) -> Option<RunRecord> {
    serde_json::from_slice(&std::fs::read(run_dir.join(RUN_FILE)).ok()?).ok()
}

fn is_finished(status: &str) -> bool {
    matches!(status, "completed" | "early_stopped")
}

/// Reads each trial's run directory back into the sweep's results.
fn refresh(dir: &Path, sweep: &mut SweepFile, monitor: Monitor) {
    for result in &mut sweep.trials {
        let Some(run_dir) = run_dir_of(dir, &result.trial) else {
            continue;
        };
        result.run_dir = Some(run_dir.display().to_string());
        if let Some(record) = read_record(&run_dir) {
            result.status = record.status;
            result.best = record.best_metrics.get(monitor_key(monitor)).copied();
            result.final_metrics = record.final_metrics;
        }
    }
}

fn monitor_key(monitor: Monitor) -> &'static str {
    match monitor {
        Monitor::ValidAccuracy => "valid_accuracy",
        Monitor::ValidLoss => "valid_loss",
    }
}

/// The `kiln train` command of a trial: a resume when its run directory exists, else a start.
fn trial_command(sweep_dir: &Path, trial: &Trial, threads: usize) -> Result<Command> {
    let exe = std::env::current_exe().context("locating the kiln binary")?;
    let mut cmd = Command::new(exe);
    if let Some(run_dir) = run_dir_of(sweep_dir, trial) {
        cmd.arg("train").arg("--resume").arg(run_dir);
    } else {
        let root = format!(
            "experiment.root={}",
            toml_string(&sweep_dir.display().to_string())
        );
        let name = format!("experiment.name={}", toml_string(&trial.name()));
        cmd.arg("train")
            .arg("--config")
            .arg(sweep_dir.join(BASE_CONFIG))
            .args(["--set", &root, "--set", &name]);
        for o in &trial.overrides {
            cmd.args(["--set", o]);
        }
    }
    cmd.arg("--plain")
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null());
    // Its own process group: a terminal's Ctrl-C reaches the sweep alone, which passes it on
    // once (a second SIGINT would make a trial abort without its checkpoint).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    Ok(cmd)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Runs one trial in the foreground, its output going to this process's. Ctrl-C or SIGTERM
/// (a cluster stopping the task) is passed on once, so the trial saves a checkpoint and the
/// task's exit code says it was interrupted.
fn run_one(dir: &Path, trial: &Trial, threads: usize) -> Result<i32> {
    let mut child = trial_command(dir, trial, threads)?
        .spawn()
        .with_context(|| format!("starting {}", trial.name()))?;
    let pid = child.id();
    let passed_on = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&passed_on);
    ctrlc::set_handler(move || {
        if !flag.swap(true, Ordering::SeqCst) {
            interrupt_pid(pid);
        }
    })
    .context("installing the Ctrl-C handler")?;
    let status = child
        .wait()
        .with_context(|| format!("waiting for {}", trial.name()))?;
    Ok(status.code().unwrap_or(1))
}

/// Runs every unfinished trial, `sweep.parallel` at a time, each writing its output to
/// `trial-NNN.log`. Returns whether Ctrl-C cut the sweep short (children are interrupted,
/// save a checkpoint and are waited for).
fn run_all(dir: &Path, sweep: &mut SweepFile, monitor: Monitor) -> Result<bool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if !flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted: stopping the running trials (they save a checkpoint)");
        }
    })
    .context("installing the Ctrl-C handler")?;

    let mut queue: Vec<Trial> = sweep
        .trials
        .iter()
        .filter(|t| !is_finished(&t.status))
        .map(|t| t.trial.clone())
        .rev()
        .collect();
    let total = sweep.trials.len();
    let done = total - queue.len();
    if done > 0 {
        eprintln!("{done} of {total} trials already finished; skipping them");
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = (cores / sweep.parallel).max(1);
    let mut running: Vec<(Trial, Child, Instant)> = Vec::new();
    let mut signalled = false;
    while !queue.is_empty() || !running.is_empty() {
        if stop.load(Ordering::SeqCst) {
            if !signalled {
                for (_, child, _) in &running {
                    interrupt(child);
                }
                signalled = true;
            }
            queue.clear();
        }
        while running.len() < sweep.parallel
            && let Some(trial) = queue.pop()
        {
            if let Some(run_dir) = run_dir_of(dir, &trial) {
                wait_until_unlocked(&run_dir, &trial, &stop);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if read_record(&run_dir).is_some_and(|r| is_finished(&r.status)) {
                    eprintln!("{} finished meanwhile", trial.name());
                    continue;
                }
            }
            let log_path = dir.join(format!("{}.log", trial.name()));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?;
            let child = trial_command(dir, &trial, threads)?
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", trial.name()))?;
            eprintln!(
                "{} started: {}",
                trial.name(),
                if trial.overrides.is_empty() {
                    "(base)".into()
                } else {
                    trial.overrides.join(" ")
                }
            );
            running.push((trial, child, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].1.try_wait()? {
                let (trial, _, started) = running.swap_remove(i);
                refresh(dir, sweep, monitor);
                write_sweep(dir, sweep)?;
                let result = &sweep.trials[trial.index];
                let metric = result.best.map_or_else(String::new, |b| {
                    format!(", best {} {b:.4}", monitor_key(monitor))
                });
                eprintln!(
                    "{} {} (exit {}){metric}, {:.1} s; log: {}",
                    trial.name(),
                    result.status,
                    status
                        .code()
                        .map_or_else(|| "signal".into(), |c| c.to_string()),
                    started.elapsed().as_secs_f64(),
                    dir.join(format!("{}.log", trial.name())).display()
                );
            } else {
                i += 1;
            }
        }
    }
    Ok(stop.load(Ordering::SeqCst))
}

/// Waits while another process trains `run_dir` (a trial left running by a sweep that was
/// killed), so that the trial is resumed from where that process leaves it.
fn wait_until_unlocked(run_dir: &Path, trial: &Trial, stop: &AtomicBool) {
    let Ok(file) = std::fs::File::open(run_dir.join(kiln_train::run::LOCK_FILE)) else {
        return;
    };
    let mut told = false;
    while matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    ) {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if !told {
            eprintln!(
                "{} is still being trained by another process (a sweep killed earlier?); waiting for it",
                trial.name()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Asks a child to save a checkpoint and stop (SIGINT, as Ctrl-C would).
fn interrupt(child: &Child) {
    interrupt_pid(child.id());
}

/// SIGINT to `pid`, through `kill(1)` (the container image ships it: procps).
fn interrupt_pid(pid: u32) {
    if let Err(e) = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
    {
        eprintln!("cannot interrupt process {pid} ({e}): is `kill` (procps) installed?");
    }
}

/// Prints the trials sorted by the monitored metric, best first.
fn print_summary(dir: &Path, sweep: &SweepFile, monitor: Monitor) {
    let mut rows: Vec<&TrialResult> = sweep.trials.iter().collect();
    let key = |r: &TrialResult| match (r.best, monitor) {
        (None, _) => f64::INFINITY,
        (Some(v), Monitor::ValidAccuracy) => -v,
        (Some(v), Monitor::ValidLoss) => v,
    };
    rows.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let metric = monitor_key(monitor);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "sweep {}: {} trials, best {metric} first",
        dir.display(),
        rows.len()
    );
    let _ = writeln!(
        out,
        "{:<10} {:<14} {:>15}  overrides",
        "trial", "status", metric
    );
    for r in rows {
        let best = r.best.map_or_else(|| "-".into(), |v| format!("{v:.4}"));
        let _ = writeln!(
            out,
            "{:<10} {:<14} {:>15}  {}",
            r.trial.name(),
            r.status,
            best,
            r.trial.overrides.join(" ")
        );
    }
}

/// Writes a Kubernetes Indexed Job or a Slurm array whose task `I` runs
/// `kiln sweep --resume DIR --trial I`.
fn emit(kind: Emit, dir: &Path, sweep: &SweepFile, args: &SweepArgs) -> Result<u8> {
    let n = sweep.trials.len();
    // Every task runs elsewhere: the job names the sweep directory absolutely.
    let dir = &std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let dir_text = dir.display().to_string();
    if dir_text.contains(['"', '\'', '\n', '\\']) {
        bail!("the sweep directory's path must not contain quotes or backslashes: {dir_text}");
    }
    let job = dir
        .file_name()
        .map_or_else(|| "sweep".into(), |n| n.to_string_lossy().to_lowercase())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let (file, text) = match kind {
        Emit::K8s => (
            "k8s-job.yaml",
            k8s_job(&job, &dir_text, n, sweep.parallel, args),
        ),
        Emit::Slurm => (
            "slurm-array.sh",
            slurm_array(&job, &dir_text, n, sweep.parallel),
        ),
    };
    let path = dir.join(file);
    kiln_fs::write_atomic(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("{n} trials; the job runs `kiln sweep --resume {dir_text} --trial I` for each I");
    outln!("{}", path.display());
    Ok(0)
}

fn k8s_job(job: &str, dir: &str, trials: usize, parallel: usize, args: &SweepArgs) -> String {
    format!(
        r#"# A Kubernetes Indexed Job: pod I runs trial I of the sweep in {dir}.
# The sweep directory must be on the volume below, at the same path, in every pod.
# Apply with: kubectl apply -f k8s-job.yaml
apiVersion: batch/v1
kind: Job
metadata:
  name: kiln-{job}
  labels:
    app.kubernetes.io/name: kiln-sweep
spec:
  completionMode: Indexed
  completions: {trials}
  parallelism: {parallel}
  backoffLimitPerIndex: 2
  template:
    metadata:
      labels:
        app.kubernetes.io/name: kiln-sweep
    spec:
      restartPolicy: Never
      containers:
        - name: trial
          image: {image}
          command: ["sh", "-c", "exec kiln sweep --resume '{dir}' --trial \"$JOB_COMPLETION_INDEX\""]
          resources:
            requests:
              cpu: "2"
              memory: 2Gi
          volumeMounts:
            - name: sweeps
              mountPath: {mount}
      volumes:
        - name: sweeps
          persistentVolumeClaim:
            claimName: {claim}
"#,
        image = args.image,
        claim = args.volume_claim,
        mount = Path::new(dir)
            .parent()
            .map_or_else(|| dir.to_string(), |p| p.display().to_string()),
    )
}

fn slurm_array(job: &str, dir: &str, trials: usize, parallel: usize) -> String {
    format!(
        r#"#!/usr/bin/env bash
# A Slurm job array: task I runs trial I of the sweep in {dir} (a shared filesystem path).
# Submit with: sbatch slurm-array.sh
#SBATCH --job-name=kiln-{job}
#SBATCH --array=0-{last}%{parallel}
#SBATCH --cpus-per-task=2
#SBATCH --output={dir}/slurm-%A_%a.log
set -euo pipefail
exec kiln sweep --resume '{dir}' --trial "$SLURM_ARRAY_TASK_ID"
"#,
        last = trials.saturating_sub(1),
    )
}
