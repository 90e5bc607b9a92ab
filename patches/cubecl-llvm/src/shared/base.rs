//! The LLVM compiler's types, as cubecl-cuda 0.11.3 names them, with no LLVM behind them.

use crate::{nvptx::ptx_version::PtxVersion, target::LlvmTarget};
use cubecl_core::ir::{amd::GfxArch, nvidia::SmArch};
use cubecl_environment::backtrace::BackTrace;
use cubecl_runtime::{
    compiler::{CompilationError, Compiler},
    kernel::{BufferIOAttr, KernelDefinition},
};

/// What every kernel handed to [`PlironCompiler`] gets back, as a
/// [`CompilationError::Generic`].
pub const LLVM_UNAVAILABLE: &str = "kiln's offline build has no LLVM compiler: cubecl-llvm is \
     replaced by the stand-in in patches/cubecl-llvm (docs/cuda-offline.md), and CUDA kernels \
     are compiled by NVRTC (cubecl-cuda's `cpp` feature, which kiln's `cuda` feature turns on). \
     Something selected cubecl-cuda's LLVM backend (`CudaBackend::Llvm`) or cubecl-cpu's JIT.";

/// The LLVM compiler. [`Compiler::compile`] answers every kernel with [`LLVM_UNAVAILABLE`].
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    pub target: LlvmTarget,
}

/// The real crate's compilation options, less the CPU-only ones (cubecl-cuda fills the rest
/// with `..Default::default()`).
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// AMDGPU architecture, or `None` for other targets.
    pub arch: Option<GfxArch>,
    /// NVPTX architecture, or `None` for other targets.
    pub sm_arch: Option<SmArch>,
    /// PTX version to emit, or `None` for the oldest the architecture accepts.
    pub ptx_version: Option<PtxVersion>,
    /// Pass scalars and static metadata in the kernel parameter block.
    pub grid_constants: bool,
}

/// Compiled PTX module: the fields cubecl-cuda reads. Never produced here.
#[derive(Clone, Debug)]
pub struct NvptxModule {
    /// NUL-terminated PTX assembly.
    pub ptx: Vec<core::ffi::c_char>,
    /// Kernel entry point symbol.
    pub entrypoint: String,
    /// IR for logging and cache keys.
    pub ir: String,
    /// Shared memory required per launch, in bytes.
    pub shared_memory_size: usize,
    /// Buffer access modes in binding order.
    pub io: Vec<BufferIOAttr>,
}

/// Compiled kernel artifact. `non_exhaustive` keeps cubecl-cuda's catch-all arm (written for
/// the real crate's other variants) a reachable one.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PlironArtifact {
    NvptxCode(NvptxModule),
}

impl core::fmt::Display for PlironArtifact {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlironArtifact::NvptxCode(module) => write!(f, "{}", module.ir),
        }
    }
}

impl Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    fn buffer_io(repr: &Self::Representation) -> Option<Vec<BufferIOAttr>> {
        match repr {
            PlironArtifact::NvptxCode(module) => Some(module.io.clone()),
        }
    }

    fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _compilation_options: &Self::CompilationOptions,
    ) -> Result<Self::Representation, CompilationError> {
        Err(CompilationError::Generic {
            reason: LLVM_UNAVAILABLE.to_string(),
            backtrace: BackTrace::capture(),
        })
    }

    fn extension(&self) -> &'static str {
        match self.target {
            LlvmTarget::Cpu => "plir",
            LlvmTarget::Nvptx => "ll",
        }
    }

    fn lang_tag(&self) -> &'static str {
        match self.target {
            LlvmTarget::Cpu => "mlir",
            LlvmTarget::Nvptx => "llvm",
        }
    }
}
