//! Models for kiln: MLP and CNN definitions and the self-describing model artifact.
//!
//! Knows nothing of training or serving: both build on [`Model`] and [`artifact`].

#![warn(missing_docs)]

pub mod artifact;
mod cnn;
mod error;
mod mlp;
mod model;
mod params;
pub mod registry;
pub mod sequential;

pub use artifact::{Artifact, Lineage, Manifest};
pub use cnn::{Cnn, CnnConfig};
pub use error::ModelError;
pub use mlp::{Mlp, MlpConfig};
pub use model::{Architecture, Model, RegisteredArchitecture};
pub use params::parameters;
pub use registry::Network;
pub use sequential::{LayerSpec, Sequential};
