//! Architectures added from outside kiln: implement [`Network`] for a config struct, call
//! [`register`] once at start-up, and `[model] kind = "<KIND>"` trains, checkpoints, serves and
//! saves that network like the built-in `mlp` and `cnn`.
//!
//! A registered network is a stack of kiln's standard layers ([`LayerSpec`]) followed by a
//! linear classifier; the config struct (its serde fields) is what `[model]` holds besides
//! `kind`, and what the artifact's manifest records.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sequential::LayerSpec;

/// An architecture kiln can build by name.
pub trait Network: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name configs and manifests use (`[model] kind = "..."`); not `mlp` or `cnn`.
    const KIND: &'static str;

    /// The layers before the classifier, for `[channels, height, width]` inputs.
    fn layers(&self, input: [usize; 3]) -> Vec<LayerSpec>;
}

/// A registered architecture, with its config type erased.
#[derive(Clone, Copy)]
struct Entry {
    /// Parses the `[model]` fields (without `kind`) and gives the layers for an input shape.
    layers: fn(&serde_json::Value, [usize; 3]) -> Result<Vec<LayerSpec>, String>,
    /// Parses the fields and writes them back with every default filled in.
    resolve: fn(&serde_json::Value) -> Result<serde_json::Value, String>,
}

static REGISTRY: RwLock<BTreeMap<&'static str, Entry>> = RwLock::new(BTreeMap::new());

/// Registers `N` under [`Network::KIND`] for this process (again: replaces it).
///
/// # Panics
/// When `N::KIND` is `mlp` or `cnn`, which are built in.
pub fn register<N: Network>() {
    assert!(
        !BUILT_IN.contains(&N::KIND),
        "{} is a built-in model kind",
        N::KIND
    );
    let entry = Entry {
        layers: |params, input| {
            let config: N = serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
            Ok(config.layers(input))
        },
        resolve: |params| {
            let config: N = serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
            serde_json::to_value(config).map_err(|e| e.to_string())
        },
    };
    REGISTRY
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(N::KIND, entry);
}

/// The built-in kinds.
pub const BUILT_IN: [&str; 2] = ["mlp", "cnn"];

/// Every kind this process can build, built-in ones first.
#[must_use]
pub fn kinds() -> Vec<String> {
    let registry = REGISTRY.read().unwrap_or_else(PoisonError::into_inner);
    BUILT_IN
        .iter()
        .copied()
        .chain(registry.keys().copied())
        .map(String::from)
        .collect()
}

/// The layers of a registered architecture for these `[model]` fields.
///
/// # Errors
/// When `kind` is not registered in this process, or the fields do not parse.
pub(crate) fn layers(
    kind: &str,
    params: &serde_json::Value,
    input: [usize; 3],
) -> Result<Vec<LayerSpec>, String> {
    let entry = REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(kind)
        .copied()
        .ok_or_else(|| unknown(kind))?;
    (entry.layers)(params, input).map_err(|e| format!("model ({kind}): {e}"))
}

/// A registered kind's fields with its defaults filled in (as the built-in kinds' are), so
/// the resolved config shows them and `--set model.<field>` finds them; fields that do not
/// parse are kept as given, for [`layers`] to report.
pub(crate) fn resolve(kind: &str, params: serde_json::Value) -> serde_json::Value {
    let entry = REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(kind)
        .copied();
    match entry.map(|e| (e.resolve)(&params)) {
        Some(Ok(resolved)) => resolved,
        _ => params,
    }
}

/// Whether `kind` can be built in this process.
pub(crate) fn is_known(kind: &str) -> bool {
    BUILT_IN.contains(&kind)
        || REGISTRY
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(kind)
}

/// The message for a kind nobody registered.
pub(crate) fn unknown(kind: &str) -> String {
    format!(
        "unknown model kind {kind:?}; this program knows {} (a kind defined in a program of \
         your own must be registered there with kiln_model::registry::register)",
        kinds().join(", ")
    )
}
