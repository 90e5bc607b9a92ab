//! Reading event files back: scalars, histograms, images, hparams and session starts.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::proto::{self, event, hparams_plugin_data, summary_value};
use crate::record::{ReadOutcome, read_record};

/// Why an event file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The event file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record failed its checksum or did not decode.
    #[error("{}: record {index}: {message}", path.display())]
    Corrupt {
        /// The event file.
        path: PathBuf,
        /// 0-based record number.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// One summary value read back, simplified.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A scalar.
    Scalar(f32),
    /// A histogram: total count and bucket counts.
    Histogram {
        /// Number of values.
        count: f64,
        /// Count per bucket.
        buckets: Vec<f64>,
    },
    /// An encoded image.
    Image {
        /// Height in pixels.
        height: i32,
        /// Width in pixels.
        width: i32,
        /// PNG bytes.
        png: Vec<u8>,
    },
    /// Hparams session start: the hyperparameter names.
    HParamsStart(Vec<String>),
    /// Another hparams record (experiment or session end).
    HParamsOther,
    /// Anything else.
    Other,
}

/// A summary value with its tag and step.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Global step.
    pub step: i64,
    /// Summary tag.
    pub tag: String,
    /// The value.
    pub entry: Entry,
}

/// Everything read from one event file.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    /// The file-version string of the first record.
    pub file_version: Option<String>,
    /// Steps at which a session (re)started.
    pub session_starts: Vec<i64>,
    /// Every summary value, in file order.
    pub points: Vec<Point>,
    /// Whether the file ended inside a record (an interrupted writer).
    pub truncated: bool,
}

impl EventLog {
    /// `(step, value)` of every scalar with `tag`, in file order.
    #[must_use]
    pub fn scalars(&self, tag: &str) -> Vec<(i64, f32)> {
        self.points
            .iter()
            .filter(|p| p.tag == tag)
            .filter_map(|p| match p.entry {
                Entry::Scalar(v) => Some((p.step, v)),
                _ => None,
            })
            .collect()
    }

    /// The distinct tags, sorted.
    #[must_use]
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self.points.iter().map(|p| p.tag.clone()).collect();
        tags.sort();
        tags.dedup();
        tags
    }
}

/// Reads an event file, checking every record's checksums.
///
/// # Errors
/// [`ReadError`] for I/O errors and corrupt records; a truncated last record is not an error
/// (it is flagged in [`EventLog::truncated`]).
pub fn read_events(path: &Path) -> Result<EventLog, ReadError> {
    let file = std::fs::File::open(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut input = BufReader::new(file);
    let mut log = EventLog::default();
    for index in 0.. {
        let corrupt = |message: String| ReadError::Corrupt {
            path: path.to_path_buf(),
            index,
            message,
        };
        let payload = match read_record(&mut input).map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })? {
            ReadOutcome::Record(p) => p,
            ReadOutcome::End => break,
            ReadOutcome::Truncated => {
                log.truncated = true;
                break;
            }
            ReadOutcome::Corrupt(m) => return Err(corrupt(m.to_string())),
        };
        let event = proto::Event::decode(payload.as_slice()).map_err(|e| corrupt(e.to_string()))?;
        match event.what {
            Some(event::What::FileVersion(v)) => log.file_version = Some(v),
            Some(event::What::SessionLog(s)) if s.status == 1 => {
                log.session_starts.push(event.step);
            }
            Some(event::What::Summary(summary)) => {
                for value in summary.value {
                    log.points.push(Point {
                        step: event.step,
                        entry: entry_of(&value),
                        tag: value.tag,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(log)
}

/// The event files in `dir` (not recursive), sorted by name (creation order).
///
/// # Errors
/// The I/O error of listing the directory.
pub fn event_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn entry_of(value: &proto::SummaryValue) -> Entry {
    let is_hparams = value
        .metadata
        .as_ref()
        .and_then(|m| m.plugin_data.as_ref())
        .is_some_and(|p| p.plugin_name == "hparams");
    if is_hparams {
        let content = value
            .metadata
            .as_ref()
            .and_then(|m| m.plugin_data.as_ref())
            .map(|p| p.content.as_slice());
        return match content
            .and_then(|c| proto::HParamsPluginData::decode(c).ok())
            .and_then(|d| d.data)
        {
            Some(hparams_plugin_data::Data::SessionStartInfo(s)) => {
                Entry::HParamsStart(s.hparams.into_keys().collect())
            }
            _ => Entry::HParamsOther,
        };
    }
    match &value.value {
        Some(summary_value::Value::SimpleValue(v)) => Entry::Scalar(*v),
        Some(summary_value::Value::Histo(h)) => Entry::Histogram {
            count: h.num,
            buckets: h.bucket.clone(),
        },
        Some(summary_value::Value::Image(i)) => Entry::Image {
            height: i.height,
            width: i.width,
            png: i.encoded_image_string.clone(),
        },
        _ => Entry::Other,
    }
}
