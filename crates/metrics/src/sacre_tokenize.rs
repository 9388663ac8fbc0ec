//! sacrebleu's BLEU tokenizers (`13a`, `intl`, `zh`, `char`, `none`) and the
//! Python string operations its metrics rely on (`str.split()`,
//! `str.strip()`, `str.lower()`), reproduced character for character.
//!
//! sacrebleu runs each tokenizer as a chain of regular-expression
//! substitutions followed by `' '.join(line.split())`. The substitutions
//! scan left to right without overlapping, which gives results that a
//! "separate every `.`" reading misses (in `13a`, `a.,5` becomes `a . ,5`).
//! Here each tokenizer is one pass over the text that decides, character by
//! character, where the substitutions would have put spaces; the tests check
//! it against a literal port of the substitution chain.
//!
//! Unicode data follow the reference environment (CPython 3.11, Unicode 14.0,
//! and the `regex` module 2026.11.19, Unicode 17.0, for `intl`):
//!
//! - whitespace is Python's `str.isspace()` (which, unlike Rust's
//!   `char::is_whitespace`, includes U+001C..U+001F);
//! - `intl` takes `\p{P}`, `\p{S}` and `\p{N}` from tables generated from the
//!   `regex` module (the Rust `regex` crate's Unicode data are older);
//! - lowercasing is Rust's full Unicode lowercasing (with the final-sigma
//!   rule, as Python's) except for the 55 characters that gained a lowercase
//!   mapping after Unicode 14.0, which Python 3.11 leaves unchanged (a test
//!   compares every code point with Python's `str.lower()`; only the
//!   final-sigma context next to characters assigned after Unicode 14.0 can
//!   still differ);
//! - `zh` keeps sacrebleu's ranges of "Chinese" characters, including the
//!   quirk that two of them are written as five-digit `\u` escapes: Python
//!   reads `'\u20000'` as U+2000 followed by `'0'`, so the range compares as
//!   U+2001..=U+2A6D (general punctuation, arrows, mathematical operators, …)
//!   and the other as U+2F81..=U+2FA1.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::error::{MetricsError, Result};
use crate::sacre::unicode::{INTL_ASCII, INTL_RANGES};

/// A BLEU tokenizer of sacrebleu, by its sacrebleu name.
///
/// ```
/// use kaiyuan_metrics::BleuTokenizer;
/// let tok: BleuTokenizer = "13a".parse().unwrap();
/// assert_eq!(tok.tokenize("Hello, world (again)."), "Hello , world ( again ) .");
/// assert_eq!(tok.to_string(), "13a");
/// assert!("moses".parse::<BleuTokenizer>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BleuTokenizer {
    /// `13a`: mteval-v13a's tokenizer, sacrebleu's default.
    #[default]
    Mteval13a,
    /// `intl`: mteval-v14's international tokenizer (Unicode punctuation and
    /// symbols).
    Intl,
    /// `zh`: Chinese characters one by one, the rest as `13a`.
    Zh,
    /// `char`: every character a token.
    Char,
    /// `none`: the text as it is, split on whitespace.
    None,
}

impl BleuTokenizer {
    /// Every tokenizer, in sacrebleu's order of documentation.
    pub const ALL: [BleuTokenizer; 5] = [
        BleuTokenizer::Mteval13a,
        BleuTokenizer::Intl,
        BleuTokenizer::Zh,
        BleuTokenizer::Char,
        BleuTokenizer::None,
    ];

