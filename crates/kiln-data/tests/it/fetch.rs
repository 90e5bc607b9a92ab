//! `fetch` over a loopback HTTP server (never the internet) and from a local directory.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use kiln_data::checksum::sha256_hex;
use kiln_data::dataset::IDX_FILES;
use kiln_data::fetch::{FetchSource, KnownDataset, fetch, known};
use kiln_data::idx::{encode_images, encode_labels, read_images, read_labels};
use kiln_data::{DataError, DatasetFormat};

use crate::{gzip, mnist_dir};

/// Serves files of `dir` over HTTP/1.1 on loopback; `tamper` flips a byte of every body.
fn serve(dir: PathBuf, tamper: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            match std::fs::read(dir.join(&path)) {
                Ok(mut body) => {
                    if tamper {
                        let mid = body.len() / 2;
                        body[mid] ^= 0x01;
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream
                        .write_all(head.as_bytes())
                        .and_then(|()| stream.write_all(&body));
                }
                Err(_) => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    format!("http://{addr}/")
}

/// A small real dataset built from the repository's MNIST: the first 600 training and 100
/// test digits, gzipped IDX files in a directory, with a [`KnownDataset`] entry whose content
/// hashes are those of these files (as `fetch`'s table holds for the real datasets).
struct MiniMnist {
    dir: tempfile::TempDir,
    known: KnownDataset,
}

const MINI_TRAIN: usize = 600;
const MINI_TEST: usize = 100;

fn mini_mnist() -> MiniMnist {
    let dir = tempfile::tempdir().unwrap();
    let real = mnist_dir();
    let mut hashes = Vec::new();
    for (stem, keep) in IDX_FILES
        .iter()
        .zip([MINI_TRAIN, MINI_TRAIN, MINI_TEST, MINI_TEST])
    {
        let path = real.join(format!("{stem}.gz"));
        let content = if stem.contains("images") {
            let mut images = read_images(&path).unwrap();
            images.pixels.truncate(keep * images.rows * images.cols);
            images.count = keep;
            encode_images(&images)
        } else {
            let mut labels = read_labels(&path, 10).unwrap();
            labels.truncate(keep);
            encode_labels(&labels)
        };
        hashes.push(&*Box::leak(sha256_hex(&content).into_boxed_str()));
        std::fs::write(dir.path().join(format!("{stem}.gz")), gzip(&content)).unwrap();
    }
    let mnist = known("mnist").unwrap();
    let known = KnownDataset {
        name: "mini-mnist",
        mirrors: &[],
        content_sha256: hashes.try_into().unwrap(),
        class_names: mnist.class_names,
        license: mnist.license,
    };
    MiniMnist { dir, known }
}

#[test]
fn download_verifies_and_loads() {
    let mini = mini_mnist();
    let dest = tempfile::tempdir().unwrap();
    let url = serve(mini.dir.path().to_path_buf(), false);
    let mut calls = 0;
    let dir = fetch(
        &mini.known,
        &FetchSource::Network(vec![url]),
        dest.path(),
        &mut |_, _, _| calls += 1,
    )
    .unwrap();
    assert!(calls > 0, "progress is reported");
    let d = kiln_data::load(&dir, DatasetFormat::Idx, 10, [28, 28]).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (MINI_TRAIN, MINI_TEST));
    // The first MNIST training labels, as LeCun's file holds them.
    assert_eq!(&d.train.labels[..8], &[5, 0, 4, 1, 9, 2, 1, 3]);
    assert_eq!(d.info.class_names[9], "9");
    assert_eq!(d.verified.len(), 4);
}

#[test]
fn tampered_download_is_refused_and_nothing_is_kept() {
    let mini = mini_mnist();
    let dest = tempfile::tempdir().unwrap();
    let url = serve(mini.dir.path().to_path_buf(), true);
    let err = fetch(
        &mini.known,
        &FetchSource::Network(vec![url]),
        dest.path(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    // A flipped bit inside deflate data breaks the stream or the content hash.
    assert!(
        matches!(
            err,
            DataError::ChecksumMismatch { .. } | DataError::Gzip { .. }
        ),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dest.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing kept: {left:?}");
}

#[test]
fn unreachable_mirror_is_a_download_error() {
    let dest = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = fetch(
        known("mnist").unwrap(),
        &FetchSource::Network(vec![format!("http://127.0.0.1:{port}/")]),
        dest.path(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    assert!(!err.is_user_input());
}

#[test]
fn local_copy_and_unknown_names() {
    let dest = tempfile::tempdir().unwrap();
    let dir = fetch(
        known("mnist").unwrap(),
        &FetchSource::Dir(crate::mnist_dir()),
        dest.path(),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(
        kiln_data::checksum::verify_dir(&dir)
            .unwrap()
            .unwrap()
            .len(),
        4
    );
    // Other files are not MNIST: their content hashes differ.
    let mini = mini_mnist();
    let err = fetch(
        known("mnist").unwrap(),
        &FetchSource::Dir(mini.dir.path().to_path_buf()),
        tempfile::tempdir().unwrap().path(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    let err = known("cifar").unwrap_err();
    assert!(err.to_string().contains("mnist, fashion-mnist"), "{err}");
}
