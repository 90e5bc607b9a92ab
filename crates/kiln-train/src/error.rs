use std::path::PathBuf;

/// What can stop a training run or an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is invalid (unknown key, wrong type, bad value, bad override).
    #[error("config: {0}")]
    Config(String),
    /// The dataset could not be used.
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    /// A model artifact could not be read or written.
    #[error(transparent)]
    Model(#[from] kiln_model::ModelError),
    /// A checkpoint is missing or corrupt; it was not loaded.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint (or run) directory.
        path: PathBuf,
        /// What is wrong, and what to do.
        message: String,
    },
    /// An operating-system error on a file of the run.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl TrainError {
    /// Whether the user's input (config, data, run directory) caused it; such errors exit 2.
    #[must_use]
    pub fn is_user_input(&self) -> bool {
        match self {
            Self::Config(_) | Self::Checkpoint { .. } => true,
            Self::Data(e) => e.is_user_input(),
            Self::Model(e) => !matches!(e, kiln_model::ModelError::Io { .. }),
            Self::Io { .. } => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
