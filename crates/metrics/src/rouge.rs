//! ROUGE-N, ROUGE-L and ROUGE-Lsum exactly as Google's `rouge-score` 0.1.2
//! computes them (`rouge_scorer.RougeScorer`), with its tokenizer and its
//! Porter stemmer (nltk 3.10.4, see [`crate::porter`]).
//!
//! # Compatibility
//!
//! The scores are rouge-score's to the last bit: the tests compare every
//! pair of `fixtures/eval/text_pairs/pairs.jsonl` (and multi-sentence
//! documents built from them) with the references in `fixtures/eval/rouge/`,
//! written by `make_references.py` with rouge-score 0.1.2 and nltk 3.10.4, to
//! `1e-9` (the tolerance only absorbs the JSON parser's rounding). What
//! rouge-score does, and so what we do:
//!
//! - **Tokenizer** (`tokenize.tokenize`): Python's `str.lower()`, every run of
//!   characters other than `[a-z0-9]` becomes a space, split on spaces. So
//!   anything that is not an ASCII letter or digit after lower-casing is a
//!   separator: Chinese, accented letters, full-width forms all vanish, and a
//!   Chinese text scores 0 against anything. (Two non-ASCII characters do
//!   lower-case to ASCII: `İ` → `i̇` keeps its `i`, the Kelvin sign `K` → `k`.)
//! - **Stemmer** (`use_stemmer`): only tokens longer than three characters are
//!   stemmed, with nltk's Porter stemmer in its default `NLTK_EXTENSIONS`
//!   mode; tokens that would then not match `^[a-z0-9]+$` are dropped.
//! - **ROUGE-N** (`rouge1` … `rouge9`): clipped n-gram counts; precision
//!   divides by `max(prediction n-grams, 1)`, recall by `max(target n-grams,
//!   1)`.
//! - **ROUGE-L**: longest common subsequence of the two token sequences; 0 if
//!   either is empty.
//! - **ROUGE-Lsum**: the texts are split into sentences at `"\n"` (rouge-score
//!   does no other sentence splitting unless `split_summaries`); for every
//!   target sentence the union of one LCS with each prediction sentence —
//!   the LCS rouge-score's own backtracking picks, which decides the union —
//!   and the hits counted without reusing a token more often than either
//!   text holds it (ROUGE-1.5.5's rule).
//! - **F-measure**: `2·P·R / (P + R)`, 0 when `P + R = 0`.
//! - **`score_multi`**: per ROUGE type, the score of the target with the
//!   highest F-measure (the first one on ties, as `np.argmax`).
//!
//! Corpus scores ([`RougeCorpus`]) are the plain mean of the per-pair
//! scores. rouge-score's `BootstrapAggregator` reports a bootstrap estimate
//! (`mid` is the median of 1000 resampled means), which is close to but not
//! the mean; use the per-pair scores for resampling of your own.
//!
//! # Extensions
//!
//! - [`RougeTokenizer::Cjk`] makes every CJK ideograph, kana and hangul
//!   character a token of its own, so Chinese, Japanese and Korean text can
//!   be scored; everything else is tokenized as rouge-score does. Its
//!   references come from rouge-score's own `RougeScorer` given a Python
//!   tokenizer object that implements the same rule, so only the tokenizer
//!   is ours.
//! - `split_summaries` (sentence splitting for ROUGE-Lsum with nltk's Punkt
//!   model in rouge-score) is approximated by a punctuation rule; see
//!   [`RougeOptions::split_summaries`]. It is not covered by the
//!   compatibility tests.
//!
//! # Speed
//!
//! Tokens are interned to `u32` ids once per distinct word (stems cached per
//! scorer) and renumbered densely per pair; n-grams are compared as sorted
//! packed integer keys. ROUGE-L's LCS length uses the bit-parallel algorithm
//! (Allison–Dix / Hyyrö; `O(n·⌈m/64⌉)` time, one `⌈m/64⌉`-word mask per
//! distinct token of the shorter text), or rouge-score's dynamic program two
//! rows at a time (`O(n·m)` time, `O(m)` memory) when those masks would
//! exceed 32 MiB. ROUGE-Lsum with one sentence on each side equals that LCS
//! length; with more, it fills rouge-score's full table for each pair of
//! sentences (`O(r·c)` memory for the longest pair), because the union
//! depends on which LCS rouge-score's backtracking picks.

use std::fmt;
use std::str::FromStr;

use rustc_hash::FxHashMap;

use crate::error::{MetricsError, Result};
use crate::porter;

/// One ROUGE variant, named as rouge-score names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RougeType {
    /// ROUGE-N for n-grams of this length, 1 to 9 (`rouge1` … `rouge9`).
    N(u8),
    /// ROUGE-L: longest common subsequence of the whole texts (`rougeL`).
    L,
    /// ROUGE-Lsum: summary-level union LCS over sentences (`rougeLsum`).
    LSum,
}

impl RougeType {
    /// `rouge1`.
    pub const ROUGE1: Self = Self::N(1);
    /// `rouge2`.
    pub const ROUGE2: Self = Self::N(2);

    /// rouge-score's name: `rouge1` … `rouge9`, `rougeL`, `rougeLsum`.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::RougeType;
    ///
    /// assert_eq!(RougeType::N(2).name(), "rouge2");
    /// assert_eq!(RougeType::LSum.name(), "rougeLsum");
    /// ```
    pub fn name(self) -> String {
        match self {
            Self::N(n) => format!("rouge{n}"),
            Self::L => "rougeL".to_string(),
            Self::LSum => "rougeLsum".to_string(),
        }
    }

    fn check(self) -> Result<Self> {
        match self {
            Self::N(1..=9) | Self::L | Self::LSum => Ok(self),
            Self::N(n) => Err(MetricsError::option(
                "rouge-types",
                format!("ROUGE-N needs n from 1 to 9 (rouge-score's rouge1 … rouge9), got {n}"),
            )),
        }
    }
}

impl fmt::Display for RougeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for RougeType {
    type Err = MetricsError;

    /// rouge-score's names, case-sensitive: `rouge1` … `rouge9`, `rougeL`,
    /// `rougeLsum`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rougeL" => Ok(Self::L),
            "rougeLsum" => Ok(Self::LSum),
            "rouge0" => Err(MetricsError::option(
                "rouge-types",
                "rouge0: ROUGE-N needs a positive n",
            )),
            _ => match s.strip_prefix("rouge").map(str::as_bytes) {
                Some([d @ b'1'..=b'9']) => Ok(Self::N(d - b'0')),
                _ => Err(MetricsError::option(
                    "rouge-types",
                    format!(
                        "unknown ROUGE type {s:?}; expected rouge1 … rouge9, rougeL or rougeLsum"
                    ),
                )),
            },
        }
    }
}

