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

    /// A 16-bit hash of the first two and last two bytes and the length
    /// (about 1 % of English words pass the check).
    #[inline]
    fn slot(k: &str) -> usize {
        let b = k.as_bytes();
        let n = b.len();
        let byte = |i: usize| u64::from(b.get(i).copied().unwrap_or(0));
        let (last2, last) = if n > 0 {
            (if n > 1 { byte(n - 2) } else { 0 }, byte(n - 1))
        } else {
            (0, 0)
        };
        let h = byte(0) | byte(1) << 8 | last2 << 16 | last << 24 | (n as u64) << 32;
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize
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
    /// No ASCII letter is a prefix or suffix character: the premise of the
    /// one-affix fast paths of [`chunk_or_word`].
    affix_fast: bool,
    /// ASCII members of `SENTENCIZER_PUNCT` as a bit mask.
    sentence_ascii: u128,
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
            affix_fast: (ascii_mask(tables::SP_PREFIX_CHARS) | ascii_mask(tables::SP_SUFFIX_CHARS))
                & ASCII_LETTERS
                == 0,
            sentence_ascii: ascii_mask(tables::SENTENCIZER_PUNCT),
            max_special_len,
            max_first_len,
            url: UrlMatcher::new(),
        }
    })
}

/// The ASCII letters as a bit mask over code points.
const ASCII_LETTERS: u128 = ((1u128 << 26) - 1) << 65 | ((1u128 << 26) - 1) << 97;

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

/// Python's `str.isspace` for bytes (0 for every byte of a multi-byte
/// character: those are looked at separately).
const BYTE_SPACE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = matches!(b, 9..=13 | 28..=32) as u8;
        b += 1;
    }
    t
};

/// Bytes that are ASCII letters.
const BYTE_LETTER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = (b as u8).is_ascii_alphabetic() as u8;
        b += 1;
    }
    t
};

/// `BYTE_SPACE` and `BYTE_LETTER` of 8 bytes at once, as one bit per
/// byte, and a byte with the high bit set if any byte is not ASCII.
#[inline(always)]
fn classes8(v: u64) -> (u8, u8, u8) {
    use super::{SWAR_HIGH as HIGH, SWAR_LOW as LOW, swar_in_range as in_range};
    /// The high bits of the bytes of `m`, packed into one byte (byte `k`
    /// to bit `k`).
    #[inline(always)]
    fn pack(m: u64) -> u8 {
        ((m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
    }
    let ascii = !v & HIGH;
    // Bytes from 0x80 on are neither; clearing their high bit keeps the
    // range checks within bytes.
    let x = v & !HIGH;
    let space = (in_range(x, 9, 13) | in_range(x, 28, 32)) & ascii;
    let letter = in_range(x | (LOW * 0x20), b'a', b'z') & ascii;
    (pack(space), pack(letter), (v & HIGH != 0) as u8 * 0x80)
}

/// Byte classes of a text, one bit per byte (bit `k % 64` of word `k / 64`).
#[derive(Default)]
struct ByteBits {
    /// The bytes of Python whitespace characters.
    ws: Vec<u64>,
    /// ASCII letters.
    letters: Vec<u64>,
}

/// Whether bits `lo..hi` (`lo < hi`) of `bits` are all set.
#[inline]
fn all_set(bits: &[u64], lo: usize, hi: usize) -> bool {
    let (first, last) = (lo >> 6, (hi - 1) >> 6);
    let low = !0u64 << (lo & 63);
    let high = !0u64 >> (63 - ((hi - 1) & 63));
    if first == last {
        let mask = low & high;
        return bits[first] & mask == mask;
    }
    bits[first] & low == low
        && bits[first + 1..last].iter().all(|&w| w == !0)
        && bits[last] & high == high
}

/// Fills `bits` for `text`.
fn byte_bits(text: &str, bits: &mut ByteBits) {
    let bytes = text.as_bytes();
    let words = bytes.len().div_ceil(64);
    bits.ws.clear();
    bits.ws.resize(words, 0);
    bits.letters.clear();
    bits.letters.resize(words, 0);
    let mut high = 0u8;
    for ((ws, letters), chunk) in bits
        .ws
        .iter_mut()
        .zip(&mut bits.letters)
        .zip(bytes.chunks(64))
    {
        let (mut m, mut l) = (0u64, 0u64);
        let mut eights = chunk.chunks_exact(8);
        for (k, eight) in (&mut eights).enumerate() {
            let mut v = [0u8; 8];
            v.copy_from_slice(eight);
            let (space, letter, any_high) = classes8(u64::from_le_bytes(v));
            m |= u64::from(space) << (8 * k);
            l |= u64::from(letter) << (8 * k);
            high |= any_high;
        }
        let at = chunk.len() - eights.remainder().len();
        for (k, &b) in eights.remainder().iter().enumerate() {
            m |= u64::from(BYTE_SPACE[b as usize]) << (at + k);
            l |= u64::from(BYTE_LETTER[b as usize]) << (at + k);
            high |= b;
        }
        *ws = m;
        *letters = l;
    }
    let bits = &mut bits.ws;
    if high < 0x80 {
        return;
    }
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, 0xC2 | 0xE1 | 0xE2 | 0xE3) {
            let width = non_ascii_space_at(bytes, i);
            for k in i..i + width {
                bits[k >> 6] |= 1 << (k & 63);
            }
        }
    }
}

