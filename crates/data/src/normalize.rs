//! Text normalisation: Unicode normal forms, control characters and ANSI
//! escapes, whitespace, and optional HTML stripping.

use crate::stage::{DocContext, DocumentStage, Outcome, Rejection};
use serde::Deserialize;
use std::borrow::Cow;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick, is_nfkc_quick};

/// Settings of the `normalize` stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeConfig {
    /// Unicode normal form: `nfc` (default), `nfkc` (also folds full-width
    /// ASCII and compatibility characters) or `none`.
    pub form: NormalForm,
    /// Remove control characters other than `\n` and `\t` (C0, DEL, C1),
    /// zero-width and bidi-override characters, and U+FEFF.
    pub remove_control: bool,
    /// Remove ANSI escape sequences (`ESC [ … m` colours and other CSI/OSC).
    pub strip_ansi: bool,
    /// Normalise whitespace: `\r\n` and `\r` to `\n`, Unicode spaces to
    /// ASCII space, runs of spaces and tabs to one space, spaces at line
    /// ends removed, more than two newlines in a row to two, and the text
    /// trimmed.
    pub whitespace: bool,
    /// Strip HTML: drop tags, comments, `<script>` and `<style>` contents,
    /// decode entities, and break lines at block elements.
    pub strip_html: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            form: NormalForm::Nfc,
            remove_control: true,
            strip_ansi: true,
            whitespace: true,
            strip_html: false,
        }
    }
}

/// Unicode normal forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormalForm {
    /// Canonical composition.
    Nfc,
    /// Compatibility composition.
    Nfkc,
    /// Leave as is.
    None,
}

/// The `normalize` stage.
#[derive(Debug, Clone, Default)]
pub struct Normalizer {
    config: NormalizeConfig,
}

impl Normalizer {
    /// A normaliser with `config`.
    pub fn new(config: NormalizeConfig) -> Self {
        Normalizer { config }
    }

    /// Normalises `text`.
    ///
    /// ```
    /// use kaiyuan_data::normalize::{Normalizer, NormalizeConfig};
    /// let n = Normalizer::new(NormalizeConfig::default());
    /// assert_eq!(n.normalize("\x1b[31mred\x1b[0m  text \r\n\n\n\nend\u{200b}"), "red text\n\nend");
    /// ```
    pub fn normalize(&self, text: &str) -> String {
        self.normalize_cow(text).into_owned()
    }

    /// [`Normalizer::normalize`], borrowing `text` when nothing changes.
    fn normalize_cow<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let c = &self.config;
        let mut current: Cow<'a, str> = Cow::Borrowed(text);
        if c.strip_html && (current.contains('<') || current.contains('&')) {
            current = Cow::Owned(strip_html(&current));
        }
        if c.strip_ansi && current.contains('\x1b') {
            current = Cow::Owned(strip_ansi(&current));
        }
        if c.remove_control && has_removable_control(&current) {
            current = Cow::Owned(
                current
                    .chars()
                    .filter(|&ch| !is_removable_control(ch))
                    .collect(),
            );
        }
        match c.form {
            NormalForm::Nfc => {
                if quick_check_from_non_ascii(&current, is_nfc_quick) != IsNormalized::Yes {
                    current = Cow::Owned(current.nfc().collect());
                }
            }
            NormalForm::Nfkc => {
                if quick_check_from_non_ascii(&current, is_nfkc_quick) != IsNormalized::Yes {
                    current = Cow::Owned(current.nfkc().collect());
                }
            }
            NormalForm::None => {}
        }
        if c.whitespace && whitespace_needs_normalizing(&current) {
            Cow::Owned(normalize_whitespace(&current))
        } else {
            current
        }
    }
}

/// A quick check of a normal form on `text`: the checks treat every ASCII
/// character as allowed and as resetting their state, so they start at
/// the first non-ASCII character (ASCII text is in every normal form).
fn quick_check_from_non_ascii<'a>(
    text: &'a str,
    check: impl Fn(std::str::Chars<'a>) -> IsNormalized,
) -> IsNormalized {
    match text.bytes().position(|b| b >= 0x80) {
        Some(at) => check(text[at..].chars()),
        None => IsNormalized::Yes,
    }
}

