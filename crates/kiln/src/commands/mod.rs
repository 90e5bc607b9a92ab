//! One module per subcommand.

pub mod bench;
pub mod data;
pub mod eval;
pub mod serve;
pub mod train;
