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

pub mod bleu;
pub mod chrf;
pub mod error;
pub mod porter;
pub mod rouge;
pub mod sacre;
pub mod sacre_tokenize;
pub mod squad;

pub use bleu::{Bleu, BleuOptions, BleuScore, BleuStats, Smoothing, corpus_bleu, sentence_bleu};
pub use chrf::{Chrf, ChrfOptions, ChrfScore, ChrfStats, corpus_chrf, sentence_chrf};
pub use error::{MetricsError, Result};
pub use rouge::{RougeCorpus, RougeOptions, RougeScorer, RougeScores, RougeTokenizer, RougeType};
pub use sacre::{NumRefs, Reference};
pub use sacre_tokenize::BleuTokenizer;
pub use squad::{
    AnswerNormalization, QaCorpus, QaScore, exact_match, qa_corpus, qa_score, token_f1,
};
