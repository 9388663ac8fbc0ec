//! Language identification: Chinese, English or other, with a confidence.
//!
//! Script decides first: a text whose letters are mostly Han ideographs
//! (and without kana or Hangul, which mark Japanese and Korean) is Chinese.
//! Latin-script text goes to `whatlang`'s trigram model restricted to the
//! major Latin-script languages; English wins when it is the best guess.
//! Everything else (Cyrillic, Arabic, Devanagari, Japanese, Korean, French,
//! German…) is `Other`.

use crate::text::{is_han, is_hangul, is_kana};
use serde::{Deserialize, Serialize};

/// The languages the pipeline distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Chinese (any variety written in Han characters).
    Zh,
    /// English.
    En,
    /// Any other language, or no language (numbers, symbols, code).
    Other,
}

impl Language {
    /// The code used in configs and reports: `zh`, `en` or `other`.
    pub fn code(self) -> &'static str {
        match self {
            Language::Zh => "zh",
            Language::En => "en",
            Language::Other => "other",
        }
    }

    /// Parses `zh`, `en` or `other` (case-insensitive).
    pub fn from_code(code: &str) -> Option<Self> {
        match code.to_ascii_lowercase().as_str() {
            "zh" | "cmn" | "chinese" => Some(Language::Zh),
            "en" | "eng" | "english" => Some(Language::En),
            "other" => Some(Language::Other),
            _ => None,
        }
    }
}

/// A language guess with its confidence in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanguageGuess {
    /// The language.
    pub language: Language,
    /// Confidence in [0, 1]: the script share for Chinese, whatlang's
    /// confidence for Latin-script text, and for `Other` the confidence that
    /// the text is neither Chinese nor English.
    pub score: f64,
}

/// Frequent English function words that are not also common words of
/// other Latin-script languages (so no "a", "in", "is", "was", "no", "die").
const ENGLISH_FUNCTION_WORDS: &[&str] = &[
    "about", "all", "also", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "could", "did", "do", "every", "for", "from", "had", "has", "have", "he", "her", "him", "his",
    "if", "into", "it", "its", "may", "me", "more", "must", "my", "not", "of", "on", "one", "only",
    "or", "other", "our", "out", "said", "shall", "she", "should", "so", "some", "such", "than",
    "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "to", "up",
    "very", "we", "were", "what", "when", "which", "who", "will", "with", "would", "you", "your",
];

/// The longest word compared with the function words, in bytes (no
/// function word is longer).
const MAX_FUNCTION_WORD: usize = 8;

/// A word of at most 8 ASCII bytes as a little-endian integer (zero padded;
/// distinct for distinct words, as words hold no NUL).
const fn word_key(word: &[u8]) -> u64 {
    let mut key = 0u64;
    let mut i = 0;
    while i < word.len() {
        key |= (word[i] as u64) << (8 * i);
        i += 1;
    }
    key
}

/// [`ENGLISH_FUNCTION_WORDS`] as sorted [`word_key`]s.
const FUNCTION_KEYS: [u64; ENGLISH_FUNCTION_WORDS.len()] = {
    let mut keys = [0u64; ENGLISH_FUNCTION_WORDS.len()];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = word_key(ENGLISH_FUNCTION_WORDS[i].as_bytes());
        i += 1;
    }
    // Insertion sort (const context).
    let mut i = 1;
    while i < keys.len() {
        let mut j = i;
        while j > 0 && keys[j - 1] > keys[j] {
            let t = keys[j - 1];
            keys[j - 1] = keys[j];
            keys[j] = t;
            j -= 1;
        }
        i += 1;
    }
    keys
};