/// How text becomes tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RougeTokenizer {
    /// rouge-score's `DefaultTokenizer`: lower-case, every run of characters
    /// other than `[a-z0-9]` is a separator. Text without ASCII letters or
    /// digits (Chinese, Japanese, Korean, full-width forms) has no tokens and
    /// scores 0 — rouge-score's documented behaviour, kept for
    /// compatibility.
    #[default]
    Default,
    /// Our extension for CJK text: every CJK ideograph, kana and hangul
    /// character is one token; the text between them is tokenized as
    /// [`RougeTokenizer::Default`] does (and stemmed, if stemming is on;
    /// CJK tokens never are). The characters: CJK Unified Ideographs with
    /// extension A (U+3400–U+4DBF, U+4E00–U+9FFF) and planes 2 and 3
    /// (U+20000–U+3FFFF), CJK Compatibility Ideographs (U+F900–U+FAFF),
    /// `々〆〇` (U+3005–U+3007), hiragana (U+3041–U+309F), katakana
    /// (U+30A1–U+30FA, U+30FC–U+30FF, U+31F0–U+31FF, half-width
    /// U+FF66–U+FF9F), hangul syllables and jamo (U+AC00–U+D7A3,
    /// U+1100–U+11FF, U+3131–U+318E, U+A960–U+A97F, U+D7B0–U+D7FF,
    /// half-width U+FFA0–U+FFDC). CJK punctuation (`，。「」`…) and
    /// full-width letters and digits remain separators.
    Cjk,
}

impl RougeTokenizer {
    /// The name [`FromStr`] accepts: `default` or `cjk`.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::RougeTokenizer;
    ///
    /// assert_eq!(RougeTokenizer::Cjk.name(), "cjk");
    /// assert_eq!("cjk".parse::<RougeTokenizer>().unwrap(), RougeTokenizer::Cjk);
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Cjk => "cjk",
        }
    }
}

impl fmt::Display for RougeTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RougeTokenizer {
    type Err = MetricsError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "default" => Ok(Self::Default),
            "cjk" => Ok(Self::Cjk),
            _ => Err(MetricsError::option(
                "tokenizer",
                format!("unknown ROUGE tokenizer {s:?}; expected default or cjk"),
            )),
        }
    }
}

/// Whether [`RougeTokenizer::Cjk`] makes `c` a token of its own.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF
        | 0x3005..=0x3007
        | 0x3041..=0x309F
        | 0x30A1..=0x30FA
        | 0x30FC..=0x30FF
        | 0x3131..=0x318E
        | 0x31F0..=0x31FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7A3
        | 0xD7B0..=0xD7FF
        | 0xF900..=0xFAFF
        | 0xFF66..=0xFF9F
        | 0xFFA0..=0xFFDC
        | 0x20000..=0x3FFFF)
}

/// What to compute and how to tokenize: `RougeScorer(rouge_types,
/// use_stemmer, split_summaries, tokenizer)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RougeOptions {
    /// The ROUGE variants, in the order the scores are reported. Default:
    /// `rouge1`, `rouge2`, `rougeL`, `rougeLsum`.
    pub types: Vec<RougeType>,
    /// Porter-stem tokens longer than three characters (rouge-score's
    /// `use_stemmer`). Default: off, as in rouge-score.
    pub use_stemmer: bool,
    /// The tokenizer. Default: rouge-score's.
    pub tokenizer: RougeTokenizer,
    /// ROUGE-Lsum's sentences. Off (the default, as in rouge-score): the
    /// text is split at `"\n"` only, so summaries need one sentence per
    /// line. On: rouge-score calls nltk's Punkt sentence tokenizer, whose
    /// trained English model we do not reproduce; we split after `.`, `!` or
    /// `?` (and any closing quotes or brackets) followed by whitespace, and
    /// after `。`, `！`, `？`. This is an approximation, not compatible with
    /// rouge-score: Punkt knows abbreviations (`Mr.`, `e.g.`) and we do not.
    pub split_summaries: bool,
}

impl Default for RougeOptions {
    fn default() -> Self {
        Self {
            types: vec![
                RougeType::N(1),
                RougeType::N(2),
                RougeType::L,
                RougeType::LSum,
            ],
            use_stemmer: false,
            tokenizer: RougeTokenizer::Default,
            split_summaries: false,
        }
    }
}

/// Precision, recall and F-measure (rouge-score's `Score`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    /// Matched units over the prediction's units.
    pub precision: f64,
    /// Matched units over the target's units.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub fmeasure: f64,
}

impl Score {
    /// A score from matched units and the two totals, with rouge-score's
    /// arithmetic (`hits / prediction_total`, `hits / target_total`,
    /// `2·P·R / (P + R)`).
    fn from_counts(hits: usize, prediction_total: usize, target_total: usize) -> Self {
        let precision = hits as f64 / prediction_total as f64;
        let recall = hits as f64 / target_total as f64;
        Self {
            precision,
            recall,
            fmeasure: fmeasure(precision, recall),
        }
    }
}

/// rouge-score's `scoring.fmeasure`.
fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// The scores of one prediction, one per requested [`RougeType`], in the
/// order of [`RougeOptions::types`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RougeScores {
    entries: Vec<(RougeType, Score)>,
}

impl RougeScores {
    /// The score of one type, if it was requested.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer, RougeType};
    ///
    /// let mut scorer = RougeScorer::new(RougeOptions::default())?;
    /// let scores = scorer.score("the cat sat", "the cat");
    /// assert_eq!(scores.get(RougeType::ROUGE1).unwrap().precision, 1.0);
    /// # Ok::<(), kaiyuan_metrics::MetricsError>(())
    /// ```
    pub fn get(&self, rouge_type: RougeType) -> Option<Score> {
        self.entries
            .iter()
            .find(|(t, _)| *t == rouge_type)
            .map(|(_, s)| *s)
    }

    /// `(type, score)` in the order of [`RougeOptions::types`].
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer};
    ///
    /// let mut scorer = RougeScorer::new(RougeOptions::default())?;
    /// let names: Vec<String> =
    ///     scorer.score("a b", "a b").iter().map(|(t, _)| t.name()).collect();
    /// assert_eq!(names, ["rouge1", "rouge2", "rougeL", "rougeLsum"]);
    /// # Ok::<(), kaiyuan_metrics::MetricsError>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (RougeType, Score)> + '_ {
        self.entries.iter().copied()
    }

    /// How many types there are.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::RougeScores;
    ///
    /// assert_eq!(RougeScores::default().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no scores.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::RougeScores;
    ///
    /// assert!(RougeScores::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Scores of a corpus: every pair's, and their mean.
#[derive(Debug, Clone, PartialEq)]
pub struct RougeCorpus {
    /// One entry per prediction, in input order.
    pub per_pair: Vec<RougeScores>,
    /// The arithmetic mean of `per_pair`, per type and per measure.
    pub mean: RougeScores,
}