/// Whether `text` holds an [`is_removable_control`] character, a byte at a
/// time: the non-ASCII ones start with the lead bytes C2 (C1 controls), E2
/// (U+200B–U+2069) and EF (U+FEFF).
fn has_removable_control(text: &str) -> bool {
    let bytes = text.as_bytes();
    // Blocks without a control byte or one of those lead bytes are skipped
    // by a check without branches (vectorised).
    let suspicious = |b: u8| {
        (b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r')
            | (b == 0x7f)
            | (b == 0xC2)
            | (b == 0xE2)
            | (b == 0xEF)
    };
    let mut from = 0;
    while from < bytes.len() {
        let to = (from + BLOCK).min(bytes.len());
        if bytes[from..to]
            .iter()
            .fold(false, |acc, &b| acc | suspicious(b))
            && has_removable_control_in(text, from, to)
        {
            return true;
        }
        from = to;
    }
    false
}

/// Bytes per block of the vectorised pre-checks.
const BLOCK: usize = 64;

/// [`has_removable_control`] for the characters starting in
/// `text[from..to]` (`from` a character boundary).
fn has_removable_control_in(text: &str, from: usize, to: usize) -> bool {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate().take(to).skip(from) {
        match b {
            0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f => return true,
            0xC2 | 0xE2 | 0xEF if text[i..].chars().next().is_some_and(is_removable_control) => {
                return true;
            }
            _ => {}
        }
    }
    false
}

impl DocumentStage for Normalizer {
    fn name(&self) -> &'static str {
        "normalize"
    }

    fn apply(&self, text: &str, _ctx: &mut DocContext) -> Outcome {
        let normalized = self.normalize_cow(text);
        if normalized.is_empty() {
            return Outcome::Drop(Rejection::new(
                "normalize.empty",
                "no text left after normalisation",
            ));
        }
        match normalized {
            Cow::Borrowed(_) => Outcome::Keep,
            Cow::Owned(normalized) if normalized == text => Outcome::Keep,
            Cow::Owned(normalized) => Outcome::Replace(normalized),
        }
    }
}

/// Control and invisible characters that carry no text: C0 controls other
/// than tab and newline (carriage returns are handled by the whitespace
/// rule), DEL, C1 controls, zero-width spaces and joiners' misuse markers,
/// bidi overrides and the byte-order mark.
fn is_removable_control(c: char) -> bool {
    match c {
        '\n' | '\t' | '\r' => false,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{200b}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}' => true,
        _ => false,
    }
}

/// Removes ANSI escape sequences: CSI (`ESC [` parameters, final byte
/// 0x40–0x7E), OSC (`ESC ]` … BEL or `ESC \`) and two-byte escapes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\x1b' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

/// True when [`normalize_whitespace`] would change `text`.
pub fn whitespace_needs_normalizing(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.first().is_some_and(|b| b.is_ascii_whitespace())
        || bytes.last().is_some_and(|b| b.is_ascii_whitespace())
    {
        return true;
    }
    // A block can only answer true where a byte is \r, \t, \v or \f, a
    // space or newline follows a space or newline, or a byte is one of the
    // lead bytes below: blocks without any are skipped by a check without
    // branches (vectorised); the others are scanned exactly, the scan
    // resuming with the two bytes before the block.
    let flagged = |cur: &[u8], prev: &[u8]| {
        let mut acc = false;
        for (&b, &p) in cur.iter().zip(prev) {
            let space_or_newline = |x: u8| (x == b' ') | (x == b'\n');
            acc |= (b == b'\r')
                | (b == b'\t')
                | (b == 0x0b)
                | (b == 0x0c)
                | (b == 0xC2)
                | (b == 0xE1)
                | (b == 0xE2)
                | (b == 0xE3)
                | (space_or_newline(b) & space_or_newline(p));
        }
        acc
    };
    // The first block is scanned as it is.
    let first = bytes.len().min(BLOCK);
    if whitespace_needs_normalizing_in(text, 0, first, 0, 0) {
        return true;
    }
    let mut from = first;
    while from < bytes.len() {
        let to = (from + BLOCK).min(bytes.len());
        if flagged(&bytes[from..to], &bytes[from - 1..to - 1])
            && whitespace_needs_normalizing_in(text, from, to, bytes[from - 1], bytes[from - 2])
        {
            return true;
        }
        from = to;
    }
    false
}