/// Counts ASCII words and English function words in the first 100 words.
///
/// Words are runs of ASCII letters; splitting the bytes is the same as
/// splitting the characters, as every byte of a multi-byte character is a
/// separator too. Lowercased words are compared as integers.
fn english_function_words(text: &str) -> (usize, usize) {
    let mut words = 0;
    let mut hits = 0;
    for word in text
        .as_bytes()
        .split(|b| !b.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .take(100)
    {
        words += 1;
        if word.len() <= MAX_FUNCTION_WORD {
            let mut key = 0u64;
            for (i, &b) in word.iter().enumerate() {
                key |= u64::from(b.to_ascii_lowercase()) << (8 * i);
            }
            hits += usize::from(FUNCTION_KEYS.binary_search(&key).is_ok());
        }
    }
    (words, hits)
}

/// The reference for [`english_function_words`] (characters, strings).
#[cfg(test)]
fn english_function_words_naive(text: &str) -> (usize, usize) {
    let mut words = 0;
    let mut hits = 0;
    let mut buf = [0u8; 8];
    for word in text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .take(100)
    {
        words += 1;
        if word.len() <= buf.len() {
            let lower = &mut buf[..word.len()];
            for (slot, b) in lower.iter_mut().zip(word.bytes()) {
                *slot = b.to_ascii_lowercase();
            }
            if ENGLISH_FUNCTION_WORDS
                .binary_search_by(|w| w.as_bytes().cmp(lower))
                .is_ok()
            {
                hits += 1;
            }
        }
    }
    (words, hits)
}

/// Letters among the characters of `text`: (letters, Han, kana, Hangul,
/// Latin). ASCII bytes are counted directly (an ASCII letter is alphabetic
/// and Latin, and no other class holds ASCII).
fn script_counts(text: &str) -> [usize; 5] {
    /// Bytes per block of the vectorised ASCII count.
    const BLOCK: usize = 64;
    let mut counts = [0usize; 5];
    let bytes = text.as_bytes();
    let mut i = 0;
    // Up to this byte the characters are counted one at a time.
    let mut slow_until = 0;
    while i < bytes.len() {
        if i >= slow_until && i + BLOCK <= bytes.len() {
            let block = &bytes[i..i + BLOCK];
            if block.iter().fold(0u8, |acc, &b| acc | b) < 0x80 {
                let letters = block.iter().filter(|b| b.is_ascii_alphabetic()).count();
                counts[0] += letters;
                counts[4] += letters;
                i += BLOCK;
                continue;
            }
            slow_until = i + BLOCK;
        }
        let b = bytes[i];
        if b < 0x80 {
            let letter = usize::from(b.is_ascii_alphabetic());
            counts[0] += letter;
            counts[4] += letter;
            i += 1;
            continue;
        }
        let c = text[i..].chars().next().unwrap_or('\0');
        i += c.len_utf8();
        count_char(c, &mut counts);
    }
    counts
}

#[inline]
fn count_char(c: char, counts: &mut [usize; 5]) {
    if !c.is_alphabetic() {
        return;
    }
    counts[0] += 1;
    if is_han(c) {
        counts[1] += 1;
    } else if is_kana(c) {
        counts[2] += 1;
    } else if is_hangul(c) {
        counts[3] += 1;
    } else if c.is_ascii_alphabetic() || ('\u{00C0}'..='\u{024F}').contains(&c) {
        counts[4] += 1;
    }
}

/// The reference for [`script_counts`], a character at a time.
#[cfg(test)]
fn script_counts_naive(text: &str) -> [usize; 5] {
    let mut counts = [0usize; 5];
    for c in text.chars() {
        count_char(c, &mut counts);
    }
    counts
}

/// The byte length of the first `n` characters of `text` (all of it when
/// shorter).
fn prefix_chars(text: &str, n: usize) -> usize {
    // At most `n` bytes hold at most `n` characters.
    if text.len() <= n {
        return text.len();
    }
    // Characters start at the bytes that are not continuation bytes;
    // whole blocks are counted without a branch per byte.
    let bytes = text.as_bytes();
    let mut seen = 0usize;
    let mut from = 0usize;
    for block in bytes.chunks(64) {
        let starts = block.iter().filter(|&&b| b & 0xC0 != 0x80).count();
        if seen + starts > n {
            break;
        }
        seen += starts;
        from += block.len();
    }
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        if b & 0xC0 != 0x80 {
            if seen == n {
                return i;
            }
            seen += 1;
        }
    }
    text.len()
}

/// Latin-script languages whatlang chooses among. Restricting the list keeps
/// English from being confused with rarer languages on short lines.
const LATIN_CANDIDATES: &[whatlang::Lang] = &[
    whatlang::Lang::Eng,
    whatlang::Lang::Fra,
    whatlang::Lang::Deu,
    whatlang::Lang::Spa,
    whatlang::Lang::Por,
    whatlang::Lang::Ita,
    whatlang::Lang::Nld,
    whatlang::Lang::Swe,
    whatlang::Lang::Dan,
    whatlang::Lang::Nob,
    whatlang::Lang::Fin,
    whatlang::Lang::Pol,
    whatlang::Lang::Ces,
    whatlang::Lang::Slk,
    whatlang::Lang::Hun,
    whatlang::Lang::Ron,
    whatlang::Lang::Tur,
    whatlang::Lang::Vie,
    whatlang::Lang::Ind,
    whatlang::Lang::Est,
    whatlang::Lang::Lav,
    whatlang::Lang::Lit,
    whatlang::Lang::Hrv,
    whatlang::Lang::Slv,
    whatlang::Lang::Cat,
    whatlang::Lang::Tgl,
    whatlang::Lang::Epo,
    whatlang::Lang::Lat,
    whatlang::Lang::Zul,
    whatlang::Lang::Aka,
    whatlang::Lang::Uzb,
    whatlang::Lang::Aze,
];

