//! `kiln runs`: the runs below a directory side by side, and the config diff of two runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kiln_train::run::{CONFIG_FILE, RUN_FILE, RunRecord};
use kiln_train::runs::{self, FlatConfig};

use crate::UsageError;
use crate::output::{out, outln};

/// Config keys that name where a run lives rather than how it trained: shown as the name and
/// path of a run, never as hyperparameters (a sweep gives every trial its own).
const BOOKKEEPING: [&str; 2] = ["experiment.name", "experiment.root"];

/// The metric a run's config monitors when it does not say.
const DEFAULT_MONITOR: &str = "valid_accuracy";

/// `kiln runs`
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
    /// Directory searched (recursively) for run directories.
    #[arg(value_name = "DIR", default_value = "experiments")]
    dir: PathBuf,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Order by this metric of each run's best epoch (e.g. `valid_loss`), best first, instead
    /// of by start time. Losses sort ascending, everything else descending.
    #[arg(long, value_name = "METRIC")]
    sort: Option<String>,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Show how the configs of two runs differ, one dotted key a line: `key: a -> b`.
    Diff {
        /// The first run directory.
        a: PathBuf,
        /// The second run directory.
        b: PathBuf,
    },
}

/// One run directory, read.
struct Run {
    path: PathBuf,
    record: RunRecord,
    config: FlatConfig,
}

impl Run {
    fn load(path: &Path) -> Result<Self> {
        let record_path = path.join(RUN_FILE);
        let bytes = std::fs::read(&record_path)
            .with_context(|| format!("reading {}", record_path.display()))?;
        let record: RunRecord = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", record_path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            record,
            config: read_config(path)?,
        })
    }

    fn monitor(&self) -> &str {
        self.config
            .get("training.monitor")
            .and_then(toml::Value::as_str)
            .unwrap_or(DEFAULT_MONITOR)
    }

    fn epochs_done(&self) -> Option<u64> {
        // Recorded as a metric, so as an f64 holding a whole number.
        self.record.final_metrics.get("epoch").map(|&e| e as u64)
    }

    fn epochs_total(&self) -> Option<i64> {
        self.config
            .get("training.epochs")
            .and_then(toml::Value::as_integer)
    }

    fn best(&self) -> Option<f64> {
        self.record.best_metrics.get(self.monitor()).copied()
    }

    fn last(&self) -> Option<f64> {
        self.record.final_metrics.get(self.monitor()).copied()
    }

    fn started(&self) -> Option<f64> {
        runs::unix_seconds(&self.record.started)
    }

    fn seconds(&self) -> Option<f64> {
        let ended = runs::unix_seconds(self.record.ended.as_deref()?)?;
        Some(ended - self.started()?)
    }

    fn duration(&self) -> String {
        match (&self.record.ended, self.seconds()) {
            (None, _) => "running".into(),
            (Some(_), Some(seconds)) => runs::format_duration(seconds),
            (Some(_), None) => "?".into(),
        }
    }
}

pub(crate) fn run(args: &RunsArgs) -> Result<u8> {
    match &args.command {
        Some(RunsCommand::Diff { a, b }) => diff(a, b),
        None => list(args),
    }
}

fn list(args: &RunsArgs) -> Result<u8> {
    if !args.dir.is_dir() {
        return Err(UsageError(format!("{}: no such directory", args.dir.display())).into());
    }
    let mut paths = Vec::new();
    find_runs(&args.dir, &mut paths);
    let mut found: Vec<Run> = paths
        .iter()
        .filter_map(|path| match Run::load(path) {
            Ok(run) => Some(run),
            Err(e) => {
                eprintln!("warning: skipping {}: {e:#}", path.display());
                None
            }
        })
        .collect();
    sort_runs(&mut found, args.sort.as_deref())?;

    let configs: Vec<FlatConfig> = found.iter().map(|r| r.config.clone()).collect();
    let keys: Vec<String> = runs::differing_keys(&configs)
        .into_iter()
        .filter(|k| !BOOKKEEPING.contains(&k.as_str()))
        .collect();
    if args.json {
        let array: Vec<serde_json::Value> = found.iter().map(|r| to_json(r, &keys)).collect();
        outln!("{}", serde_json::to_string_pretty(&array)?);
    } else if found.is_empty() {
        eprintln!("no runs under {}", args.dir.display());
    } else {
        out!("{}", table(&found, &keys));
    }
    Ok(0)
}