/// The scan of [`whitespace_needs_normalizing`] over `text[from..to]`,
/// given the two bytes before (0 at the start).
fn whitespace_needs_normalizing_in(
    text: &str,
    from: usize,
    to: usize,
    mut prev: u8,
    mut prev2: u8,
) -> bool {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate().take(to).skip(from) {
        match b {
            b'\r' | b'\t' | 0x0b | 0x0c => return true,
            b' ' if prev == b' ' || prev == b'\n' => return true,
            b'\n' if prev == b' ' || (prev == b'\n' && prev2 == b'\n') => return true,
            // Non-ASCII: Unicode spaces (U+0085, U+00A0, U+1680, U+2000–U+200A,
            // U+2028/9, U+202F, U+205F, U+3000) start with these lead bytes.
            0xC2 | 0xE1 | 0xE2 | 0xE3
                if text
                    .get(i..)
                    .and_then(|t| t.chars().next())
                    .is_some_and(char::is_whitespace) =>
            {
                return true;
            }
            _ => {}
        }
        prev2 = prev;
        prev = b;
    }
    false
}

/// Normalises whitespace as [`NormalizeConfig::whitespace`] describes.
pub fn normalize_whitespace(text: &str) -> String {
    if !whitespace_needs_normalizing(text) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    let mut newlines = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let c = if c == '\r' {
            if chars.peek() == Some(&'\n') {
                continue;
            }
            '\n'
        } else {
            c
        };
        if c == '\n' || c == '\u{2028}' || c == '\u{2029}' {
            newlines += 1;
            pending_space = false;
            continue;
        }
        if c == ' ' || c == '\t' || (c.is_whitespace() && c != '\n') {
            pending_space = true;
            continue;
        }
        if !out.is_empty() {
            if newlines > 0 {
                out.push_str(if newlines >= 2 { "\n\n" } else { "\n" });
            } else if pending_space {
                out.push(' ');
            }
        }
        newlines = 0;
        pending_space = false;
        out.push(c);
    }
    out
}

const BLOCK_TAGS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "pre",
    "hr",
    "dt",
    "dd",
    "title",
    "nav",
    "td",
    "th",
];

