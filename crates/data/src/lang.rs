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

/// Counts ASCII words and English function words in the first 100 words.
fn english_function_words(text: &str) -> (usize, usize) {
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
    let text = match text.char_indices().nth(SAMPLE_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    };
    let mut letters = 0usize;
    let mut han = 0usize;
    let mut kana = 0usize;
    let mut hangul = 0usize;
    let mut latin = 0usize;
    for c in text.chars() {
        if !c.is_alphabetic() {
            continue;
        }
        letters += 1;
        if is_han(c) {
            han += 1;
        } else if is_kana(c) {
            kana += 1;
        } else if is_hangul(c) {
            hangul += 1;
        } else if c.is_ascii_alphabetic() || ('\u{00C0}'..='\u{024F}').contains(&c) {
            latin += 1;
        }
    }
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
    let sample = match text.char_indices().nth(600) {
        Some((end, _)) => &text[..end],
        None => text,
    };
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
