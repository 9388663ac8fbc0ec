//! C4's line and page rules (Raffel et al. 2020), as datatrove 0.10.1's
//! `C4QualityFilter` implements them: lines are removed and the document is
//! rewritten, or the whole page is dropped.

use super::chars::{
    in_ranges, py_split, py_split_count, py_split_longer_than, py_splitlines, py_strip,
};
use super::{
    ChineseMode, ZH_CLOSERS, ZH_TERMINAL, simple_word_count, spacy_en, tables, with_scratch,
    zh_sentence_count,
};
use crate::error::Result;
use crate::stage::{DocContext, DocumentStage, Outcome, Rejection};
use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Settings of [`C4Quality`]; the defaults are datatrove's
/// `C4QualityFilter` defaults (as in the C4 paper). The integer thresholds
/// take `-1` to disable them, as in datatrove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C4QualityConfig {
    /// Work on lines (`true`, C4's choice) or on spaCy sentences (`false`,
    /// kept sentences are then joined with spaces).
    pub split_paragraph: bool,
    /// Remove Wikipedia-style citations `[1]`, `[edit]`, `[citation needed]`.
    pub remove_citations: bool,
    /// Remove lines that do not end in `.`, `?`, `!`, `"` or `'` (or that end
    /// in `...`).
    pub filter_no_terminal_punct: bool,
    /// Drop the page when fewer sentences than this remain (5; counted with
    /// spaCy's sentencizer).
    pub min_num_sentences: i64,
    /// Remove lines with fewer whitespace-separated words (3).
    pub min_words_per_line: i64,
    /// Remove lines with a word longer than this many characters (1000).
    pub max_word_length: i64,
    /// Drop pages containing "lorem ipsum".
    pub filter_lorem_ipsum: bool,
    /// Remove lines mentioning "javascript".
    pub filter_javascript: bool,
    /// Drop pages containing `{`.
    pub filter_curly_bracket: bool,
    /// Remove lines about terms of use, privacy or cookie policies.
    pub filter_policy: bool,
    /// When to use the Chinese variant.
    pub chinese: ChineseMode,
    /// Thresholds of the Chinese variant.
    pub zh: C4QualityZh,
}

/// The Chinese variant of [`C4Quality`]: a line ends a sentence when it ends
/// in `。！？；…．` (or the English marks), optionally followed by closing
/// quotes or brackets; words are CJK characters (plus whitespace-separated
/// non-CJK words); sentences are counted at Chinese and ASCII terminal
/// punctuation; policy lines also match 隐私政策, 隐私条款, 使用条款 and
/// 服务条款. The other rules are shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C4QualityZh {
    /// Remove lines with fewer words (5: three English words are about five
    /// Chinese characters).
    pub min_words_per_line: i64,
    /// Drop the page when fewer sentences remain (5).
    pub min_num_sentences: i64,
}

impl Default for C4QualityConfig {
    fn default() -> Self {
        C4QualityConfig {
            split_paragraph: true,
            remove_citations: true,
            filter_no_terminal_punct: true,
            min_num_sentences: 5,
            min_words_per_line: 3,
            max_word_length: 1000,
            filter_lorem_ipsum: true,
            filter_javascript: true,
            filter_curly_bracket: true,
            filter_policy: true,
            chinese: ChineseMode::Auto,
            zh: C4QualityZh::default(),
        }
    }
}

impl Default for C4QualityZh {
    fn default() -> Self {
        C4QualityZh {
            min_words_per_line: 5,
            min_num_sentences: 5,
        }
    }
}

const POLICY_SUBSTRINGS: &[&str] = &[
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];
const ZH_POLICY_SUBSTRINGS: &[&str] = &["隐私政策", "隐私条款", "使用条款", "服务条款"];

/// C4's heuristics (stage `c4_quality`): removes lines without terminal
/// punctuation, with fewer than 3 words, with a word over 1000 characters,
/// mentioning javascript or a policy, strips citations, and answers
/// [`Outcome::Replace`] with the remaining lines; drops the page with
/// `c4_quality.lorem_ipsum`, `c4_quality.curly_bracket` or
/// `c4_quality.too_few_sentences` (datatrove's `lorem_ipsum`,
/// `curly_bracket`, `too_few_sentences`).
#[derive(Debug, Clone)]
pub struct C4Quality {
    config: C4QualityConfig,
}

impl C4Quality {
    /// Builds the stage.
    pub fn new(config: C4QualityConfig) -> Result<Self> {
        Ok(C4Quality { config })
    }

    /// The settings.
    pub fn config(&self) -> &C4QualityConfig {
        &self.config
    }
}

