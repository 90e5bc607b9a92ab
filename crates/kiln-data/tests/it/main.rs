//! Integration tests of kiln-data on the real MNIST files and on fixtures built here.

mod errors;
mod fetch;
mod folder;
mod real;

use std::path::{Path, PathBuf};

/// The repository's committed MNIST.
#[must_use]
pub fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist")
}

/// Gzips bytes.
#[must_use]
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}
