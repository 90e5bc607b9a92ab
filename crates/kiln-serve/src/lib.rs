//! Serving for kiln: the HTTP server behind `kiln serve` (`/predict`, `KServe` v2, dynamic
//! batching, limits, metrics and hot reload).
//!
//! Builds on `kiln-model`'s artifact and `kiln-data`'s `preprocess()`; knows nothing of
//! training. [`app`] gives the axum router (tests drive it with `oneshot`), [`serve`] runs it
//! on a listener until a shutdown signal.

#![warn(missing_docs)]

pub mod auth;
mod batcher;
pub mod config;
mod error;
pub mod fit;
pub mod input;
mod metrics;
mod middleware;
mod model;
mod numbers;
pub mod ratelimit;
mod request;
mod routes;
mod server;
mod state;
pub mod tls;

pub use batcher::{BatchError, Batcher};
pub use config::ServeConfig;
pub use error::{ApiError, ServeError, V2Error};
pub use metrics::Metrics;
pub use model::{InputSchema, LoadedModel, ModelSlot};
pub use routes::app;
pub use server::{ReloadRequests, reload_on_sighup, reload_until, serve, shutdown_signal};
pub use state::{AppState, ReloadOutcome};
