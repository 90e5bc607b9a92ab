//! Batching: seeded per-epoch shuffling, optional random-shift augmentation and a pool of
//! worker threads that prepare host batches ahead of the training loop, in a fixed order.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::dataset::ImageSet;
use crate::preprocess::{PixelTable, preprocess};
use crate::rng::SplitMix64;

/// How batches are drawn from a split.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderOptions {
    /// Items per batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Shuffle the order each epoch (seeded by `seed` and the epoch number).
    pub shuffle: bool,
    /// Seed of the shuffling and augmentation streams.
    pub seed: u64,
    /// Worker threads preparing batches; 0 prepares them on the calling thread.
    pub workers: usize,
    /// Random translation of up to this many pixels in each direction; 0 turns it off.
    pub max_shift: usize,
}

/// A batch in host memory, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Index of this batch within its epoch.
    pub index: usize,
    /// Normalised pixels, `[len, 1, height, width]` row-major.
    pub images: Vec<f32>,
    /// Class indices.
    pub labels: Vec<i64>,
    /// Item indices in the split, in batch order.
    pub items: Vec<usize>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
}

impl HostBatch {
    /// Number of items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The images as a `[len, 1, height, width]` tensor on `device`.
    #[must_use]
    pub fn images_tensor(&self, device: &Device) -> Tensor<4> {
        let data = TensorData::new(
            self.images.clone(),
            [self.len(), 1, self.height, self.width],
        );
        Tensor::from_data(data, device)
    }

    /// The labels as a `[len]` integer tensor on `device`.
    #[must_use]
    pub fn labels_tensor(&self, device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(self.labels.clone(), [self.len()]), device)
    }
}

/// Draws batches from one split.
#[derive(Debug, Clone)]
pub struct Loader {
    set: Arc<ImageSet>,
    table: Arc<PixelTable>,
    options: LoaderOptions,
}

impl Loader {
    /// A loader over `set`, normalising with `table`.
    #[must_use]
    pub fn new(set: Arc<ImageSet>, table: PixelTable, options: LoaderOptions) -> Self {
        let options = LoaderOptions {
            batch_size: options.batch_size.max(1),
            ..options
        };
        Self {
            set,
            table: Arc::new(table),
            options,
        }
    }

    /// Batches per epoch.
    #[must_use]
    pub fn batches_per_epoch(&self) -> usize {
        self.set.len().div_ceil(self.options.batch_size)
    }

    /// The split this loader draws from.
    #[must_use]
    pub fn set(&self) -> &ImageSet {
        &self.set
    }

    /// The item order of `epoch`: a permutation fixed by the seed and the epoch number.
    #[must_use]
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.set.len()).collect();
        if self.options.shuffle {
            SplitMix64::derive(self.options.seed, &[0x5348_5546, epoch as u64]).shuffle(&mut order);
        }
        order
    }

    /// The batches of `epoch` from batch `start` on (to resume mid-epoch), in order.
    #[must_use]
    pub fn epoch(&self, epoch: usize, start: usize) -> EpochBatches {
        let order = Arc::new(self.epoch_order(epoch));
        let end = self.batches_per_epoch();
        let workers = self.options.workers;
        if workers == 0 {
            return EpochBatches {
                source: Source::Inline {
                    maker: self.maker(order, epoch),
                    next: start,
                    end,
                },
            };
        }
        let mut receivers = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx): (SyncSender<HostBatch>, Receiver<HostBatch>) = sync_channel(2);
            let maker = self.maker(Arc::clone(&order), epoch);
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-loader-{w}"))
                .spawn(move || {
                    for index in (start + w..end).step_by(workers) {
                        if tx.send(maker.make(index)).is_err() {
                            return;
                        }
                    }
                });
            receivers.push(spawned.ok().map(|_| rx));
        }
        if receivers.iter().any(Option::is_none) {
            // Threads could not be started: fall back to preparing batches inline.
            return EpochBatches {
                source: Source::Inline {
                    maker: self.maker(order, epoch),
                    next: start,
                    end,
                },
            };
        }
        EpochBatches {
            source: Source::Workers {
                receivers: receivers.into_iter().flatten().collect(),
                next: start,
                start,
                end,
            },
        }
    }

    fn maker(&self, order: Arc<Vec<usize>>, epoch: usize) -> BatchMaker {
        BatchMaker {
            set: Arc::clone(&self.set),
            table: Arc::clone(&self.table),
            order,
            epoch,
            batch_size: self.options.batch_size,
            seed: self.options.seed,
            max_shift: self.options.max_shift,
        }
    }
}

struct BatchMaker {
    set: Arc<ImageSet>,
    table: Arc<PixelTable>,
    order: Arc<Vec<usize>>,
    epoch: usize,
    batch_size: usize,
    seed: u64,
    max_shift: usize,
}

