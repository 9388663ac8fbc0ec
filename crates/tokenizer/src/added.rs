//! Added tokens: strings matched in the text before any other stage and
//! given their own ids (special tokens such as `<|endoftext|>`, and normal
//! ones added to a vocabulary).

use aho_corasick::{AhoCorasick, MatchKind};

use crate::{Result, TokenizerError};

/// One added token, with HF's matching options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedToken {
    /// The text matched.
    pub content: String,
    /// Its id.
    pub id: u32,
    /// Special tokens are skipped by `decode(skip_special_tokens)` and can be
    /// treated as plain text on request.
    pub special: bool,
    /// Also swallow whitespace on the left.
    pub lstrip: bool,
    /// Also swallow whitespace on the right.
    pub rstrip: bool,
    /// Match only as a whole word.
    pub single_word: bool,
    /// Match on normalized text (else on the raw input).
    pub normalized: bool,
}

/// The added tokens of a tokenizer and a matcher over them.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddedVocab {
    pub tokens: Vec<AddedToken>,
    matcher: Option<AhoCorasick>,
    special_matcher_excluded: Option<AhoCorasick>,
    /// Indices (into `tokens`) of the patterns of `special_matcher_excluded`.
    non_special: Vec<usize>,
}

/// A piece of input: plain text, or an added token's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Text(usize, usize),
    Added(u32, usize, usize),
}

impl AddedVocab {
    pub(crate) fn new(origin: &str, tokens: Vec<AddedToken>) -> Result<Self> {
        let build = |patterns: Vec<&str>| -> Result<Option<AhoCorasick>> {
            if patterns.is_empty() {
                return Ok(None);
            }
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(patterns)
                .map(Some)
                .map_err(|e| TokenizerError::bad_entry(origin, "added_tokens", e.to_string()))
        };
        for t in &tokens {
            if t.content.is_empty() {
                return Err(TokenizerError::bad_entry(
                    origin,
                    format!("added token {}", t.id),
                    "empty content",
                ));
            }
        }
        let non_special: Vec<usize> = (0..tokens.len()).filter(|&i| !tokens[i].special).collect();
        Ok(Self {
            matcher: build(tokens.iter().map(|t| t.content.as_str()).collect())?,
            special_matcher_excluded: build(
                non_special
                    .iter()
                    .map(|&i| tokens[i].content.as_str())
                    .collect(),
            )?,
            non_special,
            tokens,
        })
    }

    pub(crate) fn by_id(&self, id: u32) -> Option<&AddedToken> {
        self.tokens.iter().find(|t| t.id == id)
    }

    pub(crate) fn by_content(&self, content: &str) -> Option<&AddedToken> {
        self.tokens.iter().find(|t| t.content == content)
    }

    /// Cuts `text` into plain text and added tokens; with `split_special`,
    /// special tokens are left in the text as plain text.
    pub(crate) fn segments(&self, text: &str, split_special: bool) -> Vec<Segment> {
        let (matcher, index): (Option<&AhoCorasick>, Box<dyn Fn(usize) -> usize>) = if split_special
        {
            (
                self.special_matcher_excluded.as_ref(),
                Box::new(|p| self.non_special[p]),
            )
        } else {
            (self.matcher.as_ref(), Box::new(|p| p))
        };
        let Some(matcher) = matcher else {
            return vec![Segment::Text(0, text.len())];
        };
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        let mut out = Vec::new();
        let mut last = 0;
        for m in matcher.find_iter(text) {
            let token = &self.tokens[index(m.pattern().as_usize())];
            let (mut start, mut end) = (m.start(), m.end());
            if start < last {
                continue;
            }
            if token.single_word {
                let before = text[..start].chars().next_back().is_some_and(is_word);
                let after = text[end..].chars().next().is_some_and(is_word);
                if before || after {
                    continue;
                }
            }
            if token.lstrip {
                start = last.max(text[..start].trim_end().len());
            }
            if token.rstrip {
                end = text.len() - text[end..].trim_start().len();
            }
            if start > last {
                out.push(Segment::Text(last, start));
            }
            out.push(Segment::Added(token.id, start, end));
            last = end;
        }
        if last < text.len() {
            out.push(Segment::Text(last, text.len()));
        }
        out
    }
}
