//! One module per subcommand.

pub(crate) mod bench;
pub(crate) mod data;
pub(crate) mod devices;
pub(crate) mod eval;
pub(crate) mod export;
pub(crate) mod runs;
pub(crate) mod serve;
pub(crate) mod sweep;
pub(crate) mod train;