/// Strips HTML tags, comments, `<script>`/`<style>` contents, and decodes
/// the common named and all numeric entities. Block elements become line
/// breaks.
///
/// ```
/// use kaiyuan_data::normalize::strip_html;
/// assert_eq!(strip_html("<p>A &amp; B</p><script>x()</script><p>&#20013;文</p>"), "\nA & B\n\n中文\n");
/// ```
pub fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let bytes = html.as_bytes();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map_or(rest.len(), |end| end + 3);
            continue;
        }
        if bytes[i] == b'<' {
            let Some(end) = rest.find('>') else {
                out.push_str(rest);
                break;
            };
            let tag = &rest[1..end];
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if name.is_empty() {
                // Not a tag ("a < b"): keep the character.
                out.push('<');
                i += 1;
                continue;
            }
            i += end + 1;
            if !tag.starts_with('/') && (name == "script" || name == "style") {
                let close = format!("</{name}");
                let lower = html[i..].to_ascii_lowercase();
                i += lower.find(&close).map_or(html.len() - i, |at| {
                    let after = &lower[at..];
                    at + after.find('>').map_or(after.len(), |e| e + 1)
                });
                continue;
            }
            if BLOCK_TAGS.contains(&name.as_str()) {
                out.push('\n');
            }
            continue;
        }
        if bytes[i] == b'&'
            && let Some((decoded, len)) = decode_entity(rest)
        {
            out.push(decoded);
            i += len;
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn decode_entity(rest: &str) -> Option<(char, usize)> {
    let end = rest[..rest.len().min(12)].find(';')?;
    let body = &rest[1..end];
    let c = if let Some(num) = body.strip_prefix('#') {
        let code = if let Some(hex) = num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
            u32::from_str_radix(hex, 16).ok()?
        } else {
            num.parse::<u32>().ok()?
        };
        char::from_u32(code)?
    } else {
        match body {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => '\u{a0}',
            "mdash" => '—',
            "ndash" => '–',
            "hellip" => '…',
            "copy" => '©',
            "reg" => '®',
            "laquo" => '«',
            "raquo" => '»',
            "ldquo" => '“',
            "rdquo" => '”',
            "lsquo" => '‘',
            "rsquo" => '’',
            _ => return None,
        }
    };
    Some((c, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The naive reference of the whitespace rule, written from its
    /// definition with one pass per rule.
    fn naive_whitespace(text: &str) -> String {
        let text = text
            .replace("\r\n", "\n")
            .replace(['\r', '\u{2028}', '\u{2029}'], "\n");
        let lines: Vec<String> = text
            .split('\n')
            .map(|line| {
                line.split(|c: char| c.is_whitespace())
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let mut out = lines.join("\n");
        while out.contains("\n\n\n") {
            out = out.replace("\n\n\n", "\n\n");
        }
        out.trim_matches('\n').to_string()
    }

    proptest! {
        #[test]
        fn whitespace_matches_naive(text in "[a b\\t\\r\\n\u{a0}\u{3000}中x©。]{0,200}") {
            prop_assert_eq!(normalize_whitespace(&text), naive_whitespace(&text));
            prop_assert_eq!(whitespace_needs_normalizing(&text), normalize_whitespace(&text) != text);
        }

        /// The block pre-checks skip only blocks the exact scans would pass
        /// (texts that are mostly clean, with one thing to find somewhere).
        #[test]
        fn block_prechecks_equal_scans(
            text in "([a-z“”é]{1,8}[ \n]){0,60}( |  |\n\n\n| \n|\t|\u{a0}|\u{2028}|\r|\x01|\u{200b}|\u{9f}|\u{feff}|\u{7f})?([a-z]{1,8}[ \n]){0,30}[a-z]"
        ) {
            let bytes = text.as_bytes();
            let edges = bytes.first().is_some_and(|b| b.is_ascii_whitespace())
                || bytes.last().is_some_and(|b| b.is_ascii_whitespace());
            prop_assert_eq!(
                whitespace_needs_normalizing(&text),
                edges || whitespace_needs_normalizing_in(&text, 0, text.len(), 0, 0)
            );
            prop_assert_eq!(has_removable_control(&text), text.chars().any(is_removable_control));
        }

        /// The byte-level checks answer like the character-level ones.
        #[test]
        fn fast_checks_equal_naive(
            text in "[a \t\r\n\x00-\x1f\x7f\u{80}-\u{a0}\u{200b}-\u{2070}\u{feff}e\u{301}\u{300}\u{327}ÅΩ中x]{0,200}|\\PC{0,200}"
        ) {
            prop_assert_eq!(has_removable_control(&text), text.chars().any(is_removable_control));
            prop_assert_eq!(quick_check_from_non_ascii(&text, is_nfc_quick), is_nfc_quick(text.chars()));
            prop_assert_eq!(quick_check_from_non_ascii(&text, is_nfkc_quick), is_nfkc_quick(text.chars()));
            // The stage keeps exactly the texts that normalise to themselves.
            for form in [NormalForm::Nfc, NormalForm::Nfkc] {
                let n = Normalizer::new(NormalizeConfig { form, ..NormalizeConfig::default() });
                let want = n.normalize(&text);
                let got = match n.apply(&text, &mut DocContext::default()) {
                    Outcome::Keep => text.clone(),
                    Outcome::Replace(t) => { prop_assert_ne!(&t, &text); t }
                    Outcome::Drop(_) => { prop_assert!(want.is_empty()); String::new() }
                };
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn nfkc_folds_full_width_and_html_is_stripped() {
        let n = Normalizer::new(NormalizeConfig {
            form: NormalForm::Nfkc,
            strip_html: true,
            ..NormalizeConfig::default()
        });
        assert_eq!(n.normalize("<b>ＡＢＣ１２３</b>&nbsp;ok"), "ABC123 ok");
        let n = Normalizer::new(NormalizeConfig::default());
        assert_eq!(n.normalize("e\u{301}"), "é");
        assert_eq!(n.normalize("a\u{0}b\u{7f}c\u{9b}d"), "abcd");
    }
}
