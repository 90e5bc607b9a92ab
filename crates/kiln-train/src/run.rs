//! Run directories: `<root>/<name>/<YYYYMMDD-HHMMSS>/`, never reused by a new run, holding the
//! resolved config, `run.json`, `TensorBoard` event files, checkpoints, artifacts and the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::TrainError;

/// Name of the resolved config inside a run directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Name of the run record inside a run directory.
pub const RUN_FILE: &str = "run.json";
/// Name of the lock file inside a run directory (held while a process trains the run).
pub const LOCK_FILE: &str = ".lock";
/// Name of the log file inside a run directory.
pub const LOG_FILE: &str = "train.log";

/// The burn release kiln is built against (recorded in `run.json`).
pub const BURN_VERSION: &str = "0.22.1";

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// Its path.
    pub path: PathBuf,
    /// The resolved config the run uses.
    pub config: TrainConfig,
    /// The run record.
    pub record: RunRecord,
}

/// `run.json`: what ran, where, with what, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunRecord {
    /// Experiment name.
    pub name: String,
    /// Run id (the timestamp directory name).
    pub id: String,
    /// Command lines that started and resumed the run.
    pub argv: Vec<Vec<String>>,
    /// The `--set key=value` overrides the run was started with (a sweep trial's point).
    #[serde(default)]
    pub overrides: Vec<String>,
    /// Source revision, when the working directory is a git checkout.
    pub git_commit: Option<String>,
    /// kiln's version.
    pub kiln_version: String,
    /// burn's version.
    pub burn_version: String,
    /// The device trained on.
    pub device: String,
    /// Start time (RFC 3339).
    pub started: String,
    /// Times the run was resumed (RFC 3339, with the step resumed from).
    pub resumed: Vec<(String, u64)>,
    /// End time, once ended.
    pub ended: Option<String>,
    /// `running`, `completed`, `early_stopped`, `stopped`, `interrupted` or `failed`.
    pub status: String,
    /// Metrics of the last finished epoch.
    pub final_metrics: BTreeMap<String, f64>,
    /// The best epoch by the monitored metric, and its metrics.
    pub best_metrics: BTreeMap<String, f64>,
    /// The error that ended a failed run.
    pub error: Option<String>,
}

impl RunDir {
    /// Creates a new run directory for `config` and writes its resolved config and `run.json`.
    ///
    /// # Errors
    /// [`TrainError::Io`] when the directory or files cannot be created.
    pub fn create(
        config: &TrainConfig,
        argv: Vec<String>,
        device: &str,
    ) -> Result<Self, TrainError> {
        let parent = config.experiment.root.join(&config.experiment.name);
        std::fs::create_dir_all(&parent).map_err(|e| TrainError::io(&parent, e))?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
        // `create_dir` fails on an existing directory, so two runs never share one.
        let (path, id) = (0..1000)
            .map(|n| {
                if n == 0 {
                    stamp.clone()
                } else {
                    format!("{stamp}-{n}")
                }
            })
            .find_map(|id| {
                let path = parent.join(&id);
                std::fs::create_dir(&path).ok().map(|()| (path, id))
            })
            .ok_or_else(|| {
                TrainError::io(
                    &parent,
                    std::io::Error::other("could not create a fresh run directory"),
                )
            })?;
        let config_path = path.join(CONFIG_FILE);
        kiln_fs::write_atomic(&config_path, config.to_toml()?.as_bytes())
            .map_err(|e| TrainError::io(&config_path, e))?;
        let record = RunRecord {
            name: config.experiment.name.clone(),
            id,
            argv: vec![argv],
            git_commit: git_commit(),
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            burn_version: BURN_VERSION.to_string(),
            device: device.to_string(),
            started: now(),
            status: "running".into(),
            ..Default::default()
        };
        let run = Self {
            path,
            config: config.clone(),
            record,
        };
        run.save_record()?;
        Ok(run)
    }

    /// Opens an existing run directory to resume it (its own resolved config is used).
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] when it is not a run directory, [`TrainError::Config`] when
    /// its config no longer parses.
    pub fn open(path: &Path, argv: Vec<String>) -> Result<Self, TrainError> {
        let not_run = |what: &str| {
            TrainError::checkpoint(
                path,
                format!(
                    "not a kiln run directory ({what}); pass the directory `kiln train` printed"
                ),
                None,
            )
        };
        if !path.is_dir() {
            return Err(not_run("no such directory"));
        }
        let config_path = path.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(not_run("no config.toml"));
        }
        let config = TrainConfig::load(&config_path, &[])?;
        let record_path = path.join(RUN_FILE);
        let mut record = match std::fs::read(&record_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| not_run(&format!("run.json is corrupt: {e}")))?,
            // Killed between writing config.toml and run.json: the run never started.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RunRecord {
                name: config.experiment.name.clone(),
                id: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                kiln_version: env!("CARGO_PKG_VERSION").to_string(),
                burn_version: BURN_VERSION.to_string(),
                started: now(),
                ..RunRecord::default()
            },
            Err(e) => return Err(TrainError::io(&record_path, e)),
        };
        record.argv.push(argv);
        record.status = "running".into();
        record.ended = None;
        record.error = None;
        Ok(Self {
            path: path.to_path_buf(),
            config,
            record,
        })
    }

    /// Takes the run's lock, held until the returned file is dropped (or the process dies), so
    /// that two processes never train one run at once (a resumed sweep and a trial it left
    /// running, say).
    ///
    /// # Errors
    /// [`TrainError::RunInUse`] when another process holds it, [`TrainError::Io`] otherwise.
    pub fn lock(&self) -> Result<std::fs::File, TrainError> {
        let path = self.path.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::RunInUse {
                path: self.path.clone(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(TrainError::io(&path, e)),
        }
    }

    /// Writes `run.json` atomically.
    ///
    /// # Errors
    /// [`TrainError::Io`] naming the file.
    pub fn save_record(&self) -> Result<(), TrainError> {
        let path = self.path.join(RUN_FILE);
        let json = serde_json::to_vec_pretty(&self.record).map_err(|e| TrainError::Record {
            path: path.clone(),
            what: RUN_FILE,
            source: Box::new(e),
        })?;
        kiln_fs::write_atomic(&path, &json).map_err(|e| TrainError::io(&path, e))
    }

    /// Marks the run ended with `status`.
    ///
    /// # Errors
    /// As [`RunDir::save_record`].
    pub fn finish(&mut self, status: &str, error: Option<String>) -> Result<(), TrainError> {
        self.record.status = status.to_string();
        self.record.ended = Some(now());
        self.record.error = error;
        self.save_record()
    }
}

/// The current local time, RFC 3339.
#[must_use]
pub fn now() -> String {
    chrono::Local::now().to_rfc3339()
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
