//! What decides which data is validated on and when a run ends: the hold-out split and early
//! stopping.

use kiln_data::idx::read_images;
use kiln_train::{Outcome, TrainOptions};

use crate::{repo, run_new, smoke_config};

#[test]
fn holdout_validates_on_the_tail_of_the_training_split_and_trains_on_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let config = smoke_config(
        root.path(),
        &["data.validation=\"holdout\"", "data.holdout_fraction=0.2"],
    );
    let data = kiln_train::data::prepare(&config.data).unwrap();
    // smoke.toml: the first 5,000 training images, 500 test images.
    assert_eq!((data.train.len(), data.valid.len()), (4000, 1000));
    assert_eq!(data.test.len(), 500);
    let raw = read_images(&repo().join("datasets/mnist/train-images-idx3-ubyte.gz")).unwrap();
    let image = 28 * 28;
    assert_eq!(data.train.pixels[..], raw.pixels[..4000 * image]);
    assert_eq!(
        data.valid.pixels[..],
        raw.pixels[4000 * image..5000 * image],
        "validation is items 4000..5000 of the training file, none of them trained on"
    );
}

#[test]
fn early_stopping_ends_a_run_that_stops_improving() {
    let _guard = crate::exclusive();
    let root = tempfile::tempdir().unwrap();
    // A rate so small that no weight moves by one ulp: every epoch validates the same, so
    // nothing after the first improves.
    let config = smoke_config(
        root.path(),
        &[
            "training.epochs=5",
            "training.early_stopping_patience=1",
            "training.optimizer.lr=1e-30",
        ],
    );
    let (run, report) = run_new(&config, &TrainOptions::default());
    assert_eq!(report.outcome, Outcome::EarlyStopped);
    assert_eq!(
        report.history.len(),
        2,
        "stops after the first epoch without improvement"
    );
    assert_eq!(
        report.history[0].valid_accuracy.to_bits(),
        report.history[1].valid_accuracy.to_bits()
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.path.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "early_stopped");
    assert_eq!(record["best_metrics"]["epoch"], 1.0);
    assert!(run.path.join("artifacts/final/model.json").is_file());
}
