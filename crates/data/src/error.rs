//! The one error type of this crate.

/// Everything the data pipeline can refuse. Messages name the file, line,
/// field or option and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A configuration value that cannot be honoured.
    #[error("invalid `{what}`: {message}")]
    InvalidConfig {
        /// The option, e.g. `stages[2].threshold` or `minhash.bands`.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// A TOML configuration file that does not parse.
    #[error("{path}: {message}")]
    ConfigSyntax {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A pattern (regular expression, word list entry) that does not compile.
    #[error("pattern `{pattern}`: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The compiler's message.
        message: String,
    },
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// An invalid configuration value.
    pub fn config(what: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::InvalidConfig {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
