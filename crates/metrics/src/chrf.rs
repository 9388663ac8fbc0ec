//! chrF (Popović, 2015) and chrF++ (Popović, 2017) exactly as sacrebleu
//! 2.6.0 computes them: character n-grams of orders `1..=char_order`
//! (whitespace removed unless `whitespace`), plus word n-grams of orders
//! `1..=word_order` for chrF++, corpus and sentence scores, per-segment
//! statistics (summable) and sacrebleu's signature.
//!
//! For each segment and reference sacrebleu counts, per order, the
//! hypothesis' n-grams (0 when the reference has none of that order), the
//! reference's and the matched ones; the statistics of the reference with the
//! highest F-score are kept (the first one on a tie). The score averages
//! precision and recall over the orders both sides have n-grams of
//! ("effective order") and returns F-beta of the averages in 0..=100;
//! `eps_smoothing` instead averages per-order F-scores, with 1e-16 standing in
//! for undefined values, as chrF++.py, Moses and NLTK do.
//!
//! Words for chrF++ are the whitespace-separated words with one ASCII
//! punctuation character split off the end, or else off the start
//! (`(hi)` → `(hi` `)`), as sacrebleu does.
//!
//! ```
//! use kaiyuan_metrics::chrf::{corpus_chrf, ChrfOptions};
//! let score = corpus_chrf(&["the cat sat"], &[vec!["the cat sat"]], &ChrfOptions::default()).unwrap();
//! assert_eq!(score.score, 100.0);
//! assert_eq!(score.to_string(), "chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0 = 100.00");
//! ```

use std::fmt;
use std::ops::AddAssign;

use rustc_hash::FxHashMap;

use crate::error::{MetricsError, Result};
use crate::sacre::ngram::{HypNgrams, UNKNOWN};
use crate::sacre::{self, CorpusStats, NumRefs, Reference, SACREBLEU_VERSION, SacreMetric};
use crate::sacre_tokenize::{is_python_whitespace, python_lowercase, python_split};

/// chrF's options, as sacrebleu's `CHRF(...)` arguments. `Default` is chrF
/// (character order 6, no words, beta 2); [`ChrfOptions::chrf_plus_plus`]
/// adds word bigrams.
///
/// ```
/// use kaiyuan_metrics::chrf::ChrfOptions;
/// assert_eq!(ChrfOptions::default().word_order, 0);
/// assert_eq!(ChrfOptions::chrf_plus_plus().word_order, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChrfOptions {
    /// The highest character n-gram order (`nc`, 6).
    pub char_order: usize,
    /// The highest word n-gram order (`nw`: 0 for chrF, 2 for chrF++).
    pub word_order: usize,
    /// Recall is `beta` times as important as precision (2; not in the
    /// signature, but in the score's name, `chrF2`).
    pub beta: u32,
    /// Lowercase hypotheses and references first (`case:lc`).
    pub lowercase: bool,
    /// Keep whitespace in character n-grams (`space:yes`).
    pub whitespace: bool,
    /// Average per-order F-scores with epsilon smoothing instead of the
    /// effective-order average (`eff:no`).
    pub eps_smoothing: bool,
}

impl Default for ChrfOptions {
    fn default() -> Self {
        ChrfOptions {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

impl ChrfOptions {
    /// chrF++: the defaults with word order 2.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::ChrfOptions;
    /// assert_eq!(ChrfOptions::chrf_plus_plus().char_order, 6);
    /// ```
    pub fn chrf_plus_plus() -> Self {
        ChrfOptions {
            word_order: 2,
            ..Self::default()
        }
    }

    /// Refuses options with no n-gram order at all.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::ChrfOptions;
    /// let none = ChrfOptions { char_order: 0, word_order: 0, ..Default::default() };
    /// assert!(none.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.char_order + self.word_order == 0 {
            return Err(MetricsError::option(
                "chrf-char-order",
                "the character and word orders are both 0: nothing to count",
            ));
        }
        Ok(())
    }

    fn order(&self) -> usize {
        self.char_order + self.word_order
    }
}

/// The counts of one n-gram order for chrF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ChrfOrderStats {
    /// Hypothesis n-grams (0 when the reference has no n-gram of this
    /// order, as in sacrebleu).
    pub hyp: u64,
    /// Reference n-grams.
    pub reference: u64,
    /// Matched n-grams (each clipped to the smaller count).
    pub matching: u64,
}

