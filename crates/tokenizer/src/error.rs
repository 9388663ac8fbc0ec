//! The one error type of this crate.

use std::path::PathBuf;

/// Everything loading, training or running a tokenizer can refuse. Messages
/// name the file and the entry (line, token, component) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `tokenizer.json` (or other JSON) that does not parse or does not
    /// have the expected structure.
    #[error("{origin}: invalid JSON: {message}")]
    Json {
        /// File name or description of the source.
        origin: String,
        /// What serde reported, with line and column.
        message: String,
    },
    /// A component this crate does not implement, named as in the file.
    #[error("{origin}: unsupported {kind} `{name}`{detail}")]
    Unsupported {
        /// File name or description of the source.
        origin: String,
        /// "model", "normalizer", "pre_tokenizer", "post_processor" or "decoder".
        kind: &'static str,
        /// The component's `type`.
        name: String,
        /// Extra words, starting with ": " when present.
        detail: String,
    },
    /// An entry of a vocabulary, merge list or rank file that is wrong.
    #[error("{origin}: {entry}: {reason}")]
    BadEntry {
        /// File name or description of the source.
        origin: String,
        /// Which entry, e.g. "merge 17 `a b`" or "line 3".
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A regular expression that does not compile.
    #[error("{origin}: pattern {pattern:?} does not compile: {message}")]
    Regex {
        /// File name or description of the source.
        origin: String,
        /// The pattern.
        pattern: String,
        /// The regex engine's message.
        message: String,
    },
    /// A regular expression that failed while matching (backtracking limit).
    #[error("pattern {pattern:?} failed on the input: {message}")]
    RegexRun {
        /// The pattern.
        pattern: String,
        /// The regex engine's message.
        message: String,
    },
    /// Text that contains a special token where special tokens are not allowed.
    #[error(
        "special token {token:?} found at byte {offset} but special tokens are not allowed here"
    )]
    DisallowedSpecial {
        /// The special token.
        token: String,
        /// Its byte offset in the input.
        offset: usize,
    },
    /// An id the vocabulary does not have.
    #[error("id {id} is not in the vocabulary of {size} tokens")]
    UnknownId {
        /// The id.
        id: u32,
        /// Vocabulary size.
        size: usize,
    },
    /// Any other invalid argument.
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with [`TokenizerError`].
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

impl TokenizerError {
    pub(crate) fn bad_entry(
        origin: &str,
        entry: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::BadEntry {
            origin: origin.to_owned(),
            entry: entry.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(
        origin: &str,
        kind: &'static str,
        name: &str,
        detail: impl Into<String>,
    ) -> Self {
        let detail = detail.into();
        Self::Unsupported {
            origin: origin.to_owned(),
            kind,
            name: name.to_owned(),
            detail: if detail.is_empty() {
                detail
            } else {
                format!(": {detail}")
            },
        }
    }
}
