//! A re-implementation of the word tokenizer datatrove 0.10.1 uses for
//! English: spaCy 3.8's rule-based tokenizer of `spacy.blank("en")` (plus its
//! `sentencizer` for sentence counts), followed by datatrove's
//! `strip_strings` (whitespace tokens dropped).
//!
//! The algorithm follows `spacy/tokenizer.pyx` step by step: the text is cut
//! at Python whitespace (one space after a token is absorbed, other runs of
//! whitespace become whitespace tokens); each remaining chunk is looked up
//! in the exception table, otherwise prefixes and suffixes are peeled off
//! (stopping at an exception), and the middle is kept whole when it is an
//! exception or a URL, otherwise split at infixes. A final pass merges
//! token sequences that spell an exception (`Mr.Smith` → `Mr.` `Smith`).
//! Prefix, suffix and infix rules are hand-written matchers equivalent to
//! spaCy's regular expressions (`spacy/lang/punctuation.py`,
//! `spacy/lang/en/punctuation.py`); their character classes and the
//! exception list are generated from spaCy itself (`tables.rs`). Tokens are
//! byte ranges into the text: nothing is allocated per word.

use super::chars::{
    in_chars, in_ranges, is_punct_category, py_isspace, sp_alpha, sp_icon, sp_upper,
};
use super::tables;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// One token: a byte range of the text, and whether it is whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    /// Start byte.
    pub start: usize,
    /// End byte (exclusive).
    pub end: usize,
    /// A whitespace token (dropped by datatrove's `strip_strings`).
    pub space: bool,
}

/// A fast hasher for the fixed keyword tables (their keys are static, so
/// hash flooding is not a concern).
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

const MUL: u64 = 0x517C_C1B7_2722_0A95;

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut v = [0u8; 8];
            v.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(v)).wrapping_mul(MUL);
        }
        let mut v = [0u8; 8];
        let rest = chunks.remainder();
        v[..rest.len()].copy_from_slice(rest);
        self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(v) ^ (bytes.len() as u64) << 56)
            .wrapping_mul(MUL);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(MUL);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A cheap pre-check before a table lookup: a bit per (length, first byte,
/// last byte) hash of the keys.
struct Sketch([u64; 1024]);

impl Sketch {
    fn new<'a>(keys: impl Iterator<Item = &'a str>) -> Self {
        let mut bits = [0u64; 1024];
        for k in keys {
            let h = Self::slot(k);
            bits[h >> 6] |= 1 << (h & 63);
        }
        Sketch(bits)
    }

    #[inline]
    fn slot(k: &str) -> usize {
        let b = k.as_bytes();
        let (f, l) = (
            b.first().copied().unwrap_or(0) as usize,
            b.last().copied().unwrap_or(0) as usize,
        );
        ((f * 31 + l) * 131 + b.len()) & 0xFFFF
    }

    #[inline]
    fn may_contain(&self, k: &str) -> bool {
        let h = Self::slot(k);
        self.0[h >> 6] & (1 << (h & 63)) != 0
    }
}

struct Data {
    specials: FastMap<&'static str, &'static [&'static str]>,
    special_sketch: Sketch,
    /// Matcher patterns by their first token.
    patterns: FastMap<&'static str, Vec<(&'static str, &'static [&'static str])>>,
    pattern_sketch: Sketch,
    /// Currencies and units split off after a digit.
    digit_suffixes: HashSet<&'static str, BuildHasherDefault<FastHasher>>,
    max_digit_suffix: usize,
    /// ASCII members of `SP_PREFIX_CHARS` / `SP_SUFFIX_CHARS` as bit masks.
    prefix_ascii: u128,
    suffix_ascii: u128,
    max_special_len: usize,
    max_first_len: usize,
    url: UrlMatcher,
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let specials: FastMap<_, _> = tables::SP_SPECIALS.iter().copied().collect();
        let special_sketch = Sketch::new(specials.keys().copied());
        let max_special_len = tables::SP_SPECIALS
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0);
        let mut patterns: FastMap<&'static str, Vec<_>> = FastMap::default();
        for &(key, pat) in tables::SP_SPECIAL_PATTERNS {
            if let Some(first) = pat.first() {
                patterns.entry(*first).or_default().push((key, pat));
            }
        }
        let max_first_len = patterns.keys().map(|k| k.len()).max().unwrap_or(0);
        let pattern_sketch = Sketch::new(patterns.keys().copied());
        let digit_suffixes: HashSet<_, _> = tables::SP_DIGIT_SUFFIXES
            .iter()
            .copied()
            .chain(std::iter::once("+"))
            .collect();
        let max_digit_suffix = digit_suffixes.iter().map(|k| k.len()).max().unwrap_or(0);
        Data {
            specials,
            special_sketch,
            patterns,
            pattern_sketch,
            digit_suffixes,
            max_digit_suffix,
            prefix_ascii: ascii_mask(tables::SP_PREFIX_CHARS),
            suffix_ascii: ascii_mask(tables::SP_SUFFIX_CHARS),
            max_special_len,
            max_first_len,
            url: UrlMatcher::new(),
        }
    })
}

