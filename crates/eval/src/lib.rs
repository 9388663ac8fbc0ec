//! Kaiyuan's evaluator. **Perplexity** is computed with
//! the sliding-window recipe of HF transformers' "Perplexity of fixed-length
//! models", so numbers compare directly with that recipe (and with
//! lm-eval-style rolling log-likelihoods at `stride == context`).
//!
//! - [`perplexity()`] scores token ids with a [`Model`](kaiyuan_models::Model):
//!   windows of `context` tokens start every `stride` tokens, and each
//!   window scores only the tokens the previous window did not.
//! - [`encode_text`] tokenizes a text as HF tokenizers do for this purpose:
//!   one sequence, post-processor special tokens (e.g. a BOS) added.
//!
//! Shapes are written (B, T, V): batch rows (windows), tokens, vocabulary.
//!
//! ```
//! use kaiyuan_eval::{PerplexityOptions, perplexity};
//! use kaiyuan_models::ModelFiles;
//! use kaiyuan_tensor::DType;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/llama");
//! let model = ModelFiles::open(dir)?.take_model(DType::F32)?;
//! let ids: Vec<u32> = (0..100).map(|i| (i * 7 % 80) as u32).collect();
//! let options = PerplexityOptions { context: Some(32), stride: Some(16), ..Default::default() };
//! let report = perplexity(&model, &ids, &options)?;
//! assert_eq!(report.tokens_scored, 99);
//! assert!(report.perplexity > 1.0);
//! # Ok::<(), kaiyuan_eval::EvalError>(())
//! ```
//!
//! [`mc`] scores multiple-choice tasks (MMLU, C-Eval, CMMLU, JSONL) by
//! log-likelihood with prompts byte-identical to lm-evaluation-harness's.
//! Text metrics (BLEU, chrF, ROUGE) live in `kaiyuan-metrics`.
//!
//! # Crate features
//!
//! None.

pub mod ab;
pub mod compare;
pub mod error;
pub mod mc;
pub mod perplexity;
pub mod registry;
pub mod report;
pub mod runner;
pub mod speed;
pub mod suite;
pub mod task_provenance;

pub use compare::{Comparison, compare_models};
pub use error::{EvalError, Result};
pub use perplexity::{
    CorpusPerplexity, PerplexityOptions, PerplexityReport, Window, encode_text, llama_cpp_windows,
    perplexity, perplexity_llama_cpp, perplexity_of_documents, perplexity_of_text, windows,
};
