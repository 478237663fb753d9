//! The one error type of the core crate, shared by every plugin.

use thiserror::Error;

/// Result alias used across cgfed's library crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cgfed's core and in plugins built on it.
///
/// Messages are lowercase, name the offending value and, where possible, suggest the fix.
#[derive(Debug, Error)]
pub enum Error {
    /// A configuration value is missing, has the wrong type or is out of range.
    #[error("config key `{key}`: {message}")]
    Config {
        /// Dotted key path, e.g. `compressor.level` or `federation.rounds`.
        key: String,
        /// What is wrong and which values are accepted.
        message: String,
    },
    /// A configuration error found in a particular file.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file the error was found in.
        path: std::path::PathBuf,
        /// The underlying error (shown inline, not as a separate cause).
        error: Box<Error>,
    },
    /// A plugin name that is not registered.
    #[error("unknown {kind} \"{name}\"; registered: {}", registered.join(", "))]
    UnknownPlugin {
        /// `compressor`, `aggregator` or `trainer`.
        kind: &'static str,
        /// The name that was asked for.
        name: String,
        /// Every registered name of that kind, sorted.
        registered: Vec<String>,
    },
    /// Two plugins of the same kind registered the same name.
    #[error("duplicate {kind} name \"{name}\" registered twice (summaries: \"{first}\" / \"{second}\"); plugin names must be unique")]
    DuplicatePlugin {
        /// `compressor`, `aggregator` or `trainer`.
        kind: &'static str,
        /// The duplicated name.
        name: String,
        /// Summary of the first registration.
        first: String,
        /// Summary of the second registration.
        second: String,
    },
    /// A payload failed validation while decoding. Never a panic: the round goes on without it.
    #[error("malformed payload: {0}")]
    MalformedPayload(String),
    /// An input (update, state, data) is not acceptable, e.g. it contains NaN or has the wrong shape.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Two updates or layouts do not describe the same tensors.
    #[error("layout mismatch: {0}")]
    LayoutMismatch(String),
    /// An error from candle (tensor ops, devices).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An I/O error, with the path it concerns.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A run stopped on request (its observer asked it to) after `round` completed rounds;
    /// its checkpoint lets it resume.
    #[error("run interrupted after round {round}; its checkpoint lets it resume")]
    Interrupted {
        /// Rounds completed (and checkpointed).
        round: usize,
    },
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A [`Error::Config`] for `key` with `message`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A [`Error::MalformedPayload`].
    pub fn malformed(message: impl Into<String>) -> Self {
        Error::MalformedPayload(message.into())
    }

    /// Attach the file this error was found in (once: an error that already names its
    /// file keeps it).
    pub fn in_file(self, path: impl Into<std::path::PathBuf>) -> Self {
        match self {
            e @ Error::InFile { .. } => e,
            e => Error::InFile {
                path: path.into(),
                error: Box::new(e),
            },
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