    /// The sacrebleu name, as in `--tokenize` and in signatures (`tok:13a`).
    ///
    /// ```
    /// use kaiyuan_metrics::BleuTokenizer;
    /// assert_eq!(BleuTokenizer::Intl.name(), "intl");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            BleuTokenizer::Mteval13a => "13a",
            BleuTokenizer::Intl => "intl",
            BleuTokenizer::Zh => "zh",
            BleuTokenizer::Char => "char",
            BleuTokenizer::None => "none",
        }
    }

    /// Tokenizes one line exactly as sacrebleu's tokenizer object does when
    /// called (tokens joined by single spaces). BLEU itself lowercases
    /// (optionally) and strips trailing whitespace before calling it.
    ///
    /// ```
    /// use kaiyuan_metrics::BleuTokenizer;
    /// assert_eq!(BleuTokenizer::Zh.tokenize("我爱Rust!"), "我 爱 Rust !");
    /// assert_eq!(BleuTokenizer::Intl.tokenize("1,000.5 $ «x»"), "1,000.5 $ « x »");
    /// assert_eq!(BleuTokenizer::Char.tokenize("ab c"), "a b   c");
    /// ```
    pub fn tokenize(self, line: &str) -> String {
        let mut out = String::with_capacity(line.len() + line.len() / 4 + 4);
        self.tokenize_into(line, &mut out);
        out
    }

    /// [`BleuTokenizer::tokenize`] into a reused buffer (cleared first).
    ///
    /// ```
    /// use kaiyuan_metrics::BleuTokenizer;
    /// let mut out = String::new();
    /// BleuTokenizer::Mteval13a.tokenize_into("3-4 &amp; 5.", &mut out);
    /// assert_eq!(out, "3 - 4 & 5 .");
    /// ```
    pub fn tokenize_into(self, line: &str, out: &mut String) {
        out.clear();
        match self {
            BleuTokenizer::Mteval13a => {
                // Most lines have nothing for the first part to change:
                // tokenize them directly, and start over for the others.
                if !post_tokenize(line, true, false, true, out) {
                    out.clear();
                    post_tokenize(&preprocess_13a(line), true, false, false, out);
                }
            }
            BleuTokenizer::Zh => {
                post_tokenize(python_strip(line), false, true, false, out);
            }
            BleuTokenizer::Intl => tokenize_intl(line, out),
            BleuTokenizer::Char => {
                for (i, c) in line.chars().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push(c);
                }
            }
            BleuTokenizer::None => out.push_str(line),
        }
    }
}

impl fmt::Display for BleuTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BleuTokenizer {
    type Err = MetricsError;

    fn from_str(s: &str) -> Result<Self> {
        BleuTokenizer::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                MetricsError::option(
                    "tokenize",
                    format!("unknown tokenizer {s:?} (expected one of 13a, intl, zh, char, none)"),
                )
            })
    }
}

// ---------------------------------------------------------------------------
// Python string operations

/// Python's `str.isspace()` for one character: the characters `str.split()`
/// and `str.strip()` treat as whitespace.
///
/// ```
/// use kaiyuan_metrics::sacre_tokenize::is_python_whitespace;
/// assert!(is_python_whitespace('\u{3000}'));
/// assert!(is_python_whitespace('\u{1f}')); // not whitespace for Rust
/// assert!(!is_python_whitespace('\u{200b}'));
/// ```
#[inline]
pub fn is_python_whitespace(c: char) -> bool {
    match c {
        '\t'..='\r' | '\u{1c}'..=' ' => true,
        _ if (c as u32) < 0x85 => false,
        '\u{85}'
        | '\u{a0}'
        | '\u{1680}'
        | '\u{2000}'..='\u{200a}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{202f}'
        | '\u{205f}'
        | '\u{3000}' => true,
        _ => false,
    }
}

/// ASCII part of [`is_python_whitespace`].
#[inline]
fn is_python_ascii_space(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | 0x1c..=b' ')
}

/// The length of the Python whitespace character starting at `b[i]` (a
/// non-ASCII lead byte), or 0.
#[inline]
fn python_wide_space_len(b: &[u8], i: usize) -> usize {
    match b[i] {
        0xC2 => match b.get(i + 1) {
            Some(0x85 | 0xA0) => 2,
            _ => 0,
        },
        0xE1 => (b.get(i + 1) == Some(&0x9A) && b.get(i + 2) == Some(&0x80)) as usize * 3,
        0xE2 => match (b.get(i + 1), b.get(i + 2)) {
            (Some(0x80), Some(0x80..=0x8A | 0xA8 | 0xA9 | 0xAF)) | (Some(0x81), Some(0x9F)) => 3,
            _ => 0,
        },
        0xE3 => (b.get(i + 1) == Some(&0x80) && b.get(i + 2) == Some(&0x80)) as usize * 3,
        _ => 0,
    }
}

/// The length in bytes of the UTF-8 sequence a lead byte starts.
#[inline]
fn utf8_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// Python's `str.split()` (no argument): the words between runs of
/// whitespace, none empty.
///
/// ```
/// use kaiyuan_metrics::sacre_tokenize::python_split;
/// let words: Vec<&str> = python_split(" a\u{3000}b\u{1c}c  ").collect();
/// assert_eq!(words, ["a", "b", "c"]);
/// ```
pub fn python_split(s: &str) -> PythonSplit<'_> {
    PythonSplit { s, pos: 0 }
}

