//! `kiln devices` and `--device auto`.

use std::path::PathBuf;

use crate::{kiln, smoke, text};

#[test]
fn devices_lists_every_backend_and_auto_trains_on_what_it_picks() {
    let out = kiln(&["devices", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let backends = v["backends"].as_array().unwrap();
    let names: Vec<&str> = backends
        .iter()
        .map(|b| b["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cpu", "ndarray", "wgpu", "vulkan", "cuda"]);
    assert_eq!(backends[0]["status"], "ready");
    for b in backends {
        let detail = b["detail"].as_str().unwrap();
        assert!(!detail.is_empty(), "{b}");
        if b["status"] == "not_compiled" {
            assert!(detail.contains("--features"), "{b}");
        }
    }
    let auto = v["auto"].as_str().unwrap().to_string();

    let root = tempfile::tempdir().unwrap();
    let out = smoke(
        root.path(),
        &[
            "--device",
            "auto",
            "--set",
            "training.epochs=1",
            "--set",
            "data.limit_train=500",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let run_dir = PathBuf::from(stdout.lines().last().unwrap());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    let device = record["device"].as_str().unwrap();
    assert!(
        device.starts_with(&auto),
        "auto picked {auto}, the run recorded {device}"
    );
}

/// A reader that went away (`kiln devices | head -0`) ends kiln quietly with the shell's
/// SIGPIPE status, not with println!'s panic (exit 101 and a backtrace).
#[test]
fn a_closed_stdout_ends_kiln_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("devices")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
