//! The one error type of this crate.

/// Everything training can refuse. Messages name the option, key, file or
/// input and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// An option or argument that cannot be honoured (a negative noise
    /// multiplier, a sampling rate outside (0, 1], an unknown config key…).
    #[error("invalid `{what}`: {message}")]
    InvalidArgument {
        /// The option, key or argument, e.g. `noise_multiplier`.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] kaiyuan_models::ModelError),
    /// Writing or reading a provenance manifest failed.
    #[error(transparent)]
    Provenance(#[from] kaiyuan_provenance::ProvenanceError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] kaiyuan_tokenizer::TokenizerError),
    /// A tensor op failed.
    #[error(transparent)]
    Tensor(#[from] kaiyuan_tensor::TensorError),
}

impl TrainError {
    /// A [`TrainError::InvalidArgument`].
    pub fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// `Result` with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
