//! The one error type of this crate.

/// Everything an evaluation can refuse. Messages name the option or input
/// and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// An option that cannot be honoured (a zero stride, a context longer
    /// than the model's, …).
    #[error("invalid option `{option}`: {message}")]
    InvalidOption {
        /// The option, e.g. `stride` (the CLI flag without `--`).
        option: String,
        /// What is wrong with it.
        message: String,
    },
    /// Input the evaluation cannot score (too few tokens, an id outside the
    /// vocabulary, …).
    #[error("{what}: {message}")]
    InvalidInput {
        /// The input, e.g. `ids`.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// The model produced a NaN log-probability (for example an f16
    /// overflow), so no meaningful score exists.
    #[error("the model's log-probability of token {position} is NaN (try --dtype f32)")]
    NotANumber {
        /// Index of the token in the scored sequence.
        position: usize,
    },
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] kaiyuan_models::ModelError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] kaiyuan_tokenizer::TokenizerError),
    /// A tensor op failed (shapes are checked before, so this names a bug).
    #[error(transparent)]
    Tensor(#[from] kaiyuan_tensor::TensorError),
}

impl EvalError {
    /// An [`EvalError::InvalidOption`].
    pub fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidOption {
            option: option.into(),
            message: message.into(),
        }
    }

    /// An [`EvalError::InvalidInput`].
    pub fn input(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, EvalError>;