/// chrF's sufficient statistics for one segment or, summed, a corpus: the
/// character orders `1..=char_order`, then the word orders.
///
/// ```
/// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
/// let chrf = Chrf::new(ChrfOptions { char_order: 2, ..Default::default() }).unwrap();
/// let s = chrf.segment_stats("ab", &["abc"]).unwrap();
/// assert_eq!(s.flat(), [2, 3, 2, 1, 2, 1]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ChrfStats {
    /// One entry per order.
    pub orders: Vec<ChrfOrderStats>,
}

impl ChrfStats {
    /// sacrebleu's flat layout: `[hyp, ref, match]` per order.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{ChrfOrderStats, ChrfStats};
    /// let s = ChrfStats { orders: vec![ChrfOrderStats { hyp: 3, reference: 4, matching: 2 }] };
    /// assert_eq!(s.flat(), [3, 4, 2]);
    /// ```
    pub fn flat(&self) -> Vec<u64> {
        self.orders
            .iter()
            .flat_map(|o| [o.hyp, o.reference, o.matching])
            .collect()
    }
}

impl AddAssign<&ChrfStats> for ChrfStats {
    fn add_assign(&mut self, other: &ChrfStats) {
        if self.orders.len() < other.orders.len() {
            self.orders
                .resize(other.orders.len(), ChrfOrderStats::default());
        }
        for (a, b) in self.orders.iter_mut().zip(&other.orders) {
            a.hyp += b.hyp;
            a.reference += b.reference;
            a.matching += b.matching;
        }
    }
}

impl<'a> std::iter::Sum<&'a ChrfStats> for ChrfStats {
    fn sum<I: Iterator<Item = &'a ChrfStats>>(iter: I) -> Self {
        let mut total = ChrfStats::default();
        for s in iter {
            total += s;
        }
        total
    }
}

/// The per-segment statistics of a corpus and its reference count.
///
/// ```
/// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
/// let chrf = Chrf::new(ChrfOptions { char_order: 1, ..Default::default() }).unwrap();
/// let stats = chrf.corpus_stats(&["ab", "c"], &[vec!["a", "cd"]]).unwrap();
/// assert_eq!(stats.total().flat(), [3, 3, 2]);
/// ```
pub type ChrfCorpusStats = CorpusStats<ChrfStats>;

/// sacrebleu's reproducibility signature of a chrF score; `Display` prints
/// it as `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChrfSignature {
    /// References per segment.
    pub nrefs: NumRefs,
    /// The options the score was computed with.
    pub options: ChrfOptions,
}

impl fmt::Display for ChrfSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        write!(
            f,
            "nrefs:{}|case:{}|eff:{}|nc:{}|nw:{}|space:{}|version:{}",
            self.nrefs,
            if o.lowercase { "lc" } else { "mixed" },
            if o.eps_smoothing { "no" } else { "yes" },
            o.char_order,
            o.word_order,
            if o.whitespace { "yes" } else { "no" },
            SACREBLEU_VERSION
        )
    }
}

/// A chrF / chrF++ score.
#[derive(Debug, Clone, PartialEq)]
pub struct ChrfScore {
    /// The score in 0..=100.
    pub score: f64,
    /// The signature (holds the options).
    pub signature: ChrfSignature,
}

impl ChrfScore {
    /// sacrebleu's name of the score: `chrF{beta}` and a `+` per word order
    /// (`chrF2`, `chrF2++`).
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{sentence_chrf, ChrfOptions};
    /// let s = sentence_chrf("a", &["a"], &ChrfOptions::chrf_plus_plus()).unwrap();
    /// assert_eq!(s.name(), "chrF2++");
    /// ```
    pub fn name(&self) -> String {
        let o = &self.signature.options;
        format!("chrF{}{}", o.beta, "+".repeat(o.word_order))
    }

    /// sacrebleu's signature string.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{sentence_chrf, ChrfOptions};
    /// let s = sentence_chrf("a", &["a", "b"], &ChrfOptions::default()).unwrap();
    /// assert_eq!(s.signature(), "nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0");
    /// ```
    pub fn signature(&self) -> String {
        self.signature.to_string()
    }
}

impl fmt::Display for ChrfScore {
    /// sacrebleu's `format()`: `chrF2|<signature> = 74.73` (the precision,
    /// default 2, gives the decimals).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = f.precision().unwrap_or(2);
        write!(
            f,
            "{}|{} = {:.*}",
            self.name(),
            self.signature,
            width,
            self.score
        )
    }
}