/// Python's `re.sub(r"\[\d*]|\[edit]|\[citation needed]", "", line)`.
fn remove_citations<'a>(line: &'a str, out: &'a mut String) -> &'a str {
    if !line.contains('[') {
        return line;
    }
    out.clear();
    let mut rest = line;
    while let Some(p) = rest.find('[') {
        out.push_str(&rest[..p]);
        let tail = &rest[p..];
        let after = &tail[1..];
        let digits: usize = after
            .chars()
            .take_while(|&c| in_ranges(tables::PY_DIGIT, c))
            .map(char::len_utf8)
            .sum();
        let skip = if after[digits..].starts_with(']') {
            1 + digits + 1
        } else if tail.starts_with("[edit]") {
            6
        } else if tail.starts_with("[citation needed]") {
            17
        } else {
            out.push('[');
            1
        };
        rest = &tail[skip..];
    }
    out.push_str(rest);
    out.as_str()
}

/// Substring searchers built once: `str::contains` sets one up per call.
struct Finders {
    lorem: Finder<'static>,
    javascript: Finder<'static>,
    policy: Vec<Finder<'static>>,
    zh_policy: Vec<Finder<'static>>,
}

fn finders() -> &'static Finders {
    static FINDERS: OnceLock<Finders> = OnceLock::new();
    FINDERS.get_or_init(|| Finders {
        lorem: Finder::new("lorem ipsum"),
        javascript: Finder::new("javascript"),
        policy: POLICY_SUBSTRINGS.iter().map(Finder::new).collect(),
        zh_policy: ZH_POLICY_SUBSTRINGS.iter().map(Finder::new).collect(),
    })
}

fn lower_into(line: &str, buf: &mut String) {
    buf.clear();
    if line.is_ascii() {
        buf.push_str(line);
        buf.make_ascii_lowercase();
    } else {
        buf.push_str(&line.to_lowercase());
    }
}

fn ends_terminal(line: &str) -> bool {
    line.ends_with(['.', '?', '!', '"', '\'']) && !line.ends_with("...")
}

fn ends_terminal_zh(line: &str) -> bool {
    if ends_terminal(line) {
        return true;
    }
    let core = line.trim_end_matches(ZH_CLOSERS);
    core.ends_with(ZH_TERMINAL) || core.ends_with(['.', '?', '!'])
}

/// datatrove's `split_into_sentences(text)` for English: the pieces between
/// the ends of spaCy's sentences.
fn sentence_pieces(text: &str, toks: &[spacy_en::Token]) -> Vec<(usize, usize)> {
    let ends = spacy_en::sentence_ends_of(text, toks);
    let mut pieces = Vec::with_capacity(ends.len().max(1));
    let mut start = 0usize;
    for (k, &e) in ends.iter().enumerate() {
        let end = if k + 1 == ends.len() { text.len() } else { e };
        pieces.push((start, end));
        start = end;
    }
    if pieces.is_empty() {
        pieces.push((0, text.len()));
    }
    pieces
}

