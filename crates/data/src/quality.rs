//! Quality filters: Gopher quality and repetition, C4, FineWeb-style line
//! rules, and simple length, symbol, stop-word and bad-word filters.
//!
//! The Gopher, C4 and FineWeb stages reproduce the keep/drop decisions of
//! datatrove 0.10.1's `GopherQualityFilter`, `GopherRepetitionFilter`,
//! `C4QualityFilter` (including the text left after its line removal) and
//! `FineWebQualityFilter` with the same default thresholds. This includes how
//! datatrove splits English into words: spaCy 3.8's rule-based English
//! tokenizer (`spacy.blank("en")`), re-implemented here without allocation
//! per word (see `spacy_en.rs`), and Python's own notions of whitespace,
//! letters and line breaks (`str.isspace`, `str.isalpha`,
//! `str.splitlines`). `tests/quality.rs` checks every decision against
//! datatrove's on the committed reference corpus in
//! `fixtures/data/filters/`.
//!
//! # Chinese
//!
//! Chinese has no spaces between words, so the word-based rules would see a
//! whole Chinese sentence as one "word". Every stage has a `chinese` option
//! ([`ChineseMode`]): `auto` (the default) switches to the Chinese variant
//! when the language stage identified the document as [`Language::Zh`],
//! `always` forces it and `never` keeps datatrove's rules. In the Chinese
//! variant each CJK character counts as one word (other tokens stay as
//! spaCy splits them), repetition n-grams are character n-grams,
//! terminal punctuation includes `。！？；…` and closing quotes, stop words
//! come from a Chinese list and are matched as substrings, and the
//! thresholds that depend on word length are replaced by the `zh` values
//! documented on each config. Without a language stage (the context's
//! language is `None`) the datatrove rules apply.
//!
//! # Example
//!
//! ```
//! use kaiyuan_data::quality::{GopherQuality, GopherQualityConfig};
//! use kaiyuan_data::{DocContext, DocumentStage, Outcome};
//!
//! let stage = GopherQuality::new(GopherQualityConfig::default())?;
//! let mut ctx = DocContext::default();
//! match stage.apply("Far too short to be a real document.", &mut ctx) {
//!     Outcome::Drop(r) => assert_eq!(r.code, "gopher_quality.short_doc"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), kaiyuan_data::DataError>(())
//! ```

/// `0x01` in every byte of a `u64`: SWAR code treats eight bytes as one word.
const SWAR_LOW: u64 = 0x0101_0101_0101_0101;
/// `0x80` in every byte of a `u64`.
const SWAR_HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` (every byte below 0x80) that lies in
/// `lo..=hi` (`lo <= hi < 0x80`); the other bits are zero.
#[inline(always)]
fn swar_in_range(x: u64, lo: u8, hi: u8) -> u64 {
    x.wrapping_add(SWAR_LOW * u64::from(0x80 - lo))
        & !x.wrapping_add(SWAR_LOW * u64::from(0x7F - hi))
        & SWAR_HIGH
}

mod badwords;
mod c4;
mod chars;
mod fineweb;
mod gopher;
mod ngrams;
mod simple;
mod spacy_en;
#[rustfmt::skip]
mod tables;

pub use badwords::{BadWords, BadWordsConfig};
pub use c4::{C4Quality, C4QualityConfig, C4QualityZh};
pub use fineweb::{FineWebQuality, FineWebQualityConfig, FineWebQualityZh};
pub use gopher::{
    GopherQuality, GopherQualityConfig, GopherQualityZh, GopherRepetition, GopherRepetitionConfig,
    GopherRepetitionZh,
};
pub use simple::{
    LengthFilter, LengthFilterConfig, StopWords, StopWordsConfig, SymbolFilter, SymbolFilterConfig,
};

use crate::error::{DataError, Result};
use crate::lang::Language;
use crate::stage::DocContext;
use crate::text::is_cjk;
use serde::{Deserialize, Serialize};
use spacy_en::Token;
use std::cell::RefCell;

/// When a stage applies its Chinese variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChineseMode {
    /// Chinese variant for documents the language stage marked
    /// [`Language::Zh`]; datatrove's rules for everything else.
    #[default]
    Auto,
    /// Chinese variant for every document.
    Always,
    /// datatrove's rules for every document.
    Never,
}

impl ChineseMode {
    /// Whether the Chinese variant applies to a document with this context.
    pub fn applies(self, ctx: &DocContext) -> bool {
        match self {
            ChineseMode::Auto => ctx.language_or_other() == Language::Zh,
            ChineseMode::Always => true,
            ChineseMode::Never => false,
        }
    }
}

/// datatrove's word split for English (spaCy 3.8's English tokenizer,
/// whitespace tokens dropped), as slices of `text`.
///
/// ```
/// use kaiyuan_data::quality::split_words;
/// assert_eq!(split_words("Don't stop, Mr.Smith!"), ["Do", "n't", "stop", ",", "Mr.", "Smith", "!"]);
/// ```
pub fn split_words(text: &str) -> Vec<&str> {
    let mut toks = Vec::new();
    spacy_en::words(text, &mut toks);
    toks.iter().map(|t| &text[t.start..t.end]).collect()
}

