use kiln_model::artifact;
use kiln_tensorboard::{event_files, read_events};
use kiln_train::{Outcome, RunDir, TrainError, TrainOptions, checkpoint};

use crate::{continue_run, resume_newest, run_new, smoke_config};

/// The final weights' values as bits (burnpack bytes also hold per-run parameter ids).
fn final_weights(run: &RunDir) -> Vec<(String, Vec<u32>)> {
    let device = burn::tensor::Device::flex();
    let model = artifact::load(&run.path.join("artifacts/final"), &device)
        .unwrap()
        .model;
    kiln_model::parameters(&model)
        .into_iter()
        .map(|(p, v)| (p, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn resume_after_step_k_is_bit_identical_to_an_uninterrupted_run() {
    let _guard = crate::exclusive();
    let root = tempfile::tempdir().unwrap();
    // Dropout on, so the per-step random streams are exercised too.
    let config = smoke_config(root.path(), &["model.dropout=0.2", "data.augment_shift=1"]);
    let (full_run, full) = run_new(&config, &TrainOptions::default());
    assert_eq!(full.outcome, Outcome::Completed);

    // Stop mid-epoch at a step that is not a checkpoint interval, then resume to the end.
    let k = 23;
    let (mut run, stopped) = run_new(
        &config,
        &TrainOptions {
            stop_after_step: Some(k),
            ..Default::default()
        },
    );
    assert_eq!(
        (stopped.outcome, stopped.global_step),
        (Outcome::Stopped, k)
    );
    let (reopened, resumed) = continue_run(&run.path, &resume_newest());
    let resumed = resumed.unwrap();
    run = reopened;
    assert_eq!(resumed.outcome, Outcome::Completed);
    assert_eq!(resumed.global_step, full.global_step);

    let (resumed_weights, full_weights) = (final_weights(&run), final_weights(&full_run));
    assert_eq!(
        resumed_weights.len(),
        2 * 2,
        "two linear layers, weight and bias each"
    );
    for ((path, a), (_, b)) in resumed_weights.iter().zip(&full_weights) {
        assert!(a == b, "{path}: weights differ from the uninterrupted run");
    }
    for (a, b) in resumed.history.iter().zip(&full.history) {
        assert_eq!(a.valid_accuracy.to_bits(), b.valid_accuracy.to_bits());
        assert_eq!(
            a.train_loss.to_bits(),
            b.train_loss.to_bits(),
            "epoch {} training loss",
            a.epoch
        );
    }
    // Same run directory, one more event file, which restarts the stream at step k.
    let files = event_files(&run.path).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(
        read_events(&files[1]).unwrap().session_starts,
        vec![i64::try_from(k).unwrap()]
    );
}

#[test]
fn a_corrupt_newest_checkpoint_is_refused_and_earlier_ones_are_left_alone() {
    let _guard = crate::exclusive();
    let root = tempfile::tempdir().unwrap();
    let config = smoke_config(root.path(), &[]);
    let (run, _) = run_new(
        &config,
        &TrainOptions {
            stop_after_step: Some(25),
            ..Default::default()
        },
    );
    let checkpoints = checkpoint::list(&run.path).unwrap();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    let newest = checkpoints.last().unwrap();
    let snapshot = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let earlier: Vec<_> = checkpoints[..checkpoints.len() - 1]
        .iter()
        .map(|d| snapshot(d))
        .collect();

    let model = newest.join("model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&model, bytes).unwrap();

    let err = continue_run(&run.path, &resume_newest()).1.unwrap_err();
    let message = crate::chain(&err);
    assert!(
        matches!(err, TrainError::Checkpoint { .. }) && err.is_user_input(),
        "{message}"
    );
    assert!(
        message.contains("newest checkpoint")
            && message.contains("model.bpk")
            && message.contains("--checkpoint"),
        "{message}"
    );
    let after: Vec<_> = checkpoints[..checkpoints.len() - 1]
        .iter()
        .map(|d| snapshot(d))
        .collect();
    assert_eq!(earlier, after, "earlier checkpoints must be untouched");

    // Resuming explicitly from the earlier checkpoint works.
    let options = TrainOptions {
        checkpoint: Some(checkpoints[checkpoints.len() - 2].clone()),
        ..Default::default()
    };
    let report = continue_run(&run.path, &options).1.unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    // The corrupt checkpoint was moved aside, so the next resume (or pruning) never reaches it.
    let left = checkpoint::list(&run.path).unwrap();
    assert!(!left.contains(newest), "{left:?}");
    assert!(
        run.path
            .join("checkpoints")
            .join(format!(
                ".superseded-{}",
                newest.file_name().unwrap().to_string_lossy()
            ))
            .is_dir()
    );
}