fn ascii_mask(list: &[char]) -> u128 {
    list.iter()
        .filter(|c| c.is_ascii())
        .fold(0u128, |m, &c| m | (1u128 << (c as u32)))
}

#[inline]
fn special(d: &Data, s: &str) -> Option<&'static [&'static str]> {
    if s.len() > d.max_special_len || !d.special_sketch.may_contain(s) {
        return None;
    }
    d.specials.get(s).copied()
}

/// Python's `str.isspace` for ASCII bytes.
const ASCII_SPACE: [bool; 128] = {
    let mut t = [false; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = matches!(b, 9..=13 | 28..=32);
        b += 1;
    }
    t
};

/// The class (Python whitespace or not) and width of the character at byte `i`.
#[inline(always)]
fn class_at(text: &str, i: usize) -> (bool, usize) {
    let b = text.as_bytes()[i];
    if b < 0x80 {
        (ASCII_SPACE[b as usize], 1)
    } else {
        let c = text[i..].chars().next().unwrap_or('\0');
        (py_isspace(c), c.len_utf8())
    }
}

/// Tokenizes `text` the way `spacy.blank("en")` does, appending the tokens
/// (whitespace tokens included, marked) to `out`.
pub(crate) fn tokenize(text: &str, out: &mut Vec<Token>) {
    out.clear();
    let d = data();
    if text.is_empty() {
        return;
    }
    let mut affixes = Affixes::default();
    let bytes = text.as_bytes();
    let n = bytes.len();
    let mut in_ws = class_at(text, 0).0;
    let mut start = 0usize;
    let mut i = 0usize;
    loop {
        // Skip the rest of the current run.
        let mut width = 0;
        while i < n {
            let (ws, w) = class_at(text, i);
            if ws != in_ws {
                width = w;
                break;
            }
            i += w;
        }
        if i >= n {
            break;
        }
        if start < i {
            chunk_or_word(d, text, start, i, in_ws, out, &mut affixes);
        }
        start = if bytes[i] == b' ' { i + 1 } else { i };
        in_ws = !in_ws;
        i += width;
    }
    if start < n {
        chunk_or_word(d, text, start, n, in_ws, out, &mut affixes);
    }
    apply_special_matcher(d, text, out);
}

/// [`chunk`], with a fast path for chunks of only ASCII letters or only
/// ASCII digits: no prefix, suffix, infix or URL rule can match those, so
/// they are one token unless they are an exception (`cannot`, `gonna`).
#[inline]
fn chunk_or_word(
    d: &Data,
    text: &str,
    lo: usize,
    hi: usize,
    ws: bool,
    out: &mut Vec<Token>,
    affixes: &mut Affixes,
) {
    if !ws {
        let bytes = &text.as_bytes()[lo..hi];
        let letters = bytes.iter().all(u8::is_ascii_alphabetic);
        if letters || bytes.iter().all(u8::is_ascii_digit) {
            match special(d, &text[lo..hi]) {
                Some(rule) => push_rule(out, lo, rule),
                None => out.push(Token {
                    start: lo,
                    end: hi,
                    space: false,
                }),
            }
            return;
        }
    }
    chunk(d, text, lo, hi, ws, out, affixes);
}

/// Reusable prefix and suffix buffers of [`chunk`].
#[derive(Default)]
struct Affixes {
    prefixes: Vec<(usize, usize)>,
    suffixes: Vec<(usize, usize)>,
}