/// Pushes every run directory at or below `dir`, in path order, without descending into a
/// run directory, a dot-directory or a symbolic link.
fn find_runs(dir: &Path, found: &mut Vec<PathBuf>) {
    if dir.join(CONFIG_FILE).is_file() && dir.join(RUN_FILE).is_file() {
        found.push(dir.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("warning: skipping {}: {e}", dir.display());
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        find_runs(&child, found);
    }
}

fn sort_runs(found: &mut [Run], metric: Option<&str>) -> Result<()> {
    let by_start = |a: &Run, b: &Run| {
        let key = |r: &Run| r.started().unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b)).then_with(|| a.path.cmp(&b.path))
    };
    found.sort_by(by_start);
    let Some(metric) = metric else {
        return Ok(());
    };
    let value = |r: &Run| r.record.best_metrics.get(metric).copied();
    if !found.is_empty() && found.iter().all(|r| value(r).is_none()) {
        return Err(UsageError(format!(
            "--sort {metric}: no listed run has that metric (try valid_accuracy or valid_loss)"
        ))
        .into());
    }
    let ascending = metric.contains("loss");
    // Runs without the metric go last; the sort is stable, so ties keep start order.
    found.sort_by(|a, b| match (value(a), value(b)) {
        (Some(x), Some(y)) if ascending => x.total_cmp(&y),
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(())
}

fn to_json(run: &Run, keys: &[String]) -> serde_json::Value {
    let hyperparameters: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| {
            let value = run
                .config
                .get(k)
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or(serde_json::Value::Null);
            (k.clone(), value)
        })
        .collect();
    let record = &run.record;
    serde_json::json!({
        "path": run.path,
        "name": record.name,
        "id": record.id,
        "status": record.status,
        "device": record.device,
        "started": record.started,
        "ended": record.ended,
        "duration_seconds": run.seconds(),
        "epochs_done": run.epochs_done(),
        "epochs_total": run.epochs_total(),
        "monitor": run.monitor(),
        "best": run.best(),
        "final": run.last(),
        "best_metrics": record.best_metrics,
        "final_metrics": record.final_metrics,
        "hyperparameters": hyperparameters,
    })
}

/// The aligned text table: fixed columns, then one column per differing hyperparameter.
fn table(found: &[Run], keys: &[String]) -> String {
    let monitor = found[0].monitor();
    let one_monitor = found.iter().all(|r| r.monitor() == monitor);
    let (best, last) = if one_monitor {
        (format!("best {monitor}"), format!("final {monitor}"))
    } else {
        ("best".to_string(), "final".to_string())
    };
    let mut header: Vec<String> = ["name", "run", "status", "device", "epochs"]
        .map(String::from)
        .into();
    header.extend([best, last, "duration".into()]);
    header.extend(keys.iter().cloned());
    let metric = |value: Option<f64>, run: &Run| match value {
        Some(v) if one_monitor => format!("{v:.4}"),
        Some(v) => format!("{v:.4} {}", run.monitor()),
        None => "-".into(),
    };
    let mut rows = vec![header];
    for run in found {
        let record = &run.record;
        let epochs = format!(
            "{}/{}",
            run.epochs_done()
                .map_or_else(|| "0".into(), |e| e.to_string()),
            run.epochs_total()
                .map_or_else(|| "?".into(), |e| e.to_string())
        );
        let mut row = vec![
            record.name.clone(),
            record.id.clone(),
            record.status.clone(),
            record.device.clone(),
            epochs,
            metric(run.best(), run),
            metric(run.last(), run),
            run.duration(),
        ];
        row.extend(keys.iter().map(|k| {
            run.config
                .get(k)
                .map_or_else(|| "-".into(), runs::display_value)
        }));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn diff(a: &Path, b: &Path) -> Result<u8> {
    let (config_a, config_b) = (run_config(a)?, run_config(b)?);
    let changes = runs::diff(&config_a, &config_b);
    if changes.is_empty() {
        outln!("the configs are identical");
    }
    let show = |v: &Option<toml::Value>| {
        v.as_ref()
            .map_or_else(|| "(absent)".into(), runs::display_value)
    };
    for change in changes {
        outln!("{}: {} -> {}", change.key, show(&change.a), show(&change.b));
    }
    Ok(0)
}

/// The flattened config of the run directory `path`, or a usage error when it is not one.
fn run_config(path: &Path) -> Result<FlatConfig> {
    let not_run = |what: &str| {
        UsageError(format!(
            "{}: not a kiln run directory ({what})",
            path.display()
        ))
    };
    if !path.is_dir() {
        return Err(not_run("no such directory").into());
    }
    for file in [CONFIG_FILE, RUN_FILE] {
        if !path.join(file).is_file() {
            return Err(not_run(&format!("no {file}")).into());
        }
    }
    read_config(path).map_err(|e| UsageError(format!("{e:#}")).into())
}

fn read_config(run: &Path) -> Result<FlatConfig> {
    let path = run.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok(runs::flatten(&table))
}
