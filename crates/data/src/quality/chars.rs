//! Character predicates with Python's and spaCy's exact semantics, backed by
//! the generated tables in `tables.rs`, with ASCII fast paths.

use super::tables;

/// True when `c` lies in one of the sorted, disjoint inclusive ranges.
#[inline]
pub(crate) fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let cp = c as u32;
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// True when `c` is in the sorted char list.
#[inline]
pub(crate) fn in_chars(list: &[char], c: char) -> bool {
    list.binary_search(&c).is_ok()
}

/// Python's `str.isspace` for one character.
#[inline]
pub(crate) fn py_isspace(c: char) -> bool {
    if c.is_ascii() {
        // \t \n \v \f \r, \x1c-\x1f and space.
        matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' ')
    } else {
        in_ranges(tables::PY_SPACE, c)
    }
}

/// Python's `str.isalpha` for one character.
#[inline]
pub(crate) fn py_isalpha(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        in_ranges(tables::PY_ALPHA, c)
    }
}

/// Python's `re` `\w` for one character (str patterns).
#[inline]
pub(crate) fn py_is_word(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        in_ranges(tables::PY_WORD, c)
    }
}

/// Unicode general category P* (as Python 3.11's `unicodedata` says).
#[inline]
pub(crate) fn is_punct_category(c: char) -> bool {
    if c.is_ascii() {
        matches!(c, '!'..='#' | '%'..='*' | ','..='/' | ':' | ';' | '?' | '@' | '['..=']' | '_' | '{' | '}')
    } else {
        in_ranges(tables::PY_PUNCT_CATEGORY, c)
    }
}

/// spaCy's `ALPHA` class.
#[inline]
pub(crate) fn sp_alpha(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        in_ranges(tables::SP_ALPHA, c)
    }
}

/// spaCy's `ALPHA_UPPER` class.
#[inline]
pub(crate) fn sp_upper(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_uppercase()
    } else {
        in_ranges(tables::SP_ALPHA_UPPER, c)
    }
}

/// spaCy's `ICONS` class.
#[inline]
pub(crate) fn sp_icon(c: char) -> bool {
    let cp = c as u32;
    if cp < 0xA6 {
        return false;
    }
    if cp < 0x10000 {
        // The Basic Multilingual Plane from a bitmap of the table (the
        // tokenizer asks for every character of a CJK chunk).
        return icon_bits()[(cp >> 6) as usize] >> (cp & 63) & 1 != 0;
    }
    in_ranges(tables::SP_ICONS, c)
}

/// [`tables::SP_ICONS`] below U+10000 as a bitmap.
fn icon_bits() -> &'static [u64; 1024] {
    static BITS: std::sync::OnceLock<Box<[u64; 1024]>> = std::sync::OnceLock::new();
    BITS.get_or_init(|| {
        let mut bits = Box::new([0u64; 1024]);
        for &(lo, hi) in tables::SP_ICONS {
            for cp in lo..=hi.min(0xFFFF) {
                bits[(cp >> 6) as usize] |= 1 << (cp & 63);
            }
        }
        bits
    })
}

/// datatrove's `PUNCTUATION_SET` (a word made only of these is a symbol).
#[inline]
pub(crate) fn dt_punct(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_punctuation() || (c.is_ascii_control() && c != '\t' && c != '\n')
    } else {
        in_chars(tables::DT_PUNCTUATION, c)
    }
}

/// Python's `str.strip()` (Python whitespace).
#[inline]
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Python's `str.lstrip()`.
#[inline]
pub(crate) fn py_lstrip(s: &str) -> &str {
    s.trim_start_matches(py_isspace)
}

/// Python's `str.rstrip()`.
#[inline]
pub(crate) fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_isspace)
}

