//! Examples of kiln used as a library; the code is in the `[[example]]` files beside this one.
//!
//! Run one with `cargo run --example <name> -- ...`: `embedded_inference` classifies digits
//! in-process with a trained artifact, `client` calls a running `kiln serve`.
