//! `kiln serve`: answer `/predict` and the `KServe` v2 protocol for a trained model.

use std::io::{IsTerminal as _, Read as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use kiln_serve::auth::AuthMode;
use kiln_serve::{AppState, LoadedModel, ServeConfig, ServeError};

use crate::output::outln;
use crate::{UsageError, device};

/// `kiln serve`
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// A run directory (its best artifact is served) or a model artifact directory.
    #[arg(
        long,
        value_name = "RUN_OR_ARTIFACT",
        required_unless_present = "hash_key"
    )]
    model: Option<PathBuf>,
    /// Server settings (see configs/serve.toml); defaults apply to anything left out.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides the config's `addr`.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Device: auto (default: cpu, burn's flex backend with kiln's convolution kernels, the
    /// fastest CPU backend for both MLPs and CNNs), cpu, ndarray, wgpu, vulkan, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Write logs (the access log included) as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Serve HTTPS with this PEM certificate chain (and --tls-key); overrides `[tls] cert`.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key (with --tls-cert); overrides `[tls] key`.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Read an API key on standard input and print its SHA-256, as the keys file's `sha256`
    /// wants it (one trailing newline is dropped); serves nothing.
    #[arg(long, conflicts_with_all = ["model", "config", "addr", "tls_cert", "tls_key"])]
    hash_key: bool,
}

pub(crate) fn run(args: &ServeArgs) -> Result<u8> {
    if args.hash_key {
        return print_key_hash();
    }
    let Some(model_path) = &args.model else {
        return Err(UsageError("--model is required".into()).into());
    };
    init_logging(args.log_json);
    let started = Instant::now();
    let mut config = match &args.config {
        Some(path) => ServeConfig::from_file(path)?,
        None => ServeConfig::default(),
    };
    if let Some(addr) = args.addr {
        config.addr = addr;
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls.cert.clone_from(cert);
        config.tls.key.clone_from(key);
    }
    let tls = if config.tls.is_on() {
        Some(kiln_serve::tls::server_config(
            &config.tls.cert,
            &config.tls.key,
        )?)
    } else {
        None
    };
    let wanted = match args.device.as_str() {
        "auto" => "cpu".to_string(),
        other => other.to_string(),
    };
    let (device, device_name) = device::parse(&wanted).map_err(|e| UsageError(format!("{e:#}")))?;
    let model = LoadedModel::load(model_path, &device)?;
    // One forward pass now, so the first request does not pay for lazy initialisation.
    let _ = model.probabilities(vec![0.0; model.pixels()], 1);
    let admin_key = std::env::var(&config.admin.key_env).ok();
    if config.auth.mode == AuthMode::Keys {
        if admin_key.is_some() {
            tracing::warn!(
                "{} is ignored: with [auth] mode = \"keys\", keys with the admin role use /admin/*",
                config.admin.key_env
            );
        }
    } else {
        if admin_key.is_none() {
            tracing::warn!(
                "{} is not set: /admin/reload is off (SIGHUP still reloads)",
                config.admin.key_env
            );
        }
        if !config.addr.ip().is_loopback() {
            tracing::warn!(addr = %config.addr, "[auth] mode = \"off\" on a non-loopback address: anyone who can reach it may call /predict");
        }
    }
    let addr = config.addr;
    let (name, version) = (model.name().to_string(), model.version.clone());
    let state = AppState::new(config, model, model_path.clone(), admin_key);
    // Read the keys file now, so a bad one stops the start (exit 2) before anything listens.
    state.auth.reload()?;
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
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%name, %version, device = %device_name, %local, scheme, "serving");
        outln!(
            "kiln serve: {name} {version} on {device_name} at {scheme}://{local} (ready in {} ms)",
            started.elapsed().as_millis()
        );
        let shutdown = kiln_serve::shutdown_signal(state.clone());
        match tls {
            Some(tls) => kiln_serve::tls::serve_tls(listener, tls, state, shutdown).await?,
            None => kiln_serve::serve(listener, state, shutdown).await?,
        }
        outln!("kiln serve: stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

/// `--hash-key`: the SHA-256 of the key on standard input, in hex.
fn print_key_hash() -> Result<u8> {
    let mut key = Vec::new();
    std::io::stdin()
        .read_to_end(&mut key)
        .context("reading the key from standard input")?;
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.is_empty() {
        return Err(UsageError("no key on standard input".into()).into());
    }
    outln!("{}", kiln_serve::auth::hash_key(&key));
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
