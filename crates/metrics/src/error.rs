//! The one error type of this crate.

/// Everything a metric can refuse. Messages name the input (and the line,
/// where there is one) and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// An option that cannot be honoured (an unknown tokenizer name, a
    /// negative smoothing value, …).
    #[error("invalid option `{option}`: {message}")]
    InvalidOption {
        /// The option, e.g. `tokenize` (the CLI flag without `--`).
        option: String,
        /// What is wrong with it.
        message: String,
    },
    /// Input that cannot be scored (hypothesis and reference streams of
    /// different lengths, no references, …).
    #[error("{what}: {message}")]
    InvalidInput {
        /// The input, e.g. `references[1]`.
        what: String,
        /// What is wrong with it.
        message: String,
    },
}

impl MetricsError {
    /// A [`MetricsError::InvalidOption`].
    pub fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidOption {
            option: option.into(),
            message: message.into(),
        }
    }

    /// A [`MetricsError::InvalidInput`].
    pub fn input(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, MetricsError>;