/// Tokenizes one chunk (a run of non-whitespace, or the rest of a run of
/// whitespace) at `text[lo..hi]`.
fn chunk(
    d: &Data,
    text: &str,
    lo: usize,
    hi: usize,
    ws: bool,
    out: &mut Vec<Token>,
    affixes: &mut Affixes,
) {
    if ws {
        // Whitespace never matches a prefix, suffix or infix: one token.
        out.push(Token {
            start: lo,
            end: hi,
            space: true,
        });
        return;
    }
    let s = &text[lo..hi];
    if let Some(rule) = special(d, s) {
        push_rule(out, lo, rule);
        return;
    }
    // _split_affixes
    let mut a = lo;
    let mut b = hi;
    let Affixes { prefixes, suffixes } = affixes;
    prefixes.clear();
    suffixes.clear();
    let mut last_size = 0usize;
    while a < b && b - a != last_size {
        let cur = &text[a..b];
        // The whole chunk was looked up already.
        if (a, b) != (lo, hi) && special(d, cur).is_some() {
            break;
        }
        last_size = b - a;
        let pre_len = find_prefix(d, cur);
        if pre_len != 0 {
            let minus_pre = &text[a + pre_len..b];
            if !minus_pre.is_empty() && special(d, minus_pre).is_some() {
                prefixes.push((a, a + pre_len));
                a += pre_len;
                break;
            }
        }
        let suf_len = find_suffix_with(d, &text[a + pre_len..b]);
        if suf_len != 0 {
            let minus_suf = &text[a..b - suf_len];
            if !minus_suf.is_empty() && special(d, minus_suf).is_some() {
                suffixes.push((b - suf_len, b));
                b -= suf_len;
                break;
            }
        }
        if pre_len != 0 && suf_len != 0 && pre_len + suf_len <= b - a {
            prefixes.push((a, a + pre_len));
            suffixes.push((b - suf_len, b));
            a += pre_len;
            b -= suf_len;
        } else if pre_len != 0 {
            prefixes.push((a, a + pre_len));
            a += pre_len;
        } else if suf_len != 0 {
            suffixes.push((b - suf_len, b));
            b -= suf_len;
        }
    }
    // _attach_tokens
    for &(s0, e0) in prefixes.iter() {
        out.push(Token {
            start: s0,
            end: e0,
            space: false,
        });
    }
    if a < b {
        let mid = &text[a..b];
        let rule = if (a, b) == (lo, hi) {
            None
        } else {
            special(d, mid)
        };
        if let Some(rule) = rule {
            push_rule(out, a, rule);
        } else if d.url.is_match(mid) {
            out.push(Token {
                start: a,
                end: b,
                space: false,
            });
        } else {
            split_infixes(text, a, b, out);
        }
    }
    for &(s0, e0) in suffixes.iter().rev() {
        out.push(Token {
            start: s0,
            end: e0,
            space: false,
        });
    }
}

fn push_rule(out: &mut Vec<Token>, mut at: usize, rule: &[&str]) {
    for piece in rule {
        let end = at + piece.len();
        out.push(Token {
            start: at,
            end,
            space: piece.chars().all(py_isspace),
        });
        at = end;
    }
}

/// spaCy's prefix search: the byte length of the prefix of `s`, or 0.
fn find_prefix(d: &Data, s: &str) -> usize {
    let mut it = s.chars();
    let Some(c0) = it.next() else { return 0 };
    if c0.is_ascii() {
        if d.prefix_ascii & (1u128 << (c0 as u32)) != 0 {
            return 1;
        }
    } else if in_chars(tables::SP_PREFIX_CHARS, c0) {
        return c0.len_utf8();
    }
    match c0 {
        '+' => {
            // `\+(?![0-9])`
            if it.next().is_some_and(|c| c.is_ascii_digit()) {
                0
            } else {
                1
            }
        }
        '.' => {
            let run = s.bytes().take_while(|&b| b == b'.').count();
            if run >= 2 { run } else { 0 }
        }
        'U' if s.starts_with("US$") => 3,
        'C' if s.starts_with("C$") => 2,
        'A' if s.starts_with("A$") => 2,
        _ if sp_icon(c0) => c0.len_utf8(),
        _ => 0,
    }
}