/// The iterator of [`python_split`].
#[derive(Debug, Clone)]
pub struct PythonSplit<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> PythonSplit<'a> {
    /// The length of the whitespace character at `i`, or 0.
    #[inline]
    fn space_len(&self, i: usize) -> usize {
        let b = self.s.as_bytes();
        if b[i] < 0x80 {
            is_python_ascii_space(b[i]) as usize
        } else {
            python_wide_space_len(b, i)
        }
    }
}

impl<'a> Iterator for PythonSplit<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let b = self.s.as_bytes();
        let n = b.len();
        let mut i = self.pos;
        // Skip whitespace.
        loop {
            if i >= n {
                self.pos = n;
                return None;
            }
            let len = self.space_len(i);
            if len == 0 {
                break;
            }
            i += len;
        }
        let start = i;
        while i < n {
            if b[i] < 0x80 {
                if is_python_ascii_space(b[i]) {
                    break;
                }
                i += 1;
            } else {
                if python_wide_space_len(b, i) > 0 {
                    break;
                }
                i += utf8_len(b[i]);
            }
        }
        self.pos = i;
        Some(&self.s[start..i])
    }
}

/// Calls `f` with each token of `tokenized`, an output of `tok` (what
/// sacrebleu's `line.split()` gives). `13a`, `intl` and `zh` separate tokens
/// by single spaces, so a split on `' '` is enough for them.
#[inline]
pub(crate) fn for_each_token<'a>(tok: BleuTokenizer, tokenized: &'a str, f: impl FnMut(&'a str)) {
    match tok {
        BleuTokenizer::Mteval13a | BleuTokenizer::Intl | BleuTokenizer::Zh => {
            if !tokenized.is_empty() {
                tokenized.split(' ').for_each(f);
            }
        }
        BleuTokenizer::Char | BleuTokenizer::None => python_split(tokenized).for_each(f),
    }
}

/// Python's `str.strip()` (no argument).
///
/// ```
/// use kaiyuan_metrics::sacre_tokenize::python_strip;
/// assert_eq!(python_strip("\u{3000} a b\u{1f}\n"), "a b");
/// ```
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_whitespace)
}

/// Python's `str.rstrip()` (no argument).
///
/// ```
/// use kaiyuan_metrics::sacre_tokenize::python_rstrip;
/// assert_eq!(python_rstrip(" a b \u{a0}\n"), " a b");
/// ```
pub fn python_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_python_whitespace)
}

/// Characters that gained a lowercase mapping after Unicode 14.0 (CPython
/// 3.11's Unicode version): Python leaves them unchanged, Rust's
/// `to_lowercase` maps them. Sorted inclusive ranges.
const LOWER_KEEP: &[(u32, u32)] = &[
    (0x1C89, 0x1C89),
    (0xA7CB, 0xA7CC),
    (0xA7CE, 0xA7CE),
    (0xA7D2, 0xA7D2),
    (0xA7D4, 0xA7D4),
    (0xA7DA, 0xA7DA),
    (0xA7DC, 0xA7DC),
    (0x10D50, 0x10D65),
    (0x16EA0, 0x16EB8),
];

fn lower_keep(c: char) -> bool {
    let c = c as u32;
    c >= 0x1C89 && LOWER_KEEP.iter().any(|&(a, b)| a <= c && c <= b)
}

/// Python's `str.lower()` (CPython 3.11, Unicode 14.0): full lowercase
/// mappings (`İ` becomes `i̇`) and the final-sigma rule. Borrowed when the
/// text has no uppercase ASCII and is otherwise ASCII.
///
/// ```
/// use kaiyuan_metrics::sacre_tokenize::python_lowercase;
/// assert_eq!(python_lowercase("ΟΔΟΣ Straße"), "οδος straße");
/// assert_eq!(python_lowercase("ΟΔΟΣ."), "οδος.");
/// assert_eq!(python_lowercase("İ").chars().count(), 2);
/// ```
pub fn python_lowercase(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Cow::Owned(s.to_ascii_lowercase());
        }
        return Cow::Borrowed(s);
    }
    if !s.chars().any(lower_keep) {
        return Cow::Owned(s.to_lowercase());
    }
    // Lowercase the pieces between the kept characters. A kept character is
    // unassigned for Python, so neither cased nor case-ignorable: cutting the
    // text there gives the final-sigma rule the same context Python sees.
    let mut out = String::with_capacity(s.len());
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if lower_keep(c) {
            out.push_str(&s[start..i].to_lowercase());
            out.push(c);
            start = i + c.len_utf8();
        }
    }
    out.push_str(&s[start..].to_lowercase());
    Cow::Owned(out)
}

