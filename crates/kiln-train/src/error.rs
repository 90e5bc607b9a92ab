use std::path::PathBuf;

/// A boxed error kept as the `source` of a [`TrainError`], so the cause survives.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    /// A checkpoint (or run directory) is missing, incomplete or corrupt; it was not loaded.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint (or run) directory.
        path: PathBuf,
        /// What is wrong, and what to do.
        message: String,
        /// The error underneath, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// Another process is training this run directory now.
    #[error(
        "{}: another kiln process is training this run; wait for it to finish or stop it first",
        path.display()
    )]
    RunInUse {
        /// The run directory.
        path: PathBuf,
    },
    /// burn could not serialise a record (a bug or an exhausted machine, not the user's input).
    #[error("{}: cannot serialise {what}", path.display())]
    Record {
        /// The file it was meant for.
        path: PathBuf,
        /// Which record.
        what: &'static str,
        /// burn's error.
        #[source]
        source: BoxError,
    },
    /// An operating-system error on a file of the run (a full disk, a failing device).
    #[error("{}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl TrainError {
    /// Whether the user's input (config, data, run directory) caused it, rather than the
    /// machine; the command line exits 2 for these and 1 for the rest.
    #[must_use]
    pub fn is_user_input(&self) -> bool {
        match self {
            Self::Config(_) | Self::Checkpoint { .. } | Self::RunInUse { .. } => true,
            Self::Data(e) => e.is_user_input(),
            Self::Model(e) => e.is_user_input(),
            Self::Record { .. } | Self::Io { .. } => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn checkpoint(
        path: impl Into<PathBuf>,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Self::Checkpoint {
            path: path.into(),
            message: message.into(),
            source,
        }
    }
}
