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
    (c as u32) >= 0xA6 && in_ranges(tables::SP_ICONS, c)
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

/// Python's `str.split()` word count (runs of Python whitespace separate).
pub(crate) fn py_split_count(s: &str) -> usize {
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
        // 0xC2 (U+0085) or 0xE2 (U+2028/9).
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let is_candidate = matches!(b, b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1e | 0xC2 | 0xE2);
            if is_candidate {
                if let Some(c) = s[i..].chars().next() {
                    if is_line_break(c) {
                        let line = &s[..i];
                        let mut j = i + c.len_utf8();
                        if c == '\r' && bytes.get(j) == Some(&b'\n') {
                            j += 1;
                        }
                        self.rest = &s[j..];
                        return Some(line);
                    }
                }
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
}