// ---------------------------------------------------------------------------
// 13a and zh

/// `13a`'s language-independent part: drop `<skipped>` and `-\n`, turn
/// newlines into spaces, unescape four entities (in this order, as sacrebleu).
fn preprocess_13a(line: &str) -> Cow<'_, str> {
    let mut s = Cow::Borrowed(line);
    if s.contains("<skipped>") {
        s = Cow::Owned(s.replace("<skipped>", ""));
    }
    if s.contains('\n') {
        s = Cow::Owned(s.replace("-\n", "").replace('\n', " "));
    }
    if s.contains('&') {
        s = Cow::Owned(
            s.replace("&quot;", "\"")
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">"),
        );
    }
    s
}

/// Byte classes for `13a`'s second part: one of the characters the first
/// substitution, `[\{-\~\[-\` -\&\(-\+\:-\@\/]`, surrounds with spaces.
const SPLIT: u8 = 1;
/// `0`..`9`.
const DIGIT: u8 = 2;
/// `.` or `,`.
const DOT: u8 = 4;
/// Python whitespace.
const SPACE: u8 = 8;
/// `-`.
const HYPHEN: u8 = 16;

/// The class bits of every byte (0 for non-ASCII bytes).
static CLASS_13A: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        let mut v = 0;
        if matches!(c, b'{'..=b'~' | b'['..=b'`' | b' '..=b'&' | b'('..=b'+' | b':'..=b'@' | b'/') {
            v |= SPLIT;
        }
        if c.is_ascii_digit() {
            v |= DIGIT;
        }
        if c == b'.' || c == b',' {
            v |= DOT;
        }
        if matches!(c, b'\t'..=b'\r' | 0x1c..=b' ') {
            v |= SPACE;
        }
        if c == b'-' {
            v |= HYPHEN;
        }
        t[b] = v;
        b += 1;
    }
    t
};

#[inline]
fn class_13a(b: u8) -> u8 {
    CLASS_13A[b as usize]
}

/// Whether the character before `b[i]` is split off on its right: one of
/// the first substitution's characters, or a `-` after a digit.
#[inline]
fn split_after(b: &[u8], i: usize) -> bool {
    i > 0
        && (class_13a(b[i - 1]) & SPLIT != 0
            || (i >= 2 && b[i - 1] == b'-' && class_13a(b[i - 2]) & DIGIT != 0))
}

/// sacrebleu's `_is_chinese_char` as it actually behaves (see the module
/// documentation for the two ranges that Python reads differently from what
/// their comments say). Sorted, merged, inclusive.
const ZH_RANGES: &[(u32, u32)] = &[
    (0x2001, 0x2A6D),
    (0x2E80, 0x2FDF),
    (0x2FF0, 0x303F),
    (0x3100, 0x312F),
    (0x31A0, 0x31EF),
    (0x3200, 0x4DB5),
    (0x4E00, 0x9FBB),
    (0xF900, 0xFA2D),
    (0xFA30, 0xFA6A),
    (0xFA70, 0xFAD9),
    (0xFE10, 0xFE1F),
    (0xFE30, 0xFE4F),
    (0xFF00, 0xFFEF),
];

/// Whether sacrebleu's `zh` tokenizer puts `c` between spaces.
///
/// ```
/// use kaiyuan_metrics::sacre_tokenize::is_zh_char;
/// assert!(is_zh_char('中') && is_zh_char('，') && is_zh_char('\u{2014}'));
/// assert!(!is_zh_char('a') && !is_zh_char('\u{20000}'));
/// ```
pub fn is_zh_char(c: char) -> bool {
    let c = c as u32;
    if !(0x2001..=0xFFEF).contains(&c) {
        return false;
    }
    let i = ZH_RANGES.partition_point(|&(_, end)| end < c);
    ZH_RANGES.get(i).is_some_and(|&(start, _)| start <= c)
}

