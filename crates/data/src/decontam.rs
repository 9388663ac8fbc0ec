//! Decontamination: drop training documents that share n-grams with
//! evaluation data.
//!
//! Evaluation files are read once when the pipeline starts: every string in
//! a JSONL record (question, choices, answers…) or every line of a text
//! file. Their token n-grams (the tokens of [`crate::minhash`]: words in
//! space-delimited scripts, single characters in CJK) are hashed into a set;
//! a document sharing at least `min_matches` of them is dropped. GPT-3 used
//! 13-grams; that is the default.

use crate::error::{DataError, Result};
use crate::input::{InputConfig, InputFormat, format_of, open_decompressed};
use crate::minhash::{combine, token_hashes};
use crate::stage::{DocContext, DocumentStage, Outcome, Rejection};
use serde::Deserialize;
use std::collections::HashSet;
use std::io::BufRead;
use std::path::PathBuf;

/// Settings of the `decontaminate` stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecontamConfig {
    /// Evaluation files (JSONL: every string value; text: every line).
    pub files: Vec<PathBuf>,
    /// Tokens per n-gram.
    pub ngram: usize,
    /// Shared n-grams at which a document is dropped.
    pub min_matches: usize,
}

impl Default for DecontamConfig {
    fn default() -> Self {
        DecontamConfig {
            files: Vec::new(),
            ngram: 13,
            min_matches: 1,
        }
    }
}

/// The `decontaminate` stage.
#[derive(Debug, Clone)]
pub struct Decontaminator {
    ngrams: HashSet<u64>,
    ngram: usize,
    min_matches: usize,
}

impl Decontaminator {
    /// Reads the evaluation files named in `config`.
    pub fn new(config: &DecontamConfig) -> Result<Self> {
        if config.ngram == 0 {
            return Err(DataError::config(
                "decontaminate.ngram",
                "must be at least 1",
            ));
        }
        let mut texts = Vec::new();
        for path in &config.files {
            let reader = open_decompressed(path)?;
            let jsonl = format_of(path, &InputConfig::default()) == InputFormat::Jsonl;
            for (n, line) in reader.lines().enumerate() {
                let line = line.map_err(|e| DataError::io(path, e))?;
                if line.trim().is_empty() {
                    continue;
                }
                if jsonl {
                    let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
                        DataError::config(
                            format!("decontaminate.files: {}:{}", path.display(), n + 1),
                            format!("malformed JSON: {e}"),
                        )
                    })?;
                    collect_strings(&value, &mut texts);
                } else {
                    texts.push(line);
                }
            }
        }
        Ok(Self::from_texts(
            texts.iter().map(String::as_str),
            config.ngram,
            config.min_matches,
        ))
    }

    /// A decontaminator over evaluation texts given directly.
    ///
    /// ```
    /// use kaiyuan_data::decontam::Decontaminator;
    /// use kaiyuan_data::{DocContext, DocumentStage, Outcome};
    /// let d = Decontaminator::from_texts(["What is the capital of France? Paris."], 4, 1);
    /// let mut ctx = DocContext::default();
    /// assert!(matches!(d.apply("Quiz: what is the capital of France?", &mut ctx), Outcome::Drop(_)));
    /// assert_eq!(d.apply("Paris is lovely in spring.", &mut ctx), Outcome::Keep);
    /// ```
    pub fn from_texts<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        ngram: usize,
        min_matches: usize,
    ) -> Self {
        let ngram = ngram.max(1);
        let mut ngrams = HashSet::new();
        for text in texts {
            let tokens = token_hashes(text);
            if tokens.len() >= ngram {
                ngrams.extend(tokens.windows(ngram).map(combine));
            }
        }
        Decontaminator {
            ngrams,
            ngram,
            min_matches: min_matches.max(1),
        }
    }

    /// How many distinct evaluation n-grams are loaded.
    pub fn len(&self) -> usize {
        self.ngrams.len()
    }

    /// True when no evaluation n-gram is loaded.
    pub fn is_empty(&self) -> bool {
        self.ngrams.is_empty()
    }
}

fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

impl DocumentStage for Decontaminator {
    fn name(&self) -> &'static str {
        "decontaminate"
    }

    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        if self.ngrams.is_empty() {
            return Outcome::Keep;
        }
        let tokens = token_hashes(text);
        if tokens.len() < self.ngram {
            return Outcome::Keep;
        }
        let matches = tokens
            .windows(self.ngram)
            .filter(|w| self.ngrams.contains(&combine(w)))
            .count();
        if matches >= self.min_matches {
            ctx.count("decontaminate.matched_ngrams", matches as u64);
            return Outcome::Drop(Rejection::new(
                "decontaminate.overlap",
                format!(
                    "{matches} {}-grams shared with the evaluation files (limit {})",
                    self.ngram, self.min_matches
                ),
            ));
        }
        Outcome::Keep
    }
}
