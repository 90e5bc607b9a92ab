//! `kiln serve`: answer `/predict` and the `KServe` v2 protocol for a trained model.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use kiln_serve::{AppState, LoadedModel, ServeConfig, ServeError};

use crate::{UsageError, device};

/// `kiln serve`
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// A run directory (its best artifact is served) or a model artifact directory.
    #[arg(long, value_name = "RUN_OR_ARTIFACT")]
    model: PathBuf,
    /// Server settings (see configs/serve.toml); defaults apply to anything left out.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides the config's `addr`.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Device: auto (default: ndarray for a CNN, whose batched convolutions it computes ~1.7x
    /// faster than flex here; cpu = flex for an MLP), cpu, ndarray, wgpu, vulkan, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Write logs (the access log included) as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

pub(crate) fn run(args: &ServeArgs) -> Result<u8> {
    init_logging(args.log_json);
    let started = Instant::now();
    let mut config = match &args.config {
        Some(path) => ServeConfig::from_file(path)?,
        None => ServeConfig::default(),
    };
    if let Some(addr) = args.addr {
        config.addr = addr;
    }
    let wanted = match args.device.as_str() {
        "auto" => auto_device(&args.model)?,
        other => other.to_string(),
    };
    let (device, device_name) = device::parse(&wanted).map_err(|e| UsageError(format!("{e:#}")))?;
    let model = LoadedModel::load(&args.model, &device)?;
    // One forward pass now, so the first request does not pay for lazy initialisation.
    let _ = model.probabilities(vec![0.0; kiln_serve::PIXELS], 1);
    let admin_key = std::env::var(&config.admin.key_env).ok();
    if admin_key.is_none() {
        tracing::warn!(
            "{} is not set: /admin/reload is off (SIGHUP still reloads)",
            config.admin.key_env
        );
    }
    let addr = config.addr;
    let (name, version) = (model.name().to_string(), model.version.clone());
    let state = AppState::new(config, model, args.model.clone(), admin_key);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(ServeError::Io)?;
        tracing::info!(%name, %version, device = %device_name, %local, "serving");
        println!(
            "kiln serve: {name} {version} on {device_name} at http://{local} (ready in {} ms)",
            started.elapsed().as_millis()
        );
        kiln_serve::serve(listener, state.clone(), kiln_serve::shutdown_signal(state)).await?;
        println!("kiln serve: stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The CPU backend measured fastest for serving this artifact's architecture (`kiln bench
/// --device ndarray` vs `--device cpu`: CNN batch 256 1.6 k vs 0.9 k images/s; the MLP is
/// faster on flex at every batch size).
fn auto_device(model: &std::path::Path) -> Result<String> {
    let (_, manifest) = kiln_model::artifact::read_manifest(model)?;
    let cnn = manifest.architecture.kind() == "cnn";
    Ok(if cnn && device::parse("ndarray").is_ok() {
        "ndarray"
    } else {
        "cpu"
    }
    .to_string())
}