/// sacrebleu's `TokenizerRegexp` (the second part of `13a` and `zh`) in one
/// pass. Its four substitutions, on the text as the previous one left it:
///
/// 1. `[\{-\~\[-\` -\&\(-\+\:-\@\/]` → ` \1 `;
/// 2. `([^0-9])([\.,])` → `\1 \2 `;
/// 3. `([\.,])([^0-9])` → ` \1 \2`;
/// 4. `([0-9])(-)` → `\1 \2 `.
///
/// What they amount to, for the original characters: (1) splits around its
/// characters; a `.`/`,` is split off (spaces on both sides) when (2) matched
/// it or (3) did. In a run of `.`/`,`, (2) matches every other one, because
/// each match consumes the character before the `.`: the first, third, … when
/// the run follows a non-digit, the second, fourth, … when it follows a digit
/// or starts the text. (3) matches a `.`/`,` followed by a non-digit (what
/// follows it after (1) and (2) is a non-digit exactly when the original
/// character is), and never competes for a character, as two unsplit `.`/`,`
/// are never adjacent. (4) splits a `-` after a digit off on both sides.
///
/// `pad`: the text stands between two spaces (`13a` adds them; it matters
/// for a `.`/`,` at either end). `zh`: characters of [`is_zh_char`] are split
/// off (the `zh` tokenizer surrounds them with spaces first). `raw_13a`: the
/// text has not been through `13a`'s first part; return `false` (output
/// incomplete) on a `<`, `&` or newline, which that part may change.
fn post_tokenize(line: &str, pad: bool, zh: bool, raw_13a: bool, out: &mut String) -> bool {
    let b = line.as_bytes();
    let n = b.len();
    out.reserve(n + n / 4);
    let mut pending = false; // whitespace since the last character written
    let mut prev_split = false; // the last character written is split off
    let mut run_start = 0usize; // first `.`/`,` of the current run
    let mut run_after_non_digit = false;
    let mut i = 0;
    while i < n {
        let c = b[i];
        if c < 0x80 {
            let class = class_13a(c);
            if raw_13a && matches!(c, b'<' | b'&' | b'\n') {
                return false;
            }
            if class & SPACE != 0 {
                pending = true;
                i += 1;
                continue;
            }
            let mut split = false;
            if class & DOT != 0 {
                if i == 0 || class_13a(b[i - 1]) & DOT == 0 {
                    run_start = i;
                    run_after_non_digit = if i == 0 {
                        pad
                    } else {
                        class_13a(b[i - 1]) & DIGIT == 0
                    };
                }
                let even = (i - run_start).is_multiple_of(2);
                let next_non_digit = if i + 1 < n {
                    class_13a(b[i + 1]) & DIGIT == 0
                } else {
                    pad
                };
                split = even == run_after_non_digit || next_non_digit;
            }
            let brk = pending
                || split
                || prev_split
                || class & SPLIT != 0
                || (class & HYPHEN != 0 && i > 0 && class_13a(b[i - 1]) & DIGIT != 0)
                || split_after(b, i);
            if brk && !out.is_empty() {
                out.push(' ');
            }
            pending = false;
            if class & (SPLIT | DOT | HYPHEN) == 0 {
                // A plain character: the plain ASCII characters after it join
                // it (no rule splits between two of them).
                let start = i;
                i += 1;
                while i < n && b[i] < 0x80 && class_13a(b[i]) & (SPLIT | DOT | HYPHEN | SPACE) == 0
                {
                    i += 1;
                }
                out.push_str(&line[start..i]);
                prev_split = false;
                continue;
            }
            out.push(c as char);
            prev_split = split;
            i += 1;
        } else {
            let wide = python_wide_space_len(b, i);
            if wide > 0 {
                pending = true;
                i += wide;
                continue;
            }
            let len = utf8_len(c);
            let piece = &line[i..i + len];
            let split = zh && piece.chars().next().is_some_and(is_zh_char);
            let brk = pending || split || prev_split || split_after(b, i);
            if brk && !out.is_empty() {
                out.push(' ');
            }
            out.push_str(piece);
            pending = false;
            prev_split = split;
            i += len;
        }
    }
    true
}

// ---------------------------------------------------------------------------
// intl

const PUNCT: u8 = 1;
const SYMBOL: u8 = 2;
const NUMBER: u8 = 3;