/// True when the whole string is Python whitespace (or empty), i.e.
/// `s.strip() == ""`.
#[inline]
pub(crate) fn py_is_blank(s: &str) -> bool {
    s.chars().all(py_isspace)
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

/// Python's `str.split()` word count (runs of Python whitespace separate),
/// a byte at a time for ASCII text.
pub(crate) fn py_split_count(s: &str) -> usize {
    if !s.is_ascii() {
        return py_split_count_chars(s);
    }
    let mut n = 0;
    let mut prev_space = true;
    for &b in s.as_bytes() {
        let space = ASCII_SPACE[b as usize];
        n += usize::from(prev_space & !space);
        prev_space = space;
    }
    n
}

/// Whether a word of Python's `str.split()` has more than `max` characters.
pub(crate) fn py_split_longer_than(s: &str, max: usize) -> bool {
    // A word has at most as many characters as the text has bytes.
    if s.len() <= max {
        return false;
    }
    if !s.is_ascii() {
        return py_split(s).any(|w| char_len(w) > max);
    }
    let mut run = 0usize;
    let mut longest = 0usize;
    for &b in s.as_bytes() {
        run = if ASCII_SPACE[b as usize] { 0 } else { run + 1 };
        longest = longest.max(run);
    }
    longest > max
}

/// [`py_split_count`] a character at a time (the reference).
pub(crate) fn py_split_count_chars(s: &str) -> usize {
    let mut n = 0;
    let mut in_word = false;
    for c in s.chars() {
        if py_isspace(c) {
            in_word = false;
        } else if !in_word {
            in_word = true;
            n += 1;
        }
    }
    n
}

/// Python's `str.split()` words.
pub(crate) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_isspace).filter(|w| !w.is_empty())
}

/// True for the line boundaries of Python's `str.splitlines()`.
#[inline]
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\x0b'
            | '\x0c'
            | '\x1c'
            | '\x1d'
            | '\x1e'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Python's `str.splitlines()` (without keepends): splits on `\n`, `\r`,
/// `\r\n`, `\v`, `\f`, `\x1c`-`\x1e`, `\x85`, U+2028 and U+2029; a final
/// line break does not start an empty line.
pub(crate) fn py_splitlines(s: &str) -> SplitLines<'_> {
    SplitLines { rest: s }
}

/// Iterator of [`py_splitlines`].
pub(crate) struct SplitLines<'a> {
    rest: &'a str,
}

impl<'a> Iterator for SplitLines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let s = self.rest;
        let bytes = s.as_bytes();
        // Fast scan: every break is \n, \r, \v, \f, \x1c-\x1e, or starts with
        // 0xC2 (U+0085) or 0xE2 (U+2028/9). Blocks without such a byte are
        // skipped by a check without branches (vectorised); the bytes of
        // the others are looked at one by one.
        const BLOCK: usize = 64;
        let candidate =
            |b: u8| matches!(b, b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1e | 0xC2 | 0xE2);
        let mut i = 0;
        let mut slow_until = 0;
        while i < bytes.len() {
            if i >= slow_until && i + BLOCK <= bytes.len() {
                if !bytes[i..i + BLOCK]
                    .iter()
                    .fold(false, |acc, &b| acc | candidate(b))
                {
                    i += BLOCK;
                    continue;
                }
                slow_until = i + BLOCK;
            }
            let b = bytes[i];
            if candidate(b)
                && let Some(c) = s[i..].chars().next()
                && is_line_break(c)
            {
                let line = &s[..i];
                let mut j = i + c.len_utf8();
                if c == '\r' && bytes.get(j) == Some(&b'\n') {
                    j += 1;
                }
                self.rest = &s[j..];
                return Some(line);
            }
            i += 1;
        }
        self.rest = "";
        Some(s)
    }
}

