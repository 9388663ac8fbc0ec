//! What sacrebleu's metrics share: the version their signatures name, the
//! reference streams (with sacrebleu's missing references), the count of
//! references a signature reports, and the way corpus and sentence scores
//! are computed from per-segment statistics.

use std::borrow::Cow;
use std::fmt;
use std::iter::Sum;

use rayon::prelude::*;

use crate::error::{MetricsError, Result};

pub(crate) mod ngram;
pub(crate) mod unicode;

/// The sacrebleu release this crate reproduces, as signatures print it.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// One reference of a segment. sacrebleu lets a reference be `None` so that
/// segments can have different numbers of references; `Option<&str>` (or
/// `Option<String>`) carries that. An empty string is a reference (of length
/// zero), exactly as in sacrebleu; only `None` is skipped.
///
/// ```
/// use kaiyuan_metrics::sacre::Reference;
/// assert_eq!("a b".text(), Some("a b"));
/// assert_eq!(None::<&str>.text(), None);
/// assert_eq!(Some(String::new()).text(), Some(""));
/// ```
pub trait Reference {
    /// The reference text, or `None` where this segment has no reference in
    /// this stream.
    fn text(&self) -> Option<&str>;
}

impl Reference for &str {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl Reference for String {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl Reference for &String {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl Reference for Cow<'_, str> {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl<T: AsRef<str>> Reference for Option<T> {
    fn text(&self) -> Option<&str> {
        self.as_ref().map(AsRef::as_ref)
    }
}

/// How many references a signature reports (`nrefs:`): the same number for
/// every segment, or `var` where it varies (some references are `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumRefs {
    /// Every segment has this many references.
    Fixed(usize),
    /// The number of references varies between segments (`nrefs:var`).
    Variable,
}

impl fmt::Display for NumRefs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumRefs::Fixed(n) => write!(f, "{n}"),
            NumRefs::Variable => f.write_str("var"),
        }
    }
}

/// Checks hypothesis and reference streams the way a corpus score needs them
/// and returns sacrebleu's reference count. Errors: no segment, no reference
/// stream, a stream whose length differs from the hypotheses' (named
/// `references[i]`), or a segment without any reference.
fn check_streams<H, RS, R>(hyps: &[H], refs: &[RS]) -> Result<NumRefs>
where
    H: AsRef<str>,
    RS: AsRef<[R]>,
    R: Reference,
{
    if hyps.is_empty() {
        return Err(MetricsError::input("hypotheses", "no segment to score"));
    }
    if refs.is_empty() {
        return Err(MetricsError::input(
            "references",
            "no reference stream (at least one is needed)",
        ));
    }
    for (i, stream) in refs.iter().enumerate() {
        let len = stream.as_ref().len();
        if len != hyps.len() {
            return Err(MetricsError::input(
                format!("references[{i}]"),
                format!(
                    "{len} segments, but the hypotheses have {} segments",
                    hyps.len()
                ),
            ));
        }
    }
    let mut seen: Option<usize> = None;
    let mut variable = false;
    for seg in 0..hyps.len() {
        let count = refs
            .iter()
            .filter(|stream| stream.as_ref()[seg].text().is_some())
            .count();
        if count == 0 {
            return Err(MetricsError::input(
                "references",
                format!("segment {seg} has no reference in any stream (all are None)"),
            ));
        }
        match seen {
            None => seen = Some(count),
            Some(n) if n != count => variable = true,
            Some(_) => {}
        }
    }
    Ok(match (variable, seen) {
        (false, Some(n)) => NumRefs::Fixed(n),
        _ => NumRefs::Variable,
    })
}

/// The references of one segment of a sentence score (each its own stream in
/// sacrebleu): errors where there is none.
fn check_sentence_refs<R: Reference>(refs: &[R]) -> Result<NumRefs> {
    let count = refs.iter().filter(|r| r.text().is_some()).count();
    if count == 0 {
        return Err(MetricsError::input(
            "references",
            "the segment has no reference (none given, or all are None)",
        ));
    }
    Ok(NumRefs::Fixed(count))
}

/// The references of segment `seg`, skipping `None`.
fn segment_refs<'a, RS, R>(refs: &'a [RS], seg: usize) -> impl Iterator<Item = &'a str> + 'a
where
    RS: AsRef<[R]>,
    R: Reference + 'a,
{
    refs.iter()
        .filter_map(move |stream| stream.as_ref()[seg].text())
}

