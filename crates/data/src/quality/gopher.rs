//! Gopher's quality and repetition rules (Rae et al. 2021, appendix A.1),
//! as datatrove 0.10.1 implements them.

use super::chars::{
    char_len, count_non_overlapping, dt_punct, py_isalpha, py_lstrip, py_rstrip, py_splitlines,
    py_strip,
};
use super::{
    ChineseMode, EN_STOP_WORDS, ZH_STOP_WORDS, active_f, active_n, check_ratio, load_word_list,
    with_scratch,
};
use crate::error::{DataError, Result};
use crate::stage::{DocContext, DocumentStage, Outcome, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use xxhash_rust::xxh3::Xxh3Builder;

/// Settings of [`GopherQuality`]. The defaults are datatrove's
/// `GopherQualityFilter` defaults; as there, a threshold that is `None` or
/// `0` is not checked. Word counts use datatrove's English word split (spaCy's
/// tokenizer, so `don't` is `do` + `n't` and punctuation marks are words).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherQualityConfig {
    /// Fewest words that are not only punctuation (50).
    pub min_doc_words: Option<usize>,
    /// Most words that are not only punctuation (100,000).
    pub max_doc_words: Option<usize>,
    /// Lowest mean length of those words, in characters (3).
    pub min_avg_word_length: Option<f64>,
    /// Highest mean word length (10).
    pub max_avg_word_length: Option<f64>,
    /// Highest ratio of `#` to words, and of `...`/`…` to words (0.1).
    pub max_symbol_word_ratio: Option<f64>,
    /// Highest share of lines starting with `•` or `-` (0.9).
    pub max_bullet_lines_ratio: Option<f64>,
    /// Highest share of lines ending with `...` or `…` (0.3).
    pub max_ellipsis_lines_ratio: Option<f64>,
    /// Lowest share of words with at least one letter (0.8; datatrove's
    /// name, although it is a minimum).
    pub max_non_alpha_words_ratio: Option<f64>,
    /// Fewest distinct stop words present (2).
    pub min_stop_words: Option<usize>,
    /// Stop words, matched as whole words, case-sensitive (default
    /// datatrove's: the, be, to, of, and, that, have, with).
    pub stop_words: Option<Vec<String>>,
    /// A file of stop words, one per line, used instead of `stop_words`.
    pub stop_words_file: Option<String>,
    /// When to use the Chinese variant.
    pub chinese: ChineseMode,
    /// Thresholds of the Chinese variant.
    pub zh: GopherQualityZh,
}

/// The Chinese variant of [`GopherQuality`]: every CJK character is a word,
/// so the word-count and word-length thresholds differ; the symbol, bullet
/// and ellipsis thresholds are shared with the English ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherQualityZh {
    /// Fewest words (CJK characters count one each) that are not only
    /// punctuation (100: about as much text as 50 English words).
    pub min_doc_words: Option<usize>,
    /// Most such words (200,000).
    pub max_doc_words: Option<usize>,
    /// Lowest mean word length (none: a CJK character is always 1).
    pub min_avg_word_length: Option<f64>,
    /// Highest mean word length (10: catches long non-Chinese junk).
    pub max_avg_word_length: Option<f64>,
    /// Lowest share of words with a letter (0.7: Chinese punctuation marks
    /// are words of their own and come every few characters).
    pub max_non_alpha_words_ratio: Option<f64>,
    /// Fewest distinct stop words present (2).
    pub min_stop_words: Option<usize>,
    /// Stop words, matched as substrings (default [`super::ZH_STOP_WORDS`]).
    pub stop_words: Option<Vec<String>>,
    /// A file of Chinese stop words, one per line.
    pub stop_words_file: Option<String>,
}

impl Default for GopherQualityConfig {
    fn default() -> Self {
        GopherQualityConfig {
            min_doc_words: Some(50),
            max_doc_words: Some(100_000),
            min_avg_word_length: Some(3.0),
            max_avg_word_length: Some(10.0),
            max_symbol_word_ratio: Some(0.1),
            max_bullet_lines_ratio: Some(0.9),
            max_ellipsis_lines_ratio: Some(0.3),
            max_non_alpha_words_ratio: Some(0.8),
            min_stop_words: Some(2),
            stop_words: None,
            stop_words_file: None,
            chinese: ChineseMode::Auto,
            zh: GopherQualityZh::default(),
        }
    }
}

impl Default for GopherQualityZh {
    fn default() -> Self {
        GopherQualityZh {
            min_doc_words: Some(100),
            max_doc_words: Some(200_000),
            min_avg_word_length: None,
            max_avg_word_length: Some(10.0),
            max_non_alpha_words_ratio: Some(0.7),
            min_stop_words: Some(2),
            stop_words: None,
            stop_words_file: None,
        }
    }
}