/// spaCy's suffix search: the byte length of the longest suffix of `s` that
/// a suffix rule matches (Python's `search` finds the leftmost start), or 0.
fn find_suffix_with(d: &Data, s: &str) -> usize {
    let Some(last) = s.chars().next_back() else {
        return 0;
    };
    let bytes = s.as_bytes();
    if last == '.' {
        let run = bytes.iter().rev().take_while(|&&b| b == b'.').count();
        if run >= 2 {
            return run; // `\.\.+`
        }
        let before = &s[..s.len() - 1];
        let mut rev = before.chars().rev();
        let p1 = rev.next();
        let p2 = rev.next();
        let Some(p1) = p1 else { return 0 };
        // `(?<=°[FfCcKk])\.`
        if matches!(p1, 'F' | 'f' | 'C' | 'c' | 'K' | 'k') && p2 == Some('°') {
            return 1;
        }
        // `(?<=[0-9{al}{e}{p}(?:{q})])\.`
        if in_ranges(tables::SP_SUFFIX_DOT_BEFORE, p1) {
            return 1;
        }
        // `(?<=[{au}][{au}])\.`
        if sp_upper(p1) && p2.is_some_and(sp_upper) {
            return 1;
        }
        return 0;
    }
    let mut best = 0usize;
    // Fixed two-character suffixes: "……", "'s", "'S", "’s", "’S".
    for fixed in ["\u{2026}\u{2026}", "'s", "'S", "\u{2019}s", "\u{2019}S"] {
        if s.ends_with(fixed) {
            best = best.max(fixed.len());
        }
    }
    // Currencies and units after an ASCII digit; `(?<=[0-9])\+`. The
    // earliest digit gives the longest suffix.
    let from = s.len().saturating_sub(d.max_digit_suffix + 1);
    for i in from..s.len() - 1 {
        if bytes[i].is_ascii_digit() && s.is_char_boundary(i + 1) {
            let unit = &s[i + 1..];
            if unit.len() > best && d.digit_suffixes.contains(unit) {
                best = unit.len();
                break;
            }
        }
    }
    let single = if last.is_ascii() {
        d.suffix_ascii & (1u128 << (last as u32)) != 0
    } else {
        in_chars(tables::SP_SUFFIX_CHARS, last) || sp_icon(last)
    };
    if best == 0 && single {
        best = last.len_utf8();
    }
    best
}

/// Splits `text[a..b]` at spaCy's English infixes and pushes the pieces.
fn split_infixes(text: &str, a: usize, b: usize, out: &mut Vec<Token>) {
    let s = &text[a..b];
    // Most words hold no character that can start an infix.
    let plain = s.bytes().all(|c| {
        c < 0x80
            && !matches!(
                c,
                b'.' | b',' | b'+' | b'-' | b'*' | b'^' | b'~' | b':' | b'<' | b'>' | b'=' | b'/'
            )
    });
    if plain {
        out.push(Token {
            start: a,
            end: b,
            space: false,
        });
        return;
    }
    let mut start = 0usize; // relative
    let mut prev: Option<char> = None;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let m = infix_at(s, i, c, prev);
        match m {
            Some(len) if len > 0 => {
                let end = i + len;
                if i != 0 {
                    if i != start {
                        out.push(Token {
                            start: a + start,
                            end: a + i,
                            space: false,
                        });
                    }
                    out.push(Token {
                        start: a + i,
                        end: a + end,
                        space: false,
                    });
                    start = end;
                }
                // Continue the scan after the match (finditer semantics).
                let mut last = c;
                while let Some(&(j, cj)) = iter.peek() {
                    if j >= end {
                        break;
                    }
                    last = cj;
                    iter.next();
                }
                prev = Some(last);
            }
            _ => prev = Some(c),
        }
    }
    if start < s.len() {
        out.push(Token {
            start: a + start,
            end: b,
            space: false,
        });
    }
}

