//! Simple filters: length bounds, symbol ratios and stop-word presence.
//! Words here are whitespace-separated (cheap), and in the Chinese variant
//! every CJK character is a word.

use super::chars::{
    count_non_overlapping, py_is_blank, py_isspace, py_lstrip, py_rstrip, py_splitlines,
};
use super::{
    ChineseMode, EN_STOP_WORDS, ZH_STOP_WORDS, check_ratio, load_word_list, simple_word_count,
};
use crate::error::{DataError, Result};
use crate::stage::{DocContext, DocumentStage, Outcome, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Settings of [`LengthFilter`]; every bound is off (`None`) by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LengthFilterConfig {
    /// Fewest characters.
    pub min_chars: Option<usize>,
    /// Most characters.
    pub max_chars: Option<usize>,
    /// Fewest words (whitespace-separated; CJK characters count one each in
    /// the Chinese variant).
    pub min_words: Option<usize>,
    /// Most words.
    pub max_words: Option<usize>,
    /// Fewest non-blank lines.
    pub min_lines: Option<usize>,
    /// Most non-blank lines.
    pub max_lines: Option<usize>,
    /// When to count CJK characters as words.
    pub chinese: ChineseMode,
}

/// Length bounds (stage `length`); codes `length.min_chars`,
/// `length.max_chars`, `length.min_words`, `length.max_words`,
/// `length.min_lines`, `length.max_lines`.
#[derive(Debug, Clone)]
pub struct LengthFilter {
    config: LengthFilterConfig,
}

impl LengthFilter {
    /// Builds the stage, checking that each minimum is at most its maximum.
    pub fn new(config: LengthFilterConfig) -> Result<Self> {
        for (field, lo, hi) in [
            ("length.min_chars", config.min_chars, config.max_chars),
            ("length.min_words", config.min_words, config.max_words),
            ("length.min_lines", config.min_lines, config.max_lines),
        ] {
            if let (Some(lo), Some(hi)) = (lo, hi)
                && lo > hi
            {
                return Err(DataError::config(
                    field,
                    format!("{lo} is above the maximum {hi}"),
                ));
            }
        }
        Ok(LengthFilter { config })
    }
}

fn bound(
    code_min: &'static str,
    code_max: &'static str,
    what: &str,
    v: usize,
    min: Option<usize>,
    max: Option<usize>,
) -> Option<Outcome> {
    if let Some(m) = min
        && v < m
    {
        return Some(Outcome::Drop(Rejection::new(
            code_min,
            format!("{v} {what} < {m}"),
        )));
    }
    if let Some(m) = max
        && v > m
    {
        return Some(Outcome::Drop(Rejection::new(
            code_max,
            format!("{v} {what} > {m}"),
        )));
    }
    None
}

impl DocumentStage for LengthFilter {
    fn name(&self) -> &'static str {
        "length"
    }

    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        let c = &self.config;
        let chars = text.chars().count();
        ctx.record("length.chars", chars as f64);
        if let Some(o) = bound(
            "length.min_chars",
            "length.max_chars",
            "characters",
            chars,
            c.min_chars,
            c.max_chars,
        ) {
            return o;
        }
        if c.min_words.is_some() || c.max_words.is_some() {
            let words = simple_word_count(text, c.chinese.applies(ctx));
            ctx.record("length.words", words as f64);
            if let Some(o) = bound(
                "length.min_words",
                "length.max_words",
                "words",
                words,
                c.min_words,
                c.max_words,
            ) {
                return o;
            }
        }
        if c.min_lines.is_some() || c.max_lines.is_some() {
            let lines = py_splitlines(text).filter(|l| !py_is_blank(l)).count();
            if let Some(o) = bound(
                "length.min_lines",
                "length.max_lines",
                "lines",
                lines,
                c.min_lines,
                c.max_lines,
            ) {
                return o;
            }
        }
        Outcome::Keep
    }
}

/// Settings of [`SymbolFilter`]; defaults are Gopher's thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SymbolFilterConfig {
    /// Highest ratio of `#` to words (0.1).
    pub max_hash_ratio: Option<f64>,
    /// Highest ratio of ellipses (`...` or `…`) to words (0.1).
    pub max_ellipsis_ratio: Option<f64>,
    /// Highest share of non-blank lines starting with a bullet (`•`, `-`,
    /// `*`, `·`, `●`, `○`, `▪`, `■`, `□`, `◦`, `‣`, `►`) (0.9).
    pub max_bullet_lines_ratio: Option<f64>,
    /// Highest share of non-blank lines ending with an ellipsis (0.3).
    pub max_ellipsis_lines_ratio: Option<f64>,
    /// When to count CJK characters as words.
    pub chinese: ChineseMode,
}

impl Default for SymbolFilterConfig {
    fn default() -> Self {
        SymbolFilterConfig {
            max_hash_ratio: Some(0.1),
            max_ellipsis_ratio: Some(0.1),
            max_bullet_lines_ratio: Some(0.9),
            max_ellipsis_lines_ratio: Some(0.3),
            chinese: ChineseMode::Auto,
        }
    }
}

