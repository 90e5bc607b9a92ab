use std::path::PathBuf;

/// What can go wrong reading or writing a model artifact.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An operating-system error on a file of the artifact (a full disk, a failing device).
    #[error("{}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The path holds no artifact.
    #[error(
        "{}: no model artifact here (expected {} or a run directory with artifacts/final/{}); train one with `kiln train`",
        path.display(), crate::artifact::MANIFEST, crate::artifact::MANIFEST
    )]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The manifest is not valid or describes something this version cannot use.
    #[error("{}: invalid model artifact: {message}", path.display())]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights file does not match the checksum in the manifest.
    #[error(
        "{}: weights are corrupt (sha256 {found}, manifest says {expected}); re-export or retrain the model",
        path.display()
    )]
    Corrupt {
        /// The weights file.
        path: PathBuf,
        /// Checksum in the manifest.
        expected: String,
        /// Checksum of the file.
        found: String,
    },
    /// The weights do not fit the architecture the manifest describes.
    #[error("{}: weights do not fit the declared architecture: {message}", path.display())]
    Mismatch {
        /// The weights file.
        path: PathBuf,
        /// burn's description of the mismatch.
        message: String,
    },
    /// burn could not serialise the weights (not the user's input).
    #[error("cannot serialise the weights")]
    Serialize {
        /// burn's error.
        #[source]
        source: burn::store::RecordError,
    },
    /// A dataset-side error.
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
}

impl ModelError {
    /// Whether the user's input (a path, a file they gave) caused it, rather than the machine;
    /// the command line exits 2 for these and 1 for the rest.
    #[must_use]
    pub fn is_user_input(&self) -> bool {
        match self {
            Self::Io { .. } | Self::Serialize { .. } => false,
            Self::Data(e) => e.is_user_input(),
            Self::NotFound { .. }
            | Self::Invalid { .. }
            | Self::Corrupt { .. }
            | Self::Mismatch { .. } => true,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