/// A chrF scorer with validated options.
///
/// ```
/// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
/// let chrf = Chrf::new(ChrfOptions::chrf_plus_plus()).unwrap();
/// let s = chrf.sentence_score("The cat sat.", &["The cat sat on the mat."]).unwrap();
/// assert!((s.score - 49.4057766710878).abs() < 1e-9);
/// ```
#[derive(Debug, Clone)]
pub struct Chrf {
    options: ChrfOptions,
}

/// Buffers reused across segments.
#[derive(Default)]
pub(crate) struct Scratch {
    hyp_chars: Vec<u32>,
    hyp_words: Vec<u32>,
    chars: HypNgrams,
    words: HypNgrams,
    ids: Vec<u32>,
    found: Vec<u32>,
    at: Vec<u32>,
    stats: Vec<ChrfOrderStats>,
}

/// Code points of the characters chrF counts (whitespace removed unless
/// kept).
fn char_ids(text: &str, whitespace: bool, out: &mut Vec<u32>) {
    out.clear();
    if whitespace {
        out.extend(text.chars().map(u32::from));
    } else {
        out.extend(
            text.chars()
                .filter(|&c| !is_python_whitespace(c))
                .map(u32::from),
        );
    }
}

/// sacrebleu's `_remove_punctuation`: whitespace-separated words, one ASCII
/// punctuation character split off the end (or else off the start) of words
/// longer than one character.
pub(crate) fn chrf_words(text: &str) -> impl Iterator<Item = &str> {
    python_split(text).flat_map(|w| {
        let b = w.as_bytes();
        let single = w.chars().nth(1).is_none();
        let (first, second) = if single {
            (w, "")
        } else if b[b.len() - 1].is_ascii_punctuation() {
            (&w[..w.len() - 1], &w[w.len() - 1..])
        } else if b[0].is_ascii_punctuation() {
            (&w[..1], &w[1..])
        } else {
            (w, "")
        };
        [first, second].into_iter().filter(|s| !s.is_empty())
    })
}

impl Chrf {
    /// A scorer; errors on invalid options (see [`ChrfOptions::validate`]).
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
    /// assert!(Chrf::new(ChrfOptions::default()).is_ok());
    /// ```
    pub fn new(options: ChrfOptions) -> Result<Self> {
        options.validate()?;
        Ok(Chrf { options })
    }

    /// The options.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
    /// assert_eq!(Chrf::new(ChrfOptions::default()).unwrap().options().beta, 2);
    /// ```
    pub fn options(&self) -> &ChrfOptions {
        &self.options
    }

    /// sacrebleu's `_compute_f_score` of (summed) statistics, in 0..=100.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions, ChrfOrderStats, ChrfStats};
    /// let chrf = Chrf::new(ChrfOptions { char_order: 1, ..Default::default() }).unwrap();
    /// let stats = ChrfStats { orders: vec![ChrfOrderStats { hyp: 4, reference: 2, matching: 2 }] };
    /// // precision 0.5, recall 1: F2 = 5 * 0.5 / (4 * 0.5 + 1)
    /// assert!((chrf.f_score(&stats) - 250.0 / 3.0).abs() < 1e-12);
    /// ```
    pub fn f_score(&self, stats: &ChrfStats) -> f64 {
        f_score(&stats.orders, &self.options)
    }

    /// The statistics of one segment against its references (`None`s
    /// skipped; at least one is needed): those of the reference with the
    /// best F-score.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
    /// let chrf = Chrf::new(ChrfOptions { char_order: 1, ..Default::default() }).unwrap();
    /// assert_eq!(chrf.segment_stats("ab", &["xy", "a"]).unwrap().flat(), [2, 1, 1]);
    /// ```
    pub fn segment_stats<R: Reference>(&self, hyp: &str, refs: &[R]) -> Result<ChrfStats> {
        Ok(sacre::sentence_stats(self, hyp, refs)?.0)
    }