impl BatchMaker {
    fn make(&self, index: usize) -> HostBatch {
        let begin = index * self.batch_size;
        let end = (begin + self.batch_size).min(self.order.len());
        let items: Vec<usize> = self.order[begin..end].to_vec();
        let (height, width) = (self.set.height, self.set.width);
        let mut images = Vec::with_capacity(items.len() * height * width);
        let mut shifted = vec![0u8; height * width];
        for &item in &items {
            let pixels = self.set.image(item);
            if self.max_shift == 0 {
                preprocess(pixels, &self.table, &mut images);
            } else {
                let mut rng = SplitMix64::derive(
                    self.seed,
                    &[0x0053_4849_4654, self.epoch as u64, item as u64],
                );
                let span = 2 * self.max_shift as u64 + 1;
                let dy = rng.below(span) as isize - self.max_shift as isize;
                let dx = rng.below(span) as isize - self.max_shift as isize;
                shift_image(pixels, height, width, dy, dx, &mut shifted);
                preprocess(&shifted, &self.table, &mut images);
            }
        }
        let labels = items
            .iter()
            .map(|&i| i64::from(self.set.labels[i]))
            .collect();
        HostBatch {
            index,
            images,
            labels,
            items,
            height,
            width,
        }
    }
}

/// Translates an image by `(dy, dx)` pixels, filling uncovered pixels with 0 (background).
pub fn shift_image(src: &[u8], height: usize, width: usize, dy: isize, dx: isize, out: &mut [u8]) {
    out.fill(0);
    for y in 0..height as isize {
        let sy = y - dy;
        if sy < 0 || sy >= height as isize {
            continue;
        }
        for x in 0..width as isize {
            let sx = x - dx;
            if sx >= 0 && sx < width as isize {
                out[(y as usize) * width + x as usize] = src[(sy as usize) * width + sx as usize];
            }
        }
    }
}

/// The batches of one epoch, in order; see [`Loader::epoch`].
pub struct EpochBatches {
    source: Source,
}

enum Source {
    Inline {
        maker: BatchMaker,
        next: usize,
        end: usize,
    },
    Workers {
        receivers: Vec<Receiver<HostBatch>>,
        next: usize,
        start: usize,
        end: usize,
    },
}

impl Iterator for EpochBatches {
    type Item = HostBatch;

    fn next(&mut self) -> Option<HostBatch> {
        match &mut self.source {
            Source::Inline { maker, next, end } => (*next < *end).then(|| {
                *next += 1;
                maker.make(*next - 1)
            }),
            Source::Workers {
                receivers,
                next,
                start,
                end,
            } => {
                if *next >= *end {
                    return None;
                }
                let worker = (*next - *start) % receivers.len();
                *next += 1;
                receivers[worker].recv().ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::Normalization;

    fn set(n: usize) -> Arc<ImageSet> {
        Arc::new(ImageSet {
            height: 4,
            width: 4,
            pixels: (0..n * 16).map(|i| (i % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        })
    }

    fn options(workers: usize, max_shift: usize) -> LoaderOptions {
        LoaderOptions {
            batch_size: 8,
            shuffle: true,
            seed: 3,
            workers,
            max_shift,
        }
    }

    #[test]
    fn workers_and_inline_give_identical_batches_and_resume_mid_epoch() {
        let table = Normalization::SYMMETRIC.table();
        let inline = Loader::new(set(53), table.clone(), options(0, 2));
        let pooled = Loader::new(set(53), table, options(3, 2));
        let a: Vec<_> = inline.epoch(4, 0).collect();
        let b: Vec<_> = pooled.epoch(4, 0).collect();
        assert_eq!(a.len(), 7);
        assert_eq!(a, b);
        let resumed: Vec<_> = pooled.epoch(4, 5).collect();
        assert_eq!(resumed, a[5..]);
    }

    #[test]
    fn every_item_once_per_epoch_and_orders_differ_between_epochs() {
        let loader = Loader::new(set(50), Normalization::SYMMETRIC.table(), options(2, 0));
        let mut seen: Vec<usize> = loader.epoch(0, 0).flat_map(|b| b.items).collect();
        assert_ne!(loader.epoch_order(0), loader.epoch_order(1));
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn shift_moves_pixels_and_fills_with_background() {
        let src: Vec<u8> = (1..=9).collect();
        let mut out = vec![0; 9];
        shift_image(&src, 3, 3, 1, 0, &mut out);
        assert_eq!(out, vec![0, 0, 0, 1, 2, 3, 4, 5, 6]);
        shift_image(&src, 3, 3, 0, -1, &mut out);
        assert_eq!(out, vec![2, 3, 0, 5, 6, 0, 8, 9, 0]);
    }
}
