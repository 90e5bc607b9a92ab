//! What a run records in `TensorBoard` beyond plain scalars: hyperparameters, weight histograms
//! and a picture of misclassified validation items.

use std::collections::BTreeMap;

use kiln_data::ImageSet;
use kiln_model::{Architecture, Model};
use kiln_tensorboard::{EventWriter, HParamValue};

use crate::config::{NormalizationChoice, TrainConfig};

/// Scalar tags the `HParams` tab compares runs on.
pub(crate) const HPARAM_METRICS: [&str; 2] = ["valid/accuracy", "valid/loss"];

/// The hyperparameters shown in `TensorBoard`'s `HParams` tab.
#[must_use]
pub(crate) fn hparams(config: &TrainConfig) -> BTreeMap<String, HParamValue> {
    use HParamValue::{Number, Text};
    let t = &config.training;
    let mut h = BTreeMap::new();
    h.insert("model".into(), Text(config.model.kind().into()));
    match &config.model {
        Architecture::Mlp(m) => {
            h.insert("model.hidden".into(), Text(format!("{:?}", m.hidden)));
            h.insert("model.dropout".into(), Number(m.dropout));
        }
        Architecture::Cnn(c) => {
            h.insert(
                "model.channels".into(),
                Text(format!("{}-{}", c.conv1, c.conv2)),
            );
            h.insert("model.hidden".into(), Text(c.hidden.to_string()));
            h.insert("model.dropout".into(), Number(c.dropout_fc));
        }
        Architecture::Registered(r) => {
            for (key, value) in r.params.as_object().into_iter().flatten() {
                let value = value
                    .as_f64()
                    .map_or_else(|| Text(value.to_string()), Number);
                h.insert(format!("model.{key}"), value);
            }
        }
    }
    h.insert(
        "optimizer".into(),
        Text(format!("{:?}", t.optimizer.kind).to_lowercase()),
    );
    h.insert("lr".into(), Number(t.optimizer.lr));
    h.insert(
        "weight_decay".into(),
        Number(f64::from(t.optimizer.weight_decay)),
    );
    h.insert(
        "schedule".into(),
        Text(format!("{:?}", t.schedule.kind).to_lowercase()),
    );
    h.insert("batch_size".into(), Number(t.batch_size as f64));
    h.insert("epochs".into(), Number(t.epochs as f64));
    h.insert("grad_clip_norm".into(), Number(t.grad_clip_norm));
    h.insert(
        "augment_shift".into(),
        Number(config.data.augment_shift as f64),
    );
    h.insert("seed".into(), Number(config.experiment.seed as f64));
    h.insert(
        "dataset".into(),
        Text(config.data.dir.display().to_string()),
    );
    let norm = match &config.data.normalization {
        NormalizationChoice::Named(_) => "dataset".to_string(),
        NormalizationChoice::Fixed(n) => format!("{}/{}", n.mean, n.std),
    };
    h.insert("normalization".into(), Text(norm));
    h
}

/// Writes one histogram per parameter tensor, tagged `weights/<module path>`.
///
/// # Errors
/// The writer's I/O error.
pub(crate) fn weight_histograms(
    writer: &mut EventWriter,
    model: &Model,
    step: i64,
) -> std::io::Result<()> {
    for (path, values) in kiln_model::parameters(model) {
        writer.histogram(&format!("weights/{path}"), &values, 30, step)?;
    }
    Ok(())
}

/// Tiles up to `rows * cols` items of `set` (by index) into one grayscale grid, 2-pixel gaps.
/// Returns `(pixels, height, width)`, or `None` when there is nothing to show.
#[must_use]
pub(crate) fn image_grid(
    set: &ImageSet,
    items: &[usize],
    rows: usize,
    cols: usize,
) -> Option<(Vec<u8>, usize, usize)> {
    let shown = &items[..items.len().min(rows * cols)];
    if shown.is_empty() {
        return None;
    }
    let (h, w, gap) = (set.height, set.width, 2);
    let used_rows = shown.len().div_ceil(cols);
    let (height, width) = (used_rows * (h + gap) + gap, cols * (w + gap) + gap);
    let mut grid = vec![96u8; height * width];
    for (k, &item) in shown.iter().enumerate() {
        let (top, left) = (gap + (k / cols) * (h + gap), gap + (k % cols) * (w + gap));
        for (y, row) in set.image(item).chunks_exact(w).enumerate() {
            let start = (top + y) * width + left;
            grid[start..start + w].copy_from_slice(row);
        }
    }
    Some((grid, height, width))
}