/// Gopher's quality heuristics (stage `gopher_quality`).
///
/// Rejection codes (datatrove's reason in brackets): `short_doc`
/// (`gopher_short_doc`), `long_doc` (`gopher_long_doc`),
/// `mean_word_length_below` (`gopher_below_avg_threshold`),
/// `mean_word_length_above` (`gopher_above_avg_threshold`), `hash_ratio`
/// (`gopher_too_many_hashes`), `ellipsis_ratio` (`gopher_too_many_ellipsis`),
/// `bullet_lines` (`gopher_too_many_bullets`), `ellipsis_lines`
/// (`gopher_too_many_end_ellipsis`), `alpha_words`
/// (`gopher_below_alpha_threshold`), `stop_words`
/// (`gopher_enough_stop_words`), each prefixed with `gopher_quality.`.
#[derive(Debug, Clone)]
pub struct GopherQuality {
    config: GopherQualityConfig,
    stop_words: HashSet<String>,
    zh_stop_words: Vec<String>,
}

impl GopherQuality {
    /// Builds the stage, reading the stop-word files if configured.
    pub fn new(config: GopherQualityConfig) -> Result<Self> {
        for (field, v) in [
            (
                "gopher_quality.min_avg_word_length",
                config.min_avg_word_length,
            ),
            (
                "gopher_quality.max_avg_word_length",
                config.max_avg_word_length,
            ),
            (
                "gopher_quality.max_symbol_word_ratio",
                config.max_symbol_word_ratio,
            ),
            (
                "gopher_quality.max_bullet_lines_ratio",
                config.max_bullet_lines_ratio,
            ),
            (
                "gopher_quality.max_ellipsis_lines_ratio",
                config.max_ellipsis_lines_ratio,
            ),
            (
                "gopher_quality.max_non_alpha_words_ratio",
                config.max_non_alpha_words_ratio,
            ),
            (
                "gopher_quality.zh.min_avg_word_length",
                config.zh.min_avg_word_length,
            ),
            (
                "gopher_quality.zh.max_avg_word_length",
                config.zh.max_avg_word_length,
            ),
            (
                "gopher_quality.zh.max_non_alpha_words_ratio",
                config.zh.max_non_alpha_words_ratio,
            ),
        ] {
            check_ratio(field, v)?;
        }
        let stop_words: HashSet<String> = match (&config.stop_words_file, &config.stop_words) {
            (Some(path), _) => load_word_list(path, "gopher_quality.stop_words_file")?
                .into_iter()
                .collect(),
            (None, Some(words)) => words.iter().cloned().collect(),
            (None, None) => EN_STOP_WORDS.iter().map(|s| s.to_string()).collect(),
        };
        let zh_stop_words: Vec<String> = match (&config.zh.stop_words_file, &config.zh.stop_words) {
            (Some(path), _) => load_word_list(path, "gopher_quality.zh.stop_words_file")?,
            (None, Some(words)) => words.clone(),
            (None, None) => ZH_STOP_WORDS.iter().map(|s| s.to_string()).collect(),
        };
        if zh_stop_words.iter().any(String::is_empty) {
            return Err(DataError::config(
                "gopher_quality.zh.stop_words",
                "empty stop word",
            ));
        }
        Ok(GopherQuality {
            config,
            stop_words,
            zh_stop_words,
        })
    }

    /// The settings.
    pub fn config(&self) -> &GopherQualityConfig {
        &self.config
    }
}

fn drop(code: &'static str, detail: String) -> Outcome {
    Outcome::Drop(Rejection::new(code, detail))
}

