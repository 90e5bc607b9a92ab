//! Faults on the way to disk: every write, fsync and rename of checkpoints, artifacts, event
//! files and `run.json` is made to fail in turn (through `KILN_FAILPOINTS`, compiled into the
//! test build only), and a real full disk on a small tmpfs. Each must stop the run with exit 1
//! and a message naming the file and the OS error, keep what was already written, and leave a
//! run that `--resume` finishes with weights bit-identical to an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{kiln, repo, smoke, text};

fn weights_sha256(run_dir: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("artifacts/final/model.json")).unwrap())
            .unwrap();
    manifest["weights_sha256"].as_str().unwrap().to_string()
}

fn checkpoint_names(run_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The single run directory under `root/smoke/`.
fn only_run(root: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(root.join("smoke"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().unwrap()
}

fn smoke_with_failpoint(root: &Path, spec: &str) -> Output {
    let root_arg = format!("experiment.root={:?}", root.display().to_string());
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", "--config", "configs/smoke.toml", "--plain"])
        .args(["--set", &root_arg])
        .env("KILN_FAILPOINTS", spec)
        .current_dir(repo())
        .output()
        .unwrap()
}

/// What a failed run must have left: whole checkpoints only, a loadable best artifact if one
/// was written, and a run that resumes to the reference weights.
fn assert_recoverable(run_dir: &Path, reference: &str, case: &str) {
    for name in checkpoint_names(run_dir) {
        let dir = run_dir.join("checkpoints").join(&name);
        if name.starts_with("step-") {
            for file in ["model.bpk", "optim.bpk", "state.json"] {
                assert!(dir.join(file).is_file(), "{case}: {name}/{file} missing");
            }
        }
    }
    if run_dir.join("artifacts/best/model.json").is_file() {
        let out = kiln(&["eval", run_dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{case}: best artifact: {}",
            text(&out).1
        );
    }
    let out = kiln(&["train", "--resume", run_dir.to_str().unwrap(), "--plain"]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{case}: resume failed: {stderr}");
    assert_eq!(
        weights_sha256(run_dir),
        reference,
        "{case}: resumed weights differ from the uninterrupted run"
    );
}

#[test]
fn failed_writes_exit_1_name_the_file_and_resume_exactly() {
    let root = tempfile::tempdir().unwrap();
    let out = smoke(root.path(), &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let reference_dir = PathBuf::from(stdout.lines().last().unwrap());
    let reference = weights_sha256(&reference_dir);
    // keep_checkpoints = 3: of the 21 saved (every 10 steps and at each epoch's end), the
    // newest three remain.
    assert_eq!(
        checkpoint_names(&reference_dir),
        ["step-000000180", "step-000000190", "step-000000200"]
    );

    // (failpoint, the path fragment the message must name)
    let cases = [
        ("write:model.bpk:3", "model.bpk"),
        ("fsync:optim.bpk:2", "optim.bpk"),
        ("rename:state.json:4", "state.json"),
        ("rename:checkpoints/step-000000040", "step-000000040"),
        ("fsync:checkpoints:7", "checkpoints"),
        ("write:artifacts/best/weights-", "weights-"),
        ("rename:artifacts/final/model.json", "model.json"),
        ("write:events.out.tfevents:3", "events.out.tfevents"),
        ("fsync:events.out.tfevents:2", "events.out.tfevents"),
        ("write:run.json:2", "run.json"),
    ];
    for (spec, names) in cases {
        let root = tempfile::tempdir().unwrap();
        let out = smoke_with_failpoint(root.path(), spec);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{spec}: {stderr}");
        assert!(
            stderr.contains(names) && stderr.contains("No space left on device"),
            "{spec}: message must name the file and the OS error: {stderr}"
        );
        let run_dir = only_run(root.path());
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
        assert_eq!(record["status"], "failed", "{spec}");
        assert_recoverable(&run_dir, &reference, spec);
    }
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_exits_1_and_the_run_resumes_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount)
        .output();
    if !mounted.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED a_full_disk_...: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _guard = Tmpfs(mount.clone());
    // Leave about 600 KB: room for the run's start and a checkpoint or two, not the whole run.
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![0u8; 3500 * 1024]).unwrap();

    let root = tempfile::tempdir().unwrap();
    let out = smoke(root.path(), &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let reference = weights_sha256(&PathBuf::from(text(&out).0.lines().last().unwrap()));

    let out = smoke(&mount, &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let run_dir = only_run(&mount);
    std::fs::remove_file(&filler).unwrap();
    assert_recoverable(&run_dir, &reference, "full tmpfs");
}
