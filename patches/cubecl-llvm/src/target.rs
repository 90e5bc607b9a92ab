//! LLVM compilation targets.

/// The target a [`PlironCompiler`](crate::PlironCompiler) lowers for. The real crate's `Cpu`
/// (cubecl-cpu's JIT) and `Nvptx` (cubecl-cuda) are kept; its `AmdGpu` (cubecl-hip) is not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    #[default]
    Cpu,
    Nvptx,
}

impl LlvmTarget {
    /// Whether the target provides a hardware launch grid.
    pub fn is_gpu(self) -> bool {
        !matches!(self, LlvmTarget::Cpu)
    }
}
