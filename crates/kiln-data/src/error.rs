use std::path::PathBuf;

/// Everything that can go wrong while finding, checking, reading or fetching a dataset.
///
/// Each variant names the file or directory involved and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset directory is not there.
    #[error(
        "dataset directory {} does not exist: fetch it with `kiln data fetch <name>` or point `data.dir` at an existing directory",
        path.display()
    )]
    MissingDir {
        /// The directory that was looked for.
        path: PathBuf,
    },
    /// A file the dataset needs is not in its directory.
    #[error("{}: no file named {name} (or {name}.gz) in the dataset directory", dir.display())]
    MissingFile {
        /// The dataset directory.
        dir: PathBuf,
        /// The file name expected there.
        name: String,
    },
    /// An operating-system error while reading or writing a file.
    #[error("{}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A gzip stream ended early or is corrupt.
    #[error("{}: corrupt or truncated gzip data; fetch the file again", path.display())]
    Gzip {
        /// The compressed file.
        path: PathBuf,
        /// What the decoder reported.
        source: std::io::Error,
    },
    /// An IDX header does not start with the expected magic number.
    #[error(
        "{}: wrong IDX magic 0x{found:08x}, expected 0x{expected:08x} ({kind}); is this the right file?",
        path.display()
    )]
    BadMagic {
        /// The IDX file.
        path: PathBuf,
        /// What the file should hold ("images" or "labels").
        kind: &'static str,
        /// The magic number that was expected.
        expected: u32,
        /// The magic number that was found.
        found: u32,
    },
    /// An IDX file is shorter or longer than its header says.
    #[error(
        "{}: header declares {declared} bytes of data but the file holds {found}; the file is truncated or corrupt",
        path.display()
    )]
    SizeMismatch {
        /// The IDX file.
        path: PathBuf,
        /// Bytes of payload the header declares.
        declared: usize,
        /// Bytes of payload actually present.
        found: usize,
    },
    /// A label is not a valid class index.
    #[error("{}: label {label} at index {index} is out of range 0..{num_classes}", path.display())]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// Position of the bad label.
        index: usize,
        /// The label value.
        label: u8,
        /// Number of classes the dataset declares.
        num_classes: usize,
    },
    /// The image file and the label file disagree on the number of items.
    #[error(
        "{} holds {images} images but {} holds {labels} labels; they must come from the same split",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// Number of images.
        images: usize,
        /// The label file.
        labels_path: PathBuf,
        /// Number of labels.
        labels: usize,
    },
    /// A file's SHA-256 does not match the recorded checksum.
    #[error(
        "{}: sha256 {found} does not match the expected {expected}; the file is corrupt or was changed: fetch it again with `kiln data fetch`",
        path.display()
    )]
    ChecksumMismatch {
        /// The file that failed the check.
        path: PathBuf,
        /// The checksum recorded.
        expected: String,
        /// The checksum computed.
        found: String,
    },
    /// A checksum list is malformed.
    #[error("{}: line {line}: {message}", path.display())]
    BadChecksumList {
        /// The SHA256SUMS file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An image could not be decoded or has the wrong shape.
    #[error("{}: {message}", path.display())]
    BadImage {
        /// The image file (or a description of the source for in-memory images).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A dataset directory's layout is not one kiln understands.
    #[error("{}: {message}", path.display())]
    BadLayout {
        /// The directory.
        path: PathBuf,
        /// What was expected.
        message: String,
    },
    /// No dataset of that name is known to `kiln data fetch`.
    #[error("unknown dataset {name:?}; known datasets: {known}")]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// The names that are known.
        known: String,
    },
    /// A download failed.
    #[error("downloading {url}: {message}")]
    Download {
        /// The address fetched.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl DataError {
    /// Whether the error comes from the user's input (a path, a file, a setting) rather than
    /// from the machine; the command line maps these to exit code 2.
    #[must_use]
    pub fn is_user_input(&self) -> bool {
        !matches!(self, Self::Io { .. } | Self::Download { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