impl DocumentStage for GopherQuality {
    fn name(&self) -> &'static str {
        "gopher_quality"
    }

    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        let zh = self.config.chinese.applies(ctx);
        let c = &self.config;
        let (min_words, max_words, min_avg, max_avg, min_alpha, min_stop) = if zh {
            (
                c.zh.min_doc_words,
                c.zh.max_doc_words,
                c.zh.min_avg_word_length,
                c.zh.max_avg_word_length,
                c.zh.max_non_alpha_words_ratio,
                c.zh.min_stop_words,
            )
        } else {
            (
                c.min_doc_words,
                c.max_doc_words,
                c.min_avg_word_length,
                c.max_avg_word_length,
                c.max_non_alpha_words_ratio,
                c.min_stop_words,
            )
        };
        with_scratch(|s| {
            s.split(text, zh);
            let words = &s.words;
            let n_words = words.len();
            let mut n_non_symbol = 0usize;
            let mut non_symbol_chars = 0usize;
            let mut n_alpha = 0usize;
            for &(a, b) in words {
                let (len, symbol_only, has_alpha) = word_classes(text, a, b);
                if !symbol_only {
                    n_non_symbol += 1;
                    non_symbol_chars += len;
                }
                n_alpha += usize::from(has_alpha);
            }
            ctx.record("gopher.words", n_non_symbol as f64);
            if let Some(min) = active_n(min_words)
                && n_non_symbol < min
            {
                return drop(
                    "gopher_quality.short_doc",
                    format!("{n_non_symbol} words < {min}"),
                );
            }
            if let Some(max) = active_n(max_words)
                && n_non_symbol > max
            {
                return drop(
                    "gopher_quality.long_doc",
                    format!("{n_non_symbol} words > {max}"),
                );
            }
            // np.mean of an empty list is NaN, which passes both checks.
            let avg = non_symbol_chars as f64 / n_non_symbol as f64;
            if avg.is_finite() {
                ctx.record("gopher.mean_word_length", avg);
            }
            if let Some(min) = active_f(min_avg)
                && avg < min
            {
                return drop(
                    "gopher_quality.mean_word_length_below",
                    format!("mean word length {avg:.2} < {min}"),
                );
            }
            if let Some(max) = active_f(max_avg)
                && avg > max
            {
                return drop(
                    "gopher_quality.mean_word_length_above",
                    format!("mean word length {avg:.2} > {max}"),
                );
            }
            if let Some(max) = active_f(c.max_symbol_word_ratio) {
                let hashes = memchr::memchr_iter(b'#', text.as_bytes()).count();
                let ratio = hashes as f64 / n_words as f64;
                ctx.record("gopher.hash_ratio", ratio);
                if ratio > max {
                    return drop(
                        "gopher_quality.hash_ratio",
                        format!("{hashes} '#' per {n_words} words > {max}"),
                    );
                }
                let ellipses =
                    count_non_overlapping(text, "...") + count_non_overlapping(text, "\u{2026}");
                let ratio = ellipses as f64 / n_words as f64;
                ctx.record("gopher.ellipsis_ratio", ratio);
                if ratio > max {
                    return drop(
                        "gopher_quality.ellipsis_ratio",
                        format!("{ellipses} ellipses per {n_words} words > {max}"),
                    );
                }
            }
            let max_bullets = active_f(c.max_bullet_lines_ratio);
            let max_ellipsis_lines = active_f(c.max_ellipsis_lines_ratio);
            if max_bullets.is_some() || max_ellipsis_lines.is_some() {
                let (mut lines, mut bullets, mut ellipsis) = (0usize, 0usize, 0usize);
                for line in py_splitlines(text) {
                    lines += 1;
                    let l = py_lstrip(line);
                    bullets += usize::from(l.starts_with('\u{2022}') || l.starts_with('-'));
                    let r = py_rstrip(line);
                    ellipsis += usize::from(r.ends_with("...") || r.ends_with('\u{2026}'));
                }
                if let Some(max) = max_bullets {
                    let ratio = bullets as f64 / lines as f64;
                    ctx.record("gopher.bullet_lines_ratio", ratio);
                    if ratio > max {
                        return drop(
                            "gopher_quality.bullet_lines",
                            format!("{bullets} of {lines} lines start with a bullet, > {max}"),
                        );
                    }
                }
                if let Some(max) = max_ellipsis_lines {
                    let ratio = ellipsis as f64 / lines as f64;
                    ctx.record("gopher.ellipsis_lines_ratio", ratio);
                    if ratio > max {
                        return drop(
                            "gopher_quality.ellipsis_lines",
                            format!("{ellipsis} of {lines} lines end with an ellipsis, > {max}"),
                        );
                    }
                }
            }
            if let Some(min) = active_f(min_alpha) {
                let ratio = n_alpha as f64 / n_words as f64;
                ctx.record("gopher.alpha_words_ratio", ratio);
                if ratio < min {
                    return drop(
                        "gopher_quality.alpha_words",
                        format!("{n_alpha} of {n_words} words have a letter, < {min}"),
                    );
                }
            }
            if let Some(min) = active_n(min_stop) {
                let found = if zh {
                    self.zh_stop_words
                        .iter()
                        .filter(|w| text.contains(w.as_str()))
                        .count()
                } else {
                    let mut seen: Vec<&str> = Vec::new();
                    for &(a, b) in words {
                        let w = &text[a..b];
                        if self.stop_words.contains(w) && !seen.contains(&w) {
                            seen.push(w);
                            if seen.len() >= min {
                                break;
                            }
                        }
                    }
                    seen.len()
                };
                ctx.record("gopher.stop_words", found as f64);
                if found < min {
                    return drop(
                        "gopher_quality.stop_words",
                        format!("{found} distinct stop words < {min}"),
                    );
                }
            }
            Outcome::Keep
        })
    }
}