/// rouge-score's tokenization of `text` (`DefaultTokenizer(use_stemmer)` or
/// our CJK extension), as strings.
///
/// ```
/// use kaiyuan_metrics::rouge::{RougeTokenizer, tokenize};
///
/// assert_eq!(
///     tokenize("The runners' 2nd-place finishes!", RougeTokenizer::Default, true),
///     ["the", "runner", "2nd", "place", "finish"]
/// );
/// assert_eq!(tokenize("他山之石", RougeTokenizer::Default, false), Vec::<String>::new());
/// assert_eq!(tokenize("他山 stones", RougeTokenizer::Cjk, true), ["他", "山", "stone"]);
/// ```
pub fn tokenize(text: &str, tokenizer: RougeTokenizer, use_stemmer: bool) -> Vec<String> {
    let mut vocab = Vocab::new(tokenizer, use_stemmer);
    let mut ids = Vec::new();
    vocab.tokenize(text, &mut ids);
    ids.iter()
        .map(|&id| vocab.strings[id as usize].to_string())
        .collect()
}

/// The vocabulary is forgotten between pairs once it holds this many words,
/// so memory stays bounded on endless streams.
const VOCAB_LIMIT: usize = 1 << 20;

/// Raw tokens → interned ids of their final (stemmed) form.
#[derive(Clone)]
struct Vocab {
    tokenizer: RougeTokenizer,
    use_stemmer: bool,
    /// Lower-cased raw token (or one CJK character) → id, or [`DROPPED`].
    raw: FxHashMap<Box<str>, u32>,
    /// Final token → id.
    finals: FxHashMap<Box<str>, u32>,
    /// id → final token.
    strings: Vec<Box<str>>,
    /// The token being read.
    buf: String,
}

/// The id of a raw token whose stem rouge-score drops (not `^[a-z0-9]+$`).
const DROPPED: u32 = u32::MAX;

impl Vocab {
    fn new(tokenizer: RougeTokenizer, use_stemmer: bool) -> Self {
        Self {
            tokenizer,
            use_stemmer,
            raw: FxHashMap::default(),
            finals: FxHashMap::default(),
            strings: Vec::new(),
            buf: String::new(),
        }
    }

    fn len(&self) -> usize {
        self.strings.len()
    }

    fn clear(&mut self) {
        self.raw.clear();
        self.finals.clear();
        self.strings.clear();
    }

    /// The id of `token`; `stemmable` is false for CJK tokens.
    fn intern(&mut self, token: &str, stemmable: bool) -> u32 {
        if let Some(&id) = self.raw.get(token) {
            return id;
        }
        let stemmed;
        let final_form = if stemmable && self.use_stemmer && token.len() > 3 {
            stemmed = porter::stem(token);
            stemmed.as_str()
        } else {
            token
        };
        // rouge-score keeps only tokens matching ^[a-z0-9]+$ after stemming
        // (our CJK tokens are kept as well).
        let valid = !final_form.is_empty()
            && (!stemmable
                || final_form
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let id = if !valid {
            DROPPED
        } else if let Some(&id) = self.finals.get(final_form) {
            id
        } else {
            let id = self.strings.len() as u32;
            self.strings.push(final_form.into());
            self.finals.insert(final_form.into(), id);
            id
        };
        self.raw.insert(token.into(), id);
        id
    }

    fn flush(&mut self, buf: &mut String, out: &mut Vec<u32>) {
        if !buf.is_empty() {
            let id = self.intern(buf, true);
            if id != DROPPED {
                out.push(id);
            }
            buf.clear();
        }
    }

    /// Appends the ids of `text`'s tokens to `out`.
    fn tokenize(&mut self, text: &str, out: &mut Vec<u32>) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let cjk = self.tokenizer == RougeTokenizer::Cjk;
        for c in text.chars() {
            if c.is_ascii() {
                if c.is_ascii_alphanumeric() {
                    buf.push(c.to_ascii_lowercase());
                } else {
                    self.flush(&mut buf, out);
                }
            } else if cjk && is_cjk(c) {
                self.flush(&mut buf, out);
                let mut utf8 = [0; 4];
                let id = self.intern(c.encode_utf8(&mut utf8), false);
                out.push(id);
            } else {
                // Only `İ` and the Kelvin sign lower-case to ASCII letters.
                for lower in c.to_lowercase() {
                    if lower.is_ascii_alphanumeric() {
                        buf.push(lower);
                    } else {
                        self.flush(&mut buf, out);
                    }
                }
            }
        }
        self.flush(&mut buf, out);
        self.buf = buf;
    }
}

