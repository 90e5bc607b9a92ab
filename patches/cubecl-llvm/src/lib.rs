//! kiln's offline stand-in for `cubecl-llvm` 0.11.3.
//!
//! cubecl-cuda 0.11.3 names these items of the real crate, all of which are kept here:
//!
//! - [`nvptx::ptx_version::PtxVersion`] (`runtime.rs`, `compute/context.rs`, `compiler.rs`):
//!   pure Rust, copied unchanged.
//! - [`shared::lowered_features::GpuTarget`] and [`shared::lowered_features::restrict_features`]
//!   (`runtime.rs`): pure Rust, copied unchanged (NVPTX part only). cubecl-cuda calls it only
//!   when its LLVM backend is the default one.
//! - [`PlironCompiler`], [`LlvmTarget`], [`PlironOptions`], [`PlironArtifact`],
//!   [`NvptxModule`] (`compiler.rs`): the LLVM compiler's types, with the fields cubecl-cuda
//!   reads. [`PlironCompiler`]'s `compile` returns [`LLVM_UNAVAILABLE`] as a compilation error
//!   for every kernel: nothing here compiles LLVM or links it.
//!
//! With cubecl-cuda's `cpp` feature on (kiln's `cuda` feature turns it on), cubecl-cuda's
//! default backend is NVRTC and never reaches the compiler here.

#![forbid(unsafe_code)]

pub mod nvptx;
pub mod shared;
pub mod target;

pub use shared::{LLVM_UNAVAILABLE, NvptxModule, PlironArtifact, PlironCompiler, PlironOptions};
pub use target::LlvmTarget;
