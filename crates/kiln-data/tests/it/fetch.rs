//! `fetch` over a loopback HTTP server (never the internet) and from a local directory.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use kiln_data::fetch::{FetchSource, fetch, known};
use kiln_data::{DataError, DatasetFormat};

use crate::shared_fashion_dir;

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

#[test]
fn download_verifies_and_loads_fashion_mnist() {
    let dest = tempfile::tempdir().unwrap();
    let url = serve(shared_fashion_dir(), false);
    let mut calls = 0;
    let dir = fetch(
        known("fashion-mnist").unwrap(),
        &FetchSource::Network(vec![url]),
        dest.path(),
        &mut |_, _, _| calls += 1,
    )
    .unwrap();
    assert!(calls > 0, "progress is reported");
    let d = kiln_data::load(&dir, DatasetFormat::Idx, 10, [28, 28]).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (60_000, 10_000));
    assert_eq!(d.train.class_counts(10), vec![6000; 10]);
    assert_eq!(d.info.class_names[9], "Ankle boot");
    assert_eq!(d.verified.len(), 4);
}

#[test]
fn tampered_download_is_refused_and_nothing_is_kept() {
    let dest = tempfile::tempdir().unwrap();
    let url = serve(shared_fashion_dir(), true);
    let err = fetch(
        known("fashion-mnist").unwrap(),
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
    // Fashion-MNIST files are not MNIST: their content hashes differ.
    let err = fetch(
        known("mnist").unwrap(),
        &FetchSource::Dir(shared_fashion_dir()),
        tempfile::tempdir().unwrap().path(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    let err = known("cifar").unwrap_err();
    assert!(err.to_string().contains("mnist, fashion-mnist"), "{err}");
}
