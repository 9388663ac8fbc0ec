//! # kaiyuan-tokenizer
//!
//! Byte-level and SentencePiece-style BPE tokenizers that give the same ids
//! as HF `tokenizers` and `tiktoken`:
//!
//! - HF `tokenizer.json` files with a BPE model: normalizers (NFC, NFD,
//!   NFKC, NFKD, Lowercase, Replace, Prepend, Strip, Sequence),
//!   pre-tokenizers (ByteLevel, Split with every behaviour, Digits,
//!   Metaspace, Punctuation, Whitespace, WhitespaceSplit, Sequence), byte
//!   fallback, `ignore_merges`, `fuse_unk`, added tokens with their options,
//!   post-processors (TemplateProcessing, ByteLevel, Sequence) and decoders
//!   (ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence).
//!   Other models and components are refused with an error naming them.
//! - tiktoken rank files with the patterns and special tokens of r50k, p50k,
//!   cl100k, o200k and Qwen ([`TiktokenSpec`]).
//! - Byte offsets of every token in the input.
//!
//! The hot path — splitting text with the GPT-2, cl100k/Llama-3 and Qwen2
//! patterns — is a hand-written scanner checked against the regex engine by
//! property tests; other patterns run through `fancy-regex`.
//!
//! ```
//! use kaiyuan_tokenizer::Tokenizer;
//! # fn main() -> kaiyuan_tokenizer::Result<()> {
//! let json = r#"{"model": {"type": "BPE", "vocab": {"h": 0, "i": 1, "hi": 2, "!": 3}, "merges": [["h", "i"]]},
//!                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}}"#;
//! let tok = Tokenizer::from_json_str("inline", json)?;
//! assert_eq!(tok.encode("hi!")?.ids, vec![2, 3]);
//! # Ok(()) }
//! ```
//!
//! Architecture Invariant: this crate depends on no other workspace crate.

mod added;
mod aligned;
mod bpe;
pub mod bytelevel;
mod components;
mod error;
mod json;
mod scan;
pub mod shard;
mod split;
mod tiktoken;
mod token_store;
mod tokenizer;
mod trainer;

pub use added::AddedToken;
pub use error::{Result, TokenizerError};
pub use split::SplitPattern;
pub use tiktoken::TiktokenSpec;
pub use tokenizer::{EncodeOptions, Encoding, Tokenizer};
pub use trainer::{BpeTrainer, WordCounts};
