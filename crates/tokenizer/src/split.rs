//! Splitting text into pre-tokens with a regular expression, with hand-written
//! scanners for the patterns of the common vocabularies.

use crate::{Result, TokenizerError};

/// A compiled split pattern: the regex, and a hand-written scanner when the
/// pattern is one this crate knows (same matches, much faster).
#[derive(Debug, Clone)]
pub struct SplitPattern {
    source: String,
    regex: fancy_regex::Regex,
    fast: Option<crate::scan::Scanner>,
}

impl SplitPattern {
    /// Compiles `pattern`; `origin` names the file for errors.
    pub fn new(origin: &str, pattern: &str) -> Result<Self> {
        let regex = fancy_regex::Regex::new(pattern).map_err(|e| TokenizerError::Regex {
            origin: origin.to_owned(),
            pattern: pattern.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self {
            source: pattern.to_owned(),
            fast: crate::scan::Scanner::for_pattern(pattern),
            regex,
        })
    }

    /// The pattern's source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Calls `found(start, end)` for each match, left to right (byte offsets).
    pub fn for_each_match(&self, text: &str, mut found: impl FnMut(usize, usize)) -> Result<()> {
        if let Some(scanner) = &self.fast {
            scanner.for_each_match(text, found);
            return Ok(());
        }
        self.for_each_regex_match(text, &mut found)
    }

    /// Like [`SplitPattern::for_each_match`] but always through the regex engine
    /// (the reference for the scanners).
    pub fn for_each_regex_match(
        &self,
        text: &str,
        found: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        for m in self.regex.find_iter(text) {
            let m = m.map_err(|e| TokenizerError::RegexRun {
                pattern: self.source.clone(),
                message: e.to_string(),
            })?;
            found(m.start(), m.end());
        }
        Ok(())
    }
}