const BULLETS: &[char] = &['•', '-', '*', '·', '●', '○', '▪', '■', '□', '◦', '‣', '►'];

/// Symbol, bullet and ellipsis ratios (stage `symbols`); codes
/// `symbols.hash_ratio`, `symbols.ellipsis_ratio`, `symbols.bullet_lines`,
/// `symbols.ellipsis_lines`. Unlike [`super::GopherQuality`] it needs no
/// tokenizer, and `……` (the Chinese ellipsis) counts once.
#[derive(Debug, Clone)]
pub struct SymbolFilter {
    config: SymbolFilterConfig,
}

impl SymbolFilter {
    /// Builds the stage, checking the ratios.
    pub fn new(config: SymbolFilterConfig) -> Result<Self> {
        for (field, v) in [
            ("symbols.max_hash_ratio", config.max_hash_ratio),
            ("symbols.max_ellipsis_ratio", config.max_ellipsis_ratio),
            (
                "symbols.max_bullet_lines_ratio",
                config.max_bullet_lines_ratio,
            ),
            (
                "symbols.max_ellipsis_lines_ratio",
                config.max_ellipsis_lines_ratio,
            ),
        ] {
            check_ratio(field, v)?;
        }
        Ok(SymbolFilter { config })
    }
}

impl DocumentStage for SymbolFilter {
    fn name(&self) -> &'static str {
        "symbols"
    }

    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        let c = &self.config;
        let words = simple_word_count(text, c.chinese.applies(ctx)).max(1) as f64;
        if let Some(max) = c.max_hash_ratio {
            let r = text.bytes().filter(|&b| b == b'#').count() as f64 / words;
            ctx.record("symbols.hash_ratio", r);
            if r > max {
                return Outcome::Drop(Rejection::new(
                    "symbols.hash_ratio",
                    format!("{r:.3} '#' per word > {max}"),
                ));
            }
        }
        if let Some(max) = c.max_ellipsis_ratio {
            let n = count_non_overlapping(text, "...")
                + count_non_overlapping(&text.replace("……", "…"), "…");
            let r = n as f64 / words;
            ctx.record("symbols.ellipsis_ratio", r);
            if r > max {
                return Outcome::Drop(Rejection::new(
                    "symbols.ellipsis_ratio",
                    format!("{r:.3} ellipses per word > {max}"),
                ));
            }
        }
        let (mut lines, mut bullets, mut ellipses) = (0usize, 0usize, 0usize);
        for line in py_splitlines(text).filter(|l| !py_is_blank(l)) {
            lines += 1;
            bullets += usize::from(py_lstrip(line).starts_with(BULLETS));
            let r = py_rstrip(line);
            ellipses += usize::from(r.ends_with("...") || r.ends_with('…'));
        }
        let lines = lines.max(1) as f64;
        if let Some(max) = c.max_bullet_lines_ratio {
            let r = bullets as f64 / lines;
            ctx.record("symbols.bullet_lines_ratio", r);
            if r > max {
                return Outcome::Drop(Rejection::new(
                    "symbols.bullet_lines",
                    format!("{r:.3} of lines start with a bullet > {max}"),
                ));
            }
        }
        if let Some(max) = c.max_ellipsis_lines_ratio {
            let r = ellipses as f64 / lines;
            ctx.record("symbols.ellipsis_lines_ratio", r);
            if r > max {
                return Outcome::Drop(Rejection::new(
                    "symbols.ellipsis_lines",
                    format!("{r:.3} of lines end with an ellipsis > {max}"),
                ));
            }
        }
        Outcome::Keep
    }
}

/// Settings of [`StopWords`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopWordsConfig {
    /// Fewest distinct stop words a document must contain (2).
    pub min_stop_words: usize,
    /// English stop words, matched case-insensitively as whole words
    /// (default Gopher's: the, be, to, of, and, that, have, with).
    pub en_words: Option<Vec<String>>,
    /// A file of English stop words (one per line), instead of `en_words`.
    pub en_file: Option<String>,
    /// Chinese stop words, matched as substrings (default
    /// [`super::ZH_STOP_WORDS`]).
    pub zh_words: Option<Vec<String>>,
    /// A file of Chinese stop words, instead of `zh_words`.
    pub zh_file: Option<String>,
    /// When to use the Chinese list.
    pub chinese: ChineseMode,
}

impl Default for StopWordsConfig {
    fn default() -> Self {
        StopWordsConfig {
            min_stop_words: 2,
            en_words: None,
            en_file: None,
            zh_words: None,
            zh_file: None,
            chinese: ChineseMode::Auto,
        }
    }
}

/// Stop-word presence (stage `stop_words`, code `stop_words.too_few`):
/// natural text in a language is full of its function words; boilerplate,
/// lists and code are not.
#[derive(Debug, Clone)]
pub struct StopWords {
    min: usize,
    en: HashSet<String>,
    zh: Vec<String>,
    chinese: ChineseMode,
}

