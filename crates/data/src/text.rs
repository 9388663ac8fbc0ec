//! Small text utilities shared by the stages: CJK classification and
//! script-aware counting.

/// True for characters of the CJK scripts that are written without spaces
/// between words: Han ideographs (unified, extensions, compatibility),
/// Hiragana, Katakana, Bopomofo and Hangul syllables, plus the CJK symbols
/// and punctuation block and full-width forms.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x2FDF      // radicals
        | 0x3000..=0x303F    // CJK symbols and punctuation
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x3100..=0x312F    // Bopomofo
        | 0x31A0..=0x31FF    // Bopomofo ext, Katakana ext
        | 0x3400..=0x4DBF    // ext A
        | 0x4E00..=0x9FFF    // unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0xFF00..=0xFFEF    // half/full-width forms
        | 0x20000..=0x3134F  // ext B–G
    )
}

/// True for Han ideographs only (no kana, Hangul or punctuation).
pub fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3134F)
}

/// True for Hiragana and Katakana.
pub fn is_kana(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F)
}

/// True for Hangul syllables and jamo.
pub fn is_hangul(c: char) -> bool {
    matches!(c as u32, 0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F)
}

/// The share of a text's alphabetic characters that are CJK (0 for a text
/// without letters).
///
/// ```
/// use kaiyuan_data::text::cjk_share;
/// assert_eq!(cjk_share("abc"), 0.0);
/// assert_eq!(cjk_share("开源 toolchain"), 2.0 / 11.0);
/// ```
pub fn cjk_share(text: &str) -> f64 {
    let mut letters = 0usize;
    let mut cjk = 0usize;
    for c in text.chars() {
        if c.is_alphabetic() {
            letters += 1;
            if is_cjk(c) {
                cjk += 1;
            }
        }
    }
    if letters == 0 {
        0.0
    } else {
        cjk as f64 / letters as f64
    }
}
