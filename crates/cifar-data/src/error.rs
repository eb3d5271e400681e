//! The crate's error type.

use std::path::PathBuf;

/// Hint appended to download failures: how to proceed without network access.
pub(crate) const OFFLINE_HINT: &str = "if this machine is offline, install from a local copy of \
the archive with `--from FILE` (or $CIFAR10_ARCHIVE), or download from a mirror with `--url URL` \
(or $CIFAR10_URL)";

/// Hint of [`DataError::InTheWay`].
pub(crate) const IN_THE_WAY_HINT: &str = "fetch never deletes what it did not create: remove or \
rename it, or choose another data directory (`--dir` / `--data-dir` / $CIFAR10_DIR)";

/// Everything that can go wrong while fetching, parsing or preparing CIFAR-10.
///
/// Every variant names what it is about: a file path, a record index and byte offset, a URL,
/// or a configuration field.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum DataError {
    /// An operating-system I/O error on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A required dataset file does not exist.
    #[error("missing file {}: {hint}", path.display())]
    MissingFile {
        /// The file that was expected.
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },

    /// A `.bin` batch file whose length is not what the format requires.
    #[error(
        "{}: {actual} bytes, expected {expected} bytes ({records} records of 3073 bytes); \
         the record starting at byte offset {offset} is {problem}",
        path.display()
    )]
    BadFileSize {
        /// The batch file.
        path: PathBuf,
        /// Its actual length in bytes.
        actual: u64,
        /// The length it should have.
        expected: u64,
        /// The number of records it should hold.
        records: usize,
        /// Byte offset of the first record that is incomplete or superfluous.
        offset: u64,
        /// "incomplete" or "superfluous".
        problem: &'static str,
    },

    /// A record whose label byte is not a class index `0..10`.
    #[error(
        "{}: record {record} (byte offset {offset}) has label {label}, expected 0..=9",
        path.display()
    )]
    BadLabel {
        /// The batch file.
        path: PathBuf,
        /// Index of the record in the file.
        record: usize,
        /// Byte offset of the label byte.
        offset: u64,
        /// The label found.
        label: u8,
    },

    /// `batches.meta.txt` does not hold the ten class names.
    #[error("{}: {reason}", path.display())]
    BadMeta {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Arguments that do not describe a valid [`ImageSet`](crate::ImageSet).
    #[error("invalid image set: {reason}")]
    InvalidImageSet {
        /// What is wrong.
        reason: String,
    },

    /// A configuration value outside its valid range.
    #[error("invalid configuration `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `split.val_size`.
        field: String,
        /// What was expected.
        reason: String,
    },

    /// Mean/std vectors that cannot form a [`Normalizer`](crate::Normalizer).
    #[error("invalid normalizer: {reason}")]
    InvalidNormalizer {
        /// What is wrong.
        reason: String,
    },

    /// The archive could not be downloaded (network failure, refused connection, timeout).
    #[error("could not download {url}: {reason}; {OFFLINE_HINT}")]
    Download {
        /// The URL that was requested.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// The server answered with an HTTP status other than 200/206.
    #[error("downloading {url} failed with HTTP status {status}; {OFFLINE_HINT}")]
    HttpStatus {
        /// The URL that was requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },

    /// The archive is not a readable `.tar.gz`, or lacks a dataset file.
    #[error("bad archive {source_name}: {reason}")]
    Archive {
        /// Where the archive came from (a path or a URL).
        source_name: String,
        /// What is wrong.
        reason: String,
    },

    /// Something the installer did not create is where it has to put a directory or a dataset
    /// file: e.g. a regular file named `cifar-10-batches-bin`, or a directory named
    /// `data_batch_3.bin`. Fetch refuses to replace it and changes nothing.
    #[error("{} is {found}, but {expected} belongs there; {hint}", path.display())]
    InTheWay {
        /// What is in the way.
        path: PathBuf,
        /// What it is, e.g. "a regular file".
        found: String,
        /// What belongs there, e.g. "a directory".
        expected: String,
        /// What to do about it.
        hint: String,
    },

    /// A dataset file whose SHA-256 differs from the official one.
    #[error(
        "checksum mismatch for {file} (from {source_name}): SHA-256 {actual}, expected {expected}"
    )]
    Checksum {
        /// Where the file came from (archive path, URL, or the installed directory).
        source_name: String,
        /// The file inside `cifar-10-batches-bin/`.
        file: String,
        /// The expected SHA-256 (hex).
        expected: String,
        /// The SHA-256 found (hex).
        actual: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// [`DataError::InTheWay`] for `path`, which is `found` where `expected` belongs.
    pub(crate) fn in_the_way(path: &std::path::Path, found: &str, expected: &str) -> Self {
        DataError::InTheWay {
            path: path.to_path_buf(),
            found: found.to_string(),
            expected: expected.to_string(),
            hint: IN_THE_WAY_HINT.to_string(),
        }
    }

    pub(crate) fn config(field: &str, reason: impl Into<String>) -> Self {
        DataError::InvalidConfig {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}
