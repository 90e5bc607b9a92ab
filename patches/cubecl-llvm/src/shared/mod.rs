//! The compiler entry points and what the CUDA runtime reads off the device properties.

mod base;
pub mod lowered_features;

pub use base::*;
