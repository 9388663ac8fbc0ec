//! Kaiyuan's data pipeline (work in progress).
#![allow(missing_docs)]

pub mod decontam;
pub mod document;
pub mod error;
pub mod input;
pub mod lang;
pub mod minhash;
pub mod normalize;
pub mod output;
pub mod pipeline;
pub mod report;
pub mod stage;
pub mod text;

pub use error::{DataError, Result};
pub use lang::{Language, LanguageGuess, identify};
pub use stage::{DocContext, DocumentStage, Outcome, Rejection};