/// datatrove's sentence count for English, `len(split_into_sentences(text))`:
/// the sentences spaCy's `sentencizer` finds (at least 1). C4 counts the
/// sentences of kept lines with it.
///
/// ```
/// use kaiyuan_data::quality::count_sentences;
/// assert_eq!(count_sentences("It rains. We stay in! Really?"), 3);
/// assert_eq!(count_sentences("Wait... what"), 1);
/// ```
pub fn count_sentences(text: &str) -> usize {
    let mut toks = Vec::new();
    spacy_en::sentence_count(text, &mut toks)
}

/// Per-thread buffers, so that filtering allocates nothing per word.
#[derive(Default)]
pub(crate) struct Scratch {
    /// spaCy's tokens of `toks_of` (whitespace tokens included), when
    /// `toks_valid`.
    pub(crate) toks: Vec<Token>,
    pub(crate) words: Vec<(usize, usize)>,
    pub(crate) ngrams: ngrams::Ngrams,
    pub(crate) line_toks: Vec<Token>,
    pub(crate) buf: String,
    /// The document `toks` were last computed for: consecutive stages on
    /// the same document tokenize it only once.
    toks_of: String,
    toks_valid: bool,
    /// Whether `words` holds the word spans of `toks_of`, and in which
    /// variant.
    words_zh: bool,
    words_valid: bool,
}

impl Scratch {
    /// Fills `self.toks` with spaCy's tokens of `text` (see
    /// [`spacy_en::tokenize`]), reusing the previous result when it was
    /// computed for the same text (the bytes are compared).
    pub(crate) fn tokens(&mut self, text: &str) {
        if self.toks_valid && self.toks_of == text {
            return;
        }
        self.toks_valid = false;
        self.words_valid = false;
        spacy_en::tokenize(text, &mut self.toks);
        self.toks_of.clear();
        self.toks_of.push_str(text);
        self.toks_valid = true;
    }

    /// Fills `self.words` with the word spans of `text` (see
    /// [`spans_of_tokens`]), reusing the tokens of the same text and the
    /// words when it was split the same way just before.
    pub(crate) fn split(&mut self, text: &str, zh: bool) {
        self.tokens(text);
        if self.words_valid && self.words_zh == zh {
            return;
        }
        spans_of_tokens(text, zh, &self.toks, &mut self.words);
        self.words_zh = zh;
        self.words_valid = true;
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if they are
/// already in use further up the stack).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Splits `text` into words as byte ranges (see [`spans_of_tokens`]).
#[cfg(test)]
pub(crate) fn word_spans(
    text: &str,
    zh: bool,
    toks: &mut Vec<Token>,
    out: &mut Vec<(usize, usize)>,
) {
    spacy_en::tokenize(text, toks);
    spans_of_tokens(text, zh, toks, out);
}

/// The words of `text` as byte ranges, from its spaCy tokens: the English
/// tokens (whitespace tokens skipped), and in the Chinese variant every CJK
/// character as a word of its own.
pub(crate) fn spans_of_tokens(text: &str, zh: bool, toks: &[Token], out: &mut Vec<(usize, usize)>) {
    out.clear();
    let words = toks.iter().filter(|t| !t.space);
    if !zh {
        out.extend(words.map(|t| (t.start, t.end)));
        return;
    }
    for t in words {
        let s = &text[t.start..t.end];
        if s.is_ascii() {
            out.push((t.start, t.end));
            continue;
        }
        let mut run: Option<usize> = None;
        for (i, c) in s.char_indices() {
            let at = t.start + i;
            if is_cjk(c) {
                if let Some(r) = run.take() {
                    out.push((r, at));
                }
                out.push((at, at + c.len_utf8()));
            } else if run.is_none() {
                run = Some(at);
            }
        }
        if let Some(r) = run {
            out.push((r, t.end));
        }
    }
}

/// Counts the words of `text` the way the simple filters do: runs of
/// non-whitespace, and in the Chinese variant every CJK character as a word.
pub(crate) fn simple_word_count(text: &str, zh: bool) -> usize {
    if !zh {
        return chars::py_split_count(text);
    }
    let mut n = 0;
    let mut in_word = false;
    for c in text.chars() {
        if chars::py_isspace(c) {
            in_word = false;
        } else if is_cjk(c) {
            // CJK punctuation is not a word.
            if c.is_alphanumeric() {
                n += 1;
            }
            in_word = false;
        } else if !in_word {
            in_word = true;
            n += 1;
        }
    }
    n
}

/// Reads a word list: one entry per line, surrounding whitespace trimmed,
/// blank lines and lines starting with `#` skipped. `field` names the config
/// option in errors; a line that is not UTF-8 is reported with its number.
pub(crate) fn load_word_list(path: &str, field: &str) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).map_err(|_| {
            DataError::config(field, format!("{path}:{}: line is not valid UTF-8", i + 1))
        })?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// Checks that an optional ratio is a finite number >= 0.
pub(crate) fn check_ratio(field: &str, v: Option<f64>) -> Result<()> {
    match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => Err(DataError::config(
            field,
            format!("{x} is not a finite number >= 0"),
        )),
        _ => Ok(()),
    }
}