/// The sentences of a text for ROUGE-Lsum, as byte ranges.
fn sentences(text: &str, split_summaries: bool) -> Vec<&str> {
    if !split_summaries {
        return text.split('\n').collect();
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        let terminal = matches!(c, '.' | '!' | '?');
        let cjk_terminal = matches!(c, '。' | '！' | '？');
        if !terminal && !cjk_terminal {
            continue;
        }
        while let Some(&(_, next)) = chars.peek() {
            if matches!(
                next,
                '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '」' | '』' | '）'
            ) {
                chars.next();
            } else {
                break;
            }
        }
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        let at_break = match chars.peek() {
            None => true,
            Some(&(_, next)) => cjk_terminal || next.is_whitespace(),
        };
        if at_break {
            out.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// A tokenized text: ids, and where each sentence ends (for ROUGE-Lsum).
#[derive(Clone, Default)]
struct Tokens {
    ids: Vec<u32>,
    sentence_ends: Vec<usize>,
}

/// Scratch space reused from pair to pair.
#[derive(Clone, Default)]
struct Work {
    /// Global id → generation it was last seen in / its local id.
    stamp: Vec<u32>,
    local: Vec<u32>,
    generation: u32,
    /// The pair's tokens as dense local ids `0..k`.
    target: Vec<u32>,
    prediction: Vec<u32>,
    keys_a: Vec<u64>,
    keys_b: Vec<u64>,
    counts_a: Vec<u32>,
    counts_b: Vec<u32>,
    lcs: LcsBuffers,
    table: Vec<u32>,
    marks: Vec<bool>,
}

impl Work {
    /// Renumbers the pair's tokens densely; returns the number of distinct
    /// tokens.
    fn localize(&mut self, vocab_len: usize, target: &[u32], prediction: &[u32]) -> usize {
        if self.stamp.len() < vocab_len {
            self.stamp.resize(vocab_len, 0);
            self.local.resize(vocab_len, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.fill(0);
            self.generation = 1;
        }
        let mut k = 0u32;
        for (ids, out) in [
            (target, &mut self.target),
            (prediction, &mut self.prediction),
        ] {
            out.clear();
            for &g in ids {
                let g = g as usize;
                if self.stamp[g] != self.generation {
                    self.stamp[g] = self.generation;
                    self.local[g] = k;
                    k += 1;
                }
                out.push(self.local[g]);
            }
        }
        k as usize
    }
}

/// Computes rouge-score's scores. Holds the options, an interned vocabulary
/// with cached stems, and scratch buffers — hence `&mut self`; clone one
/// scorer per thread to score in parallel.
#[derive(Clone)]
pub struct RougeScorer {
    options: RougeOptions,
    vocab: Vocab,
    target: Tokens,
    prediction: Tokens,
    work: Work,
}

impl fmt::Debug for RougeScorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RougeScorer")
            .field("options", &self.options)
            .field("vocabulary", &self.vocab.len())
            .finish()
    }
}

impl RougeScorer {
    /// A scorer for `options`. Fails on no types, a repeated type or
    /// ROUGE-N outside 1..=9.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer, RougeType};
    ///
    /// let options = RougeOptions {
    ///     types: vec![RougeType::ROUGE1, RougeType::L],
    ///     use_stemmer: true,
    ///     ..RougeOptions::default()
    /// };
    /// let scorer = RougeScorer::new(options)?;
    /// assert!(RougeScorer::new(RougeOptions { types: vec![], ..RougeOptions::default() }).is_err());
    /// # Ok::<(), kaiyuan_metrics::MetricsError>(())
    /// ```
    pub fn new(options: RougeOptions) -> Result<Self> {
        if options.types.is_empty() {
            return Err(MetricsError::option(
                "rouge-types",
                "no ROUGE type requested",
            ));
        }
        for (i, t) in options.types.iter().enumerate() {
            t.check()?;
            if options.types[..i].contains(t) {
                return Err(MetricsError::option(
                    "rouge-types",
                    format!("{t} is requested twice"),
                ));
            }
        }
        Ok(Self {
            vocab: Vocab::new(options.tokenizer, options.use_stemmer),
            options,
            target: Tokens::default(),
            prediction: Tokens::default(),
            work: Work::default(),
        })
    }

    /// The options this scorer was made with.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer};
    ///
    /// let scorer = RougeScorer::new(RougeOptions::default())?;
    /// assert!(!scorer.options().use_stemmer);
    /// # Ok::<(), kaiyuan_metrics::MetricsError>(())
    /// ```
    pub fn options(&self) -> &RougeOptions {
        &self.options
    }

    /// This scorer's tokenization of `text`, as strings (what
    /// [`tokenize`] returns for the same options).
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer};
    ///
    /// let mut scorer = RougeScorer::new(RougeOptions::default())?;
    /// assert_eq!(scorer.tokens("Hello, WORLD"), ["hello", "world"]);
    /// # Ok::<(), kaiyuan_metrics::MetricsError>(())
    /// ```
    pub fn tokens(&mut self, text: &str) -> Vec<String> {
        self.forget_if_large();
        let mut ids = Vec::new();
        self.vocab.tokenize(text, &mut ids);
        ids.iter()
            .map(|&id| self.vocab.strings[id as usize].to_string())
            .collect()
    }

    /// rouge-score's `RougeScorer.score(target, prediction)`: every requested
    /// type for one prediction against one target.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer, RougeType};
    ///
    /// let mut scorer = RougeScorer::new(RougeOptions::default())?;
    /// let scores = scorer.score(
    ///     "The quick brown fox jumps over the lazy dog",
    ///     "The quick brown dog jumps on the log.",
    /// );
    /// let r1 = scores.get(RougeType::ROUGE1).unwrap();
    /// assert_eq!((r1.precision, r1.recall), (6.0 / 8.0, 6.0 / 9.0));
    /// # Ok::<(), kaiyuan_metrics::MetricsError>(())
    /// ```
    pub fn score(&mut self, target: &str, prediction: &str) -> RougeScores {
        self.forget_if_large();
        let mut t = std::mem::take(&mut self.target);
        let mut p = std::mem::take(&mut self.prediction);
        self.read(target, &mut t);
        self.read(prediction, &mut p);
        let scores = self.score_tokens(&t, &p);
        self.target = t;
        self.prediction = p;
        scores
    }

    /// rouge-score's `RougeScorer.score_multi(targets, prediction)`: per type,
    /// the score against the target with the highest F-measure (the first
    /// such target on ties). Fails on an empty `targets`.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer, RougeType};
    ///
    /// let mut scorer = RougeScorer::new(RougeOptions::default())?;
    /// let best = scorer.score_multi(&["a cat", "the cat sat"], "the cat sat down")?;
    /// assert_eq!(best.get(RougeType::ROUGE1).unwrap().recall, 1.0);
    /// assert!(scorer.score_multi(&[] as &[&str], "x").is_err());
    /// # Ok::<(), kaiyuan_metrics::MetricsError>(())
    /// ```
    pub fn score_multi<S: AsRef<str>>(
        &mut self,
        targets: &[S],
        prediction: &str,
    ) -> Result<RougeScores> {
        if targets.is_empty() {
            return Err(MetricsError::input(
                "targets",
                "score_multi needs at least one target",
            ));
        }
        self.forget_if_large();
        let mut t = std::mem::take(&mut self.target);
        let mut p = std::mem::take(&mut self.prediction);
        self.read(prediction, &mut p);
        let mut best: Option<RougeScores> = None;
        for target in targets {
            self.read(target.as_ref(), &mut t);
            let scores = self.score_tokens(&t, &p);
            match &mut best {
                None => best = Some(scores),
                Some(best) => {
                    for (b, s) in best.entries.iter_mut().zip(scores.entries) {
                        if s.1.fmeasure > b.1.fmeasure {
                            *b = s;
                        }
                    }
                }
            }
        }
        self.target = t;
        self.prediction = p;
        Ok(best.unwrap_or_default())
    }

    /// [`score`](Self::score) for every `(target, prediction)` pair, and the
    /// mean. Fails if the slices differ in length or are empty.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer, RougeType};
    ///
    /// let mut scorer = RougeScorer::new(RougeOptions::default())?;
    /// let corpus = scorer.score_corpus(&["a b", "c d"], &["a b", "x y"])?;
    /// assert_eq!(corpus.mean.get(RougeType::ROUGE1).unwrap().fmeasure, 0.5);
    /// # Ok::<(), kaiyuan_metrics::MetricsError>(())
    /// ```
    pub fn score_corpus<T: AsRef<str>, P: AsRef<str>>(
        &mut self,
        targets: &[T],
        predictions: &[P],
    ) -> Result<RougeCorpus> {
        check_corpus(targets.len(), predictions.len())?;
        let per_pair: Vec<RougeScores> = targets
            .iter()
            .zip(predictions)
            .map(|(t, p)| self.score(t.as_ref(), p.as_ref()))
            .collect();
        Ok(RougeCorpus {
            mean: mean(&per_pair),
            per_pair,
        })
    }

    /// [`score_multi`](Self::score_multi) for every prediction with its
    /// targets, and the mean. Fails if the slices differ in length or are
    /// empty, or a prediction has no target.
    ///
    /// ```
    /// use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer, RougeType};
    ///
    /// let mut scorer = RougeScorer::new(RougeOptions::default())?;
    /// let targets = [vec!["a b", "a c"], vec!["c d", "x y"]];
    /// let corpus = scorer.score_multi_corpus(&targets, &["a c", "x y"])?;
    /// assert_eq!(corpus.mean.get(RougeType::ROUGE1).unwrap().fmeasure, 1.0);
    /// # Ok::<(), kaiyuan_metrics::MetricsError>(())
    /// ```
    pub fn score_multi_corpus<R, T, P>(
        &mut self,
        targets: &[R],
        predictions: &[P],
    ) -> Result<RougeCorpus>
    where
        R: AsRef<[T]>,
        T: AsRef<str>,
        P: AsRef<str>,
    {
        check_corpus(targets.len(), predictions.len())?;
        let mut per_pair = Vec::with_capacity(predictions.len());
        for (i, (t, p)) in targets.iter().zip(predictions).enumerate() {
            let scores = self.score_multi(t.as_ref(), p.as_ref()).map_err(|_| {
                MetricsError::input(format!("targets[{i}]"), "no target for this prediction")
            })?;
            per_pair.push(scores);
        }
        Ok(RougeCorpus {
            mean: mean(&per_pair),
            per_pair,
        })
    }

    fn forget_if_large(&mut self) {
        if self.vocab.len() > VOCAB_LIMIT {
            self.vocab.clear();
            self.work.stamp.clear();
            self.work.local.clear();
        }
    }

    /// Tokenizes `text` into `out`, with sentence ends when ROUGE-Lsum is
    /// requested.
    fn read(&mut self, text: &str, out: &mut Tokens) {
        out.ids.clear();
        out.sentence_ends.clear();
        if self.options.types.contains(&RougeType::LSum) {
            for sentence in sentences(text, self.options.split_summaries) {
                self.vocab.tokenize(sentence, &mut out.ids);
                out.sentence_ends.push(out.ids.len());
            }
        } else {
            self.vocab.tokenize(text, &mut out.ids);
        }
    }

    fn score_tokens(&mut self, target: &Tokens, prediction: &Tokens) -> RougeScores {
        let w = &mut self.work;
        let k = w.localize(self.vocab.len(), &target.ids, &prediction.ids);
        let mut entries = Vec::with_capacity(self.options.types.len());
        for &rouge_type in &self.options.types {
            let score = match rouge_type {
                RougeType::N(n) => {
                    let n = usize::from(n);
                    let hits = ngram_overlap(w, n, k);
                    let t_total = (w.target.len() + 1).saturating_sub(n);
                    let p_total = (w.prediction.len() + 1).saturating_sub(n);
                    Score::from_counts(hits, p_total.max(1), t_total.max(1))
                }
                RougeType::L => {
                    if w.target.is_empty() || w.prediction.is_empty() {
                        Score::default()
                    } else {
                        let hits = lcs_length(&w.target, &w.prediction, k, &mut w.lcs);
                        Score::from_counts(hits, w.prediction.len(), w.target.len())
                    }
                }
                RougeType::LSum => {
                    summary_lcs(w, k, &target.sentence_ends, &prediction.sentence_ends)
                }
            };
            entries.push((rouge_type, score));
        }
        RougeScores { entries }
    }
}

fn check_corpus(targets: usize, predictions: usize) -> Result<()> {
    if targets != predictions {
        return Err(MetricsError::input(
            "predictions",
            format!("{predictions} predictions for {targets} targets"),
        ));
    }
    if predictions == 0 {
        return Err(MetricsError::input("predictions", "the corpus is empty"));
    }
    Ok(())
}

/// The mean of per-pair scores (all have the same types in the same order).
fn mean(per_pair: &[RougeScores]) -> RougeScores {
    let Some(first) = per_pair.first() else {
        return RougeScores::default();
    };
    let n = per_pair.len() as f64;
    let entries = first
        .entries
        .iter()
        .enumerate()
        .map(|(i, &(t, _))| {
            let mut sum = Score::default();
            for s in per_pair {
                let s = s.entries[i].1;
                sum.precision += s.precision;
                sum.recall += s.recall;
                sum.fmeasure += s.fmeasure;
            }
            let mean = Score {
                precision: sum.precision / n,
                recall: sum.recall / n,
                fmeasure: sum.fmeasure / n,
            };
            (t, mean)
        })
        .collect();
    RougeScores { entries }
}

/// The clipped n-gram overlap of `w.target` and `w.prediction` (local ids
/// below `k`): rouge-score's `sum(min(target[g], prediction[g]))`.
fn ngram_overlap(w: &mut Work, n: usize, k: usize) -> usize {
    let (a, b) = (&w.target, &w.prediction);
    if a.len() < n || b.len() < n {
        return 0;
    }
    if n == 1 {
        let counts = &mut w.counts_a;
        counts.clear();
        counts.resize(k, 0);
        for &t in a {
            counts[t as usize] += 1;
        }
        let mut hits = 0;
        for &t in b {
            let c = &mut counts[t as usize];
            if *c > 0 {
                *c -= 1;
                hits += 1;
            }
        }
        return hits;
    }
    match (k as u64).checked_pow(n as u32) {
        Some(_) => {
            packed_keys(a, n, k as u64, &mut w.keys_a);
            packed_keys(b, n, k as u64, &mut w.keys_b);
            w.keys_a.sort_unstable();
            w.keys_b.sort_unstable();
            sorted_intersection(&w.keys_a, &w.keys_b)
        }
        None => ngram_overlap_slices(a, b, n),
    }
}

/// Every n-gram of `tokens` as the base-`k` number of its ids (exact while
/// `k^n` fits in 64 bits).
fn packed_keys(tokens: &[u32], n: usize, k: u64, out: &mut Vec<u64>) {
    out.clear();
    out.extend(
        tokens
            .windows(n)
            .map(|g| g.iter().fold(0u64, |acc, &t| acc * k + u64::from(t))),
    );
}

/// Size of the multiset intersection of two sorted lists.
fn sorted_intersection<T: Ord>(a: &[T], b: &[T]) -> usize {
    let (mut i, mut j, mut hits) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                hits += 1;
                i += 1;
                j += 1;
            }
        }
    }
    hits
}