/// Number of characters (Python's `len`).
#[inline]
pub(crate) fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Python's `str.count(sub)` (non-overlapping occurrences) for a non-empty needle.
pub(crate) fn count_non_overlapping(hay: &str, needle: &str) -> usize {
    memchr::memmem::find_iter(hay.as_bytes(), needle.as_bytes())
        .fold((0usize, 0usize), |(n, next_ok), pos| {
            if pos >= next_ok {
                (n + 1, pos + needle.len())
            } else {
                (n, next_ok)
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's `str.splitlines()` a character at a time (the reference).
    fn splitlines_naive(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if is_line_break(c) {
                out.push(&s[start..i]);
                let mut end = i + c.len_utf8();
                if c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
                    chars.next();
                    end += 1;
                }
                start = end;
            }
        }
        if start < s.len() {
            out.push(&s[start..]);
        }
        out
    }

    proptest::proptest! {
        /// The block scan splits like the character loop.
        #[test]
        fn splitlines_fast_equals_naive(
            s in "([a-z “”é中\u{a0}]{0,90}(\n|\r\n|\r|\x0b|\x0c|\x1c|\x1d|\x1e|\u{85}|\u{2028}|\u{2029}|\n\n)?){0,8}|\\PC{0,200}"
        ) {
            proptest::prop_assert_eq!(py_splitlines(&s).collect::<Vec<_>>(), splitlines_naive(&s));
        }
    }

    #[test]
    fn splitlines_like_python() {
        let v: Vec<&str> = py_splitlines("a\r\nb\rc\n\nd\u{2028}e\n").collect();
        assert_eq!(v, ["a", "b", "c", "", "d", "e"]);
        assert_eq!(py_splitlines("").count(), 0);
        assert_eq!(py_splitlines("\n").collect::<Vec<_>>(), [""]);
        assert_eq!(py_splitlines("x").collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn python_whitespace() {
        assert!(py_isspace('\x1c'));
        assert!(py_isspace('\u{a0}'));
        assert!(py_isspace('\u{3000}'));
        assert!(!py_isspace('\u{200b}'));
        assert_eq!(py_strip("\x1f a \u{3000}"), "a");
        assert_eq!(py_split_count(" a  b\tc\u{a0}d "), 4);
    }

    proptest::proptest! {
        /// The ASCII fast paths split like the character loops.
        #[test]
        fn split_fast_equals_chars(s in "[ a-c\t\n\x0b\x0c\r\x1c-\x1f.]{0,40}|\\PC{0,20}", max in 0usize..8) {
            proptest::prop_assert_eq!(py_split_count(&s), py_split_count_chars(&s));
            proptest::prop_assert_eq!(
                py_split_longer_than(&s, max),
                py_split(&s).any(|w| char_len(w) > max)
            );
        }
    }

    #[test]
    fn counts_like_python() {
        assert_eq!(count_non_overlapping("....", "..."), 1);
        assert_eq!(count_non_overlapping("......", "..."), 2);
        assert_eq!(count_non_overlapping("a...b...", "..."), 2);
    }

    #[test]
    fn ascii_fast_paths_agree_with_tables() {
        for b in 0u8..128 {
            let c = b as char;
            assert_eq!(py_isspace(c), in_ranges(tables::PY_SPACE, c), "{b}");
            assert_eq!(py_isalpha(c), in_ranges(tables::PY_ALPHA, c), "{b}");
            assert_eq!(py_is_word(c), in_ranges(tables::PY_WORD, c), "{b}");
            assert_eq!(
                is_punct_category(c),
                in_ranges(tables::PY_PUNCT_CATEGORY, c),
                "{b}"
            );
            assert_eq!(sp_alpha(c), in_ranges(tables::SP_ALPHA, c), "{b}");
            assert_eq!(sp_upper(c), in_ranges(tables::SP_ALPHA_UPPER, c), "{b}");
            assert_eq!(sp_icon(c), in_ranges(tables::SP_ICONS, c), "{b}");
            assert_eq!(dt_punct(c), in_chars(tables::DT_PUNCTUATION, c), "{b}");
        }
        assert_eq!(tables::SP_ICONS.first().map(|r| r.0), Some(0xA6));
    }

    #[test]
    fn icon_bitmap_agrees_with_table() {
        for c in (0u32..0x11000).filter_map(char::from_u32) {
            assert_eq!(sp_icon(c), in_ranges(tables::SP_ICONS, c), "{:X}", c as u32);
        }
    }
}