/// datatrove's truthiness: `None` and `0` both disable a threshold.
#[inline]
pub(crate) fn active_f(v: Option<f64>) -> Option<f64> {
    v.filter(|x| *x != 0.0)
}

/// datatrove's truthiness for counts.
#[inline]
pub(crate) fn active_n(v: Option<usize>) -> Option<usize> {
    v.filter(|x| *x != 0)
}

/// Characters that end a sentence in Chinese text, beyond the ASCII ones.
pub(crate) const ZH_TERMINAL: &[char] = &['。', '！', '？', '；', '…', '．', '｡'];

/// Closing quotes and brackets that may follow Chinese terminal punctuation.
pub(crate) const ZH_CLOSERS: &[char] = &['”', '’', '」', '』', '）', '》', '】', '"', '\''];

/// Default Chinese stop words (modern and classical function words), matched
/// as substrings.
pub const ZH_STOP_WORDS: &[&str] = &[
    "的", "了", "是", "在", "和", "有", "我", "你", "他", "她", "它", "们", "这", "那", "也", "就",
    "都", "而", "与", "着", "或", "不", "没有", "一个", "之", "其", "以", "为", "于", "所", "者",
    "乎", "矣", "焉", "哉",
];

/// datatrove's Gopher stop words (matched as whole words, case-sensitive).
pub const EN_STOP_WORDS: &[&str] = &["the", "be", "to", "of", "and", "that", "have", "with"];

/// Number of sentences of a Chinese line: runs of terminal punctuation
/// (with any closing quotes after them) followed by more text end a
/// sentence.
pub(crate) fn zh_sentence_count(line: &str) -> usize {
    let mut n = 1usize;
    let mut after_terminal = false;
    for c in line.chars() {
        let terminal = ZH_TERMINAL.contains(&c) || matches!(c, '.' | '!' | '?');
        if terminal || (after_terminal && (ZH_CLOSERS.contains(&c) || chars::py_isspace(c))) {
            after_terminal = after_terminal || terminal;
            continue;
        }
        if after_terminal {
            n += 1;
            after_terminal = false;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zh_words_are_characters() {
        let text = "学而时习之，不亦说乎？ GPT-4 很好";
        let mut toks = Vec::new();
        let mut words = Vec::new();
        word_spans(text, true, &mut toks, &mut words);
        let w: Vec<&str> = words.iter().map(|&(a, b)| &text[a..b]).collect();
        assert_eq!(
            w,
            [
                "学", "而", "时", "习", "之", "，", "不", "亦", "说", "乎", "？", "GPT-4", "很",
                "好"
            ]
        );
        assert_eq!(simple_word_count(text, true), 12);
        assert_eq!(simple_word_count("a b  c", false), 3);
    }

    #[test]
    fn zh_sentences() {
        assert_eq!(
            zh_sentence_count("学而时习之，不亦说乎？有朋自远方来，不亦乐乎？"),
            2
        );
        assert_eq!(zh_sentence_count("他说：“好。”然后走了。"), 2);
        assert_eq!(zh_sentence_count("没有句号"), 1);
    }

    #[test]
    fn chinese_mode() {
        let mut ctx = DocContext::default();
        assert!(!ChineseMode::Auto.applies(&ctx));
        ctx.language = Some(Language::Zh);
        assert!(ChineseMode::Auto.applies(&ctx));
        assert!(!ChineseMode::Never.applies(&ctx));
        assert!(ChineseMode::Always.applies(&DocContext::default()));
    }

    #[test]
    fn word_list_errors_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("kaiyuan-quality-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let p = dir.join("list.txt");
        std::fs::write(&p, b"# comment\nfoo\n\n bar \n\xff\n").ok();
        let path = p.to_string_lossy().to_string();
        let err = load_word_list(&path, "bad_words.path")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("bad_words.path") && err.contains(":5:"),
            "{err}"
        );
        std::fs::write(&p, b"# comment\nfoo\n\n bar \n").ok();
        assert_eq!(
            load_word_list(&path, "x").ok(),
            Some(vec!["foo".to_string(), "bar".to_string()])
        );
        let missing = load_word_list("/nonexistent/list.txt", "x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("/nonexistent/list.txt"), "{missing}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