/// A word's length in characters, whether it is only punctuation
/// (datatrove's `PUNCTUATION_SET`) and whether it has a letter
/// (`str.isalpha`), with a byte loop for ASCII words.
/// `word_classes_bytes` of `text[a..b]`, as masked 8-byte arithmetic
/// when the word has at most 8 bytes and 8 bytes can be read there.
#[inline]
fn word_classes(text: &str, a: usize, b: usize) -> (usize, bool, bool) {
    use super::{SWAR_HIGH as HIGH, SWAR_LOW as LOW, swar_in_range as in_range};
    let len = b - a;
    let bytes = text.as_bytes();
    if len > 8 || a + 8 > bytes.len() {
        return word_classes_bytes(&text[a..b]);
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&bytes[a..a + 8]);
    let keep = if len == 8 {
        HIGH
    } else {
        HIGH & ((1u64 << (8 * len)) - 1)
    };
    let x = u64::from_le_bytes(v);
    if x & keep != 0 {
        return word_classes_bytes(&text[a..b]);
    }
    // Only the kept bytes count; the others are cleared to 0 (a control
    // character: not a letter, and punctuation for `dt_punct`).
    let x = x & ((keep >> 7) * 0xFF);
    let alpha = in_range(x | (LOW * 0x20), b'a', b'z') & keep;
    // Not `dt_punct`: digits, letters, space, tab and newline.
    let plain =
        in_range(x, b'0', b'9') | alpha | in_range(x, b' ', b' ') | in_range(x, b'\t', b'\n');
    (len, plain & keep == 0, alpha != 0)
}

#[inline]
fn word_classes_bytes(w: &str) -> (usize, bool, bool) {
    /// Bit 0: `dt_punct`, bit 1: `py_isalpha`, bit 7: not ASCII.
    const CLASS: [u8; 256] = {
        let mut t = [0x80u8; 256];
        let mut b = 0;
        while b < 128 {
            let c = b as u8;
            let punct =
                c.is_ascii_punctuation() || (c.is_ascii_control() && c != b'\t' && c != b'\n');
            t[b] = punct as u8 | (c.is_ascii_alphabetic() as u8) << 1;
            b += 1;
        }
        t
    };
    // One pass without early exits: `all` and `any` as AND and OR.
    let (mut all, mut any) = (0xFFu8, 0u8);
    for &b in w.as_bytes() {
        let c = CLASS[b as usize];
        all &= c;
        any |= c;
    }
    if any & 0x80 != 0 {
        return word_classes_chars(w);
    }
    (w.len(), all & 1 != 0, any & 2 != 0)
}

/// [`word_classes`] a character at a time (the reference).
fn word_classes_chars(w: &str) -> (usize, bool, bool) {
    let mut symbol_only = true;
    let mut has_alpha = false;
    let mut len = 0usize;
    for ch in w.chars() {
        len += 1;
        if symbol_only && !dt_punct(ch) {
            symbol_only = false;
        }
        if !has_alpha && py_isalpha(ch) {
            has_alpha = true;
        }
    }
    (len, symbol_only, has_alpha)
}

/// Settings of [`GopherRepetition`]. The defaults are datatrove's
/// `GopherRepetitionFilter` defaults (Gopher's table A1); a fraction that is
/// `None` or `0` is not checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherRepetitionConfig {
    /// Highest share of lines that repeat an earlier line (0.3).
    pub dup_line_frac: Option<f64>,
    /// Highest share of paragraphs that repeat an earlier one (0.3).
    pub dup_para_frac: Option<f64>,
    /// Highest share of characters in repeated lines (0.2).
    pub dup_line_char_frac: Option<f64>,
    /// Highest share of characters in repeated paragraphs (0.2).
    pub dup_para_char_frac: Option<f64>,
    /// `(n, fraction)`: highest share of characters covered by the most
    /// frequent word n-gram ((2, 0.2), (3, 0.18), (4, 0.16)).
    pub top_n_grams: Vec<(usize, f64)>,
    /// `(n, fraction)`: highest share of characters in repeated word
    /// n-grams ((5, 0.15), (6, 0.14), … (10, 0.10)).
    pub dup_n_grams: Vec<(usize, f64)>,
    /// When to use the Chinese variant.
    pub chinese: ChineseMode,
    /// The n-gram rules of the Chinese variant.
    pub zh: GopherRepetitionZh,
}

