//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, training, checkpointing, evaluating or
/// predicting.
///
/// Every variant names what it is about: the config file and key, the checkpoint or image
/// path, the iteration.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum TrainError {
    /// The YAML could not be parsed into a run config (syntax error, unknown key, wrong type).
    /// `message` is serde_yaml's, which names the key path and the line and column.
    #[error("{source_name}: {message}")]
    ConfigParse {
        /// The config file (or `<built-in resnet20 config>`, or `--set` overrides).
        source_name: String,
        /// What is wrong, with the key and its location.
        message: String,
    },

    /// A config value that parses but is not valid (depth 21, a negative learning rate…).
    #[error("{source_name}{}: invalid value for `{key}`: {reason}", location(*.line, .set_by.as_deref()))]
    ConfigValue {
        /// The config file.
        source_name: String,
        /// Dotted key path, e.g. `model.depth`.
        key: String,
        /// 1-based line of the key in the file, when it could be located.
        line: Option<usize>,
        /// The `--set` argument that gave the value, if any.
        set_by: Option<String>,
        /// What was expected.
        reason: String,
    },

    /// A malformed `--set key=value` argument.
    #[error("bad override `{arg}`: {reason}")]
    Override {
        /// The argument as given.
        arg: String,
        /// What is wrong.
        reason: String,
    },

    /// An operating-system I/O error on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// CIFAR-10 could not be installed into, or loaded from, a data directory.
    #[error("{action} CIFAR-10 in {}: {source}", dir.display())]
    Dataset {
        /// `installing` or `loading`.
        action: &'static str,
        /// The data directory.
        dir: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<cifar_data::DataError>,
    },
    /// An error from the data layer (missing dataset, bad file, bad split…).
    #[error(transparent)]
    Data(#[from] cifar_data::DataError),

    /// A tensor or model error, with what was being done.
    #[error("{context}: {source}")]
    Model {
        /// What was being done, e.g. `forward pass at iteration 12`.
        context: String,
        /// The underlying candle error.
        #[source]
        source: candle_core::Error,
    },

    /// A checkpoint or weights file that cannot be used.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A config file given beside `--resume` that describes another network than the run.
    #[error(
        "{} describes {given}, but the run being resumed ({}) trains {stored}",
        file.display(),
        checkpoint.display()
    )]
    ResumeConfigMismatch {
        /// The config file given.
        file: PathBuf,
        /// The checkpoint resumed from.
        checkpoint: PathBuf,
        /// The architecture the file describes.
        given: String,
        /// The architecture of the run.
        stored: String,
    },
    /// A checkpoint whose network differs from the one the config asks for.
    #[error(
        "checkpoint {} holds a {found} network, but the config asks for {expected}; \
         use the config the checkpoint was trained with (or no --config: checkpoints carry theirs)",
        path.display()
    )]
    ArchitectureMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The architecture the config describes, e.g. `resnet20-a`.
        expected: String,
        /// The architecture in the checkpoint.
        found: String,
    },

    /// The ranks of a data-parallel run no longer hold the same weights (checked at every
    /// epoch end): an MPI library whose all-reduce gives different sums on different ranks.
    #[error(
        "the ranks' weights differ after iteration {iteration}: the MPI all-reduce did not \
         give every rank the same sums (try another MPI library or fewer ranks)"
    )]
    RanksDiverged {
        /// Iterations done when the difference was found.
        iteration: u64,
    },

    /// The training loss became NaN or infinite.
    #[error(
        "the training loss is {loss} at iteration {iteration} (lower the learning rate?); {}",
        match last_checkpoint {
            Some(p) => format!("the last good checkpoint is kept at {}", p.display()),
            None => "no checkpoint had been written yet".to_string(),
        }
    )]
    NonFiniteLoss {
        /// The 1-based iteration whose loss is not finite.
        iteration: u64,
        /// The loss value.
        loss: f32,
        /// The latest checkpoint written before, left untouched.
        last_checkpoint: Option<PathBuf>,
    },

    /// An image that cannot be read for prediction.
    #[error("image {}: {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The requested device is not available.
    #[error("device `{requested}` is not available: {reason}")]
    Device {
        /// The device asked for.
        requested: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// The Ctrl-C / SIGTERM handler could not be installed.
    #[error("cannot install the Ctrl-C/SIGTERM handler: {reason}")]
    Signal {
        /// Why.
        reason: String,
    },

    /// A run directory or resume target that cannot be used.
    #[error("run directory {}: {reason}", path.display())]
    RunDir {
        /// The directory (or the path given to `--resume`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn location(line: Option<usize>, set_by: Option<&str>) -> String {
    match (set_by, line) {
        (Some(arg), _) => format!(" (set by `--set {arg}`)"),
        (None, Some(l)) => format!(" line {l}"),
        (None, None) => String::new(),
    }
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn model(context: impl Into<String>, source: candle_core::Error) -> Self {
        TrainError::Model {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Adds a context string to candle results.
pub(crate) trait ModelContext<T> {
    /// Maps a candle error to [`TrainError::Model`] with the context computed by `f`.
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T> ModelContext<T> for candle_core::Result<T> {
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| TrainError::model(f(), e))
    }
}
