//! `kiln runs`: listing the runs below a directory with the hyperparameters that differ, and
//! the config diff of two runs.

use std::path::{Path, PathBuf};

use crate::{kiln, smoke, text};

fn json_runs(dir: &Path, extra: &[&str]) -> (Vec<serde_json::Value>, String) {
    let mut args = vec!["runs", dir.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = kiln(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    (value.as_array().unwrap().clone(), stderr)
}

#[test]
fn runs_lists_two_smoke_runs_with_their_differing_lr_and_diffs_them() {
    let root = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for lr in ["0.001", "0.002"] {
        let set_lr = format!("training.optimizer.lr={lr}");
        let out = smoke(
            root.path(),
            &["--set", &set_lr, "--set", "training.epochs=1"],
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        dirs.push(PathBuf::from(stdout.lines().last().unwrap()));
    }

    let (listed, _) = json_runs(root.path(), &[]);
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let lrs: Vec<f64> = listed
        .iter()
        .map(|r| {
            r["hyperparameters"]["training.optimizer.lr"]
                .as_f64()
                .unwrap()
        })
        .collect();
    // Sorted by start time: the 0.001 run was trained first.
    assert_eq!(lrs, [0.001, 0.002]);
    for (run, dir) in listed.iter().zip(&dirs) {
        assert_eq!(run["status"], "completed", "{run:#}");
        assert_eq!(run["path"].as_str().map(PathBuf::from).as_ref(), Some(dir));
        assert_eq!(run["epochs_done"], 1);
        assert_eq!(run["epochs_total"], 1);
        assert_eq!(run["monitor"], "valid_accuracy");
        assert!(run["best"].as_f64().unwrap() > 0.5, "{run:#}");
        assert!(run["duration_seconds"].as_f64().unwrap() > 0.0, "{run:#}");
        let hyperparameters = run["hyperparameters"].as_object().unwrap();
        // Keys equal in both runs, and bookkeeping, are left out.
        for same in ["training.batch_size", "training.epochs", "experiment.root"] {
            assert!(!hyperparameters.contains_key(same), "{run:#}");
        }
    }

    let out = kiln(&["runs", root.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let header = stdout.lines().next().unwrap();
    for column in [
        "name",
        "run",
        "status",
        "epochs",
        "best valid_accuracy",
        "duration",
    ] {
        assert!(header.contains(column), "{stdout}");
    }
    assert!(header.contains("training.optimizer.lr"), "{stdout}");
    assert!(!header.contains("training.batch_size"), "{stdout}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    for dir in &dirs {
        let id = dir.file_name().unwrap().to_str().unwrap();
        assert!(stdout.contains(id), "{id} missing from\n{stdout}");
    }

    let (a, b) = (dirs[0].to_str().unwrap(), dirs[1].to_str().unwrap());
    let out = kiln(&["runs", "diff", a, b]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "training.optimizer.lr: 0.001 -> 0.002\n");
    let out = kiln(&["runs", "diff", a, a]);
    assert_eq!(out.status.code(), Some(0));

    for (args, expect) in [
        (vec!["runs", "diff", a, "/nonexistent"], "/nonexistent"),
        (
            vec!["runs", "diff", root.path().to_str().unwrap(), b],
            "not a kiln run directory",
        ),
        (vec!["runs", "/nonexistent"], "/nonexistent"),
    ] {
        let out = kiln(&args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

/// Writes a run directory by hand: a config and a `run.json` as training leaves them.
fn fake_run(dir: &Path, config: &str, started: &str, ended: Option<&str>, accuracy: f64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let metrics = serde_json::json!({ "epoch": 2.0, "valid_accuracy": accuracy });
    let record = serde_json::json!({
        "name": dir.parent().unwrap().file_name().unwrap().to_str().unwrap(),
        "id": dir.file_name().unwrap().to_str().unwrap(),
        "argv": [["kiln", "train"]],
        "git_commit": null,
        "kiln_version": "0.1.0",
        "burn_version": "0.22.1",
        "device": "cpu",
        "started": started,
        "resumed": [],
        "ended": ended,
        "status": if ended.is_some() { "completed" } else { "running" },
        "final_metrics": metrics,
        "best_metrics": metrics,
        "error": null,
    });
    std::fs::write(dir.join("run.json"), record.to_string()).unwrap();
}

#[test]
fn runs_walks_nested_runs_skips_dot_dirs_and_warns_on_a_corrupt_record() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let config = |lr: &str, extra: &str| {
        format!(
            "[experiment]\nname = \"x\"\nroot = \"{}\"\n\n[training]\nepochs = 2\nmonitor = \"valid_accuracy\"\n\n[training.optimizer]\nlr = {lr}\n{extra}",
            root.display()
        )
    };
    fake_run(
        &root.join("b/20260102-000000"),
        &config("0.1", ""),
        "2026-01-02T00:00:00+00:00",
        Some("2026-01-02T00:01:05+00:00"),
        0.9,
    );
    // A sweep nests its trials deeper; the later run starts first.
    fake_run(
        &root.join("sweep/trial-000/a/20260101-000000"),
        &config("0.2", "momentum = 0.9\n"),
        "2026-01-01T00:00:00+00:00",
        None,
        0.95,
    );
    fake_run(
        &root.join(".trash/old/20250101-000000"),
        &config("0.3", ""),
        "2025-01-01T00:00:00+00:00",
        Some("2025-01-01T00:00:01+00:00"),
        0.5,
    );
    let corrupt = root.join("c/20260103-000000");
    fake_run(
        &corrupt,
        &config("0.4", ""),
        "2026-01-03T00:00:00+00:00",
        None,
        0.1,
    );
    std::fs::write(corrupt.join("run.json"), "{ truncated").unwrap();

    let (listed, stderr) = json_runs(root, &[]);
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["20260101-000000", "20260102-000000"], "{listed:#?}");
    assert!(
        stderr.contains("warning") && stderr.contains("c/20260103-000000/run.json"),
        "{stderr}"
    );
    assert_eq!(listed[0]["status"], "running");
    assert!(listed[0]["duration_seconds"].is_null());
    assert_eq!(listed[1]["duration_seconds"], 65.0);
    let hyperparameters = listed[1]["hyperparameters"].as_object().unwrap();
    let keys: Vec<&String> = hyperparameters.keys().collect();
    assert_eq!(
        keys,
        ["training.optimizer.lr", "training.optimizer.momentum"]
    );
    assert!(hyperparameters["training.optimizer.momentum"].is_null());

    let (sorted, _) = json_runs(root, &["--sort", "valid_accuracy"]);
    assert_eq!(sorted[0]["id"], "20260101-000000");
    let out = kiln(&["runs", root.to_str().unwrap(), "--sort", "f1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);

    let out = kiln(&["runs", root.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[1].contains("running") && lines[1].contains("0.9500"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("1m05s") && lines[2].contains("2/2"),
        "{stdout}"
    );
}