    /// The statistics of the hypothesis (indexed in `scratch`) against one
    /// reference, into `scratch.stats`.
    fn ref_stats(&self, vocab: &FxHashMap<&str, u32>, reference: &str, scratch: &mut Scratch) {
        let o = &self.options;
        let reference = if o.lowercase {
            python_lowercase(reference)
        } else {
            reference.into()
        };
        let Scratch {
            hyp_chars,
            hyp_words,
            chars,
            words,
            ids,
            found,
            at,
            stats,
        } = scratch;
        stats.clear();
        char_ids(&reference, o.whitespace, ids);
        count_orders(chars, hyp_chars.len(), ids, o.char_order, found, at, stats);
        if o.word_order > 0 {
            ids.clear();
            ids.extend(chrf_words(&reference).map(|w| *vocab.get(w).unwrap_or(&UNKNOWN)));
            count_orders(words, hyp_words.len(), ids, o.word_order, found, at, stats);
        }
    }

    /// The statistics of every segment of a corpus. `refs` holds reference
    /// streams, each as long as `hyps` (a `None` reference is skipped).
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
    /// let chrf = Chrf::new(ChrfOptions::default()).unwrap();
    /// let err = chrf.corpus_stats(&["a", "b"], &[vec!["a"]]).unwrap_err();
    /// assert!(err.to_string().starts_with("references[0]"));
    /// ```
    pub fn corpus_stats<H, RS, R>(&self, hyps: &[H], refs: &[RS]) -> Result<ChrfCorpusStats>
    where
        H: AsRef<str> + Sync,
        RS: AsRef<[R]> + Sync,
        R: Reference + Sync,
    {
        sacre::corpus_stats(self, hyps, refs)
    }

    /// Corpus chrF: the statistics summed over all segments, then scored.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
    /// let chrf = Chrf::new(ChrfOptions::default()).unwrap();
    /// let s = chrf.corpus_score(&["abc", "xyz"], &[vec!["abc", "xyz"]]).unwrap();
    /// assert_eq!(s.score, 100.0);
    /// ```
    pub fn corpus_score<H, RS, R>(&self, hyps: &[H], refs: &[RS]) -> Result<ChrfScore>
    where
        H: AsRef<str> + Sync,
        RS: AsRef<[R]> + Sync,
        R: Reference + Sync,
    {
        sacre::corpus_score(self, hyps, refs)
    }

    /// Sentence chrF of one hypothesis against its references.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
    /// let chrf = Chrf::new(ChrfOptions::default()).unwrap();
    /// assert_eq!(chrf.sentence_score("abc", &["xyz"]).unwrap().score, 0.0);
    /// ```
    pub fn sentence_score<R: Reference>(&self, hyp: &str, refs: &[R]) -> Result<ChrfScore> {
        sacre::sentence_score(self, hyp, refs)
    }

    /// The score of (summed) statistics.
    ///
    /// ```
    /// use kaiyuan_metrics::chrf::{Chrf, ChrfOptions, ChrfStats};
    /// use kaiyuan_metrics::sacre::NumRefs;
    /// let chrf = Chrf::new(ChrfOptions::default()).unwrap();
    /// let s = chrf.score_from_stats(&ChrfStats::default(), NumRefs::Fixed(1));
    /// assert_eq!(s.score, 0.0);
    /// ```
    pub fn score_from_stats(&self, stats: &ChrfStats, nrefs: NumRefs) -> ChrfScore {
        ChrfScore {
            score: self.f_score(stats),
            signature: ChrfSignature {
                nrefs,
                options: self.options,
            },
        }
    }
}

impl SacreMetric for Chrf {
    type Scratch = Scratch;
    type Stats = ChrfStats;
    type Score = ChrfScore;

    fn stats_with<'r>(
        &self,
        hyp: &str,
        refs: impl Iterator<Item = &'r str>,
        scratch: &mut Scratch,
    ) -> ChrfStats {
        let o = &self.options;
        let hyp = if o.lowercase {
            python_lowercase(hyp)
        } else {
            hyp.into()
        };
        char_ids(&hyp, o.whitespace, &mut scratch.hyp_chars);
        scratch.chars.build(&scratch.hyp_chars, o.char_order);
        let mut vocab: FxHashMap<&str, u32> = FxHashMap::default();
        scratch.hyp_words.clear();
        if o.word_order > 0 {
            for w in chrf_words(&hyp) {
                let next = vocab.len() as u32;
                scratch.hyp_words.push(*vocab.entry(w).or_insert(next));
            }
        }
        scratch.words.build(&scratch.hyp_words, o.word_order);

        let mut best: Option<(f64, Vec<ChrfOrderStats>)> = None;
        for r in refs {
            self.ref_stats(&vocab, r, scratch);
            let f = f_score(&scratch.stats, o);
            // sacrebleu: `if f_score > best_f_score`, starting from -1.
            if best.as_ref().is_none_or(|(b, _)| f > *b) {
                best = Some((f, scratch.stats.clone()));
            }
        }
        ChrfStats {
            orders: best.map(|(_, s)| s).unwrap_or_default(),
        }
    }

    fn score(&self, stats: &ChrfStats, nrefs: NumRefs) -> ChrfScore {
        self.score_from_stats(stats, nrefs)
    }
}

