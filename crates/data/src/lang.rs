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

/// Identifies the language of a text.
///
/// ```
/// use kaiyuan_data::lang::{identify, Language};
/// assert_eq!(identify("The quick brown fox jumps over the lazy dog.").language, Language::En);
/// assert_eq!(identify("床前明月光，疑是地上霜。").language, Language::Zh);
/// assert_eq!(identify("Le renard brun rapide saute par-dessus le chien paresseux.").language, Language::Other);
/// ```
pub fn identify(text: &str) -> LanguageGuess {
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
    let detector = whatlang::Detector::with_allowlist(LATIN_CANDIDATES.to_vec());
    match detector.detect(text) {
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