/// The byte length of the Python whitespace character at `bytes[i..]`, or
/// 0: U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F,
/// U+205F and U+3000 are all the non-ASCII ones (a test checks this
/// against the table), matched by their UTF-8 bytes.
#[inline]
fn non_ascii_space_at(bytes: &[u8], i: usize) -> usize {
    let at = |k: usize| bytes.get(i + k).copied().unwrap_or(0);
    match (at(0), at(1), at(2)) {
        (0xC2, 0x85 | 0xA0, _) => 2,
        (0xE1, 0x9A, 0x80) => 3,
        (0xE2, 0x80, 0x80..=0x8A | 0xA8 | 0xA9 | 0xAF) => 3,
        (0xE2, 0x81, 0x9F) => 3,
        (0xE3, 0x80, 0x80) => 3,
        _ => 0,
    }
}

thread_local! {
    /// [`tokenize`]'s bitmaps, reused.
    static BYTE_BITS: std::cell::RefCell<ByteBits> = std::cell::RefCell::new(ByteBits::default());
}

/// Tokenizes `text` the way `spacy.blank("en")` does, appending the tokens
/// (whitespace tokens included, marked) to `out`.
///
/// The text is cut into alternating runs of whitespace and of other
/// characters; the run boundaries are the set bits of a bitmap of class
/// changes, found a word at a time rather than by a branch per character.
pub(crate) fn tokenize(text: &str, out: &mut Vec<Token>) {
    out.clear();
    let d = data();
    if text.is_empty() {
        return;
    }
    let mut affixes = Affixes::default();
    let bytes = text.as_bytes();
    let n = bytes.len();
    BYTE_BITS.with(|cell| {
        let mut fresh = ByteBits::default();
        let mut guard = cell.try_borrow_mut();
        let bits = match guard.as_deref_mut() {
            Ok(v) => v,
            Err(_) => &mut fresh,
        };
        byte_bits(text, bits);
        let (ws, letters) = (&bits.ws, &bits.letters[..]);
        let mut in_ws = ws[0] & 1 != 0;
        let mut start = 0usize;
        let mut glued = false;
        // The class "before" byte 0 is its own: no boundary there.
        let mut carry = ws[0] & 1;
        let last = ws.len() - 1;
        for (w, &word) in ws.iter().enumerate() {
            let mut change = word ^ ((word << 1) | carry);
            carry = word >> 63;
            if w == last && n - 64 * w < 64 {
                change &= (1u64 << (n - 64 * w)) - 1;
            }
            while change != 0 {
                let i = 64 * w + change.trailing_zeros() as usize;
                change &= change - 1;
                if start < i {
                    let from = out.len();
                    chunk_or_word(d, text, start, i, in_ws, letters, out, &mut affixes);
                    glued |= out.len() - from > 1 && glued_match(d, text, &out[from..]);
                }
                start = if bytes[i] == b' ' { i + 1 } else { i };
                in_ws = !in_ws;
            }
        }
        if start < n {
            let from = out.len();
            chunk_or_word(d, text, start, n, in_ws, letters, out, &mut affixes);
            glued |= out.len() - from > 1 && glued_match(d, text, &out[from..]);
        }
        // Tokens of different chunks are never glued (whitespace or an
        // absorbed space lies between), so the chunks' own checks decide.
        if glued {
            apply_special_matcher(d, text, out);
        }
    });
}