impl StopWords {
    /// Builds the stage, reading the word files if configured.
    pub fn new(config: StopWordsConfig) -> Result<Self> {
        let en: Vec<String> = match (&config.en_file, &config.en_words) {
            (Some(p), _) => load_word_list(p, "stop_words.en_file")?,
            (None, Some(w)) => w.clone(),
            (None, None) => EN_STOP_WORDS.iter().map(|s| s.to_string()).collect(),
        };
        let zh: Vec<String> = match (&config.zh_file, &config.zh_words) {
            (Some(p), _) => load_word_list(p, "stop_words.zh_file")?,
            (None, Some(w)) => w.clone(),
            (None, None) => ZH_STOP_WORDS.iter().map(|s| s.to_string()).collect(),
        };
        if let Some(i) = zh.iter().position(String::is_empty) {
            return Err(DataError::config(
                format!("stop_words.zh_words[{i}]"),
                "empty stop word",
            ));
        }
        Ok(StopWords {
            min: config.min_stop_words,
            en: en.into_iter().map(|w| w.to_lowercase()).collect(),
            zh,
            chinese: config.chinese,
        })
    }
}

impl DocumentStage for StopWords {
    fn name(&self) -> &'static str {
        "stop_words"
    }

    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        let found = if self.chinese.applies(ctx) {
            self.zh.iter().filter(|w| text.contains(w.as_str())).count()
        } else {
            let mut seen: Vec<String> = Vec::new();
            let mut lower = String::new();
            for w in text.split(|c: char| py_isspace(c) || (c.is_ascii_punctuation() && c != '\''))
            {
                if w.is_empty() {
                    continue;
                }
                lower.clear();
                lower.extend(w.chars().flat_map(char::to_lowercase));
                if self.en.contains(&lower) && !seen.contains(&lower) {
                    seen.push(lower.clone());
                    if seen.len() >= self.min {
                        break;
                    }
                }
            }
            seen.len()
        };
        ctx.record("stop_words.found", found as f64);
        if found < self.min {
            return Outcome::Drop(Rejection::new(
                "stop_words.too_few",
                format!("{found} distinct stop words < {}", self.min),
            ));
        }
        Outcome::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::Language;

    fn code(stage: &dyn DocumentStage, text: &str, ctx: &mut DocContext) -> &'static str {
        match stage.apply(text, ctx) {
            Outcome::Drop(r) => r.code,
            _ => "keep",
        }
    }

    #[test]
    fn length_bounds() {
        let cfg = LengthFilterConfig {
            min_words: Some(3),
            max_chars: Some(40),
            min_lines: Some(1),
            ..Default::default()
        };
        let stage = LengthFilter::new(cfg)
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut en = DocContext::default();
        let mut zh = DocContext {
            language: Some(Language::Zh),
            ..DocContext::default()
        };
        assert_eq!(code(&stage, "one two three", &mut en), "keep");
        assert_eq!(code(&stage, "one two", &mut en), "length.min_words");
        assert_eq!(code(&stage, &"x ".repeat(30), &mut en), "length.max_chars");
        assert_eq!(code(&stage, "学而时习之", &mut zh), "keep");
        assert_eq!(code(&stage, "学而时习之", &mut en), "length.min_words");
        let bad = LengthFilterConfig {
            min_chars: Some(5),
            max_chars: Some(2),
            ..Default::default()
        };
        let err = LengthFilter::new(bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("length.min_chars"), "{err}");
    }

    #[test]
    fn symbol_ratios() {
        let stage = SymbolFilter::new(SymbolFilterConfig::default())
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut en = DocContext::default();
        assert_eq!(
            code(
                &stage,
                "a normal sentence with words and no symbols at all",
                &mut en
            ),
            "keep"
        );
        assert_eq!(
            code(&stage, "#tag #tag2 #tag3 and more", &mut en),
            "symbols.hash_ratio"
        );
        assert_eq!(
            code(&stage, "wait... what... really...", &mut en),
            "symbols.ellipsis_ratio"
        );
        let bullets =
            "• one thing here and there\n• two things here and there\n* three things and more";
        assert_eq!(code(&stage, bullets, &mut en), "symbols.bullet_lines");
        let trailing =
            "first line is long and it goes on\nsecond line trails off…\nthird line of the text";
        assert_eq!(code(&stage, trailing, &mut en), "symbols.ellipsis_lines");
        let mut zh = DocContext {
            language: Some(Language::Zh),
            ..DocContext::default()
        };
        assert_eq!(
            code(
                &stage,
                "他想了想……然后说了很多很多的话，大家都听得很认真。",
                &mut zh
            ),
            "keep"
        );
    }

    #[test]
    fn stop_word_presence() {
        let stage = StopWords::new(StopWordsConfig::default())
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut en = DocContext::default();
        let mut zh = DocContext {
            language: Some(Language::Zh),
            ..DocContext::default()
        };
        assert_eq!(code(&stage, "The cat and the dog.", &mut en), "keep");
        assert_eq!(
            code(&stage, "Buy cheap pills online now", &mut en),
            "stop_words.too_few"
        );
        assert_eq!(code(&stage, "我们的方法是这样的", &mut zh), "keep");
        assert_eq!(code(&stage, "春眠觉晓", &mut zh), "stop_words.too_few");
    }
}
