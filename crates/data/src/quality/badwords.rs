//! A bad-word list filter with the matching rules of datatrove's
//! `C4BadWordsFilter`: the document is lowercased; an entry written in a
//! script without spaces (one holding a CJK character) matches anywhere, as
//! a substring, and any other entry matches only between non-word
//! characters (Python's `(?:\W|^)word(?:\W|$)`).

use super::chars::py_is_word;
use super::load_word_list;
use crate::error::{DataError, Result};
use crate::stage::{DocContext, DocumentStage, Outcome, Rejection};
use crate::text::is_cjk;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Settings of [`BadWords`]. No list ships with the crate: configure a file
/// (e.g. a checkout of the LDNOOBW lists C4 used) or inline words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BadWordsConfig {
    /// Files of entries, one per line (blank lines and `#` comments skipped).
    pub files: Vec<String>,
    /// Entries given inline.
    pub words: Vec<String>,
    /// Entries never matched even if listed (datatrove's allow-list: `sm`,
    /// `グロ`, `女の子`, `性`, which are common parts of ordinary words).
    pub allowlist: Vec<String>,
}

impl Default for BadWordsConfig {
    fn default() -> Self {
        BadWordsConfig {
            files: Vec::new(),
            words: Vec::new(),
            allowlist: ["sm", "グロ", "女の子", "性"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    word: String,
    substring: bool,
}

/// Drops documents containing a listed word (stage `bad_words`, code
/// `bad_words.found`).
///
/// ```
/// use kaiyuan_data::quality::{BadWords, BadWordsConfig};
/// use kaiyuan_data::{DocContext, DocumentStage, Outcome, Rejection};
///
/// let cfg = BadWordsConfig { words: vec!["spam".into(), "垃圾".into()], ..Default::default() };
/// let stage = BadWords::new(cfg)?;
/// let mut ctx = DocContext::default();
/// assert!(matches!(stage.apply("No SPAM here!", &mut ctx), Outcome::Drop(_)));
/// let found = Rejection::new("bad_words.found", "contains \"spam\"");
/// assert_eq!(stage.apply("not spam-free", &mut ctx), Outcome::Drop(found));
/// assert_eq!(stage.apply("spammers everywhere", &mut ctx), Outcome::Keep);
/// assert!(matches!(stage.apply("这是垃圾邮件", &mut ctx), Outcome::Drop(_)));
/// # Ok::<(), kaiyuan_data::DataError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BadWords {
    /// Entries by their first character.
    by_first: HashMap<char, Vec<Entry>>,
    ascii_first: [bool; 128],
}

impl BadWords {
    /// Builds the stage, reading the files.
    pub fn new(config: BadWordsConfig) -> Result<Self> {
        let mut words: Vec<String> = Vec::new();
        for (i, f) in config.files.iter().enumerate() {
            words.extend(load_word_list(f, &format!("bad_words.files[{i}]"))?);
        }
        words.extend(
            config
                .words
                .iter()
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty()),
        );
        let allow: Vec<String> = config.allowlist.iter().map(|w| w.to_lowercase()).collect();
        let mut by_first: HashMap<char, Vec<Entry>> = HashMap::new();
        let mut ascii_first = [false; 128];
        for w in words {
            let w = w.to_lowercase();
            if allow.contains(&w) {
                continue;
            }
            let Some(first) = w.chars().next() else {
                continue;
            };
            if first.is_ascii() {
                ascii_first[first as usize] = true;
            }
            let substring = w.chars().any(is_cjk);
            let list = by_first.entry(first).or_default();
            if !list.iter().any(|e| e.word == w) {
                list.push(Entry { word: w, substring });
            }
        }
        if by_first.is_empty() {
            return Err(DataError::config(
                "bad_words.files",
                "no word list configured (set `files` or `words`)",
            ));
        }
        Ok(BadWords {
            by_first,
            ascii_first,
        })
    }

    /// The first listed word found in `text`, if any.
    pub fn find(&self, text: &str) -> Option<&str> {
        let lower = text.to_lowercase();
        let mut prev_is_word = false;
        for (i, c) in lower.char_indices() {
            let candidate = if c.is_ascii() {
                self.ascii_first[c as usize]
            } else {
                true
            };
            if candidate && let Some(list) = self.by_first.get(&c) {
                let rest = &lower[i..];
                for e in list {
                    if !rest.starts_with(e.word.as_str()) {
                        continue;
                    }
                    if e.substring {
                        return Some(&e.word);
                    }
                    let after = rest[e.word.len()..].chars().next();
                    if !prev_is_word && !after.is_some_and(py_is_word) {
                        return Some(&e.word);
                    }
                }
            }
            prev_is_word = py_is_word(c);
        }
        None
    }
}

impl DocumentStage for BadWords {
    fn name(&self) -> &'static str {
        "bad_words"
    }

    fn apply(&self, text: &str, _ctx: &mut DocContext) -> Outcome {
        match self.find(text) {
            Some(w) => Outcome::Drop(Rejection::new("bad_words.found", format!("contains {w:?}"))),
            None => Outcome::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_like_python_regex() {
        let cfg = BadWordsConfig {
            words: vec![
                "ab".into(),
                "a b".into(),
                "x-y".into(),
                "性".into(),
                "坏词".into(),
            ],
            ..Default::default()
        };
        let s = BadWords::new(cfg).ok().unwrap_or_else(|| unreachable!());
        assert_eq!(s.find("AB"), Some("ab"));
        assert_eq!(s.find("(ab)"), Some("ab"));
        assert_eq!(s.find("abc"), None);
        assert_eq!(s.find("cab"), None);
        assert_eq!(s.find("_ab"), None);
        assert_eq!(s.find("éab"), None);
        assert_eq!(s.find("say a b!"), Some("a b"));
        assert_eq!(s.find("x-y"), Some("x-y"));
        // Allow-listed, even though listed.
        assert_eq!(s.find("性别"), None);
        assert_eq!(s.find("这是坏词们"), Some("坏词"));
        let none = BadWords::new(BadWordsConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(none.contains("bad_words.files"), "{none}");
    }
}