/// [`tokenize`] scanning one character at a time (the reference for the
/// bitmap scan).
#[cfg(test)]
fn tokenize_naive(text: &str, out: &mut Vec<Token>) {
    /// The class (Python whitespace or not) and width of the character at byte `i`.
    fn class_at(text: &str, i: usize) -> (bool, usize) {
        let c = text[i..].chars().next().unwrap_or('\0');
        (py_isspace(c), c.len_utf8())
    }
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
            chunk(d, text, start, i, in_ws, out, &mut affixes);
        }
        start = if bytes[i] == b' ' { i + 1 } else { i };
        in_ws = !in_ws;
        i += width;
    }
    if start < n {
        chunk(d, text, start, n, in_ws, out, &mut affixes);
    }
    if glued_candidate(d, text, out) {
        apply_special_matcher(d, text, out);
    }
}

/// [`chunk`], with a fast path for chunks of only ASCII letters or only
/// ASCII digits: no prefix, suffix, infix or URL rule can match those, so
/// they are one token unless they are an exception (`cannot`, `gonna`).
#[inline]
#[allow(clippy::too_many_arguments)]
fn chunk_or_word(
    d: &Data,
    text: &str,
    lo: usize,
    hi: usize,
    ws: bool,
    letters: &[u64],
    out: &mut Vec<Token>,
    affixes: &mut Affixes,
) {
    if !ws {
        let bytes = &text.as_bytes()[lo..hi];
        if all_set(letters, lo, hi) || bytes.iter().all(u8::is_ascii_digit) {
            push_word(d, text, lo, hi, out);
            return;
        }
        if d.affix_fast && bytes.len() >= 2 && one_affix(d, text, lo, hi, bytes, letters, out) {
            return;
        }
    }
    chunk(d, text, lo, hi, ws, out, affixes);
}

/// Pushes `text[lo..hi]` as one token, or as its exception's tokens.
#[inline]
fn push_word(d: &Data, text: &str, lo: usize, hi: usize, out: &mut Vec<Token>) {
    match special(d, &text[lo..hi]) {
        Some(rule) => push_rule(out, lo, rule),
        None => out.push(Token {
            start: lo,
            end: hi,
            space: false,
        }),
    }
}

