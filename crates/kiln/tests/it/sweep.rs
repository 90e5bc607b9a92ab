//! `kiln sweep`: a 2x2 grid of real smoke runs, its summary, resuming (finished trials are
//! skipped, interrupted ones resume), one trial by index as a cluster task runs it, and the
//! emitted Kubernetes and Slurm jobs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{kiln, repo, text};

/// A quick smoke sweep: 2,000 images, one epoch per trial.
fn sweep_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "sweep",
        "--config",
        "configs/smoke.toml",
        "--set",
        "data.limit_train=2000",
        "--set",
        "training.epochs=1",
        "--grid",
        "training.optimizer.lr=0.001,0.004",
        "--grid",
        "model.hidden=[16],[48]",
        "--dir",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.push(dir.display().to_string());
    args.extend(extra.iter().map(ToString::to_string));
    args
}

fn sweep_file(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap()
}

/// The run directories of a sweep's trials (none while the sweep has not started).
fn run_dirs(dir: &Path) -> Vec<PathBuf> {
    let list = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut runs: Vec<PathBuf> = list(dir)
        .iter()
        .filter(|trial| trial.is_dir())
        .flat_map(|trial| list(trial))
        .collect();
    runs.sort();
    runs
}

#[test]
fn a_grid_runs_every_trial_records_its_point_and_resumes_by_skipping_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sweep");
    let args = sweep_args(&dir, &["--parallel", "2"]);
    let out = kiln(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("4 trials, best valid_accuracy first"),
        "{stdout}"
    );

    let file = sweep_file(&dir);
    let trials = file["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    let mut best = Vec::new();
    for trial in trials {
        assert_eq!(trial["status"], "completed", "{trial}");
        let run_dir = PathBuf::from(trial["run_dir"].as_str().unwrap());
        let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
        for o in trial["overrides"].as_array().unwrap() {
            let o = o.as_str().unwrap();
            assert!(
                record["overrides"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == o),
                "{o}"
            );
            let (key, value) = o.split_once('=').unwrap();
            let leaf = key.rsplit('.').next().unwrap();
            let value = value.replace(',', ", ");
            assert!(
                config.contains(&format!("{leaf} = {value}")),
                "{o} not in config.toml:\n{config}"
            );
        }
        best.push(trial["best"].as_f64().unwrap());
    }
    // The summary lists trials best first.
    let listed: Vec<f64> = stdout
        .lines()
        .filter(|l| l.starts_with("trial-"))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed.len(), 4);
    assert!(listed.windows(2).all(|w| w[0] >= w[1]), "{listed:?}");

    let before = run_dirs(&dir);
    let resume = ["sweep", "--resume", dir.to_str().unwrap()];
    let out = kiln(&resume);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("4 of 4 trials already finished"),
        "{stderr}"
    );
    assert_eq!(run_dirs(&dir), before, "no trial ran again");

    // A bad key is refused before any trial starts.
    let bad = sweep_args(&tmp.path().join("bad"), &["--grid", "training.nope=1,2"]);
    let out = kiln(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
}

#[cfg(unix)]
#[test]
fn an_interrupted_sweep_resumes_its_trials_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sweep");
    // Long enough to interrupt: more epochs, one trial at a time.
    let args = sweep_args(&dir, &["--parallel", "1", "--set", "training.epochs=40"]);
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(&args)
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_mins(1);
    while !run_dirs(&dir)
        .iter()
        .any(|r| r.join("checkpoints").is_dir())
    {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out).1);
    let file = sweep_file(&dir);
    assert_eq!(file["trials"][0]["status"], "interrupted", "{file}");
    assert_eq!(file["trials"][3]["status"], "pending", "{file}");

    // Finish it with fewer epochs is not possible (the config is fixed), so resume only
    // trial 0 by index, as a cluster task would, and check it continued its own run.
    let run = PathBuf::from(file["trials"][0]["run_dir"].as_str().unwrap());
    let out = kiln(&["sweep", "--resume", dir.to_str().unwrap(), "--trial", "0"]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "completed");
    assert_eq!(record["resumed"].as_array().unwrap().len(), 1);
}

#[test]
fn emitted_cluster_jobs_run_one_trial_per_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sweep");
    let args = sweep_args(&dir, &["--parallel", "3", "--emit", "k8s"]);
    let out = kiln(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out).1);
    let job = std::fs::read_to_string(dir.join("k8s-job.yaml")).unwrap();
    for line in [
        "kind: Job",
        "completionMode: Indexed",
        "completions: 4",
        "parallelism: 3",
        "--trial \\\"$JOB_COMPLETION_INDEX\\\"",
    ] {
        assert!(job.contains(line), "{line} missing:\n{job}");
    }
    let out = kiln(&[
        "sweep",
        "--resume",
        dir.to_str().unwrap(),
        "--emit",
        "slurm",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let script = dir.join("slurm-array.sh");
    let text_of = std::fs::read_to_string(&script).unwrap();
    assert!(text_of.contains("#SBATCH --array=0-3%3"), "{text_of}");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n {}", script.display());

    // What task 2 of either job runs, here: exactly trial 2, nothing else.
    let out = kiln(&["sweep", "--resume", dir.to_str().unwrap(), "--trial", "2"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let runs = run_dirs(&dir);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].starts_with(dir.join("trial-002")));
    let config = std::fs::read_to_string(runs[0].join("config.toml")).unwrap();
    assert!(
        config.contains("lr = 0.004") && config.contains("hidden = [16]"),
        "{config}"
    );
    let out = kiln(&["sweep", "--resume", dir.to_str().unwrap(), "--trial", "9"]);
    assert_eq!(out.status.code(), Some(2));
}
