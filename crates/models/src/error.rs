//! The one error type of this crate.

use std::path::PathBuf;

/// Everything loading or running a model can refuse. Messages name the file,
/// the field or tensor, and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file whose bytes do not follow its format (truncated, corrupted,
    /// a header claiming more bytes than the file holds, …).
    #[error("{origin}: {message}")]
    Format {
        /// The file (or a description of the source).
        origin: String,
        /// What is wrong, naming the entry (tensor, metadata key, offset).
        message: String,
    },
    /// A configuration field that is missing, of the wrong type or out of range.
    #[error("{origin}: field `{field}`: {message}")]
    Config {
        /// The file, e.g. `model/config.json`.
        origin: String,
        /// The field, e.g. `num_key_value_heads`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor the architecture needs is not in the weights.
    #[error("{origin}: missing tensor `{name}`")]
    MissingTensor {
        /// The weights (file or directory).
        origin: String,
        /// The tensor's name.
        name: String,
    },
    /// A tensor whose shape or dtype is not what the config implies.
    #[error("{origin}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        /// The weights (file or directory).
        origin: String,
        /// The tensor's name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        actual: Vec<usize>,
    },
    /// Something this crate does not implement, named precisely.
    #[error("{origin}: unsupported {what}")]
    Unsupported {
        /// The file (or a description of the source).
        origin: String,
        /// What is unsupported, e.g. "architecture `BertModel`".
        what: String,
    },
    /// An argument of a call that cannot be honoured (a prompt longer than the
    /// context, a bad sampling parameter, an invalid regex or schema, …).
    #[error("{name}: {message}")]
    InvalidArgument {
        /// The argument, e.g. `--top-p` or `prompt`.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// A chat template that does not compile or fails to render.
    #[error("chat template: {message}")]
    Template {
        /// The template engine's message (with line when known).
        message: String,
    },
    /// A tensor op failed (shapes are checked before, so this names a bug
    /// or an inconsistent file).
    #[error(transparent)]
    Tensor(#[from] kaiyuan_tensor::TensorError),
    /// The tokenizer failed to load or run.
    #[error(transparent)]
    Tokenizer(#[from] kaiyuan_tokenizer::TokenizerError),
}

impl ModelError {
    /// A [`ModelError::Format`] for `origin`.
    pub fn format(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Format {
            origin: origin.into(),
            message: message.into(),
        }
    }

    /// A [`ModelError::Config`] for `field` of `origin`.
    pub fn config(
        origin: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Config {
            origin: origin.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// A [`ModelError::InvalidArgument`].
    pub fn invalid(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            name: name.into(),
            message: message.into(),
        }
    }

    /// A [`ModelError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, ModelError>;
