//! What every handler shares: the model slot, the batcher, limits, metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::batcher::Batcher;
use crate::config::ServeConfig;
use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::model::{LoadedModel, ModelSlot};
use crate::ratelimit::RateLimiter;

/// Shared state of one server.
#[derive(Debug)]
pub struct AppState {
    /// The settings it was started with.
    pub config: ServeConfig,
    /// The model in use.
    pub slot: ModelSlot,
    /// The inference queue.
    pub batcher: Batcher,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Per-client limits.
    pub limiter: Arc<dyn RateLimiter>,
    /// Failures of a shared rate-limit store, for rate-limited logging.
    pub(crate) store_health: crate::ratelimit::StoreHealth,
    /// Requests handled at once.
    pub concurrency: Arc<Semaphore>,
    /// Large bodies and images parsed at once, off the executor.
    pub decode_permits: Arc<Semaphore>,
    /// The admin key; admin routes are refused while there is none.
    pub admin_key: Option<String>,
    /// API keys and roles (`[auth]`); with keys on, the admin role governs admin routes.
    pub auth: crate::auth::Auth,
    /// Set when shutdown begins: `/readyz` turns 503 so load balancers stop sending.
    pub draining: AtomicBool,
    /// The device models load onto.
    pub device: Device,
    /// Serialises reloads.
    reload_lock: tokio::sync::Mutex<()>,
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// The model name now served.
    pub model: String,
    /// Its version.
    pub version: String,
    /// The version it replaced.
    pub previous_version: String,
    /// Where it was loaded from.
    pub path: String,
}

impl AppState {
    /// State for serving `model` (loaded from `source`) with `config`, using the rate limiter
    /// `rate_limit.store` names (in memory, or Redis, connected on first use); starts the
    /// inference workers.
    #[must_use]
    pub fn new(
        config: ServeConfig,
        model: LoadedModel,
        source: PathBuf,
        admin_key: Option<String>,
    ) -> Arc<Self> {
        let limiter = crate::ratelimit::from_config(&config.rate_limit);
        Self::with_limiter(config, model, source, admin_key, limiter)
    }

    /// As [`AppState::new`], with another limiter (a shared store across replicas).
    #[must_use]
    pub fn with_limiter(
        config: ServeConfig,
        model: LoadedModel,
        source: PathBuf,
        admin_key: Option<String>,
        limiter: Arc<dyn RateLimiter>,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::default());
        let device = model.device.clone();
        Arc::new(Self {
            batcher: Batcher::start(&config.batching, Arc::clone(&metrics)),
            concurrency: Arc::new(Semaphore::new(config.limits.max_concurrency)),
            decode_permits: Arc::new(Semaphore::new(
                2 * std::thread::available_parallelism().map_or(1, usize::from),
            )),
            slot: ModelSlot::new(model, source),
            metrics,
            limiter,
            store_health: crate::ratelimit::StoreHealth::default(),
            admin_key: admin_key.filter(|k| !k.is_empty()),
            auth: crate::auth::Auth::new(&config.auth),
            draining: AtomicBool::new(false),
            device,
            reload_lock: tokio::sync::Mutex::new(()),
            config,
        })
    }

    /// Loads the artifact at `path` (or the path served at start) off the async executor and,
    /// if it loads and checks, swaps it in. A bad artifact is refused and the old model keeps
    /// serving; requests already admitted finish on the model they started with.
    ///
    /// # Errors
    /// The [`ServeError`] that refused the new artifact.
    pub async fn reload(
        self: &Arc<Self>,
        path: Option<&Path>,
    ) -> Result<ReloadOutcome, ServeError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let path = path.map_or_else(|| self.slot.source().to_path_buf(), Path::to_path_buf);
        let device = self.device.clone();
        let load_path = path.clone();
        let loaded = tokio::task::spawn_blocking(move || LoadedModel::load(&load_path, &device))
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))?;
        match loaded {
            Ok(model) => {
                let outcome = ReloadOutcome {
                    model: model.name().to_string(),
                    version: model.version.clone(),
                    previous_version: self.slot.get().version.clone(),
                    path: model.dir.display().to_string(),
                };
                self.slot.swap(model);
                self.metrics.reload("ok");
                tracing::info!(model = %outcome.model, version = %outcome.version, previous = %outcome.previous_version, "model reloaded");
                Ok(outcome)
            }
            Err(e) => {
                self.metrics.reload("failed");
                tracing::warn!(path = %path.display(), error = %e, "reload refused; the old model keeps serving");
                Err(e)
            }
        }
    }

    /// Whether shutdown has begun.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
