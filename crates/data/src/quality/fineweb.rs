//! FineWeb's line rules (Penedo et al. 2024), as datatrove 0.10.1's
//! `FineWebQualityFilter` implements them.

use super::chars::{char_len, in_chars, py_is_blank};
use super::gopher::find_duplicates;
use super::{ChineseMode, ZH_CLOSERS, ZH_TERMINAL, check_ratio, tables, with_scratch};
use crate::error::{DataError, Result};
use crate::stage::{DocContext, DocumentStage, Outcome, Rejection};
use serde::{Deserialize, Serialize};

/// Settings of [`FineWebQuality`]; the defaults are datatrove's
/// `FineWebQualityFilter` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineWebQualityConfig {
    /// Lowest share of (non-blank) lines ending in terminal punctuation (0.12).
    pub line_punct_thr: f64,
    /// Do not drop documents where no line ends in terminal punctuation.
    pub line_punct_exclude_zero: bool,
    /// Line endings that count as terminal punctuation (default datatrove's
    /// `TERMINAL_PUNCTUATION`, 160 sentence-final marks of many scripts).
    pub stop_chars: Option<Vec<String>>,
    /// Highest share of short lines (0.67).
    pub short_line_thr: f64,
    /// A line of at most this many characters is short (30).
    pub short_line_length: usize,
    /// Highest share of characters (newlines not counted) in lines that
    /// repeat an earlier line (0.01).
    pub char_duplicates_ratio: f64,
    /// Highest ratio of newlines to words (0.3).
    pub new_line_ratio: f64,
    /// When to use the Chinese variant.
    pub chinese: ChineseMode,
    /// Thresholds of the Chinese variant.
    pub zh: FineWebQualityZh,
}

/// The Chinese variant of [`FineWebQuality`]: a line also ends in terminal
/// punctuation when it ends in `。！？；…．` followed by any closing quotes or
/// brackets; words are CJK characters. The punctuation-share, short-share
/// and duplicate thresholds are shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineWebQualityZh {
    /// A line of at most this many characters is short (10: 30 English
    /// characters are about five words, about ten Chinese characters).
    pub short_line_length: usize,
    /// Highest ratio of newlines to words (0.2: with characters as words a
    /// line holds more "words" than in English).
    pub new_line_ratio: f64,
}

impl Default for FineWebQualityConfig {
    fn default() -> Self {
        FineWebQualityConfig {
            line_punct_thr: 0.12,
            line_punct_exclude_zero: false,
            stop_chars: None,
            short_line_thr: 0.67,
            short_line_length: 30,
            char_duplicates_ratio: 0.01,
            new_line_ratio: 0.3,
            chinese: ChineseMode::Auto,
            zh: FineWebQualityZh::default(),
        }
    }
}

impl Default for FineWebQualityZh {
    fn default() -> Self {
        FineWebQualityZh {
            short_line_length: 10,
            new_line_ratio: 0.2,
        }
    }
}

/// FineWeb's heuristics (stage `fineweb_quality`). Rejection codes, prefixed
/// with `fineweb_quality.`, are datatrove's reasons: `empty`,
/// `line_punct_ratio`, `short_line_ratio`, `char_dup_ratio` and `list_ratio`.
#[derive(Debug, Clone)]
pub struct FineWebQuality {
    config: FineWebQualityConfig,
    stop_strings: Option<Vec<String>>,
}

impl FineWebQuality {
    /// Builds the stage, checking the settings.
    pub fn new(config: FineWebQualityConfig) -> Result<Self> {
        for (field, v) in [
            ("fineweb_quality.line_punct_thr", config.line_punct_thr),
            ("fineweb_quality.short_line_thr", config.short_line_thr),
            (
                "fineweb_quality.char_duplicates_ratio",
                config.char_duplicates_ratio,
            ),
            ("fineweb_quality.new_line_ratio", config.new_line_ratio),
            (
                "fineweb_quality.zh.new_line_ratio",
                config.zh.new_line_ratio,
            ),
        ] {
            check_ratio(field, Some(v))?;
        }
        if let Some(list) = &config.stop_chars
            && let Some(i) = list.iter().position(String::is_empty)
        {
            return Err(DataError::config(
                format!("fineweb_quality.stop_chars[{i}]"),
                "empty string",
            ));
        }
        let stop_strings = config.stop_chars.clone();
        Ok(FineWebQuality {
            config,
            stop_strings,
        })
    }

    /// The settings.
    pub fn config(&self) -> &FineWebQualityConfig {
        &self.config
    }

    fn ends_with_stop(&self, line: &str, zh: bool) -> bool {
        let plain = match &self.stop_strings {
            Some(list) => list.iter().any(|s| line.ends_with(s.as_str())),
            None => line
                .chars()
                .next_back()
                .is_some_and(|c| in_chars(tables::DT_TERMINAL_PUNCTUATION, c)),
        };
        if plain || !zh {
            return plain;
        }
        let core = line.trim_end_matches(ZH_CLOSERS);
        core.ends_with(ZH_TERMINAL)
            || core
                .chars()
                .next_back()
                .is_some_and(|c| in_chars(tables::DT_TERMINAL_PUNCTUATION, c))
    }
}

