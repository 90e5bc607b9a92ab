//! Image-folder datasets built from real MNIST digits.

use kiln_data::{DataError, DatasetFormat};

use crate::mnist_dir;

#[test]
fn png_folders_round_trip_real_digits() {
    let mnist = kiln_data::load(&mnist_dir(), DatasetFormat::Idx, 10, [28, 28]).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for split in ["train", "test"] {
        for i in 0..30 {
            let label = mnist.test.labels[i];
            let dir = root.path().join(split).join(format!("digit-{label}"));
            std::fs::create_dir_all(&dir).unwrap();
            let img = image::GrayImage::from_raw(28, 28, mnist.test.image(i).to_vec()).unwrap();
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
            if split == "train" {
                expected.push((label, mnist.test.image(i).to_vec()));
            }
        }
    }
    let d = kiln_data::load(root.path(), DatasetFormat::Folder, 10, [28, 28]).unwrap();
    assert_eq!(d.train.len(), 30);
    // Labels follow sorted class-folder names; every image comes back pixel for pixel.
    for i in 0..d.train.len() {
        let class = &d.info.class_names[usize::from(d.train.labels[i])];
        assert!(
            expected
                .iter()
                .any(|(l, px)| class == &format!("digit-{l}") && px == d.train.image(i))
        );
    }
}

#[test]
fn non_image_bytes_are_named() {
    let root = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        let dir = root.path().join(split).join("a");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("broken.png"), b"not a png at all").unwrap();
    }
    let err = kiln_data::load(root.path(), DatasetFormat::Folder, 10, [28, 28]).unwrap_err();
    assert!(
        matches!(&err, DataError::BadImage { path, .. } if path.ends_with("broken.png")),
        "{err}"
    );
}