/// The length in bytes of the infix match at byte `i` of `s` (char `c`,
/// previous char `prev`), trying spaCy's English infix alternatives in order.
#[inline]
fn infix_at(s: &str, i: usize, c: char, prev: Option<char>) -> Option<usize> {
    let rest = &s[i..];
    let next_char = |k: usize| rest[k..].chars().next();
    match c {
        '.' => {
            // `\.\.+`
            let run = rest.bytes().take_while(|&b| b == b'.').count();
            if run >= 2 {
                return Some(run);
            }
            // `(?<=[{al}{q}])\.(?=[{au}{q}])`
            if prev.is_some_and(|p| in_ranges(tables::SP_LOWER_OR_QUOTE, p))
                && next_char(1).is_some_and(|n| in_ranges(tables::SP_UPPER_OR_QUOTE, n))
            {
                return Some(1);
            }
            None
        }
        '\u{2026}' => Some(c.len_utf8()),
        _ if sp_icon(c) => Some(c.len_utf8()),
        '+' | '-' | '*' | '^' | ',' | '\u{2013}' | '\u{2014}' | '~' | ':' | '<' | '>' | '='
        | '/' => {
            let p = prev?;
            // `(?<=[0-9])[+\-\*^](?=[0-9-])`
            if p.is_ascii_digit()
                && matches!(c, '+' | '-' | '*' | '^')
                && next_char(1).is_some_and(|n| n.is_ascii_digit() || n == '-')
            {
                return Some(1);
            }
            // `(?<=[{a}]),(?=[{a}])`
            if c == ',' && sp_alpha(p) && next_char(1).is_some_and(sp_alpha) {
                return Some(1);
            }
            if sp_alpha(p) || p.is_ascii_digit() {
                // `(?<=[{a}0-9])(?:-|–|—|--|---|——|~)(?=[{a}])`
                for h in [
                    "-",
                    "\u{2013}",
                    "\u{2014}",
                    "--",
                    "---",
                    "\u{2014}\u{2014}",
                    "~",
                ] {
                    if rest.starts_with(h) && next_char(h.len()).is_some_and(sp_alpha) {
                        return Some(h.len());
                    }
                }
                // `(?<=[{a}0-9])[:<>=/](?=[{a}])`
                if matches!(c, ':' | '<' | '>' | '=' | '/') && next_char(1).is_some_and(sp_alpha) {
                    return Some(1);
                }
            }
            None
        }
        _ => None,
    }
}