/// The category tag of `c` for `intl`: punctuation, symbol, number or 0.
#[inline]
fn intl_class(c: char) -> u8 {
    let c = c as u32;
    if c < 128 {
        return INTL_ASCII[c as usize];
    }
    let i = INTL_RANGES.partition_point(|&(_, end, _)| end < c);
    match INTL_RANGES.get(i) {
        Some(&(start, _, tag)) if start <= c => tag,
        _ => 0,
    }
}

/// sacrebleu's `TokenizerV14International` in one pass. Its substitutions:
///
/// 1. `(\P{N})(\p{P})` → `\1 \2 `;
/// 2. `(\p{P})(\P{N})` → ` \1 \2`;
/// 3. `(\p{S})` → ` \1 `.
///
/// As for `13a`'s `.`/`,` (see `post_tokenize`), in a run of punctuation (1)
/// splits off every other mark, starting with the first when the run
/// follows a non-number and with the second when it follows a number or
/// starts the text; (2) splits off a mark followed by a non-number; symbols
/// are always split off.
fn tokenize_intl(line: &str, out: &mut String) {
    let mut chars = line.chars();
    let mut next = chars.next().map(|c| (c, intl_class(c)));
    let mut prev_class: Option<u8> = None; // class of the previous character, if any
    let mut pending = false;
    let mut prev_split = false;
    let mut run_pos = 0usize;
    let mut run_after_non_number = false;
    while let Some((c, class)) = next {
        next = chars.next().map(|c| (c, intl_class(c)));
        if is_python_whitespace(c) {
            pending = true;
            prev_class = Some(class);
            continue;
        }
        let mut split = false;
        if class == PUNCT {
            if prev_class == Some(PUNCT) {
                run_pos += 1;
            } else {
                run_pos = 0;
                run_after_non_number = prev_class.is_some_and(|p| p != NUMBER);
            }
            split = run_pos.is_multiple_of(2) == run_after_non_number
                || next.is_some_and(|(_, n)| n != NUMBER);
        }
        let brk = pending || split || prev_split || class == SYMBOL || prev_class == Some(SYMBOL);
        if brk && !out.is_empty() {
            out.push(' ');
        }
        out.push(c);
        pending = false;
        prev_split = split || class == SYMBOL;
        prev_class = Some(class);
    }
}

#[cfg(test)]
mod tests {
    //! The one-pass tokenizers against literal ports of sacrebleu's
    //! substitution chains (the Rust `regex` crate's replace_all scans like
    //! Python's `re.sub`: leftmost, non-overlapping).

    use super::*;
    use proptest::prelude::*;
    use regex::Regex;
    use std::sync::LazyLock;

    fn join_split(s: &str) -> String {
        python_split(s).collect::<Vec<_>>().join(" ")
    }