/// The Chinese variant of [`GopherRepetition`]: every CJK character is a
/// word and n-grams are joined without spaces, so the n-grams are character
/// n-grams; since a Chinese word is one to two characters, n is twice
/// Gopher's with the same fractions. The line and paragraph rules are shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherRepetitionZh {
    /// ((4, 0.2), (6, 0.18), (8, 0.16)).
    pub top_n_grams: Vec<(usize, f64)>,
    /// ((10, 0.15), (12, 0.14), (14, 0.13), (16, 0.12), (18, 0.11), (20, 0.10)).
    pub dup_n_grams: Vec<(usize, f64)>,
}

impl Default for GopherRepetitionConfig {
    fn default() -> Self {
        GopherRepetitionConfig {
            dup_line_frac: Some(0.3),
            dup_para_frac: Some(0.3),
            dup_line_char_frac: Some(0.2),
            dup_para_char_frac: Some(0.2),
            top_n_grams: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            dup_n_grams: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
            chinese: ChineseMode::Auto,
            zh: GopherRepetitionZh::default(),
        }
    }
}

impl Default for GopherRepetitionZh {
    fn default() -> Self {
        GopherRepetitionZh {
            top_n_grams: vec![(4, 0.2), (6, 0.18), (8, 0.16)],
            dup_n_grams: vec![
                (10, 0.15),
                (12, 0.14),
                (14, 0.13),
                (16, 0.12),
                (18, 0.11),
                (20, 0.10),
            ],
        }
    }
}

/// Gopher's repetition heuristics (stage `gopher_repetition`).
///
/// Rejection codes, prefixed with `gopher_repetition.`, are datatrove's
/// reasons: `empty`, `dup_para_frac`, `dup_para_char_frac`, `dup_line_frac`,
/// `dup_line_char_frac`, `top_{n}_gram` and `duplicated_{n}_n_grams` (for n
/// up to 20; larger n report `top_n_gram` / `duplicated_n_grams`).
#[derive(Debug, Clone)]
pub struct GopherRepetition {
    config: GopherRepetitionConfig,
}

const TOP_CODES: [&str; 21] = [
    "gopher_repetition.top_n_gram",
    "gopher_repetition.top_1_gram",
    "gopher_repetition.top_2_gram",
    "gopher_repetition.top_3_gram",
    "gopher_repetition.top_4_gram",
    "gopher_repetition.top_5_gram",
    "gopher_repetition.top_6_gram",
    "gopher_repetition.top_7_gram",
    "gopher_repetition.top_8_gram",
    "gopher_repetition.top_9_gram",
    "gopher_repetition.top_10_gram",
    "gopher_repetition.top_11_gram",
    "gopher_repetition.top_12_gram",
    "gopher_repetition.top_13_gram",
    "gopher_repetition.top_14_gram",
    "gopher_repetition.top_15_gram",
    "gopher_repetition.top_16_gram",
    "gopher_repetition.top_17_gram",
    "gopher_repetition.top_18_gram",
    "gopher_repetition.top_19_gram",
    "gopher_repetition.top_20_gram",
];

const DUP_CODES: [&str; 21] = [
    "gopher_repetition.duplicated_n_grams",
    "gopher_repetition.duplicated_1_n_grams",
    "gopher_repetition.duplicated_2_n_grams",
    "gopher_repetition.duplicated_3_n_grams",
    "gopher_repetition.duplicated_4_n_grams",
    "gopher_repetition.duplicated_5_n_grams",
    "gopher_repetition.duplicated_6_n_grams",
    "gopher_repetition.duplicated_7_n_grams",
    "gopher_repetition.duplicated_8_n_grams",
    "gopher_repetition.duplicated_9_n_grams",
    "gopher_repetition.duplicated_10_n_grams",
    "gopher_repetition.duplicated_11_n_grams",
    "gopher_repetition.duplicated_12_n_grams",
    "gopher_repetition.duplicated_13_n_grams",
    "gopher_repetition.duplicated_14_n_grams",
    "gopher_repetition.duplicated_15_n_grams",
    "gopher_repetition.duplicated_16_n_grams",
    "gopher_repetition.duplicated_17_n_grams",
    "gopher_repetition.duplicated_18_n_grams",
    "gopher_repetition.duplicated_19_n_grams",
    "gopher_repetition.duplicated_20_n_grams",
];

