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

/// Maps an added token's content to its normalized form.
pub(crate) type NormalizeFn<'a> = &'a dyn Fn(&str) -> Result<String>;

/// An Aho-Corasick matcher over some of the added tokens.
#[derive(Clone, Debug)]
struct Matcher {
    automaton: AhoCorasick,
    /// Index into `AddedVocab::tokens` of each pattern.
    token_index: Vec<usize>,
}

/// The added tokens of a tokenizer and matchers over them: one for tokens
/// matched in the raw input, one for tokens matched after normalization
/// (their content normalized too), each also without the special tokens.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddedVocab {
    pub tokens: Vec<AddedToken>,
    /// The token string of each added token as HF reports it: the content,
    /// normalized for tokens matched after normalization.
    pub surface: Vec<String>,
    raw: [Option<Matcher>; 2],
    normalized: [Option<Matcher>; 2],
}

/// A piece of input: plain text, or an added token's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Text(usize, usize),
    Added(u32, usize, usize),
}

impl AddedVocab {
    /// Builds the matchers. `normalize` maps a token's content to its
    /// normalized form; `None` when the tokenizer has no normalizer (then
    /// every token is matched in the raw input).
    pub(crate) fn new(
        origin: &str,
        tokens: Vec<AddedToken>,
        normalize: Option<NormalizeFn<'_>>,
    ) -> Result<Self> {
        for t in &tokens {
            if t.content.is_empty() {
                return Err(TokenizerError::bad_entry(
                    origin,
                    format!("added token {}", t.id),
                    "empty content",
                ));
            }
        }
        let build = |filter: &dyn Fn(&AddedToken) -> bool,
                     normalized: bool|
         -> Result<Option<Matcher>> {
            let mut patterns = Vec::new();
            let mut token_index = Vec::new();
            for (i, t) in tokens.iter().enumerate() {
                if !filter(t) {
                    continue;
                }
                let content = match (normalized, normalize) {
                    (true, Some(f)) => f(&t.content)?,
                    _ => t.content.clone(),
                };
                if !content.is_empty() {
                    patterns.push(content);
                    token_index.push(i);
                }
            }
            if patterns.is_empty() {
                return Ok(None);
            }
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .map_err(|e| TokenizerError::bad_entry(origin, "added_tokens", e.to_string()))?;
            Ok(Some(Matcher {
                automaton,
                token_index,
            }))
        };
        let has_normalizer = normalize.is_some();
        let surface = tokens
            .iter()
            .map(|t| match normalize {
                Some(f) if t.normalized => f(&t.content),
                _ => Ok(t.content.clone()),
            })
            .collect::<Result<Vec<String>>>()?;
        let in_raw = move |t: &AddedToken| !t.normalized || !has_normalizer;
        let in_normalized = move |t: &AddedToken| t.normalized && has_normalizer;
        Ok(Self {
            raw: [
                build(&in_raw, false)?,
                build(&|t| in_raw(t) && !t.special, false)?,
            ],
            normalized: [
                build(&in_normalized, true)?,
                build(&|t| in_normalized(t) && !t.special, true)?,
            ],
            tokens,
            surface,
        })
    }

    /// The added token with this id and its token string.
    pub(crate) fn by_id(&self, id: u32) -> Option<(&AddedToken, &str)> {
        let i = self.tokens.iter().position(|t| t.id == id)?;
        Some((&self.tokens[i], &self.surface[i]))
    }

    pub(crate) fn by_content(&self, content: &str) -> Option<&AddedToken> {
        self.tokens.iter().find(|t| t.content == content)
    }

    /// Whether some tokens are matched after normalization.
    pub(crate) fn has_normalized(&self) -> bool {
        self.normalized[0].is_some()
    }

    /// Cuts the raw `text` into plain text and added tokens; with
    /// `split_special`, special tokens are left in the text.
    pub(crate) fn segments(&self, text: &str, split_special: bool) -> Vec<Segment> {
        self.cut(&self.raw[usize::from(split_special)], text)
    }

    /// Cuts normalized text with the tokens matched after normalization.
    pub(crate) fn normalized_segments(&self, text: &str, split_special: bool) -> Vec<Segment> {
        self.cut(&self.normalized[usize::from(split_special)], text)
    }

    fn cut(&self, matcher: &Option<Matcher>, text: &str) -> Vec<Segment> {
        let Some(matcher) = matcher else {
            return vec![Segment::Text(0, text.len())];
        };
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        let mut out = Vec::new();
        let mut last = 0;
        for m in matcher.automaton.find_iter(text) {
            let token = &self.tokens[matcher.token_index[m.pattern().as_usize()]];
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
