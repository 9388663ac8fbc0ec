//! The contract of a per-document stage: text in, a decision out.
//!
//! A stage sees one document's current text and its [`DocContext`] (the
//! language guess, metrics recorded by earlier stages) and answers with an
//! [`Outcome`]: keep the text, replace it (a normaliser, PII redaction, a
//! line filter), or drop the document with a [`Rejection`] that names the
//! rule. Stages are pure functions of their input, so the pipeline can run
//! them on any thread and the output does not depend on the thread count.

use crate::lang::Language;

/// Why a stage dropped a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// A stable machine-readable code, `<stage>.<rule>`, e.g.
    /// `gopher_quality.mean_word_length`. Reports count documents per code.
    pub code: &'static str,
    /// A human-readable explanation with the measured value and threshold,
    /// e.g. `mean word length 2.10 outside [3, 10]`.
    pub detail: String,
}

impl Rejection {
    /// A rejection with its code and detail.
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Rejection {
            code,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// What a stage decided about one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Keep the document with its text unchanged.
    Keep,
    /// Keep the document with this new text.
    Replace(String),
    /// Drop the document.
    Drop(Rejection),
}

/// What the pipeline knows about a document while stages run.
#[derive(Debug, Clone, Default)]
pub struct DocContext {
    /// The language guess, once the language stage has run (else `None`).
    pub language: Option<Language>,
    /// The language guess's confidence in [0, 1].
    pub language_score: f64,
    /// Named measurements recorded by stages (e.g. `gopher.mean_word_length`);
    /// the report draws a histogram of each.
    pub metrics: Vec<(&'static str, f64)>,
    /// Counts recorded by stages (e.g. `pii.EMAIL` → 2); the report sums them.
    pub counters: Vec<(&'static str, u64)>,
}

impl DocContext {
    /// Records a measurement for the report's histograms.
    pub fn record(&mut self, name: &'static str, value: f64) {
        self.metrics.push((name, value));
    }

    /// Adds `n` to a named counter for the report.
    pub fn count(&mut self, name: &'static str, n: u64) {
        self.counters.push((name, n));
    }

    /// The language, or [`Language::Other`] before the language stage ran.
    pub fn language_or_other(&self) -> Language {
        self.language.unwrap_or(Language::Other)
    }
}

/// One per-document step of the pipeline.
///
/// Implementations must be deterministic: the same text and context give the
/// same outcome on any thread.
pub trait DocumentStage: Send + Sync {
    /// The stage's name in reports and rejection codes, e.g. `gopher_quality`.
    fn name(&self) -> &'static str;

    /// Decides about one document.
    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome;
}