impl GopherRepetition {
    /// Builds the stage, checking the settings.
    pub fn new(config: GopherRepetitionConfig) -> Result<Self> {
        for (field, v) in [
            ("gopher_repetition.dup_line_frac", config.dup_line_frac),
            ("gopher_repetition.dup_para_frac", config.dup_para_frac),
            (
                "gopher_repetition.dup_line_char_frac",
                config.dup_line_char_frac,
            ),
            (
                "gopher_repetition.dup_para_char_frac",
                config.dup_para_char_frac,
            ),
        ] {
            check_ratio(field, v)?;
        }
        for (field, list) in [
            ("gopher_repetition.top_n_grams", &config.top_n_grams),
            ("gopher_repetition.dup_n_grams", &config.dup_n_grams),
            ("gopher_repetition.zh.top_n_grams", &config.zh.top_n_grams),
            ("gopher_repetition.zh.dup_n_grams", &config.zh.dup_n_grams),
        ] {
            for (i, &(n, f)) in list.iter().enumerate() {
                if n == 0 {
                    return Err(DataError::config(
                        format!("{field}[{i}]"),
                        "n must be at least 1",
                    ));
                }
                check_ratio(&format!("{field}[{i}]"), Some(f))?;
            }
        }
        Ok(GopherRepetition { config })
    }

    /// The settings.
    pub fn config(&self) -> &GopherRepetitionConfig {
        &self.config
    }
}

/// datatrove's `find_duplicates`: (elements equal to an earlier one, their
/// characters).
pub(crate) fn find_duplicates<'a>(items: impl Iterator<Item = &'a str>) -> (usize, usize, usize) {
    let mut seen: HashSet<&str, Xxh3Builder> = HashSet::with_hasher(Xxh3Builder::new());
    let (mut total, mut dups, mut dup_chars) = (0usize, 0usize, 0usize);
    for item in items {
        total += 1;
        if !seen.insert(item) {
            dups += 1;
            dup_chars += char_len(item);
        }
    }
    (total, dups, dup_chars)
}

/// Python's `re.split(r"\n{2,}", s)`.
fn split_paragraphs(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        let bytes = r.as_bytes();
        let mut from = 0;
        while let Some(p) = memchr::memchr(b'\n', &bytes[from..]) {
            let at = from + p;
            let run = bytes[at..].iter().take_while(|&&b| b == b'\n').count();
            if run >= 2 {
                rest = Some(&r[at + run..]);
                return Some(&r[..at]);
            }
            from = at + run;
        }
        rest = None;
        Some(r)
    })
}