/// The per-segment statistics of a corpus and its reference count
/// ([`crate::bleu::BleuCorpusStats`], [`crate::chrf::ChrfCorpusStats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusStats<S> {
    /// One entry per segment, in order.
    pub segments: Vec<S>,
    /// The number of references per segment, as the signature reports it.
    pub nrefs: NumRefs,
}

impl<S> CorpusStats<S>
where
    S: for<'a> Sum<&'a S>,
{
    /// The sum over all segments.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{Bleu, BleuOptions};
    /// let bleu = Bleu::new(BleuOptions::default()).unwrap();
    /// let stats = bleu.corpus_stats(&["a b c", "d e"], &[vec!["a b c", "d f"]]).unwrap();
    /// assert_eq!(stats.total().matching, [4, 2, 1, 0]);
    /// ```
    pub fn total(&self) -> S {
        self.segments.iter().sum()
    }
}

/// A sacrebleu metric as the shared corpus and sentence plumbing below sees
/// it: summable per-segment statistics, computed with per-worker buffers, and
/// a score of (summed) statistics.
pub(crate) trait SacreMetric: Sync {
    /// Buffers reused across the segments one worker computes.
    type Scratch: Default;
    /// The statistics of one segment or, summed, a corpus.
    type Stats: Send + for<'a> Sum<&'a Self::Stats>;
    /// The score of statistics.
    type Score;

    /// The statistics of one segment against its references (at least one).
    fn stats_with<'r>(
        &self,
        hyp: &str,
        refs: impl Iterator<Item = &'r str>,
        scratch: &mut Self::Scratch,
    ) -> Self::Stats;

    /// The score of (summed) statistics.
    fn score(&self, stats: &Self::Stats, nrefs: NumRefs) -> Self::Score;
}

/// The statistics of every segment of a corpus, after [`check_streams`].
/// Segments are computed in parallel (each worker with its own buffers); the
/// order of the results is the order of the segments.
pub(crate) fn corpus_stats<M, H, RS, R>(
    metric: &M,
    hyps: &[H],
    refs: &[RS],
) -> Result<CorpusStats<M::Stats>>
where
    M: SacreMetric,
    H: AsRef<str> + Sync,
    RS: AsRef<[R]> + Sync,
    R: Reference + Sync,
{
    let nrefs = check_streams(hyps, refs)?;
    let segments = hyps
        .par_iter()
        .enumerate()
        .with_min_len(64)
        .map_init(M::Scratch::default, |scratch, (i, h)| {
            metric.stats_with(h.as_ref(), segment_refs(refs, i), scratch)
        })
        .collect();
    Ok(CorpusStats { segments, nrefs })
}

/// The corpus score: the statistics summed over all segments, then scored.
pub(crate) fn corpus_score<M, H, RS, R>(metric: &M, hyps: &[H], refs: &[RS]) -> Result<M::Score>
where
    M: SacreMetric,
    H: AsRef<str> + Sync,
    RS: AsRef<[R]> + Sync,
    R: Reference + Sync,
{
    let stats = corpus_stats(metric, hyps, refs)?;
    Ok(metric.score(&stats.total(), stats.nrefs))
}

/// The statistics of one segment against its references (`None`s skipped;
/// at least one is needed, see [`check_sentence_refs`]) and their count.
pub(crate) fn sentence_stats<M, R>(metric: &M, hyp: &str, refs: &[R]) -> Result<(M::Stats, NumRefs)>
where
    M: SacreMetric,
    R: Reference,
{
    let nrefs = check_sentence_refs(refs)?;
    let mut scratch = M::Scratch::default();
    let stats = metric.stats_with(hyp, refs.iter().filter_map(|r| r.text()), &mut scratch);
    Ok((stats, nrefs))
}

/// The sentence score of one segment against its references.
pub(crate) fn sentence_score<M, R>(metric: &M, hyp: &str, refs: &[R]) -> Result<M::Score>
where
    M: SacreMetric,
    R: Reference,
{
    let (stats, nrefs) = sentence_stats(metric, hyp, refs)?;
    Ok(metric.score(&stats, nrefs))
}
