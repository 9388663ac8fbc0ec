//! Hand-written scanners equivalent to the split regexes of GPT-2 (r50k,
//! p50k), cl100k/Llama-3 and Qwen2 (`\p{N}` one at a time) — the hot path of
//! encoding. Each is checked against the regex engine by property tests.

use unicode_general_category::{GeneralCategory, get_general_category};

/// Which known pattern a scanner implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scanner {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Cl100k {
        /// Longest run of digits in one pre-token (3 for cl100k/Llama-3, 1 for Qwen2).
        max_digits: usize,
        /// tiktoken's current form starts with `\s++$`: a whitespace run that
        /// reaches the end of the text is one pre-token even when it holds a
        /// newline (HF's form splits after the last newline).
        whole_trailing_space: bool,
    },
}

const GPT2: &[&str] = &[
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s",
];
const CL100K_HF: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const CL100K_TIKTOKEN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
const QWEN2: &[&str] = &[
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
];

/// Entries of the per-thread character buffer kept between calls (24 MiB).
const KEPT_BUFFER: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

#[inline]
fn class(c: char) -> Class {
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => Class::Letter,
            '0'..='9' => Class::Number,
            ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' => Class::Space,
            _ => Class::Other,
        };
    }
    // The Basic Multilingual Plane through a table built once (64 KiB), the
    // rest through the Unicode tables.
    static BMP: std::sync::OnceLock<Box<[Class]>> = std::sync::OnceLock::new();
    let code = c as u32;
    if code < 0x10000 {
        let table = BMP.get_or_init(|| {
            (0..0x10000u32)
                .map(|u| char::from_u32(u).map_or(Class::Other, unicode_class))
                .collect()
        });
        return table[code as usize];
    }
    unicode_class(c)
}

fn unicode_class(c: char) -> Class {
    use GeneralCategory::*;
    match get_general_category(c) {
        UppercaseLetter | LowercaseLetter | TitlecaseLetter | ModifierLetter | OtherLetter => {
            Class::Letter
        }
        DecimalNumber | LetterNumber | OtherNumber => Class::Number,
        _ if c.is_whitespace() => Class::Space,
        _ => Class::Other,
    }
}

impl Scanner {
    /// The scanner for `pattern`, when it is one of the known patterns.
    pub(crate) fn for_pattern(pattern: &str) -> Option<Self> {
        if GPT2.contains(&pattern) {
            Some(Scanner::Gpt2)
        } else if pattern == CL100K_HF {
            Some(Scanner::Cl100k {
                max_digits: 3,
                whole_trailing_space: false,
            })
        } else if pattern == CL100K_TIKTOKEN {
            Some(Scanner::Cl100k {
                max_digits: 3,
                whole_trailing_space: true,
            })
        } else if QWEN2.contains(&pattern) {
            Some(Scanner::Cl100k {
                max_digits: 1,
                whole_trailing_space: false,
            })
        } else {
            None
        }
    }

    /// Calls `found(start, end)` for each match of the pattern, left to right.
    pub(crate) fn for_each_match(&self, text: &str, mut found: impl FnMut(usize, usize)) {
        thread_local! {
            static CHARS: std::cell::RefCell<Vec<(usize, char, Class)>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        CHARS.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut chars) => {
                chars.clear();
                chars.extend(text.char_indices().map(|(i, c)| (i, c, class(c))));
                self.scan(text, &chars, &mut found);
                // A huge text's buffer is not kept for the thread's life.
                if chars.capacity() > KEPT_BUFFER {
                    *chars = Vec::new();
                }
            }
            // Re-entered from `found` (cannot happen today): a buffer of its own.
            Err(_) => {
                let chars: Vec<_> = text.char_indices().map(|(i, c)| (i, c, class(c))).collect();
                self.scan(text, &chars, &mut found);
            }
        });
    }

    /// The matches over `chars`, the classified characters of `text`.
    fn scan(
        &self,
        text: &str,
        chars: &[(usize, char, Class)],
        found: &mut impl FnMut(usize, usize),
    ) {
        let n = chars.len();
        let at = |k: usize| if k < n { chars[k].0 } else { text.len() };
        let mut k = 0;
        while k < n {
            let end = match *self {
                Scanner::Gpt2 => gpt2_match(chars, k),
                Scanner::Cl100k {
                    max_digits,
                    whole_trailing_space,
                } => cl100k_match(chars, k, max_digits, whole_trailing_space),
            };
            found(at(k), at(end));
            k = end;
        }
    }
}

/// Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at `k`, if any.
fn contraction(chars: &[(usize, char, Class)], k: usize, ignore_case: bool) -> Option<usize> {
    if chars[k].1 != '\'' {
        return None;
    }
    // Unicode case folding also maps the long s (U+017F) to `s`.
    let lower = |i: usize| {
        chars.get(i).map(|&(_, c, _)| match (ignore_case, c) {
            (true, '\u{17F}') => 's',
            (true, c) => c.to_ascii_lowercase(),
            (false, c) => c,
        })
    };
    match (lower(k + 1), lower(k + 2)) {
        (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => Some(k + 3),
        (Some('s' | 't' | 'm' | 'd'), _) => Some(k + 2),
        _ => None,
    }
}

/// End of the run of `class` starting at `k`.
fn run(chars: &[(usize, char, Class)], mut k: usize, class: Class) -> usize {
    while k < chars.len() && chars[k].2 == class {
        k += 1;
    }
    k
}

/// `\s+(?!\S)|\s+` at the start of a whitespace run `k..end`: the whole run
/// when it ends the text, else all but its last character (which then joins
/// the next token), but at least one character.
fn whitespace(chars: &[(usize, char, Class)], k: usize) -> usize {
    let end = run(chars, k, Class::Space);
    if end == chars.len() || end - k == 1 {
        end
    } else {
        end - 1
    }
}

fn gpt2_match(chars: &[(usize, char, Class)], k: usize) -> usize {
    if let Some(end) = contraction(chars, k, false) {
        return end;
    }
    let n = chars.len();
    let (start, optional_space) =
        if chars[k].1 == ' ' && k + 1 < n && chars[k + 1].2 != Class::Space {
            (k + 1, true)
        } else {
            (k, false)
        };
    match chars[start].2 {
        Class::Letter => run(chars, start, Class::Letter),
        Class::Number => run(chars, start, Class::Number),
        Class::Other => run(chars, start, Class::Other),
        Class::Space => {
            debug_assert!(!optional_space);
            whitespace(chars, k)
        }
    }
}

fn cl100k_match(
    chars: &[(usize, char, Class)],
    k: usize,
    max_digits: usize,
    whole_trailing_space: bool,
) -> usize {
    let n = chars.len();
    if let Some(end) = contraction(chars, k, true) {
        return end;
    }
    let (c, class) = (chars[k].1, chars[k].2);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if class == Class::Letter {
        return run(chars, k, Class::Letter);
    }
    if c != '\r'
        && c != '\n'
        && class != Class::Number
        && k + 1 < n
        && chars[k + 1].2 == Class::Letter
    {
        return run(chars, k + 1, Class::Letter);
    }
    // \p{N}{1,max}
    if class == Class::Number {
        return run(chars, k, Class::Number).min(k + max_digits);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let punct_start = if c == ' ' && k + 1 < n && chars[k + 1].2 == Class::Other {
        k + 1
    } else {
        k
    };
    if chars[punct_start].2 == Class::Other {
        let mut end = run(chars, punct_start, Class::Other);
        while end < n && (chars[end].1 == '\r' || chars[end].1 == '\n') {
            end += 1;
        }
        return end;
    }
    let ws_end = run(chars, k, Class::Space);
    if whole_trailing_space && ws_end == n {
        return n;
    }
    // \s*[\r\n]+ : the longest prefix of the whitespace run that ends in \r or \n.
    if let Some(last_newline) = (k..ws_end)
        .rev()
        .find(|&i| chars[i].1 == '\r' || chars[i].1 == '\n')
    {
        return last_newline + 1;
    }
    // \s+(?!\S)|\s+
    whitespace(chars, k)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn regex_matches(pattern: &str, text: &str) -> Vec<(usize, usize)> {
        let re = fancy_regex::Regex::new(pattern).unwrap();
        re.find_iter(text)
            .map(|m| m.unwrap())
            .map(|m| (m.start(), m.end()))
            .collect()
    }

    fn scanner_matches(pattern: &str, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        Scanner::for_pattern(pattern)
            .unwrap()
            .for_each_match(text, |a, b| out.push((a, b)));
        out
    }

    /// Text drawn from the characters that matter to these patterns.
    fn tricky_text() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just(" ".to_string()),
            Just("  ".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\t".to_string()),
            Just("\u{3000}".to_string()),
            Just("\u{a0}".to_string()),
            Just("\u{85}".to_string()),
            Just("'s".to_string()),
            Just("'S".to_string()),
            Just("'ll".to_string()),
            Just("'LL".to_string()),
            Just("'re".to_string()),
            Just("'ve".to_string()),
            Just("'d".to_string()),
            Just("'m".to_string()),
            Just("'t".to_string()),
            Just("'".to_string()),
            Just("\u{17f}".to_string()),
            Just("'\u{17f}".to_string()),
            "[a-zA-Z]{1,6}",
            "[0-9]{1,7}",
            "[!-/:-@\\[-`{-~]{1,3}",
            "[\u{4e00}-\u{4e20}]{1,4}",
            "[\u{0300}-\u{0305}]",
            Just("½".to_string()),
            Just("①".to_string()),
            Just("é".to_string()),
            Just("🙂".to_string()),
            Just("👩‍💻".to_string()),
            Just("ǅ".to_string()),
            Just("ʰ".to_string()),
            Just("\u{200b}".to_string()),
            Just("\u{2028}".to_string()),
            any::<char>().prop_map(|c| c.to_string()),
        ];
        proptest::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn scanners_agree_with_the_regex_engine(text in tricky_text()) {
            for pattern in GPT2.iter().chain(QWEN2).chain([&CL100K_HF, &CL100K_TIKTOKEN]) {
                prop_assert_eq!(scanner_matches(pattern, &text), regex_matches(pattern, &text), "pattern {}", pattern);
            }
        }
    }
}