/// Python's `re.split("\n+", s)`.
fn split_newline_runs(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r.as_bytes()) {
            Some(at) => {
                let run = r.as_bytes()[at..]
                    .iter()
                    .take_while(|&&b| b == b'\n')
                    .count();
                rest = Some(&r[at + run..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

impl DocumentStage for GopherRepetition {
    fn name(&self) -> &'static str {
        "gopher_repetition"
    }

    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        let c = &self.config;
        if text.is_empty() {
            return drop("gopher_repetition.empty", "empty document".into());
        }
        let zh = c.chinese.applies(ctx);
        let len = char_len(text) as f64;
        let (paras, para_dups, para_chars) = find_duplicates(split_paragraphs(py_strip(text)));
        let ratio = para_dups as f64 / paras as f64;
        ctx.record("gopher.dup_para_frac", ratio);
        if let Some(max) = active_f(c.dup_para_frac)
            && ratio > max
        {
            return drop(
                "gopher_repetition.dup_para_frac",
                format!("{para_dups} of {paras} paragraphs repeat, > {max}"),
            );
        }
        if let Some(max) = active_f(c.dup_para_char_frac) {
            let ratio = para_chars as f64 / len;
            if ratio > max {
                return drop(
                    "gopher_repetition.dup_para_char_frac",
                    format!("{ratio:.3} of characters in repeated paragraphs > {max}"),
                );
            }
        }
        let (lines, line_dups, line_chars) = find_duplicates(split_newline_runs(text));
        let ratio = line_dups as f64 / lines as f64;
        ctx.record("gopher.dup_line_frac", ratio);
        if let Some(max) = active_f(c.dup_line_frac)
            && ratio > max
        {
            return drop(
                "gopher_repetition.dup_line_frac",
                format!("{line_dups} of {lines} lines repeat, > {max}"),
            );
        }
        if let Some(max) = active_f(c.dup_line_char_frac) {
            let ratio = line_chars as f64 / len;
            if ratio > max {
                return drop(
                    "gopher_repetition.dup_line_char_frac",
                    format!("{ratio:.3} of characters in repeated lines > {max}"),
                );
            }
        }
        let (top, dup, sep) = if zh {
            (&c.zh.top_n_grams, &c.zh.dup_n_grams, 0)
        } else {
            (&c.top_n_grams, &c.dup_n_grams, 1)
        };
        with_scratch(|s| {
            s.split(text, zh);
            s.ngrams.load(text, &s.words);
            for &(n, frac) in top {
                let Some(chars) = s.ngrams.top_duplicate(n, sep) else {
                    continue;
                };
                let ratio = chars as f64 / len;
                if n == 2 {
                    ctx.record("gopher.top_2_gram_frac", ratio);
                }
                if ratio > frac {
                    let code = TOP_CODES.get(n).copied().unwrap_or(TOP_CODES[0]);
                    return drop(
                        code,
                        format!("most frequent {n}-gram covers {ratio:.3} of characters, > {frac}"),
                    );
                }
            }
            for &(n, frac) in dup {
                let chars = s.ngrams.all_duplicate(n);
                let ratio = chars as f64 / len;
                if n == 5 {
                    ctx.record("gopher.dup_5_gram_frac", ratio);
                }
                if ratio > frac {
                    let code = DUP_CODES.get(n).copied().unwrap_or(DUP_CODES[0]);
                    return drop(
                        code,
                        format!("repeated {n}-grams cover {ratio:.3} of characters, > {frac}"),
                    );
                }
            }
            Outcome::Keep
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::Language;

    proptest::proptest! {
        /// The ASCII fast path classifies words like the character loop.
        #[test]
        fn word_classes_fast_equals_chars(
            pre in "[ -~é]{0,3}",
            w in "[ -~\t\n\x00-\x1f\x7f]{0,12}|\\PC{0,8}",
            post in "[ -~é\x00]{0,10}",
        ) {
            let text = format!("{pre}{w}{post}");
            let (a, b) = (pre.len(), pre.len() + w.len());
            proptest::prop_assert_eq!(word_classes(&text, a, b), word_classes_chars(&w));
            proptest::prop_assert_eq!(word_classes_bytes(&w), word_classes_chars(&w));
        }
    }

    #[test]
    fn python_splits() {
        assert_eq!(
            split_paragraphs("a\nb\n\nc\n\n\nd").collect::<Vec<_>>(),
            ["a\nb", "c", "d"]
        );
        assert_eq!(split_paragraphs("").collect::<Vec<_>>(), [""]);
        assert_eq!(
            split_newline_runs("\na\n\nb\n").collect::<Vec<_>>(),
            ["", "a", "b", ""]
        );
        assert_eq!(
            find_duplicates(["a", "b", "a", "", ""].into_iter()),
            (5, 2, 1)
        );
    }

    fn prose(n: usize) -> String {
        let words = [
            "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "then", "runs",
            "with", "great", "speed", "to", "its", "home", "of", "many", "years",
        ];
        (0..n)
            .map(|i| words[(i * 7 + i / 20) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
            + "."
    }

    #[test]
    fn quality_rules_english() {
        let stage = GopherQuality::new(GopherQualityConfig::default())
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut ctx = DocContext::default();
        let code = |o: Outcome| match o {
            Outcome::Drop(r) => r.code,
            _ => "keep",
        };
        let text =
            "The cat sat with the dog and looked at the birds that flew over the garden wall. "
                .repeat(5);
        assert_eq!(code(stage.apply(&text, &mut ctx)), "keep");
        assert_eq!(
            code(stage.apply("too short", &mut ctx)),
            "gopher_quality.short_doc"
        );
        let long_words =
            "extraordinarily incomprehensibilities characteristically ".repeat(30) + "the and";
        assert_eq!(
            code(stage.apply(&long_words, &mut ctx)),
            "gopher_quality.mean_word_length_above"
        );
        let hashes = format!("{} #a #b #c #d #e #f #g #h #i #j #k", prose(60));
        assert_eq!(
            code(stage.apply(&hashes, &mut ctx)),
            "gopher_quality.hash_ratio"
        );
        let bullets = (0..60)
            .map(|i| format!("- item {i} of the list and the rest"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            code(stage.apply(&bullets, &mut ctx)),
            "gopher_quality.bullet_lines"
        );
        let no_stop = "Apples bananas cherries dates elderberries figs grapes. ".repeat(10);
        assert_eq!(
            code(stage.apply(&no_stop, &mut ctx)),
            "gopher_quality.stop_words"
        );
        let numbers = format!(
            "{} {}",
            prose(50),
            (1900..1960)
                .map(|y| y.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_eq!(
            code(stage.apply(&numbers, &mut ctx)),
            "gopher_quality.alpha_words"
        );
    }

    #[test]
    fn quality_bounds_from_config() {
        let cfg = GopherQualityConfig {
            min_doc_words: None,
            max_doc_words: Some(10),
            ..Default::default()
        };
        let stage = GopherQuality::new(cfg)
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut ctx = DocContext::default();
        let text =
            "The cat sat with the dog and looked at the birds that flew over the garden wall.";
        assert!(
            matches!(stage.apply(text, &mut ctx), Outcome::Drop(r) if r.code == "gopher_quality.long_doc")
        );
        let cfg = GopherQualityConfig {
            min_doc_words: None,
            min_stop_words: Some(0),
            ..Default::default()
        };
        let stage = GopherQuality::new(cfg)
            .ok()
            .unwrap_or_else(|| unreachable!());
        let short = "It is a so to be on at by me";
        assert!(
            matches!(stage.apply(short, &mut ctx), Outcome::Drop(r) if r.code == "gopher_quality.mean_word_length_below")
        );
    }

    #[test]
    fn quality_rules_chinese() {
        let stage = GopherQuality::new(GopherQualityConfig::default())
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut ctx = DocContext {
            language: Some(Language::Zh),
            ..DocContext::default()
        };
        let text = "我们在这里讨论数据清洗的方法，这是一个重要的问题。".repeat(6);
        assert_eq!(stage.apply(&text, &mut ctx), Outcome::Keep);
        let short = "我们在这里讨论数据清洗的方法。";
        assert!(
            matches!(stage.apply(short, &mut ctx), Outcome::Drop(r) if r.code == "gopher_quality.short_doc")
        );
        let no_stop = "春眠不觉晓处处闻啼鸟夜来风雨声花落知多少".repeat(6);
        let no_stop = no_stop.replace('不', "");
        assert!(
            matches!(stage.apply(&no_stop, &mut ctx), Outcome::Drop(r) if r.code == "gopher_quality.stop_words")
        );
        // The English rules would see one long "word" here.
        let mut en = DocContext {
            language: Some(Language::En),
            ..DocContext::default()
        };
        assert!(matches!(stage.apply(&text, &mut en), Outcome::Drop(_)));
    }

    #[test]
    fn repetition_rules() {
        let stage = GopherRepetition::new(GopherRepetitionConfig::default())
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut ctx = DocContext::default();
        let code = |o: Outcome| match o {
            Outcome::Drop(r) => r.code,
            _ => "keep",
        };
        assert_eq!(code(stage.apply("", &mut ctx)), "gopher_repetition.empty");
        assert_eq!(
            code(stage.apply("a\n\nb\n\na\n\na", &mut ctx)),
            "gopher_repetition.dup_para_frac"
        );
        assert_eq!(
            code(stage.apply(
                "one line here\nother\none line here\nfour\nfive\nsix\nseven",
                &mut ctx
            )),
            "gopher_repetition.dup_line_char_frac"
        );
        let varied = "Each sentence here says something new about a different topic entirely. \
            Weather changes quickly in mountain valleys during spring. \
            Programmers often debate tabs versus spaces with surprising passion.";
        assert_eq!(code(stage.apply(varied, &mut ctx)), "keep");
        let repeated = format!(
            "{varied} {}",
            "buy now buy now buy now buy now buy now buy now buy now buy now"
        );
        assert_eq!(
            code(stage.apply(&repeated, &mut ctx)),
            "gopher_repetition.top_2_gram"
        );
        let mut zh = DocContext {
            language: Some(Language::Zh),
            ..DocContext::default()
        };
        let poem = "床前明月光，疑是地上霜。举头望明月，低头思故乡。春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。白日依山尽，黄河入海流。欲穷千里目，更上一层楼。";
        assert_eq!(code(stage.apply(poem, &mut zh)), "keep");
        let spam = format!("{poem}{}", "欢迎光临".repeat(8));
        assert_eq!(
            code(stage.apply(&spam, &mut zh)),
            "gopher_repetition.top_4_gram"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = GopherRepetitionConfig {
            top_n_grams: vec![(0, 0.1)],
            ..Default::default()
        };
        let err = GopherRepetition::new(bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("gopher_repetition.top_n_grams[0]"), "{err}");
        let bad = GopherQualityConfig {
            max_symbol_word_ratio: Some(f64::NAN),
            ..Default::default()
        };
        let err = GopherQuality::new(bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("gopher_quality.max_symbol_word_ratio"),
            "{err}"
        );
        let toml_err = toml::from_str::<GopherQualityConfig>("min_doc_word = 3")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(toml_err.contains("min_doc_word"), "{toml_err}");
    }
}