/// Appends the statistics of orders `1..=max_order` of a reference (`ids`)
/// against the hypothesis' n-grams.
fn count_orders(
    hyp: &HypNgrams,
    hyp_len: usize,
    ids: &[u32],
    max_order: usize,
    found: &mut Vec<u32>,
    at: &mut Vec<u32>,
    out: &mut Vec<ChrfOrderStats>,
) {
    found.clear();
    found.resize(hyp.len(), 0);
    hyp.count_in(ids, max_order, found, at);
    for n in 1..=max_order {
        let reference = (ids.len() + 1).saturating_sub(n) as u64;
        let hyp_total = (hyp_len + 1).saturating_sub(n) as u64;
        let matching: u64 = hyp
            .order(n)
            .map(|e| u64::from(hyp.counts[e].min(found[e])))
            .sum();
        out.push(ChrfOrderStats {
            // sacrebleu: `hyp_count if ref_ngrams else 0`
            hyp: if reference > 0 { hyp_total } else { 0 },
            reference,
            matching,
        });
    }
}

/// sacrebleu's `CHRF._compute_f_score`, operation for operation.
fn f_score(orders: &[ChrfOrderStats], o: &ChrfOptions) -> f64 {
    let eps = 1e-16;
    let factor = f64::from(o.beta) * f64::from(o.beta);
    let mut score = 0.0;
    let mut effective_order = 0u32;
    let (mut avg_prec, mut avg_rec) = (0.0f64, 0.0f64);
    let order = o.order();
    for i in 0..order {
        let s = orders.get(i).copied().unwrap_or_default();
        let prec = if s.hyp > 0 {
            s.matching as f64 / s.hyp as f64
        } else {
            eps
        };
        let rec = if s.reference > 0 {
            s.matching as f64 / s.reference as f64
        } else {
            eps
        };
        let denom = factor * prec + rec;
        score += if denom > 0.0 {
            (1.0 + factor) * prec * rec / denom
        } else {
            eps
        };
        if s.hyp > 0 && s.reference > 0 {
            avg_prec += prec;
            avg_rec += rec;
            effective_order += 1;
        }
    }
    if o.eps_smoothing {
        return 100.0 * score / order as f64;
    }
    if effective_order == 0 {
        avg_prec = 0.0;
        avg_rec = 0.0;
    } else {
        avg_prec /= f64::from(effective_order);
        avg_rec /= f64::from(effective_order);
    }
    if avg_prec + avg_rec != 0.0 {
        let mut score = (1.0 + factor) * avg_prec * avg_rec;
        score /= factor * avg_prec + avg_rec;
        100.0 * score
    } else {
        0.0
    }
}

/// Corpus chrF with the given options: see [`Chrf::corpus_score`].
///
/// ```
/// use kaiyuan_metrics::chrf::{corpus_chrf, ChrfOptions};
/// let s = corpus_chrf(&["a b"], &[vec!["a b"], vec!["c"]], &ChrfOptions::chrf_plus_plus()).unwrap();
/// assert_eq!(s.signature(), "nrefs:2|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0");
/// ```
pub fn corpus_chrf<H, RS, R>(hyps: &[H], refs: &[RS], options: &ChrfOptions) -> Result<ChrfScore>
where
    H: AsRef<str> + Sync,
    RS: AsRef<[R]> + Sync,
    R: Reference + Sync,
{
    Chrf::new(*options)?.corpus_score(hyps, refs)
}

/// Sentence chrF with the given options: see [`Chrf::sentence_score`].
///
/// ```
/// use kaiyuan_metrics::chrf::{sentence_chrf, ChrfOptions};
/// let s = sentence_chrf("abc", &["abc"], &ChrfOptions::default()).unwrap();
/// assert_eq!(s.score, 100.0);
/// ```
pub fn sentence_chrf<R: Reference>(
    hyp: &str,
    refs: &[R],
    options: &ChrfOptions,
) -> Result<ChrfScore> {
    Chrf::new(*options)?.sentence_score(hyp, refs)
}

