//! The one error type of this crate.

/// Everything quantization can refuse. Messages name the layer, option or
/// file and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// An option or input that cannot be honoured (bits other than 4 or 8,
    /// a group size that does not divide the layer's columns, NaN weights…).
    #[error("invalid `{what}`: {message}")]
    InvalidArgument {
        /// The option, layer or input, e.g. `group_size`.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// H + damping was not positive definite even at the largest damping.
    #[error(
        "GPTQ of `{layer}`: the Hessian is not positive definite even with damping {damp} of its mean diagonal (pivot {pivot} is {value})"
    )]
    NotPositiveDefinite {
        /// The layer.
        layer: String,
        /// The last damping tried (fraction of the mean diagonal).
        damp: f64,
        /// The failing pivot.
        pivot: usize,
        /// Its value before the square root.
        value: f64,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] kaiyuan_models::ModelError),
    /// A tensor op failed.
    #[error(transparent)]
    Tensor(#[from] kaiyuan_tensor::TensorError),
}

impl QuantError {
    /// A [`QuantError::InvalidArgument`].
    pub fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            what: what.into(),
            message: message.into(),
        }
    }

    /// A [`QuantError::Io`] naming `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// `Result` with [`QuantError`].
pub type Result<T> = std::result::Result<T, QuantError>;
