use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::proto::{self, event, hparams_plugin_data, proto_value, summary_value};
use crate::record::write_record;

/// An hparam value as `TensorBoard`'s `HParams` tab shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    /// A number.
    Number(f64),
    /// A string.
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl HParamValue {
    fn to_proto(&self) -> proto::ProtoValue {
        let kind = match self {
            Self::Number(v) => proto_value::Kind::NumberValue(*v),
            Self::Text(v) => proto_value::Kind::StringValue(v.clone()),
            Self::Bool(v) => proto_value::Kind::BoolValue(*v),
        };
        proto::ProtoValue { kind: Some(kind) }
    }

    fn type_code(&self) -> i32 {
        match self {
            Self::Text(_) => 1,
            Self::Bool(_) => 2,
            Self::Number(_) => 3,
        }
    }
}

/// Writes one `TensorBoard` event file (`events.out.tfevents.<time>.<host>.<pid>.kiln`).
///
/// Records are buffered; call [`EventWriter::flush`] at points where a reader should see them.
#[derive(Debug)]
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if needed) and writes the file-version record.
    ///
    /// # Errors
    /// The I/O error of creating or writing the file.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map_or_else(|| "localhost".to_string(), |h| h.trim().to_string());
        let mut name = format!(
            "events.out.tfevents.{}.{host}.{}.kiln",
            now.as_secs(),
            std::process::id()
        );
        // Two writers in one second in one process (a resume right after a start) must not collide.
        let mut n = 1;
        while dir.join(&name).exists() {
            name = format!(
                "events.out.tfevents.{}.{host}.{}.kiln{n}",
                now.as_secs(),
                std::process::id()
            );
            n += 1;
        }
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let mut writer = Self {
            out: BufWriter::new(file),
            path,
        };
        writer.write_event(0, event::What::FileVersion("brain.Event:2".into()))?;
        Ok(writer)
    }

    /// The file being written.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks a (re)start at `step`: `TensorBoard` then discards events of earlier sessions with a
    /// step at or after this one, so a resumed run shows one clean curve.
    ///
    /// # Errors
    /// The I/O error of writing.
    pub fn session_start(&mut self, step: i64) -> std::io::Result<()> {
        let log = proto::SessionLog {
            status: 1,
            checkpoint_path: String::new(),
            msg: String::new(),
        };
        self.write_event(step, event::What::SessionLog(log))
    }

    /// A scalar point.
    ///
    /// # Errors
    /// The I/O error of writing.
    pub fn scalar(&mut self, tag: &str, value: f64, step: i64) -> std::io::Result<()> {
        self.summary(
            step,
            value_of(tag, summary_value::Value::SimpleValue(value as f32), None),
        )
    }

    /// A histogram of `values` in `buckets` equal-width buckets (non-finite values are skipped).
    ///
    /// # Errors
    /// The I/O error of writing.
    pub fn histogram(
        &mut self,
        tag: &str,
        values: &[f32],
        buckets: usize,
        step: i64,
    ) -> std::io::Result<()> {
        let histo = histogram(values, buckets.max(1));
        self.summary(
            step,
            value_of(tag, summary_value::Value::Histo(histo), None),
        )
    }

    /// An 8-bit grayscale image (`height * width` pixels, row-major), stored as PNG.
    ///
    /// # Errors
    /// The I/O error of writing, or `InvalidInput` when the pixel count is wrong.
    pub fn gray_image(
        &mut self,
        tag: &str,
        pixels: &[u8],
        height: usize,
        width: usize,
        step: i64,
    ) -> std::io::Result<()> {
        let png = encode_png(pixels, height, width)?;
        let image = proto::Image {
            height: i32::try_from(height).unwrap_or(i32::MAX),
            width: i32::try_from(width).unwrap_or(i32::MAX),
            colorspace: 1,
            encoded_image_string: png,
        };
        self.summary(
            step,
            value_of(tag, summary_value::Value::Image(image), None),
        )
    }

    /// The hparams plugin's experiment description and this session's hyperparameter values, so
    /// `TensorBoard`'s `HParams` tab lists the run with its settings and `metrics` (scalar tags).
    ///
    /// # Errors
    /// The I/O error of writing.
    pub fn hparams(
        &mut self,
        values: &BTreeMap<String, HParamValue>,
        metrics: &[&str],
        group: &str,
    ) -> std::io::Result<()> {
        let now = unix_now();
        let experiment = proto::Experiment {
            time_created_secs: now,
            hparam_infos: values
                .iter()
                .map(|(name, v)| proto::HParamInfo {
                    name: name.clone(),
                    r#type: v.type_code(),
                    ..Default::default()
                })
                .collect(),
            metric_infos: metrics
                .iter()
                .map(|tag| proto::MetricInfo {
                    name: Some(proto::MetricName {
                        group: String::new(),
                        tag: (*tag).to_string(),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let start = proto::SessionStartInfo {
            hparams: values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_proto()))
                .collect(),
            group_name: group.to_string(),
            start_time_secs: now,
            ..Default::default()
        };
        self.hparams_record(
            "_hparams_/experiment",
            hparams_plugin_data::Data::Experiment(experiment),
        )?;
        self.hparams_record(
            "_hparams_/session_start_info",
            hparams_plugin_data::Data::SessionStartInfo(start),
        )
    }

    /// Ends the hparams session (`success` or failure).
    ///
    /// # Errors
    /// The I/O error of writing.
    pub fn hparams_end(&mut self, success: bool) -> std::io::Result<()> {
        let end = proto::SessionEndInfo {
            status: if success { 1 } else { 2 },
            end_time_secs: unix_now(),
        };
        self.hparams_record(
            "_hparams_/session_end_info",
            hparams_plugin_data::Data::SessionEndInfo(end),
        )
    }

    /// Flushes buffered records to the operating system and the disk.
    ///
    /// # Errors
    /// The I/O error of flushing.
    pub fn flush(&mut self) -> std::io::Result<()> {
        kiln_fs::failpoint(kiln_fs::Op::Write, &self.path)?;
        self.out.flush()?;
        kiln_fs::failpoint(kiln_fs::Op::Fsync, &self.path)?;
        self.out.get_ref().sync_data()
    }

    fn hparams_record(
        &mut self,
        tag: &str,
        data: hparams_plugin_data::Data,
    ) -> std::io::Result<()> {
        let content = proto::HParamsPluginData {
            version: 0,
            data: Some(data),
        }
        .encode_to_vec();
        let metadata = proto::SummaryMetadata {
            plugin_data: Some(proto::PluginData {
                plugin_name: "hparams".into(),
                content,
            }),
            ..Default::default()
        };
        // The hparams plugin reads tensor summaries; its own writer stores an empty string tensor.
        let tensor = proto::TensorProto {
            dtype: 7,
            tensor_shape: Some(proto::TensorShapeProto::default()),
            string_val: vec![Vec::new()],
            ..Default::default()
        };
        self.summary(
            0,
            value_of(tag, summary_value::Value::Tensor(tensor), Some(metadata)),
        )
    }

    fn summary(&mut self, step: i64, value: proto::SummaryValue) -> std::io::Result<()> {
        self.write_event(
            step,
            event::What::Summary(proto::Summary { value: vec![value] }),
        )
    }

    fn write_event(&mut self, step: i64, what: event::What) -> std::io::Result<()> {
        let event = proto::Event {
            wall_time: unix_now(),
            step,
            what: Some(what),
        };
        write_record(&mut self.out, &event.encode_to_vec())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

fn value_of(
    tag: &str,
    value: summary_value::Value,
    metadata: Option<proto::SummaryMetadata>,
) -> proto::SummaryValue {
    proto::SummaryValue {
        tag: tag.to_string(),
        metadata,
        value: Some(value),
        ..Default::default()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Builds an equal-width histogram; `TensorBoard` reads `bucket_limit[i]` as the right edge of
/// bucket `i`, the left edge of the first being `min`.
#[must_use]
pub fn histogram(values: &[f32], buckets: usize) -> proto::HistogramProto {
    let finite: Vec<f64> = values
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| f64::from(v))
        .collect();
    let (min, max) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if finite.is_empty() {
        return proto::HistogramProto::default();
    }
    let width = (max - min) / buckets as f64;
    let mut counts = vec![0f64; buckets];
    for &v in &finite {
        let i = if width > 0.0 {
            (((v - min) / width) as usize).min(buckets - 1)
        } else {
            0
        };
        counts[i] += 1.0;
    }
    proto::HistogramProto {
        min,
        max,
        num: finite.len() as f64,
        sum: finite.iter().sum(),
        sum_squares: finite.iter().map(|v| v * v).sum(),
        bucket_limit: (1..=buckets)
            .map(|i| {
                if i == buckets {
                    max
                } else {
                    min + width * i as f64
                }
            })
            .collect(),
        bucket: counts,
    }
}

fn encode_png(pixels: &[u8], height: usize, width: usize) -> std::io::Result<Vec<u8>> {
    use image::ImageEncoder;
    if pixels.len() != height * width {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "image has {} pixels, expected {height}x{width}",
                pixels.len()
            ),
        ));
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            pixels,
            u32::try_from(width).unwrap_or(u32::MAX),
            u32::try_from(height).unwrap_or(u32::MAX),
            image::ExtendedColorType::L8,
        )
        .map_err(std::io::Error::other)?;
    Ok(png)
}