/// [`chunk`] for ASCII letters with one ASCII punctuation mark after
/// (`word,`) or before (`(word`), which is most of what is not a plain
/// word; `false` (nothing pushed) for other chunks.
///
/// With no ASCII letter a prefix or suffix character (`d.affix_fast`), the
/// letters match no affix rule, so `chunk` peels the mark off when its rule
/// matches the whole chunk (the checks below) and keeps the letters whole
/// (no infix or URL rule applies to letters), as an exception if they are
/// one.
#[inline]
fn one_affix(
    d: &Data,
    text: &str,
    lo: usize,
    hi: usize,
    bytes: &[u8],
    letters: &[u64],
    out: &mut Vec<Token>,
) -> bool {
    let n = bytes.len();
    let s = &text[lo..hi];
    if bytes[n - 1].is_ascii_punctuation() && all_set(letters, lo, hi - 1) {
        if special(d, s).is_some() || find_prefix(d, s) != 0 || find_suffix_with(d, s) != 1 {
            return false;
        }
        push_word(d, text, lo, hi - 1, out);
        out.push(Token {
            start: hi - 1,
            end: hi,
            space: false,
        });
        return true;
    }
    if bytes[0].is_ascii_punctuation() && all_set(letters, lo + 1, hi) {
        if special(d, s).is_some() || find_prefix(d, s) != 1 {
            return false;
        }
        out.push(Token {
            start: lo,
            end: lo + 1,
            space: false,
        });
        push_word(d, text, lo + 1, hi, out);
        return true;
    }
    false
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

/// Whether some matcher pattern matches tokens of `toks` that touch (no
/// whitespace between) and its exception splits them differently: only
/// such a match changes anything in [`apply_special_matcher`] (`That` `'s`
/// spells `That's`, whose exception is again `That` `'s`). Every pattern
/// has at least two tokens.
fn glued_match(d: &Data, text: &str, toks: &[Token]) -> bool {
    toks.windows(2).enumerate().any(|(i, w)| {
        let t = w[0];
        if t.space || w[1].space || w[1].start != t.end || t.end - t.start > d.max_first_len {
            return false;
        }
        let first = &text[t.start..t.end];
        if !d.pattern_sketch.may_contain(first) {
            return false;
        }
        let Some(cands) = d.patterns.get(first) else {
            return false;
        };
        cands.iter().any(|&(key, pat)| {
            i + pat.len() <= toks.len()
                && pat.iter().enumerate().all(|(k, p)| {
                    let tk = toks[i + k];
                    !tk.space
                        && (k == 0 || toks[i + k - 1].end == tk.start)
                        && &text[tk.start..tk.end] == *p
                })
                && special(d, key).is_some_and(|rule| {
                    let span = &toks[i..i + pat.len()];
                    rule.len() != span.len()
                        || rule.iter().zip(span).any(|(piece, t)| {
                            piece.len() != t.end - t.start
                                || t.space != piece.chars().all(py_isspace)
                        })
                })
        })
    })
}

/// Whether two adjacent tokens of `toks` touch (no whitespace between) and
/// the first may start a matcher pattern (the reference's weaker check).
#[cfg(test)]
fn glued_candidate(d: &Data, text: &str, toks: &[Token]) -> bool {
    toks.windows(2).any(|w| {
        let t = w[0];
        !t.space
            && !w[1].space
            && w[1].start == t.end
            && t.end - t.start <= d.max_first_len
            && d.pattern_sketch.may_contain(&text[t.start..t.end])
            && d.patterns.contains_key(&text[t.start..t.end])
    })
}

/// spaCy's final pass: token sequences spelling an exception that contains
/// affixes are merged back (`Mr` `.` → `Mr.`), longest first.
///
/// Only a match without whitespace between its tokens changes anything (one
/// across a space merely claims its tokens), so callers skip this for a
/// text without a [`glued_match`].
fn apply_special_matcher(d: &Data, text: &str, toks: &mut Vec<Token>) {
    if toks.len() < 2 {
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
            if &text[first.start..last.end] == key
                && let Some(rule) = special(d, key)
            {
                push_rule(&mut result, first.start, rule);
                i += len;
                continue;
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
    let d = data();
    let mut seen_period = false;
    for (i, t) in toks.iter().enumerate() {
        let s = &text[t.start..t.end];
        // Single characters only: one byte from the mask, more than four
        // bytes are more than one character.
        let in_punct = match s.len() {
            1 => d.sentence_ascii & (1u128 << (s.as_bytes()[0] & 0x7F)) != 0,
            2..=4 => {
                let mut cs = s.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) => in_chars(tables::SENTENCIZER_PUNCT, c),
                    _ => false,
                }
            }
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

/// [`sentence_starts`] looking at every token's characters (the reference).
#[cfg(test)]
fn sentence_starts_naive(text: &str, toks: &[Token], mut on_start: impl FnMut(usize)) {
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
    sentence_count_of(text, toks)
}

/// [`sentence_count`] from the tokens of `text`. spaCy's tokens of a line of
/// a document (stripped of surrounding whitespace) are the document's
/// tokens that start within the line: a line break is whitespace, so no
/// chunk and no exception match crosses it.
pub(crate) fn sentence_count_of(text: &str, toks: &[Token]) -> usize {
    let mut n = 0usize;
    sentence_starts(text, toks, |_| n += 1);
    n.max(1)
}

/// The tokens of `toks` (tokens of a document, in order) that start within
/// the byte range `range`.
pub(crate) fn tokens_within(toks: &[Token], range: std::ops::Range<usize>) -> &[Token] {
    let lo = toks.partition_point(|t| t.start < range.start);
    let hi = lo + toks[lo..].partition_point(|t| t.start < range.end);
    &toks[lo..hi]
}

/// The end byte of each sentence spaCy's `sentencizer` finds (the end of
/// its last token), as datatrove's `span_tokenize` reports them, from the
/// tokens of `text`.
pub(crate) fn sentence_ends_of(text: &str, toks: &[Token]) -> Vec<usize> {
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

    /// Pieces that exercise line breaks, whitespace runs, exceptions
    /// (also glued and across a space), URLs and sentence ends.
    const PIECES: &[&str] = &[
        " ",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\r\n",
        "\r",
        "\x0b",
        "\x0c",
        "\u{85}",
        "\u{2028}",
        "\u{a0}",
        "\t",
        " \n ",
        "Mr",
        "Mr.",
        ".",
        "Smith",
        ":)",
        ":",
        ")",
        "(",
        "e.g.",
        "don't",
        "Don't",
        "U.S.",
        "...",
        "a.m.",
        "Then",
        "end",
        "!",
        "?",
        "'s",
        "\"",
        "http://x.com",
        "10.0.0.1",
        "5km",
        "\u{2014}",
        "--",
        "-",
        "中文",
        "。",
        "the",
        "cannot",
        "ok",
        "x,y",
        "[1]",
        "'",
        "’s",
        "°C",
        "Hello",
        "St.",
        "Jan.",
        "vs.",
        ",",
        ";",
        "em",
        "US",
        "$",
        "A",
        "C",
        "+",
        "gonna",
        "Ms",
        "ABC",
        "x",
        "3",
        "#",
        "*",
        "&",
        "/",
        "%",
        "=",
        "~",
        "@",
        "That's",
        "That",
        "'s",
        "it",
        "Let",
        "let's",
        "what's",
        "''",
        "'cause",
        "(:",
        "o",
        "。",
        "？",
        "！",
        "…",
        "‼",
        "؟",
        "।",
        "!?",
        "?!",
        ".\"",
        ";",
    ];

    proptest::proptest! {
        /// The bit-range test agrees with testing each bit.
        #[test]
        fn all_set_equals_each_bit(
            bits in proptest::collection::vec(proptest::prop_oneof![proptest::strategy::Just(!0u64), proptest::prelude::any::<u64>()], 1..5),
            lo in 0usize..320,
            len in 1usize..200,
        ) {
            let total = 64 * bits.len();
            let lo = lo % total;
            let hi = (lo + len).min(total);
            let each = (lo..hi).all(|k| bits[k >> 6] >> (k & 63) & 1 == 1);
            proptest::prop_assert_eq!(all_set(&bits, lo, hi), each);
        }
    }

    #[test]
    fn byte_classes_of_eight_bytes() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut cases: Vec<u64> = (0..=255u64).map(|b| b * 0x0101_0101_0101_0101).collect();
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            cases.push(rng);
            cases.push(rng & 0x7F7F_7F7F_7F7F_7F7F);
        }
        for v in cases {
            let bytes = v.to_le_bytes();
            let (space, letter, high) = classes8(v);
            for (k, &b) in bytes.iter().enumerate() {
                assert_eq!(space >> k & 1, BYTE_SPACE[b as usize], "{v:x} byte {k}");
                assert_eq!(letter >> k & 1, BYTE_LETTER[b as usize], "{v:x} byte {k}");
            }
            assert_eq!(high >= 0x80, bytes.iter().any(|&b| b >= 0x80));
        }
    }

    #[test]
    fn non_ascii_spaces_are_matched_by_bytes() {
        for c in (0x80u32..0x11_0000).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            let want = if py_isspace(c) { bytes.len() } else { 0 };
            assert_eq!(non_ascii_space_at(bytes, 0), want, "{:X}", c as u32);
        }
    }

    #[test]
    fn fast_path_premises_hold() {
        assert!(data().affix_fast);
        assert!(
            tables::SP_SPECIAL_PATTERNS
                .iter()
                .all(|(_, pat)| pat.len() >= 2)
        );
    }

    fn text_of(ids: &[usize]) -> String {
        ids.iter().map(|&i| PIECES[i % PIECES.len()]).collect()
    }

    proptest::proptest! {
        /// The fast scan (bitmaps, word fast paths) tokenizes like the
        /// character-by-character reference.
        #[test]
        fn fast_tokenize_equals_naive(
            ids in proptest::collection::vec(0usize..1000, 0..120),
            any in "\\PC{0,200}",
            spaces in "[ a.\t\n\r\u{85}\u{a0}\u{2000}\u{3000}\u{1680}é中x-]{0,150}",
        ) {
            for text in [text_of(&ids), any, spaces] {
                let (mut fast, mut slow) = (Vec::new(), Vec::new());
                tokenize(&text, &mut fast);
                tokenize_naive(&text, &mut slow);
                proptest::prop_assert_eq!(fast, slow, "{:?}", text);
            }
        }

        /// The sentence starts from the ASCII mask equal the reference's.
        #[test]
        fn sentence_starts_equal_naive(
            ids in proptest::collection::vec(0usize..1000, 0..80),
            any in "\\PC{0,100}",
        ) {
            for text in [text_of(&ids), any] {
                let mut toks = Vec::new();
                tokenize(&text, &mut toks);
                let (mut fast, mut slow) = (Vec::new(), Vec::new());
                sentence_starts(&text, &toks, |i| fast.push(i));
                sentence_starts_naive(&text, &toks, |i| slow.push(i));
                proptest::prop_assert_eq!(fast, slow, "{:?}", text);
            }
        }

        /// The tokens of a stripped line equal the document's tokens that
        /// start within it (what C4 relies on to count sentences without
        /// tokenizing each line again).
        #[test]
        fn line_tokens_are_document_tokens(ids in proptest::collection::vec(0usize..1000, 0..60)) {
            let text = text_of(&ids);
            let mut doc = Vec::new();
            tokenize(&text, &mut doc);
            let mut alone = Vec::new();
            for raw in crate::quality::chars::py_splitlines(&text) {
                let line = crate::quality::chars::py_strip(raw);
                let at = line.as_ptr() as usize - text.as_ptr() as usize;
                tokenize(line, &mut alone);
                let shifted: Vec<Token> = alone
                    .iter()
                    .map(|t| Token { start: t.start + at, end: t.end + at, space: t.space })
                    .collect();
                let within = tokens_within(&doc, at..at + line.len());
                proptest::prop_assert_eq!(&shifted[..], within, "line {:?} of {:?}", line, text);
                proptest::prop_assert_eq!(
                    sentence_count(line, &mut alone),
                    sentence_count_of(&text, within)
                );
            }
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
