//! Datasets for kiln: IDX and image-folder readers, checksums, fetching, preprocessing and batching.
//!
//! Nothing here knows about models, training or serving; [`image`] is the single place an
//! encoded image becomes pixels of a model's size (decode, grayscale, the [`image::Fit`] rule)
//! and [`preprocess`] the single place pixels become model inputs, both shared by training and
//! serving.

#![warn(missing_docs)]

pub mod checksum;
pub mod dataset;
mod error;
pub mod fetch;
pub mod folder;
pub mod idx;
pub mod image;
pub mod loader;
pub mod preprocess;
pub mod rng;

pub use dataset::{Dataset, DatasetFormat, DatasetInfo, ImageSet, load};
pub use error::{DataError, Result};
pub use loader::{HostBatch, Loader, LoaderOptions};
pub use preprocess::{Normalization, PixelTable, preprocess};
pub use rng::SplitMix64;