/// The n-gram overlap by sorting the n-grams themselves (used when packed
/// keys would overflow).
fn ngram_overlap_slices(a: &[u32], b: &[u32], n: usize) -> usize {
    let mut ga: Vec<&[u32]> = a.windows(n).collect();
    let mut gb: Vec<&[u32]> = b.windows(n).collect();
    ga.sort_unstable();
    gb.sort_unstable();
    sorted_intersection(&ga, &gb)
}

/// Scratch buffers of [`lcs_length`].
#[derive(Clone, Default)]
struct LcsBuffers {
    /// Local id → its row in `peq`, or `u32::MAX` when absent from the
    /// pattern.
    row_of: Vec<u32>,
    /// Per distinct pattern token, the bit mask of its positions.
    peq: Vec<u64>,
    /// The bit vector V.
    bits: Vec<u64>,
    /// The two rows of the dynamic program (fallback).
    previous: Vec<u32>,
    current: Vec<u32>,
}

/// Above this many `u64` words of match masks (32 MiB) the LCS length is
/// computed by the row-by-row dynamic program instead.
const PEQ_LIMIT: usize = 1 << 22;

/// Length of the longest common subsequence of `a` and `b` (ids below `k`),
/// bit-parallel: one bit per token of the shorter sequence (Allison–Dix /
/// Hyyrö: `V' = (V + (V & M)) | (V & !M)`; the LCS is the number of zero
/// bits). `O(n·⌈m/64⌉)` time; memory one mask per distinct token of the
/// shorter sequence, falling back to [`lcs_length_rows`] when that would
/// exceed [`PEQ_LIMIT`].
fn lcs_length(a: &[u32], b: &[u32], k: usize, buf: &mut LcsBuffers) -> usize {
    lcs_length_with_limit(a, b, k, buf, PEQ_LIMIT)
}

