//! `kiln export`: write a trained model in a format other tools read (ONNX).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::output::outln;
use crate::{UsageError, device};

/// `kiln export`
#[derive(Args)]
pub(crate) struct ExportArgs {
    /// A run directory (its best artifact is exported) or a model artifact directory.
    #[arg(value_name = "RUN_OR_ARTIFACT")]
    path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "onnx")]
    format: Format,
    /// File to write (replaced atomically if it exists).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// ONNX, opset 18: raw 0-255 pixels in (normalisation folded in), logits and probabilities
    /// out, with a dynamic batch axis.
    Onnx,
}

pub(crate) fn run(args: &ExportArgs) -> Result<u8> {
    let (device, _) = device::parse("cpu").map_err(|e| UsageError(format!("{e:#}")))?;
    let artifact = kiln_model::artifact::load(&args.path, &device)?;
    let manifest = &artifact.manifest;
    let bytes = match args.format {
        Format::Onnx => kiln_onnx::to_bytes(manifest, &artifact.model).map_err(|e| {
            let message = format!("exporting {}: {e}", artifact.dir.display());
            if e.is_user_input() {
                anyhow::Error::new(UsageError(message))
            } else {
                anyhow::Error::new(e).context(message)
            }
        })?,
    };
    kiln_fs::write_atomic(&args.output, &bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let [channels, height, width] = manifest.input_shape;
    eprintln!(
        "exported {} {} ({}) from {}: ONNX opset {}, input {} float32 [batch, {channels}, {height}, {width}] raw pixels 0-255, outputs {} and {} [batch, {}], {} bytes",
        manifest.name,
        manifest.version,
        manifest.architecture.kind(),
        artifact.dir.display(),
        kiln_onnx::OPSET,
        kiln_onnx::INPUT,
        kiln_onnx::LOGITS,
        kiln_onnx::PROBABILITIES,
        manifest.num_classes(),
        bytes.len(),
    );
    outln!("{}", args.output.display());
    Ok(0)
}
