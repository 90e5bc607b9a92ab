//! Evaluation of a model on a labelled split: loss, accuracy, per-class accuracy and the
//! confusion matrix.

use burn::tensor::{Device, Tensor, TensorData};
use kiln_data::{ImageSet, PixelTable, preprocess};
use kiln_model::Model;
use serde::Serialize;

/// The result of evaluating a model on a split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Items evaluated.
    pub items: usize,
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Fraction predicted correctly.
    pub accuracy: f64,
    /// Class names, indexing the rows (true class) and columns (predicted class) of `confusion`.
    pub class_names: Vec<String>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Accuracy within each true class (`None` for a class with no items).
    pub per_class_accuracy: Vec<Option<f64>>,
    /// The predicted class of every item, in split order.
    #[serde(skip)]
    pub predictions: Vec<u8>,
}

impl EvalReport {
    /// Indices of misclassified items, in split order.
    #[must_use]
    pub fn misclassified(&self, labels: &[u8]) -> Vec<usize> {
        self.predictions
            .iter()
            .zip(labels)
            .enumerate()
            .filter(|(_, (p, l))| p != l)
            .map(|(i, _)| i)
            .collect()
    }

    /// A plain-text table: overall figures, per-class accuracy and the confusion matrix.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = format!(
            "items     {}\naccuracy  {:.4}\nloss      {:.4}\n\n",
            self.items, self.accuracy, self.loss
        );
        let width = self
            .class_names
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .max(6);
        out.push_str(&format!(
            "{:>width$}  {:>8}  {:>6}\n",
            "class", "accuracy", "items"
        ));
        for (c, name) in self.class_names.iter().enumerate() {
            let n: u64 = self.confusion[c].iter().sum();
            let acc =
                self.per_class_accuracy[c].map_or_else(|| "-".to_string(), |a| format!("{a:.4}"));
            out.push_str(&format!("{name:>width$}  {acc:>8}  {n:>6}\n"));
        }
        out.push_str("\nconfusion matrix (rows: true class, columns: predicted)\n");
        out.push_str(&format!("{:>width$}", ""));
        for c in 0..self.class_names.len() {
            out.push_str(&format!(" {c:>5}"));
        }
        out.push('\n');
        for (c, name) in self.class_names.iter().enumerate() {
            out.push_str(&format!("{name:>width$}"));
            for v in &self.confusion[c] {
                out.push_str(&format!(" {v:>5}"));
            }
            out.push('\n');
        }
        out
    }
}

/// Evaluates `model` (in inference mode) on `set`, normalising with `table`.
#[must_use]
pub fn evaluate(
    model: &Model,
    set: &ImageSet,
    table: &PixelTable,
    class_names: &[String],
    batch_size: usize,
    device: &Device,
) -> EvalReport {
    let classes = class_names.len();
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut predictions = Vec::with_capacity(set.len());
    let mut loss_sum = 0.0;
    let mut images = Vec::with_capacity(batch_size * set.image_len());
    for start in (0..set.len()).step_by(batch_size.max(1)) {
        let end = (start + batch_size.max(1)).min(set.len());
        images.clear();
        for i in start..end {
            preprocess(set.image(i), table, &mut images);
        }
        let data = TensorData::new(images.clone(), [end - start, 1, set.height, set.width]);
        let logits = model.forward(Tensor::from_data(data, device));
        let values: Vec<f32> = logits.into_data().iter::<f32>().collect();
        for (row, &label) in values.chunks_exact(classes).zip(&set.labels[start..end]) {
            let label = usize::from(label);
            let (predicted, row_loss) = softmax_loss(row, label);
            loss_sum += row_loss;
            confusion[label][predicted] += 1;
            predictions.push(u8::try_from(predicted).unwrap_or(u8::MAX));
        }
    }
    let items = predictions.len();
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class_accuracy = (0..classes)
        .map(|c| {
            let n: u64 = confusion[c].iter().sum();
            (n > 0).then(|| confusion[c][c] as f64 / n as f64)
        })
        .collect();
    EvalReport {
        items,
        loss: loss_sum / items.max(1) as f64,
        accuracy: correct as f64 / items.max(1) as f64,
        class_names: class_names.to_vec(),
        confusion,
        per_class_accuracy,
        predictions,
    }
}

/// Arg-max and cross-entropy of one row of logits, in f64 for a stable sum.
fn softmax_loss(logits: &[f32], label: usize) -> (usize, f64) {
    let (mut best, mut max) = (0, f64::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if f64::from(v) > max {
            max = f64::from(v);
            best = i;
        }
    }
    let log_sum = logits
        .iter()
        .map(|&v| (f64::from(v) - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    (
        best,
        log_sum - f64::from(logits.get(label).copied().unwrap_or(0.0)),
    )
}
