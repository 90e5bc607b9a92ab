use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kiln_data::DatasetFormat;
use kiln_train::{TrainConfig, evaluate};

use crate::output::{out, outln};
use crate::{UsageError, device};

/// `kiln eval`
#[derive(Args)]
pub(crate) struct EvalArgs {
    /// A run directory (its best artifact is used) or a model artifact directory.
    #[arg(value_name = "RUN_OR_ARTIFACT")]
    path: PathBuf,
    /// Dataset directory; defaults to the one the run trained on.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Layout of --data.
    #[arg(long, value_enum, default_value = "idx")]
    format: Format,
    /// Which split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Device: cpu (default), wgpu, vulkan, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Items per forward pass.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Split {
    Test,
    Train,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Idx,
    Folder,
}

pub(crate) fn run(args: &EvalArgs) -> Result<u8> {
    let (device, device_name) =
        device::parse(&args.device).map_err(|e| UsageError(format!("{e:#}")))?;
    let artifact = kiln_model::artifact::load(&args.path, &device)?;
    let manifest = &artifact.manifest;
    let (dir, format) = if let Some(dir) = &args.data {
        (
            dir.clone(),
            match args.format {
                Format::Idx => DatasetFormat::Idx,
                Format::Folder => DatasetFormat::Folder,
            },
        )
    } else {
        let config_path =
            PathBuf::from(&manifest.lineage.run_dir).join(kiln_train::run::CONFIG_FILE);
        let config = TrainConfig::load(&config_path, &[]).map_err(|_| {
            UsageError(format!(
                "cannot find the dataset this model was trained on ({} is not readable): pass --data <dir>",
                config_path.display()
            ))
        })?;
        (config.data.dir, config.data.format)
    };
    let [_, height, width] = manifest.input_shape;
    let dataset = kiln_data::load(&dir, format, manifest.num_classes(), [height, width])
        .with_context(|| format!("loading dataset {}", dir.display()))?;
    let set = match args.split {
        Split::Test => &dataset.test,
        Split::Train => &dataset.train,
    };
    if [set.height, set.width] != [height, width] {
        return Err(UsageError(format!(
            "the model expects {height}x{width} images but {} holds {}x{}",
            dir.display(),
            set.height,
            set.width
        ))
        .into());
    }
    let report = evaluate(
        &artifact.model,
        set,
        &manifest.normalization.table(),
        &manifest.class_names,
        args.batch_size.max(1),
        &device,
    );
    if args.json {
        let out = serde_json::json!({
            "model": { "name": manifest.name, "version": manifest.version, "dir": artifact.dir },
            "dataset": dir,
            "split": match args.split { Split::Test => "test", Split::Train => "train" },
            "device": device_name,
            "report": report,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        outln!(
            "model     {} ({}), {}",
            manifest.name,
            manifest.version,
            artifact.dir.display()
        );
        outln!(
            "dataset   {} ({} split)",
            dir.display(),
            match args.split {
                Split::Test => "test",
                Split::Train => "train",
            }
        );
        out!("{}", report.table());
    }
    Ok(0)
}
