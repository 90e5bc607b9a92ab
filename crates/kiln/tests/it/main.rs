//! End-to-end tests of the `kiln` binary: exit codes, messages and the run it leaves behind.

mod devices;
mod export;
mod faults;
mod runs;
mod serve_shape;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn smoke(root: &Path, extra: &[&str]) -> Output {
    let root_arg = format!("experiment.root={:?}", root.display().to_string());
    let mut args = vec![
        "train",
        "--config",
        "configs/smoke.toml",
        "--plain",
        "--set",
        &root_arg,
    ];
    args.extend_from_slice(extra);
    kiln(&args)
}

#[test]
fn train_then_eval_end_to_end() {
    let root = tempfile::tempdir().unwrap();
    let out = smoke(root.path(), &["--name", "e2e"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let run_dir = PathBuf::from(stdout.lines().last().unwrap());
    assert!(
        run_dir.starts_with(root.path().join("e2e")),
        "{}",
        run_dir.display()
    );
    assert!(stderr.contains("epoch   2"), "{stderr}");
    for file in [
        "config.toml",
        "run.json",
        "train.log",
        "artifacts/final/model.json",
        "artifacts/best/model.json",
    ] {
        assert!(run_dir.join(file).is_file(), "{file} missing");
    }
    let log = std::fs::read_to_string(run_dir.join("train.log")).unwrap();
    assert!(log.contains("epoch finished"), "{log}");

    let out = kiln(&["eval", run_dir.to_str().unwrap(), "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["report"]["items"], 10_000);
    let accuracy = v["report"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "full test-set accuracy {accuracy}");
    let confusion = v["report"]["confusion"].as_array().unwrap();
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 10_000);

    let out = kiln(&["eval", run_dir.to_str().unwrap()]);
    assert!(text(&out).0.contains("confusion matrix"));
}

#[test]
fn user_errors_exit_2_with_a_message_naming_the_problem() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let bad_key = dir.join("bad-key.toml");
    std::fs::write(&bad_key, "[training]\nepochz = 3\n").unwrap();
    let bad_type = dir.join("bad-type.toml");
    std::fs::write(&bad_type, "[training]\nepochs = \"three\"\n").unwrap();
    let missing_data = dir.join("missing-data.toml");
    std::fs::write(&missing_data, "[data]\ndir = \"/nonexistent/mnist\"\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "train".into(),
                "--config".into(),
                bad_key.display().to_string(),
            ],
            "epochz",
        ),
        (
            vec![
                "train".into(),
                "--config".into(),
                bad_type.display().to_string(),
            ],
            "epochs",
        ),
        (
            vec![
                "train".into(),
                "--config".into(),
                "configs/smoke.toml".into(),
                "--set".into(),
                "training.nope=1".into(),
            ],
            "training.nope",
        ),
        (
            vec![
                "train".into(),
                "--config".into(),
                "configs/smoke.toml".into(),
                "--device".into(),
                "tpu".into(),
            ],
            "unknown device",
        ),
        (
            vec![
                "train".into(),
                "--config".into(),
                "/nonexistent.toml".into(),
            ],
            "/nonexistent.toml",
        ),
        (
            vec![
                "train".into(),
                "--config".into(),
                missing_data.display().to_string(),
                "--set".into(),
                format!("experiment.root={:?}", dir.display().to_string()),
            ],
            "/nonexistent/mnist",
        ),
        (
            vec!["train".into(), "--resume".into(), dir.display().to_string()],
            "not a kiln run directory",
        ),
        (
            vec!["eval".into(), dir.display().to_string()],
            "no model artifact",
        ),
        (
            vec!["data".into(), "fetch".into(), "cifar".into()],
            "unknown dataset",
        ),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = kiln(&args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: expected {expect:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn print_config_shows_the_resolved_values() {
    let out = kiln(&[
        "train",
        "--config",
        "configs/mnist.toml",
        "--print-config",
        "--set",
        "training.epochs=2",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("epochs = 2"), "{stdout}");
    assert!(stdout.contains("batch_size = 64"), "{stdout}");
    assert!(stdout.contains("[training.optimizer]"), "{stdout}");
}

#[test]
fn data_verify_catches_a_changed_file() {
    assert_eq!(
        kiln(&["data", "verify", "datasets/mnist"]).status.code(),
        Some(0)
    );
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(repo().join("datasets/mnist")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).unwrap();
    }
    let labels = copy.path().join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes.push(0);
    std::fs::write(&labels, bytes).unwrap();
    let out = kiln(&["data", "verify", copy.path().to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("t10k-labels-idx1-ubyte.gz") && stderr.contains("sha256"),
        "{stderr}"
    );
}

#[test]
fn resume_of_a_run_with_a_corrupt_newest_checkpoint_exits_2() {
    let root = tempfile::tempdir().unwrap();
    let out = smoke(root.path(), &["--stop-after-step", "25"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let run_dir = PathBuf::from(stdout.lines().last().unwrap());
    let newest = run_dir.join("checkpoints/step-000000025/state.json");
    std::fs::write(&newest, b"{ truncated").unwrap();
    let out = kiln(&["train", "--resume", run_dir.to_str().unwrap(), "--plain"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("step-000000025") && stderr.contains("state.json"),
        "{stderr}"
    );
    assert!(
        run_dir
            .join("checkpoints/step-000000020/model.bpk")
            .is_file()
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let root = tempfile::tempdir().unwrap();
    let root_arg = format!("experiment.root={:?}", root.path().display().to_string());
    // A run long enough to interrupt: the full smoke set for many epochs.
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "train",
            "--config",
            "configs/smoke.toml",
            "--plain",
            "--set",
            &root_arg,
            "--set",
            "training.epochs=200",
        ])
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training has written its first checkpoint, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    let run_dir = loop {
        let found = std::fs::read_dir(root.path().join("smoke"))
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path());
        if let Some(dir) = found
            && dir.join("checkpoints").is_dir()
        {
            break dir;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "interrupted");
    let steps: Vec<_> = std::fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .collect();
    assert!(!steps.is_empty());
}
