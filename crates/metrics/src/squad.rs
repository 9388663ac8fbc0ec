//! Exact match and token F1 of short answers, with SQuAD v1.1's answer
//! normalisation, or with MLQA's Chinese one for CJK answers.
//!
//! # Normalisations
//!
//! - [`AnswerNormalization::Squad`] — the official SQuAD v1.1 evaluation
//!   script (`normalize_answer`, also what lm-evaluation-harness and most
//!   QA papers use): Python's `str.lower()`; delete every character of
//!   Python's `string.punctuation` (the 32 ASCII punctuation characters);
//!   replace the words `a`, `an`, `the` (`\b(a|an|the)\b`, where a word
//!   character is Python's: a Unicode letter or number, or `_`) by a space;
//!   split on Python's whitespace (`str.split()`, which includes the
//!   information separators U+001C–U+001F) and join with single spaces.
//!   Tokens are the whitespace-separated words, so a Chinese answer without
//!   spaces is one token.
//! - [`AnswerNormalization::Cjk`] — for Chinese (and mixed) answers, as the
//!   MLQA evaluation script does for `zh` (and CMRC 2018's segmentation):
//!   lower-case; delete every Unicode punctuation character (general
//!   category `P*`, which covers `，。「」…`) and the 32 ASCII punctuation
//!   characters; no article removal; every character U+4E00–U+9FA5 (the
//!   range those scripts use) is a token of its own, and the text between
//!   such characters is split on whitespace. So `北京 大学` and `北京大学`
//!   both give the tokens `北 京 大 学`.
//!
//! # Scores
//!
//! - **Exact match**: 1 if the normalised prediction equals the normalised
//!   answer, else 0.
//! - **Token F1**: with `common` the size of the multiset intersection of the
//!   two token lists, 0 if `common` is 0 (including when both are empty —
//!   SQuAD v1.1's rule), else `2·P·R / (P + R)` with `P = common /
//!   prediction tokens`, `R = common / answer tokens`.
//!
//! Each is the maximum over the gold answers, taken separately. Scores are
//! fractions in `[0, 1]`; the SQuAD script reports 100× the corpus mean.
//!
//! The committed references (`fixtures/eval/rouge/qa_answers.json`, written
//! by `fixtures/eval/rouge/make_references.py`) are computed with
//! lm-evaluation-harness 0.4.13's copies of the two scripts
//! (`lm_eval.tasks.qasper.metrics.normalize_answer` / `f1_abstractive` for
//! SQuAD v1.1, `lm_eval.tasks.mlqa.utils` with `lang="zh"` for CJK); the
//! tests require every score within `1e-9` and identical normalised text.
//! Python 3.11 classifies characters by Unicode 14; the `regex` crate we use
//! for letters, numbers and punctuation may know a newer version, which can
//! only matter for characters assigned since.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::{MetricsError, Result};

/// How answers are normalised and split into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AnswerNormalization {
    /// SQuAD v1.1's `normalize_answer`.
    #[default]
    Squad,
    /// MLQA's Chinese normalisation: Unicode punctuation removed, each CJK
    /// ideograph U+4E00–U+9FA5 a token of its own.
    Cjk,
}

impl AnswerNormalization {
    /// The name [`FromStr`] accepts: `squad` or `cjk`.
    ///
    /// ```
    /// use kaiyuan_metrics::squad::AnswerNormalization;
    ///
    /// assert_eq!(AnswerNormalization::Cjk.name(), "cjk");
    /// assert_eq!("squad".parse::<AnswerNormalization>().unwrap(), AnswerNormalization::Squad);
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Squad => "squad",
            Self::Cjk => "cjk",
        }
    }
}

impl fmt::Display for AnswerNormalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AnswerNormalization {
    type Err = MetricsError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "squad" => Ok(Self::Squad),
            "cjk" => Ok(Self::Cjk),
            _ => Err(MetricsError::option(
                "normalization",
                format!("unknown answer normalisation {s:?}; expected squad or cjk"),
            )),
        }
    }
}

/// Exact match and token F1 of one prediction, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QaScore {
    /// 1 if the prediction matches a gold answer after normalisation.
    pub exact_match: f64,
    /// The best token F1 over the gold answers.
    pub f1: f64,
}

/// Scores of a set of predictions: each one's, and their mean.
#[derive(Debug, Clone, PartialEq)]
pub struct QaCorpus {
    /// One entry per prediction, in input order.
    pub per_pair: Vec<QaScore>,
    /// The arithmetic mean of `per_pair`.
    pub mean: QaScore,
}

/// Python's `str.isspace()`: Unicode `White_Space` plus U+001C–U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Letters and numbers (Python's `str.isalnum()` is exactly `L*` ∪ `N*`).
/// A literal pattern, compiled once.
static LETTER_OR_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\p{L}\p{N}]").expect("literal pattern"));

/// Unicode punctuation, general category `P*`. A literal pattern, compiled
/// once.
static PUNCTUATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\p{P}").expect("literal pattern"));

