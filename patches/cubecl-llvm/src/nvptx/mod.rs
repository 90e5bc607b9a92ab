//! NVPTX target: only the PTX version table, which cubecl-cuda reads whichever backend runs.

pub mod ptx_version;
