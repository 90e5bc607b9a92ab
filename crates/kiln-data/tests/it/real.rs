use kiln_data::{DatasetFormat, Normalization, checksum};

use crate::mnist_dir;

#[test]
fn committed_mnist_loads_with_the_published_counts_and_statistics() {
    let d = kiln_data::load(&mnist_dir(), DatasetFormat::Idx, 10, [28, 28]).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (60_000, 10_000));
    assert_eq!((d.train.height, d.train.width), (28, 28));
    assert_eq!(
        d.train.class_counts(10),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        d.test.class_counts(10),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let n = Normalization::from_pixels(&d.train.pixels);
    assert!(
        (n.mean - 0.1307).abs() < 1e-4 && (n.std - 0.3081).abs() < 1e-4,
        "{n:?}"
    );
    assert_eq!(
        d.verified.len(),
        4,
        "SHA256SUMS should cover the four files"
    );
    assert_eq!(d.info.class_names.len(), 10);
}

#[test]
fn committed_mnist_content_matches_the_published_checksums() {
    let known = kiln_data::fetch::known("mnist").unwrap();
    kiln_data::fetch::verify_content(known, &mnist_dir()).unwrap();
    assert_eq!(
        checksum::verify_dir(&mnist_dir()).unwrap().unwrap().len(),
        4
    );
}