impl DocumentStage for C4Quality {
    fn name(&self) -> &'static str {
        "c4_quality"
    }

    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        let c = &self.config;
        let zh = c.chinese.applies(ctx);
        let (min_words, min_sentences) = if zh {
            (c.zh.min_words_per_line, c.zh.min_num_sentences)
        } else {
            (c.min_words_per_line, c.min_num_sentences)
        };
        with_scratch(|s| {
            let pieces: Vec<&str> = if c.split_paragraph {
                py_splitlines(text).collect()
            } else {
                s.tokens(text);
                sentence_pieces(text, &s.toks)
                    .into_iter()
                    .map(|(a, b)| &text[a..b])
                    .collect()
            };
            let total = pieces.len();
            let mut num_sentences: i64 = 0;
            let mut kept: Vec<String> = Vec::new();
            let mut cite_buf = String::new();
            for raw in pieces {
                let line = py_strip(raw);
                let n_words = if zh {
                    simple_word_count(line, true)
                } else {
                    py_split_count(line)
                };
                if c.max_word_length != -1
                    && match usize::try_from(c.max_word_length) {
                        Ok(max) => py_split_longer_than(line, max),
                        // Every word is longer than a negative maximum.
                        Err(_) => py_split(line).next().is_some(),
                    }
                {
                    continue;
                }
                // A line without citations is a slice of `text`.
                let cited = c.remove_citations && line.contains('[');
                let line = if cited {
                    remove_citations(line, &mut cite_buf)
                } else {
                    line
                };
                if c.filter_no_terminal_punct
                    && !(if zh {
                        ends_terminal_zh(line)
                    } else {
                        ends_terminal(line)
                    })
                {
                    continue;
                }
                if (n_words as i64) < min_words {
                    continue;
                }
                lower_into(line, &mut s.buf);
                let lower = s.buf.as_bytes();
                let f = finders();
                if c.filter_lorem_ipsum && f.lorem.find(lower).is_some() {
                    return Outcome::Drop(Rejection::new(
                        "c4_quality.lorem_ipsum",
                        "page contains \"lorem ipsum\"",
                    ));
                }
                if c.filter_javascript && f.javascript.find(lower).is_some() {
                    continue;
                }
                if c.filter_curly_bracket && line.contains('{') {
                    return Outcome::Drop(Rejection::new(
                        "c4_quality.curly_bracket",
                        "page contains '{'",
                    ));
                }
                if c.filter_policy
                    && (f.policy.iter().any(|p| p.find(lower).is_some())
                        || (zh && f.zh_policy.iter().any(|p| p.find(lower).is_some())))
                {
                    continue;
                }
                if min_sentences != -1 {
                    num_sentences += if !c.split_paragraph {
                        1
                    } else if zh {
                        zh_sentence_count(line) as i64
                    } else if cited {
                        spacy_en::sentence_count(line, &mut s.line_toks) as i64
                    } else {
                        // The document's tokens (shared with the other
                        // stages) within the line are the line's tokens.
                        s.tokens(text);
                        let at = line.as_ptr() as usize - text.as_ptr() as usize;
                        let toks = spacy_en::tokens_within(&s.toks, at..at + line.len());
                        spacy_en::sentence_count_of(text, toks) as i64
                    };
                }
                kept.push(line.to_string());
            }
            ctx.record("c4.sentences", num_sentences as f64);
            if total > 0 {
                ctx.record("c4.lines_kept_ratio", kept.len() as f64 / total as f64);
            }
            if num_sentences < min_sentences {
                return Outcome::Drop(Rejection::new(
                    "c4_quality.too_few_sentences",
                    format!("{num_sentences} sentences in kept lines < {min_sentences}"),
                ));
            }
            let joined = kept.join(if c.split_paragraph { "\n" } else { " " });
            let result = py_strip(&joined);
            if result == text {
                Outcome::Keep
            } else {
                Outcome::Replace(result.to_string())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::Language;

    fn run(stage: &C4Quality, text: &str, ctx: &mut DocContext) -> Result<String, &'static str> {
        match stage.apply(text, ctx) {
            Outcome::Keep => Ok(text.to_string()),
            Outcome::Replace(t) => Ok(t),
            Outcome::Drop(r) => Err(r.code),
        }
    }

    #[test]
    fn citations() {
        let mut b = String::new();
        assert_eq!(
            remove_citations("a[1] b[edit] c[citation needed] d[x] e[]", &mut b),
            "a b c d[x] e"
        );
        let mut b = String::new();
        assert_eq!(remove_citations("no brackets", &mut b), "no brackets");
    }

    #[test]
    fn english_lines() {
        let stage = C4Quality::new(C4QualityConfig::default())
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut ctx = DocContext::default();
        let body = "This is the first sentence. It has two sentences.\n\
            Home | About | Contact\n\
            Please enable JavaScript to view the comments.\n\
            We use cookies to improve your experience.\n\
            Short line.\n\
            The third line is here. And a fourth sentence follows! Is this the fifth?[1]";
        let want = "This is the first sentence. It has two sentences.\n\
            The third line is here. And a fourth sentence follows! Is this the fifth?";
        assert_eq!(run(&stage, body, &mut ctx), Ok(want.to_string()));
        assert_eq!(
            run(&stage, "One sentence here. Two sentences here.", &mut ctx),
            Err("c4_quality.too_few_sentences")
        );
        let lorem = format!("{body}\nLorem ipsum dolor sit amet, consectetur adipiscing.");
        assert_eq!(run(&stage, &lorem, &mut ctx), Err("c4_quality.lorem_ipsum"));
        let code = format!("{body}\nfn main() {{ println!(\"hi\"); }} is code.");
        assert_eq!(
            run(&stage, &code, &mut ctx),
            Err("c4_quality.curly_bracket")
        );
    }

    #[test]
    fn chinese_lines() {
        let stage = C4Quality::new(C4QualityConfig::default())
            .ok()
            .unwrap_or_else(|| unreachable!());
        let mut ctx = DocContext {
            language: Some(Language::Zh),
            ..DocContext::default()
        };
        let text = "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？\n\
            首页 关于我们\n\
            人不知而不愠，不亦君子乎？他说：“好。”然后走了。\n\
            本网站的隐私政策如下所述。";
        let want = "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？\n人不知而不愠，不亦君子乎？他说：“好。”然后走了。";
        assert_eq!(run(&stage, text, &mut ctx), Ok(want.to_string()));
        // The English rules remove every Chinese line (no ASCII terminal mark).
        let mut en = DocContext::default();
        assert_eq!(
            run(&stage, text, &mut en),
            Err("c4_quality.too_few_sentences")
        );
    }

    #[test]
    fn sentence_mode() {
        let cfg = C4QualityConfig {
            split_paragraph: false,
            ..Default::default()
        };
        let stage = C4Quality::new(cfg).ok().unwrap_or_else(|| unreachable!());
        let mut ctx = DocContext::default();
        let text = "One sentence is here. Two sentences are here. Three are here. Four are here. Five are here. six";
        assert_eq!(
            run(&stage, text, &mut ctx),
            Ok("One sentence is here. Two sentences are here. Three are here. Four are here. Five are here.".to_string())
        );
    }
}