/// spaCy's final pass: token sequences spelling an exception that contains
/// affixes are merged back (`Mr` `.` → `Mr.`), longest first.
fn apply_special_matcher(d: &Data, text: &str, toks: &mut Vec<Token>) {
    if toks.len() < 2 {
        return;
    }
    // Only a match without whitespace between its tokens changes anything
    // (one across a space merely claims its tokens), so a text without such
    // a candidate is left as it is.
    let glued_candidate = toks.windows(2).any(|w| {
        let t = w[0];
        !t.space
            && !w[1].space
            && w[1].start == t.end
            && t.end - t.start <= d.max_first_len
            && d.pattern_sketch.may_contain(&text[t.start..t.end])
            && d.patterns.contains_key(&text[t.start..t.end])
    });
    if !glued_candidate {
        return;
    }
    // (start index, token count, key).
    let mut matches: Vec<(usize, usize, &'static str)> = Vec::new();
    for i in 0..toks.len() - 1 {
        let t = toks[i];
        if t.space || t.end - t.start > d.max_first_len {
            continue;
        }
        let first = &text[t.start..t.end];
        if !d.pattern_sketch.may_contain(first) {
            continue;
        }
        let Some(cands) = d.patterns.get(&text[t.start..t.end]) else {
            continue;
        };
        for &(key, pat) in cands {
            if i + pat.len() > toks.len() {
                continue;
            }
            let ok = pat.iter().enumerate().all(|(k, p)| {
                let tk = toks[i + k];
                !tk.space && &text[tk.start..tk.end] == *p
            });
            if ok {
                matches.push((i, pat.len(), key));
            }
        }
    }
    if matches.is_empty() {
        return;
    }
    // Longest first, then leftmost; a span is kept when neither its first nor
    // its last token was claimed; every span claims its tokens.
    matches.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let mut seen = vec![false; toks.len()];
    let mut kept: Vec<(usize, usize, &'static str)> = Vec::new();
    for &(st, len, key) in &matches {
        if !seen[st] && !seen[st + len - 1] {
            kept.push((st, len, key));
        }
        for s in seen.iter_mut().skip(st).take(len) {
            *s = true;
        }
    }
    kept.sort_by_key(|k| k.0);
    let mut result = Vec::with_capacity(toks.len());
    let mut i = 0usize;
    let mut k = 0usize;
    while i < toks.len() {
        if k < kept.len() && kept[k].0 == i {
            let (st, len, key) = kept[k];
            k += 1;
            let first = toks[st];
            let last = toks[st + len - 1];
            // Only a span without whitespace between its tokens spells the
            // exception; one spanning a space is left as it is.
            if &text[first.start..last.end] == key {
                if let Some(rule) = special(d, key) {
                    push_rule(&mut result, first.start, rule);
                    i += len;
                    continue;
                }
            }
            result.extend_from_slice(&toks[st..st + len]);
            i += len;
        } else {
            result.push(toks[i]);
            i += 1;
        }
    }
    *toks = result;
}

/// datatrove's `split_into_words` for English: the non-whitespace tokens.
pub(crate) fn words(text: &str, toks: &mut Vec<Token>) {
    tokenize(text, toks);
    toks.retain(|t| !t.space);
}

/// The sentencizer's sentence starts (token indices) over `toks`.
fn sentence_starts(text: &str, toks: &[Token], mut on_start: impl FnMut(usize)) {
    if toks.is_empty() {
        return;
    }
    on_start(0);
    let mut seen_period = false;
    for (i, t) in toks.iter().enumerate() {
        let s = &text[t.start..t.end];
        let mut cs = s.chars();
        let in_punct = match (cs.next(), cs.next()) {
            (Some(c), None) => in_chars(tables::SENTENCIZER_PUNCT, c),
            _ => false,
        };
        if seen_period && !in_punct && !s.chars().all(is_punct_category) {
            on_start(i);
            seen_period = false;
        } else if in_punct {
            seen_period = true;
        }
    }
}

/// datatrove's `len(split_into_sentences(text))` for English: the number of
/// sentences spaCy's `sentencizer` finds (at least 1).
pub(crate) fn sentence_count(text: &str, toks: &mut Vec<Token>) -> usize {
    tokenize(text, toks);
    let mut n = 0usize;
    sentence_starts(text, toks, |_| n += 1);
    n.max(1)
}

/// The end byte of each sentence spaCy's `sentencizer` finds (the end of
/// its last token), as datatrove's `span_tokenize` reports them.
pub(crate) fn sentence_ends(text: &str, toks: &mut Vec<Token>) -> Vec<usize> {
    tokenize(text, toks);
    let mut starts = Vec::new();
    sentence_starts(text, toks, |i| starts.push(i));
    let mut ends = Vec::with_capacity(starts.len());
    for (k, &st) in starts.iter().enumerate() {
        let last = starts.get(k + 1).map_or(toks.len(), |&n| n) - 1;
        debug_assert!(last >= st);
        ends.push(toks[last].end);
    }
    ends
}

/// spaCy's `URL_MATCH` (from `spacy/lang/tokenizer_exceptions.py`), with
/// Python's `\w`, `\d` and `\S` semantics; the negative lookaheads that
/// exclude private IP addresses are checked separately at every possible
/// host start, which is what the backtracking regex does.
struct UrlMatcher {
    domain: Option<regex::Regex>,
    ip_head: Option<regex::Regex>,
    ip_tail: Option<regex::Regex>,
    private: Option<regex::Regex>,
}

fn class_of(table: &[(u32, u32)]) -> String {
    let mut s = String::new();
    for &(lo, hi) in table {
        if lo == hi {
            s.push_str(&format!("\\x{{{lo:X}}}"));
        } else {
            s.push_str(&format!("\\x{{{lo:X}}}-\\x{{{hi:X}}}"));
        }
    }
    s
}

impl UrlMatcher {
    fn new() -> Self {
        let w = format!("[{}]", class_of(tables::PY_WORD));
        let dgt = format!("[{}]", class_of(tables::PY_DIGIT));
        let al = format!("[{}]", class_of(tables::SP_ALPHA_LOWER));
        // Chunks never hold Python whitespace, so `\S` is any character.
        let any = r"(?s:.)";
        let head = format!(
            r"(?:(?:[{wc}\+\-\.]{{2,}})://)?(?:{any}+(?::{any}*)?@)?",
            wc = &w[1..w.len() - 1]
        );
        let tail = format!(r"(?::{dgt}{{2,5}})?(?:[/?#]{any}*)?");
        let host = r"[A-Za-z0-9\x{a1}-\x{ffff}]";
        let host_ = r"[A-Za-z0-9\x{a1}-\x{ffff}_-]";
        let domain =
            format!(r"^{head}(?:(?:{host}{host_}{{0,62}})?{host}\.)+(?:{al}{{2,63}}){tail}$");
        let ip = format!(
            r"(?:[1-9]{dgt}?|1{dgt}{dgt}|2[01]{dgt}|22[0-3])(?:\.(?:1?{dgt}{{1,2}}|2[0-4]{dgt}|25[0-5])){{2}}(?:\.(?:[1-9]{dgt}?|1{dgt}{dgt}|2[0-4]{dgt}|25[0-4]))"
        );
        let private = format!(
            r"^(?:(?:10|127)(?:\.{dgt}{{1,3}}){{3}}|(?:169\.254|192\.168)(?:\.{dgt}{{1,3}}){{2}}|172\.(?:1[6-9]|2{dgt}|3[0-1])(?:\.{dgt}{{1,3}}){{2}})"
        );
        let build = |p: &str| {
            regex::RegexBuilder::new(p)
                .size_limit(1 << 26)
                .dfa_size_limit(1 << 24)
                .build()
                .ok()
        };
        UrlMatcher {
            domain: build(&domain),
            ip_head: build(&format!("^{head}$")),
            ip_tail: build(&format!("^{ip}{tail}$")),
            private: build(&private),
        }
    }

    fn is_match(&self, s: &str) -> bool {
        // Both alternatives need a `.`.
        if !s.contains('.') {
            return false;
        }
        if self.domain.as_ref().is_some_and(|r| r.is_match(s)) {
            return true;
        }
        let (Some(head), Some(tail), Some(private)) = (&self.ip_head, &self.ip_tail, &self.private)
        else {
            return false;
        };
        if !s.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
            return false;
        }
        s.char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .any(|h| {
                let (pre, rest) = s.split_at(h);
                rest.as_bytes()
                    .first()
                    .is_some_and(|b| (b'1'..=b'9').contains(b))
                    && tail.is_match(rest)
                    && !private.is_match(rest)
                    && head.is_match(pre)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<&str> {
        let mut v = Vec::new();
        words(s, &mut v);
        v.iter().map(|t| &s[t.start..t.end]).collect()
    }

    #[test]
    fn matches_spacy_examples() {
        let cases: &[(&str, &[&str])] = &[
            ("Mr.Smith went", &["Mr.", "Smith", "went"]),
            ("x:) y", &["x", ":)", "y"]),
            ("x: ) y", &["x", ":", ")", "y"]),
            ("a.m.Then", &["a.m.", "Then"]),
            ("(e.g.)", &["(", "e.g.", ")"]),
            ("don't", &["do", "n't"]),
            ("Don't!", &["Do", "n't", "!"]),
            ("U.S.", &["U.S."]),
            ("hello...", &["hello", "..."]),
            ("5km", &["5", "km"]),
            ("5US$", &["5", "US$"]),
            ("end.The", &["end", ".", "The"]),
            ("the--end", &["the", "--", "end"]),
            ("3-4", &["3", "-", "4"]),
            ("x,y", &["x", ",", "y"]),
            ("10.0.0.1", &["10.0.0.1"]),
            ("http://10.0.0.1/x", &["http://10.0.0.1", "/", "x"]),
            ("www.example.com", &["www.example.com"]),
            ("ABC.", &["ABC", "."]),
            ("°C.", &["°", "C", "."]),
            ("it’s", &["it", "’s"]),
            ("cannot", &["can", "not"]),
            ("Hello!!!", &["Hello", "!", "!", "!"]),
            ("\"Yes,\"", &["\"", "Yes", ",", "\""]),
            ("x::)", &["x", ":", ":)"]),
            ("a\n\n b  c", &["a", "b", "c"]),
        ];
        for (text, want) in cases {
            assert_eq!(toks(text), *want, "{text:?}");
        }
    }

    #[test]
    fn sentences() {
        let mut v = Vec::new();
        assert_eq!(
            sentence_count("Hello there. How are you? Fine... ok!", &mut v),
            3
        );
        assert_eq!(sentence_count("One. Two. Three.", &mut v), 3);
        assert_eq!(sentence_count("No end", &mut v), 1);
    }
}
