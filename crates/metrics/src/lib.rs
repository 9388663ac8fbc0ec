//! Kaiyuan's text metrics, each compatible with the implementation people
//! quote numbers from:
//!
//! - **BLEU** and **chrF / chrF++** as sacrebleu 2.x computes them
//!   (tokenizers `13a`, `intl`, `zh`, `char`, `none`; smoothing `exp`,
//!   `floor`, `add-k`, `none`; signatures).
//! - **ROUGE-1/2/L/Lsum** as Google's `rouge-score` computes them, with its
//!   Porter stemmer, plus a CJK-aware tokenizer.
//! - **Exact match and token F1** with SQuAD's answer normalisation.
//!
//! The crate depends on no other workspace crate.
//!
//! # Crate features
//!
//! None.

pub mod error;

pub use error::{MetricsError, Result};
    AnswerNormalization, QaCorpus, QaScore, exact_match, qa_corpus, qa_score, token_f1,
};
