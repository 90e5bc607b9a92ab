//! `TensorBoard` event files for kiln: a writer and a reader of scalars, histograms, images and hparams.
//!
//! Written on `prost` and `crc32c` directly: no TensorFlow, no `protoc`, no burn.

#![warn(missing_docs)]

pub mod proto;
pub mod reader;
pub mod record;
mod writer;

pub use reader::{Entry, EventLog, Point, ReadError, event_files, read_events};
pub use writer::{EventWriter, HParamValue, histogram};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn everything_written_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.session_start(0).unwrap();
        w.scalar("train/loss", 0.5, 10).unwrap();
        w.scalar("train/loss", 0.25, 20).unwrap();
        w.histogram("weights/fc", &[0.0, 1.0, 1.0, 2.0, f32::NAN], 4, 20)
            .unwrap();
        w.gray_image("errors", &[0, 255, 128, 64], 2, 2, 20)
            .unwrap();
        let mut hp = BTreeMap::new();
        hp.insert("lr".to_string(), HParamValue::Number(1e-3));
        hp.insert("model".to_string(), HParamValue::Text("mlp".into()));
        w.hparams(&hp, &["valid/accuracy"], "g").unwrap();
        w.hparams_end(true).unwrap();
        w.flush().unwrap();

        let files = event_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        let log = read_events(&files[0]).unwrap();
        assert_eq!(log.file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(log.session_starts, vec![0]);
        assert_eq!(log.scalars("train/loss"), vec![(10, 0.5), (20, 0.25)]);
        let histo = log.points.iter().find(|p| p.tag == "weights/fc").unwrap();
        assert_eq!(
            histo.entry,
            Entry::Histogram {
                count: 4.0,
                buckets: vec![1.0, 0.0, 2.0, 1.0]
            }
        );
        let image = log.points.iter().find(|p| p.tag == "errors").unwrap();
        let Entry::Image {
            png,
            height: 2,
            width: 2,
        } = &image.entry
        else {
            panic!("{image:?}")
        };
        let decoded = image::load_from_memory(png).unwrap().to_luma8();
        assert_eq!(decoded.into_raw(), vec![0, 255, 128, 64]);
        assert!(
            log.points
                .iter()
                .any(|p| p.entry == Entry::HParamsStart(vec!["lr".into(), "model".into()]))
        );
        assert!(!log.truncated);
    }

    #[test]
    fn a_flipped_bit_is_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalar("a", 1.0, 1).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            read_events(&path),
            Err(ReadError::Corrupt { index: 1, .. })
        ));
    }
}
