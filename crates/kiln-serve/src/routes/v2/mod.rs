//! The `KServe` v2 / Open Inference Protocol REST routes, with Triton's binary tensor extension
//! (so `tritonclient.http` works with its defaults).
//!
//! [`protocol`] holds the request and output types, [`parse`] turns a request body into
//! images, [`encode`] writes the answer as JSON or JSON plus binary tensors, and [`handlers`]
//! ties them to the routes.

mod encode;
mod handlers;
mod parse;
mod protocol;

pub(super) use handlers::{
    infer, infer_version, live, model_metadata, model_metadata_version, model_ready,
    model_ready_version, ready, server_metadata,
};

/// Header that splits a body into its JSON part and its binary tensor data.
const HEADER_LENGTH: &str = "inference-header-content-length";