#[cfg(test)]
mod tests {
    //! The counting fast path against a literal port of sacrebleu's chrF
    //! statistics with `HashMap<String, usize>` counters.

    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    type Counter = HashMap<String, usize>;

    fn char_ngrams(line: &str, max_order: usize, whitespace: bool) -> Vec<Counter> {
        let line: Vec<char> = if whitespace {
            line.chars().collect()
        } else {
            line.chars().filter(|&c| !is_python_whitespace(c)).collect()
        };
        (1..=max_order)
            .map(|n| {
                let mut m = Counter::new();
                for i in 0..(line.len() + 1).saturating_sub(n) {
                    *m.entry(line[i..i + n].iter().collect()).or_insert(0) += 1;
                }
                m
            })
            .collect()
    }

    fn remove_punctuation(sent: &str) -> Vec<String> {
        const PUNCTS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
        let mut out = Vec::new();
        for w in python_split(sent) {
            let chars: Vec<char> = w.chars().collect();
            if chars.len() == 1 {
                out.push(w.to_string());
            } else if PUNCTS.contains(chars[chars.len() - 1]) {
                out.push(chars[..chars.len() - 1].iter().collect());
                out.push(chars[chars.len() - 1].to_string());
            } else if PUNCTS.contains(chars[0]) {
                out.push(chars[0].to_string());
                out.push(chars[1..].iter().collect());
            } else {
                out.push(w.to_string());
            }
        }
        out
    }

    fn word_ngrams(words: &[String], n: usize) -> Counter {
        let mut m = Counter::new();
        for i in 0..(words.len() + 1).saturating_sub(n) {
            *m.entry(words[i..i + n].join(" ")).or_insert(0) += 1;
        }
        m
    }

    fn all_ngrams(s: &str, o: &ChrfOptions) -> Vec<Counter> {
        let mut v = char_ngrams(s, o.char_order, o.whitespace);
        if o.word_order > 0 {
            let words = remove_punctuation(s);
            for n in 1..=o.word_order {
                v.push(word_ngrams(&words, n));
            }
        }
        v
    }

    fn naive_stats(hyp: &str, refs: &[String], o: &ChrfOptions) -> ChrfStats {
        let prep = |s: &str| {
            if o.lowercase {
                python_lowercase(s).into_owned()
            } else {
                s.to_string()
            }
        };
        let hyp_ngrams = all_ngrams(&prep(hyp), o);
        let mut best = Vec::new();
        let mut best_f = -1.0;
        for r in refs {
            let ref_ngrams = all_ngrams(&prep(r), o);
            let mut stats = Vec::new();
            for (h, r) in hyp_ngrams.iter().zip(&ref_ngrams) {
                let (mut matching, mut hyp_count) = (0, 0);
                for (g, &c) in h {
                    hyp_count += c;
                    if let Some(&rc) = r.get(g) {
                        matching += c.min(rc);
                    }
                }
                stats.push(ChrfOrderStats {
                    hyp: if r.is_empty() { 0 } else { hyp_count as u64 },
                    reference: r.values().sum::<usize>() as u64,
                    matching: matching as u64,
                });
            }
            let f = f_score(&stats, o);
            if f > best_f {
                best_f = f;
                best = stats;
            }
        }
        ChrfStats { orders: best }
    }

    fn text() -> impl Strategy<Value = String> {
        let words = prop::sample::select(vec![
            "the", "The", "cat", "at", "a", ".", ",", "(hi)", "x.", ".y", "中国", "国", "，",
            "ΣΑΣ", " ", "  ", "\t", "\u{3000}", "it's", "mat.", "é",
        ]);
        prop::collection::vec(words, 0..14).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        #[test]
        fn segment_stats_match_naive_port(
            hyp in text(),
            refs in prop::collection::vec(text(), 1..4),
            char_order in 0usize..7,
            word_order in 0usize..4,
            lowercase in any::<bool>(),
            whitespace in any::<bool>(),
            eps_smoothing in any::<bool>(),
        ) {
            prop_assume!(char_order + word_order > 0);
            let o = ChrfOptions { char_order, word_order, beta: 2, lowercase, whitespace, eps_smoothing };
            let fast = Chrf::new(o).unwrap().segment_stats(&hyp, &refs).unwrap();
            prop_assert_eq!(fast, naive_stats(&hyp, &refs, &o));
        }
    }
}