fn matches_char(re: &Regex, c: char) -> bool {
    let mut buf = [0; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// A word character of Python's `re` (`\w` on `str`): letter, number or `_`.
fn is_py_word(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        matches_char(&LETTER_OR_NUMBER, c)
    }
}

/// `re.sub(r"\b(a|an|the)\b", " ", text)`: a match is exactly a maximal run
/// of word characters that is one of the three articles.
fn remove_articles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start = None;
    let flush = |out: &mut String, word: &str| {
        if matches!(word, "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
    };
    for (i, c) in text.char_indices() {
        if is_py_word(c) {
            word_start.get_or_insert(i);
        } else {
            if let Some(start) = word_start.take() {
                flush(&mut out, &text[start..i]);
            }
            out.push(c);
        }
    }
    if let Some(start) = word_start {
        flush(&mut out, &text[start..]);
    }
    out
}

fn is_cjk_ideograph(c: char) -> bool {
    ('\u{4e00}'..='\u{9fa5}').contains(&c)
}

/// The tokens of the normalised answer.
fn answer_tokens(text: &str, normalization: AnswerNormalization) -> Vec<String> {
    let lower = text.to_lowercase();
    match normalization {
        AnswerNormalization::Squad => {
            let no_punct: String = lower
                .chars()
                .filter(|c| !c.is_ascii_punctuation())
                .collect();
            remove_articles(&no_punct)
                .split(is_py_space)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        }
        AnswerNormalization::Cjk => {
            let mut tokens = Vec::new();
            let mut run = String::new();
            let flush = |run: &mut String, tokens: &mut Vec<String>| {
                tokens.extend(
                    run.split(is_py_space)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                );
                run.clear();
            };
            for c in lower.chars() {
                if c.is_ascii_punctuation() || (!c.is_ascii() && matches_char(&PUNCTUATION, c)) {
                    continue;
                }
                if is_cjk_ideograph(c) {
                    flush(&mut run, &mut tokens);
                    tokens.push(c.to_string());
                } else {
                    run.push(c);
                }
            }
            flush(&mut run, &mut tokens);
            tokens
        }
    }
}

/// The normalised answer: its tokens joined by single spaces (SQuAD's
/// `normalize_answer`, MLQA's for `zh`).
///
/// ```
/// use kaiyuan_metrics::squad::{AnswerNormalization, normalize_answer};
///
/// assert_eq!(normalize_answer("The  Eiffel-Tower!", AnswerNormalization::Squad), "eiffeltower");
/// assert_eq!(normalize_answer("an apple, a pear", AnswerNormalization::Squad), "apple pear");
/// assert_eq!(normalize_answer("北京大学。", AnswerNormalization::Cjk), "北 京 大 学");
/// ```
pub fn normalize_answer(text: &str, normalization: AnswerNormalization) -> String {
    answer_tokens(text, normalization).join(" ")
}

fn f1_of_tokens(prediction: &[String], gold: &[String]) -> f64 {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in gold {
        *counts.entry(t).or_insert(0) += 1;
    }
    let mut common = 0usize;
    for t in prediction {
        if let Some(c) = counts.get_mut(t.as_str())
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / prediction.len() as f64;
    let recall = common as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Exact match and token F1 of `prediction`, each the maximum over `golds`.
/// Fails when `golds` is empty.
///
/// ```
/// use kaiyuan_metrics::squad::{AnswerNormalization, qa_score};
///
/// let s = qa_score("the Denver Broncos", &["Denver Broncos", "Broncos"], AnswerNormalization::Squad)?;
/// assert_eq!((s.exact_match, s.f1), (1.0, 1.0));
/// let s = qa_score("Broncos won", &["Denver Broncos"], AnswerNormalization::Squad)?;
/// assert_eq!((s.exact_match, s.f1), (0.0, 0.5));
/// # Ok::<(), kaiyuan_metrics::MetricsError>(())
/// ```
pub fn qa_score<S: AsRef<str>>(
    prediction: &str,
    golds: &[S],
    normalization: AnswerNormalization,
) -> Result<QaScore> {
    if golds.is_empty() {
        return Err(MetricsError::input(
            "golds",
            "no gold answer to compare with",
        ));
    }
    let pred = answer_tokens(prediction, normalization);
    let mut best = QaScore::default();
    for gold in golds {
        let gold = answer_tokens(gold.as_ref(), normalization);
        if pred == gold {
            best.exact_match = 1.0;
        }
        best.f1 = best.f1.max(f1_of_tokens(&pred, &gold));
    }
    Ok(best)
}

/// Exact match of `prediction` (1 or 0), the maximum over `golds`. Fails
/// when `golds` is empty.
///
/// ```
/// use kaiyuan_metrics::squad::{AnswerNormalization, exact_match};
///
/// assert_eq!(exact_match("北京 大学", &["北京大学"], AnswerNormalization::Cjk)?, 1.0);
/// assert_eq!(exact_match("北京 大学", &["北京大学"], AnswerNormalization::Squad)?, 0.0);
/// # Ok::<(), kaiyuan_metrics::MetricsError>(())
/// ```
pub fn exact_match<S: AsRef<str>>(
    prediction: &str,
    golds: &[S],
    normalization: AnswerNormalization,
) -> Result<f64> {
    Ok(qa_score(prediction, golds, normalization)?.exact_match)
}

/// Token F1 of `prediction`, the maximum over `golds`. Fails when `golds`
/// is empty.
///
/// ```
/// use kaiyuan_metrics::squad::{AnswerNormalization, token_f1};
///
/// assert_eq!(token_f1("北京", &["北京大学"], AnswerNormalization::Cjk)?, 2.0 / 3.0);
/// assert_eq!(token_f1("", &[""], AnswerNormalization::Squad)?, 0.0);
/// # Ok::<(), kaiyuan_metrics::MetricsError>(())
/// ```
pub fn token_f1<S: AsRef<str>>(
    prediction: &str,
    golds: &[S],
    normalization: AnswerNormalization,
) -> Result<f64> {
    Ok(qa_score(prediction, golds, normalization)?.f1)
}

/// [`qa_score`] for every prediction with its gold answers, and the mean.
/// Fails if the slices differ in length or are empty, or a prediction has
/// no gold answer.
///
/// ```
/// use kaiyuan_metrics::squad::{AnswerNormalization, qa_corpus};
///
/// let golds = [vec!["Paris"], vec!["1989", "in 1989"]];
/// let corpus = qa_corpus(&["paris.", "1990"], &golds, AnswerNormalization::Squad)?;
/// assert_eq!(corpus.mean.exact_match, 0.5);
/// # Ok::<(), kaiyuan_metrics::MetricsError>(())
/// ```
pub fn qa_corpus<P, R, S>(
    predictions: &[P],
    golds: &[R],
    normalization: AnswerNormalization,
) -> Result<QaCorpus>
where
    P: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    if predictions.len() != golds.len() {
        return Err(MetricsError::input(
            "golds",
            format!(
                "{} predictions for {} gold-answer lists",
                predictions.len(),
                golds.len()
            ),
        ));
    }
    if predictions.is_empty() {
        return Err(MetricsError::input("predictions", "no predictions"));
    }
    let mut per_pair = Vec::with_capacity(predictions.len());
    let mut sum = QaScore::default();
    for (i, (p, g)) in predictions.iter().zip(golds).enumerate() {
        let s = qa_score(p.as_ref(), g.as_ref(), normalization)
            .map_err(|_| MetricsError::input(format!("golds[{i}]"), "no gold answer"))?;
        sum.exact_match += s.exact_match;
        sum.f1 += s.f1;
        per_pair.push(s);
    }
    let n = per_pair.len() as f64;
    Ok(QaCorpus {
        mean: QaScore {
            exact_match: sum.exact_match / n,
            f1: sum.f1 / n,
        },
        per_pair,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `re.sub(r"\b(a|an|the)\b", " ", text)` by trying the regex at every
    /// position, as Python's engine does.
    fn naive_remove_articles(text: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let word = |i: Option<usize>| i.and_then(|i| chars.get(i)).is_some_and(|&c| is_py_word(c));
        let boundary = |i: usize| word(i.checked_sub(1)) != word(Some(i));
        let mut out = String::new();
        let mut i = 0;
        'outer: while i < chars.len() {
            if boundary(i) {
                for alt in ["a", "an", "the"] {
                    let alt: Vec<char> = alt.chars().collect();
                    let end = i + alt.len();
                    if chars.get(i..end) == Some(&alt[..]) && boundary(end) {
                        out.push(' ');
                        i = end;
                        continue 'outer;
                    }
                }
            }
            out.push(chars[i]);
            i += 1;
        }
        out
    }

    proptest! {
        #[test]
        fn articles_match_regex_semantics(
            parts in prop::collection::vec(prop::sample::select(vec![
                "a", "an", "the", "The", " ", "x", "ana", "_", "é", "²", "中", "\u{301}", "-", "theater", "1",
            ]), 0..20)
        ) {
            let text: String = parts.concat().to_lowercase();
            prop_assert_eq!(remove_articles(&text), naive_remove_articles(&text));
        }
    }

    #[test]
    fn python_whitespace() {
        // Python 3.11: [c for c in map(chr, range(0x110000)) if c.isspace()]
        let python: Vec<u32> = [
            0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000,
            0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028,
            0x2029, 0x202f, 0x205f, 0x3000,
        ]
        .to_vec();
        let ours: Vec<u32> = (0..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|&c| is_py_space(c))
            .map(u32::from)
            .collect();
        assert_eq!(ours, python);
    }

    #[test]
    fn errors() {
        assert!(qa_score("x", &[] as &[&str], AnswerNormalization::Squad).is_err());
        assert!(qa_corpus(&["a"], &[vec!["a"], vec!["b"]], AnswerNormalization::Squad).is_err());
        assert!(
            qa_corpus(
                &[] as &[&str],
                &[] as &[Vec<&str>],
                AnswerNormalization::Squad
            )
            .is_err()
        );
        let err = qa_corpus(
            &["a", "b"],
            &[vec!["a"], vec![]],
            AnswerNormalization::Squad,
        )
        .unwrap_err();
        assert!(err.to_string().contains("golds[1]"), "{err}");
        assert!("SQuAD".parse::<AnswerNormalization>().is_err());
    }
}