impl DocumentStage for FineWebQuality {
    fn name(&self) -> &'static str {
        "fineweb_quality"
    }

    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        let c = &self.config;
        let zh = c.chinese.applies(ctx);
        let (short_len, new_line_max) = if zh {
            (c.zh.short_line_length, c.zh.new_line_ratio)
        } else {
            (c.short_line_length, c.new_line_ratio)
        };
        let lines = || text.split('\n').filter(|l| !py_is_blank(l));
        let (mut n, mut punct, mut short) = (0usize, 0usize, 0usize);
        for line in lines() {
            n += 1;
            punct += usize::from(self.ends_with_stop(line, zh));
            short += usize::from(char_len(line) <= short_len);
        }
        if n == 0 {
            return Outcome::Drop(Rejection::new("fineweb_quality.empty", "no non-blank line"));
        }
        let ratio = punct as f64 / n as f64;
        ctx.record("fineweb.line_punct_ratio", ratio);
        if ratio < c.line_punct_thr && !(ratio == 0.0 && c.line_punct_exclude_zero) {
            return Outcome::Drop(Rejection::new(
                "fineweb_quality.line_punct_ratio",
                format!(
                    "{punct} of {n} lines end in terminal punctuation, < {}",
                    c.line_punct_thr
                ),
            ));
        }
        let ratio = short as f64 / n as f64;
        ctx.record("fineweb.short_line_ratio", ratio);
        if ratio > c.short_line_thr {
            return Outcome::Drop(Rejection::new(
                "fineweb_quality.short_line_ratio",
                format!(
                    "{short} of {n} lines have at most {short_len} characters, > {}",
                    c.short_line_thr
                ),
            ));
        }
        let (_, _, dup_chars) = find_duplicates(lines());
        let newlines = text.bytes().filter(|&b| b == b'\n').count();
        let ratio = dup_chars as f64 / (char_len(text) - newlines) as f64;
        ctx.record("fineweb.char_dup_ratio", ratio);
        if ratio > c.char_duplicates_ratio {
            return Outcome::Drop(Rejection::new(
                "fineweb_quality.char_dup_ratio",
                format!(
                    "{ratio:.4} of characters in repeated lines > {}",
                    c.char_duplicates_ratio
                ),
            ));
        }
        let n_words = with_scratch(|s| {
            s.split(text, zh);
            s.words.len()
        });
        let ratio = newlines as f64 / n_words as f64;
        ctx.record("fineweb.new_line_ratio", ratio);
        if ratio > new_line_max {
            return Outcome::Drop(Rejection::new(
                "fineweb_quality.list_ratio",
                format!("{newlines} newlines per {n_words} words > {new_line_max}"),
            ));
        }
        Outcome::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::Language;

    fn code(stage: &FineWebQuality, text: &str, ctx: &mut DocContext) -> &'static str {
        match stage.apply(text, ctx) {
            Outcome::Drop(r) => r.code,
            _ => "keep",
        }
    }

    #[test]
    fn english_rules() {
        let stage = FineWebQuality::new(FineWebQualityConfig::default())
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut ctx = DocContext::default();
        let good = "This is a complete line of prose that ends properly.\nAnother long line of prose, also ending well.";
        assert_eq!(code(&stage, good, &mut ctx), "keep");
        assert_eq!(code(&stage, " \n\t\n", &mut ctx), "fineweb_quality.empty");
        let nav = (0..10)
            .map(|i| format!("Menu entry number {i} without an end"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            code(&stage, &nav, &mut ctx),
            "fineweb_quality.line_punct_ratio"
        );
        let short =
            "Home.\nAbout us.\nContact.\nA much longer line of text that ends with a full stop.";
        assert_eq!(
            code(&stage, short, &mut ctx),
            "fineweb_quality.short_line_ratio"
        );
        let dup = format!("{good}\n{good}");
        assert_eq!(
            code(&stage, &dup, &mut ctx),
            "fineweb_quality.char_dup_ratio"
        );
        let items = (0..8)
            .map(|i| format!("entry_number_{i}_with_a_long_identifier_name"))
            .collect::<Vec<_>>();
        let list = format!(
            "This line is long enough to not be short.\n{}\nThe last line is long and ends well.",
            items.join("\n")
        );
        assert_eq!(code(&stage, &list, &mut ctx), "fineweb_quality.list_ratio");
    }

    #[test]
    fn chinese_rules() {
        let stage = FineWebQuality::new(FineWebQualityConfig::default())
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut zh = DocContext {
            language: Some(Language::Zh),
            ..DocContext::default()
        };
        let text = "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？\n人不知而不愠，不亦君子乎？他说：“好。”";
        assert_eq!(code(&stage, text, &mut zh), "keep");
        let nav = "首页\n新闻\n关于我们\n联系我们\n学而时习之，不亦说乎？有朋自远方来。";
        assert_eq!(
            code(&stage, nav, &mut zh),
            "fineweb_quality.short_line_ratio"
        );
    }
}
