//! Every malformed-input case gets a typed error that names the file.

use std::path::Path;

use kiln_data::idx::{IdxImages, encode_images, encode_labels};
use kiln_data::{DataError, DatasetFormat, checksum};

use crate::{gzip, mnist_dir};

/// A tiny but well-formed IDX dataset: `n_train`/`n_test` 2x2 images.
fn write_dataset(dir: &Path, train_labels: &[u8], train_images: usize) {
    let images = |n: usize| IdxImages {
        count: n,
        rows: 2,
        cols: 2,
        pixels: (0..n * 4).map(|i| i as u8).collect(),
    };
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gzip(&encode_images(&images(train_images))),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte.gz"),
        gzip(&encode_labels(train_labels)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        encode_images(&images(2)),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), encode_labels(&[0, 1])).unwrap();
}

fn load(dir: &Path) -> Result<kiln_data::Dataset, DataError> {
    kiln_data::load(dir, DatasetFormat::Idx, 10, [2, 2])
}

#[test]
fn well_formed_fixture_loads_gzip_and_raw() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &[1, 2, 3], 3);
    let d = load(dir.path()).unwrap();
    assert_eq!(d.train.labels, vec![1, 2, 3]);
    assert_eq!(d.test.image(1), &[4, 5, 6, 7]);
}

#[test]
fn missing_directory() {
    let err = load(Path::new("/nonexistent/kiln-data")).unwrap_err();
    assert!(matches!(err, DataError::MissingDir { .. }), "{err}");
    assert!(err.to_string().contains("kiln data fetch"), "{err}");
}

#[test]
fn missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &[1, 2, 3], 3);
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingFile { name, .. } if name == "t10k-labels-idx1-ubyte"),
        "{err}"
    );
}

#[test]
fn truncated_gzip_of_real_mnist() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &[1, 2, 3], 3);
    let real = std::fs::read(mnist_dir().join("train-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte.gz"),
        &real[..real.len() / 2],
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    assert!(
        err.to_string().contains("train-images-idx3-ubyte.gz"),
        "{err}"
    );
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &[1, 2, 3], 3);
    // A label file where the images should be.
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte.gz"),
        gzip(&encode_labels(&[1, 2, 3])),
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadMagic {
                expected: 0x803,
                found: 0x801,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn label_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &[1, 10, 3], 3);
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 10,
                num_classes: 10,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn images_and_labels_of_different_counts() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &[1, 2], 3);
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                images: 3,
                labels: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn checksum_mismatch_is_caught_on_load() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &[1, 2, 3], 3);
    let names: Vec<String> = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    .map(String::from)
    .to_vec();
    checksum::write_sums(dir.path(), &names).unwrap();
    load(dir.path()).unwrap();
    // Same length, one label changed: still a valid IDX file, so only the checksum can tell.
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        encode_labels(&[0, 2]),
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::ChecksumMismatch { path, .. } if path.ends_with("t10k-labels-idx1-ubyte")),
        "{err}"
    );
}