fn lcs_length_with_limit(
    a: &[u32],
    b: &[u32],
    k: usize,
    buf: &mut LcsBuffers,
    peq_limit: usize,
) -> usize {
    let (p, t) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if p.is_empty() {
        return 0;
    }
    let words = p.len().div_ceil(64);
    buf.row_of.clear();
    buf.row_of.resize(k, u32::MAX);
    let mut rows = 0u32;
    for &c in p {
        let row = &mut buf.row_of[c as usize];
        if *row == u32::MAX {
            *row = rows;
            rows += 1;
        }
    }
    if rows as usize * words > peq_limit {
        return lcs_length_rows(p, t, &mut buf.previous, &mut buf.current);
    }
    let peq = &mut buf.peq;
    peq.clear();
    peq.resize(rows as usize * words, 0);
    for (i, &c) in p.iter().enumerate() {
        peq[buf.row_of[c as usize] as usize * words + i / 64] |= 1 << (i % 64);
    }
    let bits = &mut buf.bits;
    bits.clear();
    bits.resize(words, !0);
    // Tokens absent from the pattern have an all-zero mask and leave V as
    // it is, so they are skipped.
    let rows_of_t = t
        .iter()
        .map(|&c| buf.row_of[c as usize])
        .filter(|&r| r != u32::MAX);
    if words == 1 {
        let mut v = bits[0];
        for row in rows_of_t {
            let m = peq[row as usize];
            v = v.wrapping_add(v & m) | (v & !m);
        }
        bits[0] = v;
    } else {
        for row in rows_of_t {
            let m = &peq[row as usize * words..(row as usize + 1) * words];
            let mut carry = false;
            for (v, &m) in bits.iter_mut().zip(m) {
                let u = *v & m;
                let (s1, c1) = v.overflowing_add(u);
                let (s2, c2) = s1.overflowing_add(u64::from(carry));
                carry = c1 || c2;
                *v = s2 | (*v & !m);
            }
        }
    }
    let mut zeros = 0;
    for (i, &v) in bits.iter().enumerate() {
        let valid = (p.len() - i * 64).min(64);
        let mask = if valid == 64 { !0 } else { (1u64 << valid) - 1 };
        zeros += (!v & mask).count_ones() as usize;
    }
    zeros
}

/// The LCS length by rouge-score's dynamic program, two rows at a time
/// (`O(n·m)` time, `O(m)` memory for the shorter `p`).
fn lcs_length_rows(p: &[u32], t: &[u32], previous: &mut Vec<u32>, current: &mut Vec<u32>) -> usize {
    previous.clear();
    previous.resize(p.len() + 1, 0);
    current.clear();
    current.resize(p.len() + 1, 0);
    for &c in t {
        for j in 1..=p.len() {
            current[j] = if p[j - 1] == c {
                previous[j - 1] + 1
            } else {
                previous[j].max(current[j - 1])
            };
        }
        std::mem::swap(previous, current);
    }
    previous[p.len()] as usize
}

