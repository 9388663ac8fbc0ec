//! Kaiyuan's data pipeline: raw text in, training-ready shards out, and a
//! record of what happened to every document.
//!
//! A [`pipeline::PipelineConfig`] (TOML) lists stages in order. Per-document
//! stages ([`DocumentStage`]) see one document's text and answer keep,
//! replace or drop ([`Outcome`]):
//!
//! - [`normalize`]: Unicode NFC/NFKC, control characters and ANSI escapes,
//!   whitespace, optional HTML stripping;
//! - `language` ([`lang`]): Chinese / English / other with a confidence;
//! - [`pii`]: e-mail, phones, PRC resident IDs, cards, IPs, URLs with
//!   credentials, secrets → typed placeholders or keyed HMACs;
//! - [`quality`]: Gopher quality and repetition, C4, FineWeb line rules,
//!   length, symbol, bullet and ellipsis ratios, stop words, bad words, each
//!   with a Chinese-aware variant;
//! - [`decontam`]: drop documents sharing n-grams with evaluation files.
//!
//! Then, over the whole corpus, `exact_dedup` (hash of the normalised text)
//! and `minhash_dedup` ([`minhash`]: MinHash + LSH, word n-grams for
//! space-delimited scripts and character n-grams for CJK, clusters keep
//! their earliest document).
//!
//! Nothing is lost: every input record ([`input`]) is either written to a
//! shard or to `rejected.jsonl` with its stage and reason, and the
//! [`report::Report`] checks `input records = kept + rejected`. Outputs are
//! written atomically ([`output`]). The same run can be split into shards
//! (`--shard i/N`) and merged, with identical output.
//!
//! ```
//! use kaiyuan_data::pipeline::{self, PipelineConfig, RunOptions};
//! let dir = std::env::temp_dir().join(format!("kaiyuan-data-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let input = dir.join("in.jsonl");
//! std::fs::write(&input, "{\"id\":1,\"text\":\"Hello  world.\"}\n{\"id\":2,\"text\":\"hello world.\"}\nnot json\n").unwrap();
//! let config = PipelineConfig::from_toml(
//!     "[[stages]]\nkind = \"normalize\"\n[[stages]]\nkind = \"exact_dedup\"\n", "inline").unwrap();
//! let report = pipeline::run(&config, &[input], &dir.join("out"), &RunOptions::default()).unwrap();
//! assert_eq!((report.stats.input_records, report.stats.kept, report.stats.rejected), (3, 1, 2));
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! # Crate features
//!
//! None; the crate is pure Rust apart from zstd's C library.

pub mod decontam;
pub mod document;
pub mod error;
pub mod input;
pub mod lang;
pub mod minhash;
pub mod normalize;
pub mod output;
pub mod pii;
pub mod pipeline;
pub mod quality;
pub mod report;
pub mod stage;
pub mod text;

pub use error::{DataError, Result};
pub use lang::{Language, LanguageGuess, identify};
pub use stage::{DocContext, DocumentStage, Outcome, Rejection};