    /// sacrebleu's `TokenizerRegexp` substitutions (pattern literals: the
    /// unwraps cannot fail).
    static REGEXP_STEPS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", " ${1} "),
            (r"([^0-9])([\.,])", "${1} ${2} "),
            (r"([\.,])([^0-9])", " ${1} ${2}"),
            (r"([0-9])(-)", "${1} ${2} "),
        ]
        .into_iter()
        .map(|(p, r)| (Regex::new(p).unwrap(), r))
        .collect()
    });

    fn naive_regexp_post(line: &str) -> String {
        let mut s = line.to_string();
        for (re, repl) in REGEXP_STEPS.iter() {
            s = re.replace_all(&s, *repl).into_owned();
        }
        join_split(&s)
    }

    fn naive_13a(line: &str) -> String {
        let mut s = line.replace("<skipped>", "");
        s = s.replace("-\n", "");
        s = s.replace('\n', " ");
        if s.contains('&') {
            s = s.replace("&quot;", "\"");
            s = s.replace("&amp;", "&");
            s = s.replace("&lt;", "<");
            s = s.replace("&gt;", ">");
        }
        naive_regexp_post(&format!(" {s} "))
    }

    /// sacrebleu's `_UCODE_RANGES`, compared as Python compares strings (a
    /// `&str` comparison orders by code point, as Python's does).
    fn naive_is_zh(c: char) -> bool {
        const RANGES: &[(&str, &str)] = &[
            ("\u{3400}", "\u{4db5}"),
            ("\u{4e00}", "\u{9fa5}"),
            ("\u{9fa6}", "\u{9fbb}"),
            ("\u{f900}", "\u{fa2d}"),
            ("\u{fa30}", "\u{fa6a}"),
            ("\u{fa70}", "\u{fad9}"),
            ("\u{2000}0", "\u{2a6d}6"),
            ("\u{2f80}0", "\u{2fa1}d"),
            ("\u{ff00}", "\u{ffef}"),
            ("\u{2e80}", "\u{2eff}"),
            ("\u{3000}", "\u{303f}"),
            ("\u{31c0}", "\u{31ef}"),
            ("\u{2f00}", "\u{2fdf}"),
            ("\u{2ff0}", "\u{2fff}"),
            ("\u{3100}", "\u{312f}"),
            ("\u{31a0}", "\u{31bf}"),
            ("\u{fe10}", "\u{fe1f}"),
            ("\u{fe30}", "\u{fe4f}"),
            ("\u{2600}", "\u{26ff}"),
            ("\u{2700}", "\u{27bf}"),
            ("\u{3200}", "\u{32ff}"),
            ("\u{3300}", "\u{33ff}"),
        ];
        let mut buf = [0u8; 4];
        let s: &str = c.encode_utf8(&mut buf);
        RANGES.iter().any(|&(a, b)| a <= s && s <= b)
    }

    fn naive_zh(line: &str) -> String {
        let mut s = String::new();
        for c in python_strip(line).chars() {
            if naive_is_zh(c) {
                s.push(' ');
                s.push(c);
                s.push(' ');
            } else {
                s.push(c);
            }
        }
        naive_regexp_post(&s)
    }

    fn class_regex(tag: u8) -> String {
        let mut s = String::from("[");
        for &(a, b, t) in INTL_RANGES {
            if t == tag {
                s.push_str(&format!("\\x{{{a:X}}}-\\x{{{b:X}}}"));
            }
        }
        s.push(']');
        s
    }

    /// sacrebleu's `intl` substitutions with the categories of the tables.
    static INTL_STEPS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        let p = class_regex(PUNCT);
        let s_class = class_regex(SYMBOL);
        let not_n = format!("[^{}", &class_regex(NUMBER)[1..]);
        [
            (format!("({not_n})({p})"), "${1} ${2} "),
            (format!("({p})({not_n})"), " ${1} ${2}"),
            (format!("({s_class})"), " ${1} "),
        ]
        .into_iter()
        .map(|(p, r)| (Regex::new(&p).unwrap(), r))
        .collect()
    });

    fn naive_intl(line: &str) -> String {
        let mut s = line.to_string();
        for (re, repl) in INTL_STEPS.iter() {
            s = re.replace_all(&s, *repl).into_owned();
        }
        join_split(&s)
    }

    /// Strings built from the characters the tokenizers treat specially.
    fn tricky_text() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            ".",
            ",",
            "-",
            "0",
            "7",
            "a",
            "Z",
            "(",
            ")",
            "&",
            "'",
            "\"",
            "/",
            "$",
            "+",
            " ",
            "\t",
            "\n",
            "-\n",
            "\u{3000}",
            "\u{a0}",
            "\u{1c}",
            "\u{85}",
            "\u{2009}",
            "中",
            "文",
            "。",
            "，",
            "０",
            "Ａ",
            "\u{2014}",
            "\u{2026}",
            "٣",
            "²",
            "€",
            "«",
            "»",
            "¡",
            "§",
            "·",
            "<skipped>",
            "&quot;",
            "&amp;",
            "&lt;",
            "&gt;",
            "&amp;lt;",
            "Σ",
            "İ",
            "\u{20000}",
            "\u{2f81}",
            "\u{2fa2}",
            "\u{1c89}",
            "é",
        ]);
        prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn fast_13a_matches_regex_chain(s in tricky_text()) {
            prop_assert_eq!(BleuTokenizer::Mteval13a.tokenize(&s), naive_13a(&s));
        }

        #[test]
        fn fast_zh_matches_regex_chain(s in tricky_text()) {
            prop_assert_eq!(BleuTokenizer::Zh.tokenize(&s), naive_zh(&s));
        }

        #[test]
        fn fast_intl_matches_regex_chain(s in tricky_text()) {
            prop_assert_eq!(BleuTokenizer::Intl.tokenize(&s), naive_intl(&s));
        }

        #[test]
        fn any_text_13a_zh_intl(s in "\\PC{0,30}") {
            prop_assert_eq!(BleuTokenizer::Mteval13a.tokenize(&s), naive_13a(&s));
            prop_assert_eq!(BleuTokenizer::Zh.tokenize(&s), naive_zh(&s));
            prop_assert_eq!(BleuTokenizer::Intl.tokenize(&s), naive_intl(&s));
        }

        #[test]
        fn split_matches_naive(s in tricky_text()) {
            let fast: Vec<&str> = python_split(&s).collect();
            let naive: Vec<&str> = s.split(is_python_whitespace).filter(|w| !w.is_empty()).collect();
            prop_assert_eq!(fast, naive);
        }
    }

    /// Per code point: 1 where `ranges` (a JSON list of `[first, last]`)
    /// holds it.
    fn mark(ranges: &serde_json::Value, tag: u8, into: &mut [u8]) {
        for r in ranges.as_array().unwrap() {
            let (a, b) = (
                r[0].as_u64().unwrap() as usize,
                r[1].as_u64().unwrap() as usize,
            );
            for slot in &mut into[a..=b] {
                *slot = tag;
            }
        }
    }

    /// The Unicode data the tokenizers reproduce, against what the reference
    /// Python environment reports (fixtures/eval/bleu/tokenizer_references.json,
    /// written by make_references.py): every code point.
    #[test]
    fn unicode_data_match_the_reference_python() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/eval/bleu/tokenizer_references.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
        let u = &fixture["unicode"];
        const N: usize = 0x11_0000;

        let mut ws = vec![0u8; N];
        for c in u["whitespace"].as_array().unwrap() {
            ws[c.as_u64().unwrap() as usize] = 1;
        }
        let mut zh = vec![0u8; N];
        mark(&u["zh_ranges"], 1, &mut zh);
        let mut intl = vec![0u8; N];
        mark(&u["intl_P"], PUNCT, &mut intl);
        mark(&u["intl_S"], SYMBOL, &mut intl);
        mark(&u["intl_N"], NUMBER, &mut intl);
        let mut lower: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
        for pair in u["lower"].as_array().unwrap() {
            lower.insert(
                pair[0].as_u64().unwrap() as u32,
                pair[1].as_str().unwrap().to_string(),
            );
        }

        let mut bad = Vec::new();
        for c in (0..N as u32).filter_map(char::from_u32) {
            let i = c as usize;
            if is_python_whitespace(c) != (ws[i] == 1) {
                bad.push(format!("U+{i:04X} whitespace"));
            }
            if is_zh_char(c) != (zh[i] == 1) {
                bad.push(format!("U+{i:04X} zh"));
            }
            if intl_class(c) != intl[i] {
                bad.push(format!(
                    "U+{i:04X} intl class {} vs {}",
                    intl_class(c),
                    intl[i]
                ));
            }
            let mut buf = [0u8; 4];
            let s: &str = c.encode_utf8(&mut buf);
            let want = lower.get(&(c as u32)).map_or(s, String::as_str);
            if python_lowercase(s) != want {
                bad.push(format!(
                    "U+{i:04X} lower {:?} vs {want:?}",
                    python_lowercase(s)
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "{} differences: {:?}",
            bad.len(),
            &bad[..bad.len().min(20)]
        );
    }

    #[test]
    fn zh_table_matches_python_comparison() {
        for c in (0..0x11_0000u32).filter_map(char::from_u32) {
            assert_eq!(is_zh_char(c), naive_is_zh(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn documented_quirks() {
        assert_eq!(BleuTokenizer::Mteval13a.tokenize("a.,5"), "a . ,5");
        assert_eq!(BleuTokenizer::Mteval13a.tokenize("1.5, 2.x"), "1.5 , 2 . x");
        assert_eq!(BleuTokenizer::Intl.tokenize("in 1990."), "in 1990.");
        assert_eq!(BleuTokenizer::Mteval13a.tokenize("in 1990."), "in 1990 .");
    }

    #[test]
    fn tokenizer_names_round_trip() {
        for t in BleuTokenizer::ALL {
            assert_eq!(t.name().parse::<BleuTokenizer>().unwrap(), t);
        }
        let err = "13A".parse::<BleuTokenizer>().unwrap_err().to_string();
        assert!(err.contains("tokenize") && err.contains("13A"), "{err}");
    }
}
