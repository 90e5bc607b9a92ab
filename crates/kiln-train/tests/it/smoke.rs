use kiln_model::artifact;
use kiln_tensorboard::{Entry, event_files, read_events};
use kiln_train::{Outcome, TrainOptions};

use crate::{run_new, smoke_config};

#[test]
fn smoke_run_learns_and_records_everything() {
    let _guard = crate::exclusive();
    let root = tempfile::tempdir().unwrap();
    let config = smoke_config(root.path(), &[]);
    let (run, report) = run_new(&config, &TrainOptions::default());
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(report.history.len(), 2);
    let last = report.history.last().unwrap();
    // 5,000 training images, two epochs: a 32-unit MLP must clear 85 % on 500 unseen test digits.
    assert!(
        last.valid_accuracy >= 0.85,
        "valid accuracy {}",
        last.valid_accuracy
    );
    assert!(report.history[1].train_loss < report.history[0].train_loss);

    // Run layout.
    for file in ["config.toml", "run.json"] {
        assert!(run.path.join(file).is_file(), "{file}");
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.path.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "completed");
    assert!(
        (record["final_metrics"]["valid_accuracy"].as_f64().unwrap() - last.valid_accuracy).abs()
            < 1e-12
    );

    // Artifacts carry what serving needs, and reproduce the validation accuracy.
    let device = burn::tensor::Device::flex();
    let art = artifact::load(&run.path.join("artifacts/final"), &device).unwrap();
    assert_eq!(art.manifest.class_names.len(), 10);
    assert_eq!(art.manifest.lineage.step, report.global_step);
    assert_eq!(art.manifest.lineage.dataset, "mnist");
    let again = crate::cpu_accuracy(&art, &config);
    assert!(
        (again - last.valid_accuracy).abs() < 1e-9,
        "{again} vs {}",
        last.valid_accuracy
    );
    assert!(
        artifact::load(&run.path, &device).is_ok(),
        "a run directory resolves to its best artifact"
    );

    // TensorBoard: our own reader (the Python reader runs in CI).
    let files = event_files(&run.path).unwrap();
    assert_eq!(files.len(), 1);
    let log = read_events(&files[0]).unwrap();
    let losses = log.scalars("train/loss");
    assert_eq!(losses.len() as u64, report.global_step / 5);
    assert_eq!(log.scalars("valid/accuracy").len(), 2);
    let tags = log.tags();
    assert!(tags.iter().any(|t| t.starts_with("weights/")), "{tags:?}");
    assert!(
        log.points
            .iter()
            .any(|p| matches!(p.entry, Entry::Image { .. }))
    );
    assert!(log.points.iter().any(
        |p| matches!(&p.entry, Entry::HParamsStart(names) if names.contains(&"lr".to_string()))
    ));
}