/// Characters of a document that language identification reads.
pub const SAMPLE_CHARS: usize = 2000;

/// Identifies the language of a text (its first [`SAMPLE_CHARS`] characters).
///
/// ```
/// use kaiyuan_data::lang::{identify, Language};
/// assert_eq!(identify("The quick brown fox jumps over the lazy dog.").language, Language::En);
/// assert_eq!(identify("床前明月光，疑是地上霜。").language, Language::Zh);
/// assert_eq!(identify("Le renard brun rapide saute par-dessus le chien paresseux.").language, Language::Other);
/// ```
pub fn identify(text: &str) -> LanguageGuess {
    // The first 2,000 characters decide: enough for any language the
    // trigram model knows, and it bounds the cost on long documents.
    let text = &text[..prefix_chars(text, SAMPLE_CHARS)];
    let [letters, han, kana, hangul, latin] = script_counts(text);
    if letters == 0 {
        return LanguageGuess {
            language: Language::Other,
            score: 1.0,
        };
    }
    let letters_f = letters as f64;
    // Japanese mixes kana into Han text; a few percent of kana is decisive.
    if kana as f64 / letters_f > 0.05 || hangul as f64 / letters_f > 0.2 {
        return LanguageGuess {
            language: Language::Other,
            score: ((kana + hangul) as f64 / letters_f).max(0.5),
        };
    }
    let han_share = han as f64 / letters_f;
    if han_share >= 0.3 && han >= latin / 4 {
        return LanguageGuess {
            language: Language::Zh,
            score: han_share.clamp(0.5, 1.0),
        };
    }
    let latin_share = latin as f64 / letters_f;
    if latin_share < 0.5 {
        return LanguageGuess {
            language: Language::Other,
            score: 1.0 - latin_share,
        };
    }
    // English function words decide most Latin-script texts at once;
    // whatlang's trigram model (the costly part) settles the rest.
    let (words, function_words) = english_function_words(text);
    if words >= 12 {
        let share = function_words as f64 / words as f64;
        if share >= 0.22 {
            return LanguageGuess {
                language: Language::En,
                score: (0.5 + share).min(1.0),
            };
        }
    }
    // 600 characters are plenty for the trigram model.
    let sample = &text[..prefix_chars(text, 600)];
    let detector = whatlang::Detector::with_allowlist(LATIN_CANDIDATES.to_vec());
    match detector.detect(sample) {
        Some(info) if info.lang() == whatlang::Lang::Eng => LanguageGuess {
            language: Language::En,
            score: info.confidence(),
        },
        Some(info) => LanguageGuess {
            language: Language::Other,
            score: info.confidence(),
        },
        None => LanguageGuess {
            language: Language::Other,
            score: 0.0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_words_are_sorted_for_binary_search() {
        assert!(ENGLISH_FUNCTION_WORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(FUNCTION_KEYS.windows(2).all(|w| w[0] < w[1]));
        assert!(
            ENGLISH_FUNCTION_WORDS
                .iter()
                .all(|w| w.len() <= MAX_FUNCTION_WORD && w.bytes().all(|b| b.is_ascii_lowercase()))
        );
    }

    proptest::proptest! {
        /// The byte-level counts equal the character-level references.
        #[test]
        fn fast_counts_equal_naive(
            text in "[a-zA-Z .,'-]{0,300}|\\PC{0,300}|([A-Za-z]{1,9}|The|AND|shall|é|中|ア|한| |,){0,120}",
            n in 0usize..400,
        ) {
            proptest::prop_assert_eq!(english_function_words(&text), english_function_words_naive(&text));
            proptest::prop_assert_eq!(script_counts(&text), script_counts_naive(&text));
            let want = text.char_indices().nth(n).map_or(text.len(), |(end, _)| end);
            proptest::prop_assert_eq!(prefix_chars(&text, n), want);
        }
    }

    #[test]
    fn scripts_decide_before_the_model() {
        assert_eq!(identify("東京は日本の首都です。").language, Language::Other);
        assert_eq!(
            identify("서울은 한국의 수도입니다.").language,
            Language::Other
        );
        assert_eq!(
            identify("Москва — столица России.").language,
            Language::Other
        );
        assert_eq!(identify("12345 + 678 = ?").language, Language::Other);
        assert_eq!(identify("北京是中国的首都。").language, Language::Zh);
    }
}