/// Marks, in `marks` (one per token of `r`), the tokens of the LCS of `r`
/// and `c` that rouge-score's `_lcs_table` + `_backtrack_norec` pick.
fn mark_lcs(r: &[u32], c: &[u32], table: &mut Vec<u32>, marks: &mut [bool]) {
    let cols = c.len() + 1;
    table.clear();
    table.resize((r.len() + 1) * cols, 0);
    for i in 1..=r.len() {
        for j in 1..=c.len() {
            table[i * cols + j] = if r[i - 1] == c[j - 1] {
                table[(i - 1) * cols + j - 1] + 1
            } else {
                table[(i - 1) * cols + j].max(table[i * cols + j - 1])
            };
        }
    }
    let (mut i, mut j) = (r.len(), c.len());
    while i > 0 && j > 0 {
        if r[i - 1] == c[j - 1] {
            marks[i - 1] = true;
            i -= 1;
            j -= 1;
        } else if table[i * cols + j - 1] > table[(i - 1) * cols + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
}

/// Splits `ids` at `ends` into its non-empty sentences.
fn split_at_ends<'a>(ids: &'a [u32], ends: &'a [usize]) -> impl Iterator<Item = &'a [u32]> + 'a {
    let mut start = 0;
    ends.iter()
        .map(move |&end| {
            let s = &ids[start..end];
            start = end;
            s
        })
        .filter(|s| !s.is_empty())
}

/// rouge-score's `_summary_level_lcs` over `w.target` / `w.prediction`
/// split at their sentence ends.
fn summary_lcs(w: &mut Work, k: usize, target_ends: &[usize], prediction_ends: &[usize]) -> Score {
    let (m, n) = (w.target.len(), w.prediction.len());
    if m == 0 || n == 0 {
        return Score::default();
    }
    let one_sentence = |ids: &[u32], ends: &[usize]| split_at_ends(ids, ends).nth(1).is_none();
    if one_sentence(&w.target, target_ends) && one_sentence(&w.prediction, prediction_ends) {
        // One sentence each: the union is that one LCS, and every token of
        // a common subsequence passes the count check.
        let hits = lcs_length(&w.target, &w.prediction, k, &mut w.lcs);
        return Score::from_counts(hits, n, m);
    }
    let Work {
        target,
        prediction,
        counts_a: count_r,
        counts_b: count_c,
        table,
        marks,
        ..
    } = w;
    count_r.clear();
    count_r.resize(k, 0);
    count_c.clear();
    count_c.resize(k, 0);
    for &t in target.iter() {
        count_r[t as usize] += 1;
    }
    for &t in prediction.iter() {
        count_c[t as usize] += 1;
    }
    let mut hits = 0;
    for r in split_at_ends(target, target_ends) {
        marks.clear();
        marks.resize(r.len(), false);
        for c in split_at_ends(prediction, prediction_ends) {
            mark_lcs(r, c, table, marks);
        }
        for (&t, _) in r.iter().zip(marks.iter()).filter(|(_, m)| **m) {
            let t = t as usize;
            if count_c[t] > 0 && count_r[t] > 0 {
                hits += 1;
                count_c[t] -= 1;
                count_r[t] -= 1;
            }
        }
    }
    Score::from_counts(hits, n, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    /// rouge-score's `tokenize.tokenize`, transcribed literally: lower-case
    /// the whole text, regex-replace, split, stem, filter.
    fn naive_tokenize(text: &str, tokenizer: RougeTokenizer, use_stemmer: bool) -> Vec<String> {
        fn default(text: &str, use_stemmer: bool) -> Vec<String> {
            let lower = text.to_lowercase();
            static NON_ALNUM: std::sync::LazyLock<regex::Regex> =
                std::sync::LazyLock::new(|| regex::Regex::new("[^a-z0-9]+").unwrap());
            let replaced = NON_ALNUM.replace_all(&lower, " ").into_owned();
            replaced
                .split(' ')
                .map(|t| {
                    if use_stemmer && t.chars().count() > 3 {
                        porter::stem(t)
                    } else {
                        t.to_string()
                    }
                })
                .filter(|t| {
                    !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
                .collect()
        }
        match tokenizer {
            RougeTokenizer::Default => default(text, use_stemmer),
            RougeTokenizer::Cjk => {
                let mut out = Vec::new();
                let mut piece = String::new();
                for c in text.chars() {
                    if is_cjk(c) {
                        out.extend(default(&piece, use_stemmer));
                        piece.clear();
                        out.push(c.to_string());
                    } else {
                        piece.push(c);
                    }
                }
                out.extend(default(&piece, use_stemmer));
                out
            }
        }
    }

    fn naive_ngrams(tokens: &[String], n: usize) -> HashMap<Vec<String>, usize> {
        let mut out = HashMap::new();
        for g in tokens.windows(n) {
            *out.entry(g.to_vec()).or_insert(0) += 1;
        }
        out
    }

    fn naive_ngram_hits(t: &[String], p: &[String], n: usize) -> usize {
        let (tg, pg) = (naive_ngrams(t, n), naive_ngrams(p, n));
        tg.iter()
            .map(|(g, c)| (*c).min(*pg.get(g).unwrap_or(&0)))
            .sum()
    }

    fn naive_ngram_score(t: &[String], p: &[String], n: usize) -> Score {
        let (tg, pg) = (naive_ngrams(t, n), naive_ngrams(p, n));
        let hits = naive_ngram_hits(t, p, n);
        let t_total: usize = tg.values().sum();
        let p_total: usize = pg.values().sum();
        Score::from_counts(hits, p_total.max(1), t_total.max(1))
    }

    fn naive_table<T: PartialEq>(r: &[T], c: &[T]) -> Vec<Vec<usize>> {
        let mut t = vec![vec![0; c.len() + 1]; r.len() + 1];
        for i in 1..=r.len() {
            for j in 1..=c.len() {
                t[i][j] = if r[i - 1] == c[j - 1] {
                    t[i - 1][j - 1] + 1
                } else {
                    t[i - 1][j].max(t[i][j - 1])
                };
            }
        }
        t
    }

    fn naive_lcs_indices<T: PartialEq>(r: &[T], c: &[T]) -> Vec<usize> {
        let t = naive_table(r, c);
        let (mut i, mut j) = (r.len(), c.len());
        let mut out = Vec::new();
        while i > 0 && j > 0 {
            if r[i - 1] == c[j - 1] {
                out.insert(0, i - 1);
                i -= 1;
                j -= 1;
            } else if t[i][j - 1] > t[i - 1][j] {
                j -= 1;
            } else {
                i -= 1;
            }
        }
        out
    }

    fn naive_lcs_score(t: &[String], p: &[String]) -> Score {
        if t.is_empty() || p.is_empty() {
            return Score::default();
        }
        let lcs = naive_table(t, p)[t.len()][p.len()];
        Score::from_counts(lcs, p.len(), t.len())
    }

    fn naive_lsum(t: &[Vec<String>], p: &[Vec<String>]) -> Score {
        let m: usize = t.iter().map(Vec::len).sum();
        let n: usize = p.iter().map(Vec::len).sum();
        if t.is_empty() || p.is_empty() || m == 0 || n == 0 {
            return Score::default();
        }
        let mut cnt_r: HashMap<&String, usize> = HashMap::new();
        let mut cnt_c: HashMap<&String, usize> = HashMap::new();
        for s in t {
            for tok in s {
                *cnt_r.entry(tok).or_insert(0) += 1;
            }
        }
        for s in p {
            for tok in s {
                *cnt_c.entry(tok).or_insert(0) += 1;
            }
        }
        let mut hits = 0;
        for r in t {
            let union: BTreeSet<usize> = p.iter().flat_map(|c| naive_lcs_indices(r, c)).collect();
            for i in union {
                let tok = &r[i];
                let (c, rr) = (
                    cnt_c.get(tok).copied().unwrap_or(0),
                    cnt_r.get(tok).copied().unwrap_or(0),
                );
                if c > 0 && rr > 0 {
                    hits += 1;
                    *cnt_c.get_mut(tok).unwrap() -= 1;
                    *cnt_r.get_mut(tok).unwrap() -= 1;
                }
            }
        }
        Score::from_counts(hits, n, m)
    }

    /// rouge-score's `RougeScorer.score`, transcribed on strings.
    fn naive_score(
        options: &RougeOptions,
        target: &str,
        prediction: &str,
    ) -> Vec<(RougeType, Score)> {
        let tok = |s: &str| naive_tokenize(s, options.tokenizer, options.use_stemmer);
        let (t, p) = (tok(target), tok(prediction));
        options
            .types
            .iter()
            .map(|&ty| {
                let s = match ty {
                    RougeType::N(n) => naive_ngram_score(&t, &p, usize::from(n)),
                    RougeType::L => naive_lcs_score(&t, &p),
                    RougeType::LSum => {
                        let sents = |s: &str| -> Vec<Vec<String>> {
                            sentences(s, options.split_summaries)
                                .into_iter()
                                .filter(|x| !x.is_empty())
                                .map(tok)
                                .collect()
                        };
                        naive_lsum(&sents(target), &sents(prediction))
                    }
                };
                (ty, s)
            })
            .collect()
    }

    const WORDS: &[&str] = &[
        "the",
        "The",
        "cat",
        "cats",
        "running",
        "runs",
        "run",
        "generalization",
        "general",
        "a",
        "ies",
        "flies",
        "İstanbul",
        "\u{212A}elvin",
        "中",
        "文",
        "中文",
        "ｈｅｌｌｏ",
        "。",
        ",",
        ".",
        "!",
        "?",
        "\n",
        "\n\n",
        " ",
        "\t",
        "a-b",
        "x1",
        "1990s",
        "한국",
        "カタカナ",
        "Σίσυφος",
        "café",
        "happy",
        "skies",
        "dying",
        "news",
        "\"quoted.\"",
        "e.g.",
    ];

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec((0..WORDS.len(), prop::bool::ANY), 0..40).prop_map(|ws| {
            let mut s = String::new();
            for (i, space) in ws {
                s.push_str(WORDS[i]);
                if space {
                    s.push(' ');
                }
            }
            s
        })
    }

    fn options() -> impl Strategy<Value = RougeOptions> {
        (prop::bool::ANY, prop::bool::ANY, prop::bool::ANY, 2u8..6).prop_map(
            |(stem, cjk, split, n)| RougeOptions {
                types: vec![
                    RougeType::N(n),
                    RougeType::ROUGE1,
                    RougeType::L,
                    RougeType::LSum,
                ],
                use_stemmer: stem,
                tokenizer: if cjk {
                    RougeTokenizer::Cjk
                } else {
                    RougeTokenizer::Default
                },
                split_summaries: split,
            },
        )
    }

    proptest! {
        #[test]
        fn tokenizer_matches_naive(t in text(), stem in prop::bool::ANY, cjk in prop::bool::ANY) {
            let tokenizer = if cjk { RougeTokenizer::Cjk } else { RougeTokenizer::Default };
            prop_assert_eq!(tokenize(&t, tokenizer, stem), naive_tokenize(&t, tokenizer, stem));
        }

        #[test]
        fn scorer_matches_naive(opts in options(), pairs in prop::collection::vec((text(), text()), 1..6)) {
            // One scorer over several pairs: the cached vocabulary must not leak.
            let mut scorer = RougeScorer::new(opts.clone()).unwrap();
            for (t, p) in &pairs {
                let fast = scorer.score(t, p);
                prop_assert_eq!(&fast.entries, &naive_score(&opts, t, p));
            }
        }

        #[test]
        fn score_multi_is_first_max(opts in options(), targets in prop::collection::vec(text(), 1..4), p in text()) {
            let mut scorer = RougeScorer::new(opts.clone()).unwrap();
            let multi = scorer.score_multi(&targets, &p).unwrap();
            for (i, &ty) in opts.types.iter().enumerate() {
                let all: Vec<Score> = targets.iter().map(|t| naive_score(&opts, t, &p)[i].1).collect();
                let mut best = 0;
                for (j, s) in all.iter().enumerate() {
                    if s.fmeasure > all[best].fmeasure { best = j; }
                }
                prop_assert_eq!(multi.get(ty), Some(all[best]));
            }
        }

        #[test]
        fn lcs_matches_table(a in prop::collection::vec(0u32..4, 0..200), b in prop::collection::vec(0u32..4, 0..200)) {
            let mut buf = LcsBuffers::default();
            let naive = naive_table(&a, &b)[a.len()][b.len()];
            prop_assert_eq!(lcs_length(&a, &b, 4, &mut buf), naive);
            // The row-by-row fallback, forced.
            prop_assert_eq!(lcs_length_with_limit(&a, &b, 4, &mut buf, 0), naive);
            // Sparse ids: rows only for the tokens of the shorter sequence.
            let spread = |v: &[u32]| -> Vec<u32> { v.iter().map(|&x| x * 1000 + 7).collect() };
            prop_assert_eq!(lcs_length(&spread(&a), &spread(&b), 4000, &mut buf), naive);
        }

        #[test]
        fn lcs_marks_match_backtrack(a in prop::collection::vec(0u32..5, 0..60), b in prop::collection::vec(0u32..5, 0..60)) {
            let mut table = Vec::new();
            let mut marks = vec![false; a.len()];
            mark_lcs(&a, &b, &mut table, &mut marks);
            let got: Vec<usize> = (0..a.len()).filter(|&i| marks[i]).collect();
            prop_assert_eq!(got, naive_lcs_indices(&a, &b));
        }

        #[test]
        fn ngram_paths_agree(a in prop::collection::vec(0u32..6, 0..50), b in prop::collection::vec(0u32..6, 0..50), n in 1usize..6) {
            let strings = |v: &[u32]| -> Vec<String> { v.iter().map(u32::to_string).collect() };
            let naive_hits = naive_ngram_hits(&strings(&a), &strings(&b), n);
            let mut w = Work { target: a.clone(), prediction: b.clone(), ..Work::default() };
            prop_assert_eq!(ngram_overlap(&mut w, n, 6), naive_hits);
            if a.len() >= n && b.len() >= n {
                prop_assert_eq!(ngram_overlap_slices(&a, &b, n), naive_hits);
            }
        }
    }

    #[test]
    fn packed_keys_fall_back_when_too_wide() {
        // 2^20 distinct ids, n = 4: k^n overflows u64, the slice path runs.
        let a: Vec<u32> = (0..10).map(|i| i * 100_000).collect();
        let mut b = a.clone();
        b.reverse();
        b.extend_from_slice(&a[..5]);
        let mut w = Work {
            target: a.clone(),
            prediction: b.clone(),
            ..Work::default()
        };
        assert_eq!(
            ngram_overlap(&mut w, 4, 1 << 20),
            ngram_overlap_slices(&a, &b, 4)
        );
        assert_eq!(ngram_overlap_slices(&a, &b, 4), 2);
    }

    #[test]
    fn names_round_trip() {
        for name in ["rouge1", "rouge2", "rouge9", "rougeL", "rougeLsum"] {
            assert_eq!(name.parse::<RougeType>().unwrap().name(), name);
        }
        for bad in [
            "rouge0",
            "rouge10",
            "rougel",
            "rougeLSum",
            "ROUGE1",
            "rouge",
            "",
            "rouge-1",
        ] {
            let err = bad.parse::<RougeType>().unwrap_err();
            assert!(
                matches!(err, MetricsError::InvalidOption { .. }),
                "{bad}: {err}"
            );
        }
        assert!("Default".parse::<RougeTokenizer>().is_err());
    }

    #[test]
    fn invalid_options() {
        let with = |types| {
            RougeScorer::new(RougeOptions {
                types,
                ..RougeOptions::default()
            })
        };
        assert!(with(vec![RougeType::N(0)]).is_err());
        assert!(with(vec![RougeType::N(10)]).is_err());
        assert!(with(vec![RougeType::L, RougeType::L]).is_err());
        assert!(with(vec![]).is_err());
        assert!(with(vec![RougeType::N(9)]).is_ok());
    }

    #[test]
    fn corpus_errors() {
        let mut s = RougeScorer::new(RougeOptions::default()).unwrap();
        assert!(s.score_corpus(&["a"], &["a", "b"]).is_err());
        assert!(s.score_corpus(&[] as &[&str], &[] as &[&str]).is_err());
        let targets: [Vec<&str>; 2] = [vec!["a"], vec![]];
        let err = s.score_multi_corpus(&targets, &["a", "b"]).unwrap_err();
        assert!(err.to_string().contains("targets[1]"), "{err}");
    }

    #[test]
    fn split_summaries_rule() {
        assert_eq!(
            sentences("He left. \"Why?\" she asked!Then 3.5 pts\nx。好", true),
            [
                "He left.",
                " \"Why?\"",
                " she asked!Then 3.5 pts\nx。",
                "好"
            ]
        );
        assert_eq!(sentences("a\n\nb", false), ["a", "", "b"]);
    }

    #[test]
    fn vocabulary_reset_keeps_scores() {
        let mut s = RougeScorer::new(RougeOptions {
            use_stemmer: true,
            ..RougeOptions::default()
        })
        .unwrap();
        let before = s.score("the cats are running", "a cat runs");
        s.vocab.strings.resize(VOCAB_LIMIT + 1, "x".into());
        let after = s.score("the cats are running", "a cat runs");
        assert_eq!(before, after);
        assert!(s.vocab.len() < 10);
    }
}
