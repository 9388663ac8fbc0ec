//! BLEU (Papineni et al., 2002) exactly as sacrebleu 2.6.0 computes it:
//! corpus and sentence scores, the four smoothing methods, effective order,
//! per-segment sufficient statistics (summable, for resampling) and
//! sacrebleu's signature.
//!
//! A segment is lowercased (optionally, as Python's `str.lower()`), stripped
//! of trailing whitespace, tokenized ([`BleuTokenizer`]) and split on
//! whitespace. Its statistics are the hypothesis length, the length of the
//! closest reference (ties go to the shorter), and per order `n` the
//! hypothesis' n-grams (`total`) and those matched by a reference, each
//! n-gram's count clipped to its highest count in any one reference
//! (`matching`).
//!
//! References: each stream holds one reference per segment. A `None`
//! reference is skipped (the signature then says `nrefs:var`); an empty
//! string is a reference of length 0, as in sacrebleu (it can be the
//! "closest" length). Corpus statistics are computed in parallel over
//! segments (rayon); results do not depend on the number of threads.
//!
//! The score follows `BLEU.compute_bleu` operation for operation, including
//! `log(0) = -9999999999`, add-k applying to orders 2 and up only, and
//! Python 3.11's left-to-right `sum()` of the log precisions (Python 3.12+
//! sums floats with compensation, which can move the last bit).
//!
//! ```
//! use kaiyuan_metrics::bleu::{corpus_bleu, BleuOptions};
//! let hyps = ["The cat sat on the mat.", "It rained."];
//! let refs = [vec!["The cat sat on a mat.", "It was raining."]];
//! let score = corpus_bleu(&hyps, &refs, &BleuOptions::default()).unwrap();
//! assert_eq!(score.counts, [8, 4, 2, 1]);
//! assert!((score.score - 38.66252716278831).abs() < 1e-9);
//! assert_eq!(score.signature(), "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
//! ```

use std::fmt;
use std::ops::AddAssign;
use std::str::FromStr;

use rustc_hash::FxHashMap;

use crate::error::{MetricsError, Result};
use crate::sacre::ngram::{HypNgrams, UNKNOWN};
use crate::sacre::{self, CorpusStats, NumRefs, Reference, SACREBLEU_VERSION, SacreMetric};
use crate::sacre_tokenize::{BleuTokenizer, for_each_token, python_lowercase, python_rstrip};

/// sacrebleu's default maximum n-gram order.
pub const MAX_NGRAM_ORDER: usize = 4;

/// The smoothing of zero n-gram precisions (Chen and Cherry, 2014), as
/// sacrebleu's `smooth_method` / `smooth_value`.
///
/// ```
/// use kaiyuan_metrics::bleu::Smoothing;
/// assert_eq!("floor".parse::<Smoothing>().unwrap(), Smoothing::Floor(0.1));
/// assert_eq!("add-k".parse::<Smoothing>().unwrap(), Smoothing::AddK(1.0));
/// assert_eq!(Smoothing::Floor(0.1).to_string(), "floor");
/// assert_eq!(Smoothing::Floor(0.1).signature(), "floor[0.10]");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Smoothing {
    /// `exp`: NIST's geometric sequence (mteval-v13a), sacrebleu's default:
    /// the k-th zero precision becomes `1 / (2^k · total)`.
    #[default]
    Exp,
    /// `floor`: a zero match count becomes this value (default 0.1).
    Floor(f64),
    /// `add-k`: this value is added to the matches and totals of orders 2 and
    /// up (default 1).
    AddK(f64),
    /// `none`: no smoothing.
    None,
}

impl Smoothing {
    /// The sacrebleu method names, in the order of [`Smoothing`]'s variants.
    pub const NAMES: [&'static str; 4] = ["exp", "floor", "add-k", "none"];

    /// The method name (`exp`, `floor`, `add-k`, `none`).
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::Smoothing;
    /// assert_eq!(Smoothing::AddK(2.0).name(), "add-k");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Smoothing::Exp => "exp",
            Smoothing::Floor(_) => "floor",
            Smoothing::AddK(_) => "add-k",
            Smoothing::None => "none",
        }
    }

    /// The method with its default value (`floor` 0.1, `add-k` 1), by name.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::Smoothing;
    /// assert_eq!(Smoothing::from_name("none").unwrap(), Smoothing::None);
    /// ```
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "exp" => Ok(Smoothing::Exp),
            "floor" => Ok(Smoothing::Floor(0.1)),
            "add-k" => Ok(Smoothing::AddK(1.0)),
            "none" => Ok(Smoothing::None),
            _ => Err(MetricsError::option(
                "smooth-method",
                format!(
                    "unknown smoothing method {name:?} (expected one of exp, floor, add-k, none)"
                ),
            )),
        }
    }

    /// The same method with another value (for `floor` and `add-k`; an error
    /// for `exp` and `none`, which take none).
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::Smoothing;
    /// assert_eq!(Smoothing::Floor(0.1).with_value(0.05).unwrap(), Smoothing::Floor(0.05));
    /// assert!(Smoothing::Exp.with_value(1.0).is_err());
    /// ```
    pub fn with_value(self, value: f64) -> Result<Self> {
        match self {
            Smoothing::Floor(_) => Ok(Smoothing::Floor(value)),
            Smoothing::AddK(_) => Ok(Smoothing::AddK(value)),
            Smoothing::Exp | Smoothing::None => Err(MetricsError::option(
                "smooth-value",
                format!("the {} smoothing method takes no value", self.name()),
            )),
        }
    }

    /// The value `floor` and `add-k` use, if any.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::Smoothing;
    /// assert_eq!(Smoothing::AddK(1.0).value(), Some(1.0));
    /// assert_eq!(Smoothing::Exp.value(), None);
    /// ```
    pub fn value(&self) -> Option<f64> {
        match *self {
            Smoothing::Floor(v) | Smoothing::AddK(v) => Some(v),
            Smoothing::Exp | Smoothing::None => None,
        }
    }

    /// As the signature prints it: the name, and for `floor` and `add-k` the
    /// value with two decimals in brackets (`floor[0.10]`).
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::Smoothing;
    /// assert_eq!(Smoothing::AddK(1.0).signature(), "add-k[1.00]");
    /// assert_eq!(Smoothing::Exp.signature(), "exp");
    /// ```
    pub fn signature(&self) -> String {
        match self.value() {
            Some(v) => format!("{}[{v:.2}]", self.name()),
            None => self.name().to_string(),
        }
    }

    fn validate(&self) -> Result<()> {
        if let Some(v) = self.value()
            && (!v.is_finite() || v < 0.0)
        {
            return Err(MetricsError::option(
                "smooth-value",
                format!("must be a finite number >= 0, got {v}"),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Smoothing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Smoothing {
    type Err = MetricsError;

    fn from_str(s: &str) -> Result<Self> {
        Smoothing::from_name(s)
    }
}

/// BLEU's options, as sacrebleu's `BLEU(...)` arguments. `Default` is
/// sacrebleu's corpus default: `13a`, `exp`, case-sensitive, no effective
/// order, order 4.
///
/// ```
/// use kaiyuan_metrics::bleu::BleuOptions;
/// assert!(!BleuOptions::default().effective_order);
/// assert!(BleuOptions::sentence_default().effective_order);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BleuOptions {
    /// The tokenizer (`--tokenize`).
    pub tokenize: BleuTokenizer,
    /// The smoothing method and value.
    pub smooth: Smoothing,
    /// Lowercase hypotheses and references first (`case:lc`).
    pub lowercase: bool,
    /// Average only the orders the hypothesis has n-grams of (sacrebleu
    /// recommends it for sentence BLEU; `eff:yes`).
    pub effective_order: bool,
    /// The highest n-gram order (4; not part of the signature).
    pub max_ngram_order: usize,
}

impl Default for BleuOptions {
    fn default() -> Self {
        BleuOptions {
            tokenize: BleuTokenizer::Mteval13a,
            smooth: Smoothing::Exp,
            lowercase: false,
            effective_order: false,
            max_ngram_order: MAX_NGRAM_ORDER,
        }
    }
}

impl BleuOptions {
    /// The defaults of sacrebleu's `sentence_bleu()`: as [`Default`] but with
    /// effective order.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{BleuOptions, Smoothing};
    /// let o = BleuOptions::sentence_default();
    /// assert_eq!((o.smooth, o.effective_order), (Smoothing::Exp, true));
    /// ```
    pub fn sentence_default() -> Self {
        BleuOptions {
            effective_order: true,
            ..Self::default()
        }
    }

    /// Refuses an order of 0 and a negative or non-finite smoothing value.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{BleuOptions, Smoothing};
    /// let bad = BleuOptions { smooth: Smoothing::Floor(-1.0), ..Default::default() };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.max_ngram_order == 0 {
            return Err(MetricsError::option(
                "max-ngram-order",
                "must be at least 1",
            ));
        }
        self.smooth.validate()
    }
}

/// The sufficient statistics of BLEU for one segment or, summed, a corpus.
///
/// ```
/// use kaiyuan_metrics::bleu::BleuStats;
/// let mut a = BleuStats { hyp_len: 3, ref_len: 4, matching: vec![2, 1, 0, 0], total: vec![3, 2, 1, 0] };
/// a += &a.clone();
/// assert_eq!((a.hyp_len, a.matching[0], a.total[2]), (6, 4, 2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct BleuStats {
    /// Hypothesis length in tokens (sacrebleu's `sys_len`).
    pub hyp_len: u64,
    /// Length of the reference closest in length to the hypothesis (the
    /// shorter one on a tie).
    pub ref_len: u64,
    /// Matched (clipped) n-grams per order, `matching[n - 1]` for order `n`.
    pub matching: Vec<u64>,
    /// Hypothesis n-grams per order.
    pub total: Vec<u64>,
}

impl BleuStats {
    /// All zeros for orders `1..=max_order`.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::BleuStats;
    /// assert_eq!(BleuStats::zeros(4).matching, [0; 4]);
    /// ```
    pub fn zeros(max_order: usize) -> Self {
        BleuStats {
            hyp_len: 0,
            ref_len: 0,
            matching: vec![0; max_order],
            total: vec![0; max_order],
        }
    }
}

impl AddAssign<&BleuStats> for BleuStats {
    fn add_assign(&mut self, other: &BleuStats) {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for (v, o) in [
            (&mut self.matching, &other.matching),
            (&mut self.total, &other.total),
        ] {
            if v.len() < o.len() {
                v.resize(o.len(), 0);
            }
            for (a, b) in v.iter_mut().zip(o) {
                *a += b;
            }
        }
    }
}

impl<'a> std::iter::Sum<&'a BleuStats> for BleuStats {
    fn sum<I: Iterator<Item = &'a BleuStats>>(iter: I) -> Self {
        let mut total = BleuStats::default();
        for s in iter {
            total += s;
        }
        total
    }
}

/// The per-segment statistics of a corpus and its reference count.
///
/// ```
/// use kaiyuan_metrics::bleu::{BleuCorpusStats, BleuStats};
/// use kaiyuan_metrics::sacre::NumRefs;
/// let one = BleuStats { hyp_len: 2, ref_len: 3, matching: vec![1, 0, 0, 0], total: vec![2, 1, 0, 0] };
/// let stats = BleuCorpusStats { segments: vec![one.clone(), one], nrefs: NumRefs::Fixed(1) };
/// assert_eq!(stats.total().total, [4, 2, 0, 0]);
/// ```
pub type BleuCorpusStats = CorpusStats<BleuStats>;

/// sacrebleu's reproducibility signature of a BLEU score; `Display` prints
/// it as `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BleuSignature {
    /// References per segment.
    pub nrefs: NumRefs,
    /// The options the score was computed with.
    pub options: BleuOptions,
}

impl fmt::Display for BleuSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        write!(
            f,
            "nrefs:{}|case:{}|eff:{}|tok:{}|smooth:{}|version:{}",
            self.nrefs,
            if o.lowercase { "lc" } else { "mixed" },
            if o.effective_order { "yes" } else { "no" },
            o.tokenize,
            o.smooth.signature(),
            SACREBLEU_VERSION
        )
    }
}

/// A BLEU score with everything sacrebleu's `BLEUScore` reports.
///
/// `counts` and `totals` are the statistics as counted. (sacrebleu's
/// `BLEUScore.counts`/`.totals` additionally include the `add-k` value added
/// to orders 2 and up, when that smoothing applies.)
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    /// BLEU in 0..=100.
    pub score: f64,
    /// Matched n-grams per order.
    pub counts: Vec<u64>,
    /// Hypothesis n-grams per order.
    pub totals: Vec<u64>,
    /// The (smoothed) precisions in percent; 0 for orders not reached.
    pub precisions: Vec<f64>,
    /// The brevity penalty.
    pub bp: f64,
    /// `sys_len / ref_len` (0 when `ref_len` is 0).
    pub ratio: f64,
    /// Hypothesis length in tokens.
    pub sys_len: u64,
    /// Reference length in tokens.
    pub ref_len: u64,
    /// The signature.
    pub signature: BleuSignature,
}

impl BleuScore {
    /// sacrebleu's signature string.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::sentence_bleu;
    /// let s = sentence_bleu("a b", &["a b"], &Default::default()).unwrap();
    /// assert_eq!(s.signature(), "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
    /// ```
    pub fn signature(&self) -> String {
        self.signature.to_string()
    }

    /// `counts` and `totals` as sacrebleu's `BLEUScore` reports them: with
    /// `add-k` smoothing, k is added to orders 2 and up whenever anything
    /// matched (sacrebleu smooths its lists in place before storing them);
    /// otherwise the counts as counted.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{sentence_bleu, BleuOptions, Smoothing};
    /// let options = BleuOptions { smooth: Smoothing::AddK(1.0), ..Default::default() };
    /// let s = sentence_bleu("a b c", &["a b d"], &options).unwrap();
    /// assert_eq!(s.counts, [2, 1, 0, 0]);
    /// assert_eq!(s.sacrebleu_counts_totals(), (vec![2.0, 2.0, 1.0, 1.0], vec![3.0, 3.0, 2.0, 1.0]));
    /// ```
    pub fn sacrebleu_counts_totals(&self) -> (Vec<f64>, Vec<f64>) {
        let k = match self.signature.options.smooth {
            Smoothing::AddK(k) if self.counts.iter().any(|&c| c > 0) => k,
            _ => 0.0,
        };
        let adjust = |v: &[u64]| -> Vec<f64> {
            v.iter()
                .enumerate()
                .map(|(n, &c)| c as f64 + if n > 0 { k } else { 0.0 })
                .collect()
        };
        (adjust(&self.counts), adjust(&self.totals))
    }

    /// sacrebleu's verbose part: `82.0/66.1/54.2/45.2 (BP = 1.000 ratio =
    /// 1.016 hyp_len = 713443 ref_len = 702153)`.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::sentence_bleu;
    /// let s = sentence_bleu("a b c d", &["a b c d"], &Default::default()).unwrap();
    /// assert_eq!(s.verbose(), "100.0/100.0/100.0/100.0 (BP = 1.000 ratio = 1.000 hyp_len = 4 ref_len = 4)");
    /// ```
    pub fn verbose(&self) -> String {
        let precisions: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        format!(
            "{} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            precisions.join("/"),
            self.bp,
            self.ratio,
            self.sys_len,
            self.ref_len
        )
    }
}

impl fmt::Display for BleuScore {
    /// sacrebleu's `format()`: `BLEU|<signature> = 60.39 <verbose>`, with
    /// the precision (default 2) giving the score's decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = f.precision().unwrap_or(2);
        write!(
            f,
            "BLEU|{} = {:.*} {}",
            self.signature,
            width,
            self.score,
            self.verbose()
        )
    }
}

/// Python's `my_log`: the natural logarithm, with log(0) = -9999999999.
fn my_log(x: f64) -> f64 {
    if x == 0.0 { -9_999_999_999.0 } else { x.ln() }
}

/// A BLEU scorer with validated options.
///
/// ```
/// use kaiyuan_metrics::bleu::{Bleu, BleuOptions};
/// let bleu = Bleu::new(BleuOptions::sentence_default()).unwrap();
/// let s = bleu.sentence_score("the cat", &["the cat sat"]).unwrap();
/// assert!((s.score - 60.653065971263366).abs() < 1e-9);
/// ```
#[derive(Debug, Clone)]
pub struct Bleu {
    options: BleuOptions,
}

/// Buffers reused across segments.
#[derive(Default)]
pub(crate) struct Scratch {
    hyp: String,
    refs: Vec<String>,
    hyp_ids: Vec<u32>,
    ref_ids: Vec<u32>,
    index: HypNgrams,
    found: Vec<u32>,
    best: Vec<u32>,
    at: Vec<u32>,
}

impl Bleu {
    /// A scorer; errors on invalid options (see [`BleuOptions::validate`]).
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{Bleu, BleuOptions};
    /// assert!(Bleu::new(BleuOptions { max_ngram_order: 0, ..Default::default() }).is_err());
    /// ```
    pub fn new(options: BleuOptions) -> Result<Self> {
        options.validate()?;
        Ok(Bleu { options })
    }

    /// The options.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{Bleu, BleuOptions};
    /// assert_eq!(Bleu::new(BleuOptions::default()).unwrap().options().max_ngram_order, 4);
    /// ```
    pub fn options(&self) -> &BleuOptions {
        &self.options
    }

    /// Lowercase (optionally), strip trailing whitespace, tokenize.
    fn preprocess(&self, text: &str, out: &mut String) {
        if self.options.lowercase {
            let lower = python_lowercase(text);
            self.options
                .tokenize
                .tokenize_into(python_rstrip(&lower), out);
        } else {
            self.options
                .tokenize
                .tokenize_into(python_rstrip(text), out);
        }
    }

    /// The statistics of one segment against its references (`None`s
    /// skipped; at least one is needed).
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{Bleu, BleuOptions};
    /// let bleu = Bleu::new(BleuOptions::default()).unwrap();
    /// let s = bleu.segment_stats("a b c", &["a b", "a b c d"]).unwrap();
    /// assert_eq!((s.hyp_len, s.ref_len), (3, 2));
    /// assert_eq!(s.matching, [3, 2, 1, 0]);
    /// ```
    pub fn segment_stats<R: Reference>(&self, hyp: &str, refs: &[R]) -> Result<BleuStats> {
        Ok(sacre::sentence_stats(self, hyp, refs)?.0)
    }

    /// The statistics of every segment of a corpus. `refs` holds reference
    /// streams, each as long as `hyps` (a `None` reference is skipped, as in
    /// sacrebleu).
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{Bleu, BleuOptions};
    /// use kaiyuan_metrics::sacre::NumRefs;
    /// let bleu = Bleu::new(BleuOptions::default()).unwrap();
    /// let refs = [vec![Some("a b"), Some("c")], vec![Some("a"), None]];
    /// let stats = bleu.corpus_stats(&["a b", "c"], &refs).unwrap();
    /// assert_eq!(stats.nrefs, NumRefs::Variable);
    /// assert!(bleu.corpus_stats(&["a b", "c"], &[vec!["a b"]]).is_err());
    /// ```
    pub fn corpus_stats<H, RS, R>(&self, hyps: &[H], refs: &[RS]) -> Result<BleuCorpusStats>
    where
        H: AsRef<str> + Sync,
        RS: AsRef<[R]> + Sync,
        R: Reference + Sync,
    {
        sacre::corpus_stats(self, hyps, refs)
    }

    /// Corpus BLEU: the statistics summed over all segments, then scored.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{Bleu, BleuOptions};
    /// let bleu = Bleu::new(BleuOptions::default()).unwrap();
    /// let s = bleu.corpus_score(&["a b c d e"], &[vec!["a b c d e"]]).unwrap();
    /// assert!((s.score - 100.0).abs() < 1e-9); // 100.00000000000004, as sacrebleu
    /// ```
    pub fn corpus_score<H, RS, R>(&self, hyps: &[H], refs: &[RS]) -> Result<BleuScore>
    where
        H: AsRef<str> + Sync,
        RS: AsRef<[R]> + Sync,
        R: Reference + Sync,
    {
        sacre::corpus_score(self, hyps, refs)
    }

    /// Sentence BLEU of one hypothesis against its references (`None`s
    /// skipped).
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{Bleu, BleuOptions};
    /// let bleu = Bleu::new(BleuOptions::sentence_default()).unwrap();
    /// assert_eq!(bleu.sentence_score("a b", &["c d"]).unwrap().score, 0.0);
    /// ```
    pub fn sentence_score<R: Reference>(&self, hyp: &str, refs: &[R]) -> Result<BleuScore> {
        sacre::sentence_score(self, hyp, refs)
    }

    /// The score of (summed) statistics: sacrebleu's `compute_bleu`.
    ///
    /// ```
    /// use kaiyuan_metrics::bleu::{Bleu, BleuOptions, BleuStats};
    /// use kaiyuan_metrics::sacre::NumRefs;
    /// let bleu = Bleu::new(BleuOptions::default()).unwrap();
    /// let stats = BleuStats { hyp_len: 4, ref_len: 5, matching: vec![4, 3, 2, 1], total: vec![4, 3, 2, 1] };
    /// let s = bleu.score_from_stats(&stats, NumRefs::Fixed(1));
    /// assert!((s.bp - (-0.25f64).exp()).abs() < 1e-15);
    /// ```
    pub fn score_from_stats(&self, stats: &BleuStats, nrefs: NumRefs) -> BleuScore {
        let max_order = self.options.max_ngram_order;
        let sys_len = stats.hyp_len;
        let ref_len = stats.ref_len;
        let get = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        let counts: Vec<u64> = (0..max_order).map(|i| get(&stats.matching, i)).collect();
        let totals: Vec<u64> = (0..max_order).map(|i| get(&stats.total, i)).collect();

        let mut bp = 1.0;
        if sys_len < ref_len {
            bp = if sys_len > 0 {
                (1.0 - ref_len as f64 / sys_len as f64).exp()
            } else {
                0.0
            };
        }
        let ratio = if ref_len > 0 {
            sys_len as f64 / ref_len as f64
        } else {
            0.0
        };
        let mut precisions = vec![0.0; max_order];
        let signature = BleuSignature {
            nrefs,
            options: self.options,
        };
        let make = |score, precisions| BleuScore {
            score,
            counts: counts.clone(),
            totals: totals.clone(),
            precisions,
            bp,
            ratio,
            sys_len,
            ref_len,
            signature,
        };
        if counts.iter().all(|&c| c == 0) {
            return make(0.0, precisions);
        }

        let mut smooth_mteval = 1.0f64;
        let mut eff_order = max_order;
        for n in 1..=max_order {
            let (mut correct, mut total) = (counts[n - 1] as f64, totals[n - 1] as f64);
            if let Smoothing::AddK(k) = self.options.smooth
                && n > 1
            {
                correct += k;
                total += k;
            }
            if total == 0.0 {
                break;
            }
            if self.options.effective_order {
                eff_order = n;
            }
            if correct == 0.0 {
                match self.options.smooth {
                    Smoothing::Exp => {
                        smooth_mteval *= 2.0;
                        precisions[n - 1] = 100.0 / (smooth_mteval * total);
                    }
                    Smoothing::Floor(v) => precisions[n - 1] = 100.0 * v / total,
                    Smoothing::AddK(_) | Smoothing::None => {}
                }
            } else {
                precisions[n - 1] = 100.0 * correct / total;
            }
        }
        // Python 3.11's sum(): left to right, from 0.
        let mut log_sum = 0.0f64;
        for &p in &precisions[..eff_order] {
            log_sum += my_log(p);
        }
        let score = bp * (log_sum / eff_order as f64).exp();
        make(score, precisions)
    }
}

impl SacreMetric for Bleu {
    type Scratch = Scratch;
    type Stats = BleuStats;
    type Score = BleuScore;

    fn stats_with<'r>(
        &self,
        hyp: &str,
        refs: impl Iterator<Item = &'r str>,
        scratch: &mut Scratch,
    ) -> BleuStats {
        let max_order = self.options.max_ngram_order;
        let tokenize = self.options.tokenize;
        let Scratch {
            hyp: hyp_buf,
            refs: ref_bufs,
            hyp_ids,
            ref_ids,
            index,
            found,
            best,
            at,
        } = scratch;
        self.preprocess(hyp, hyp_buf);
        let mut nrefs = 0;
        for r in refs {
            if ref_bufs.len() <= nrefs {
                ref_bufs.push(String::new());
            }
            self.preprocess(r, &mut ref_bufs[nrefs]);
            nrefs += 1;
        }

        let mut vocab: FxHashMap<&str, u32> =
            FxHashMap::with_capacity_and_hasher(hyp_buf.len() / 4 + 1, Default::default());
        hyp_ids.clear();
        for_each_token(tokenize, hyp_buf, |t| {
            let next = vocab.len() as u32;
            hyp_ids.push(*vocab.entry(t).or_insert(next));
        });
        let hyp_len = hyp_ids.len() as u64;
        index.build(hyp_ids, max_order);
        best.clear();
        best.resize(index.len(), 0);

        let mut closest: Option<(u64, u64)> = None; // (diff, len)
        for r in &ref_bufs[..nrefs] {
            ref_ids.clear();
            for_each_token(tokenize, r, |t| {
                ref_ids.push(*vocab.get(t).unwrap_or(&UNKNOWN))
            });
            let len = ref_ids.len() as u64;
            let diff = len.abs_diff(hyp_len);
            closest = match closest {
                Some((d, l)) if d < diff || (d == diff && l <= len) => Some((d, l)),
                _ => Some((diff, len)),
            };
            found.clear();
            found.resize(index.len(), 0);
            index.count_in(ref_ids, max_order, found, at);
            for (b, f) in best.iter_mut().zip(found.iter()) {
                *b = (*b).max(*f);
            }
        }

        let mut stats = BleuStats::zeros(max_order);
        stats.hyp_len = hyp_len;
        stats.ref_len = closest.map_or(0, |(_, l)| l);
        for n in 1..=max_order {
            for e in index.order(n) {
                stats.total[n - 1] += u64::from(index.counts[e]);
                stats.matching[n - 1] += u64::from(index.counts[e].min(best[e]));
            }
        }
        stats
    }

    fn score(&self, stats: &BleuStats, nrefs: NumRefs) -> BleuScore {
        self.score_from_stats(stats, nrefs)
    }
}

/// Corpus BLEU with the given options: see [`Bleu::corpus_score`].
///
/// ```
/// use kaiyuan_metrics::bleu::{corpus_bleu, BleuOptions};
/// let refs: Vec<Vec<&str>> = vec![vec!["a b c d"], vec!["a b c e"]];
/// let s = corpus_bleu(&["a b c d"], &refs, &BleuOptions::default()).unwrap();
/// assert_eq!(s.signature(), "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
/// assert!((s.score - 100.0).abs() < 1e-9);
/// ```
pub fn corpus_bleu<H, RS, R>(hyps: &[H], refs: &[RS], options: &BleuOptions) -> Result<BleuScore>
where
    H: AsRef<str> + Sync,
    RS: AsRef<[R]> + Sync,
    R: Reference + Sync,
{
    Bleu::new(*options)?.corpus_score(hyps, refs)
}

/// Sentence BLEU with the given options (sacrebleu's `sentence_bleu()` uses
/// [`BleuOptions::sentence_default`]): see [`Bleu::sentence_score`].
///
/// ```
/// use kaiyuan_metrics::bleu::{sentence_bleu, BleuOptions};
/// let s = sentence_bleu("a b c", &["a b c d"], &BleuOptions::sentence_default()).unwrap();
/// assert!((s.score - 71.65313105737896).abs() < 1e-9);
/// ```
pub fn sentence_bleu<R: Reference>(
    hyp: &str,
    refs: &[R],
    options: &BleuOptions,
) -> Result<BleuScore> {
    Bleu::new(*options)?.sentence_score(hyp, refs)
}

#[cfg(test)]
mod tests {
    //! The counting fast path against a literal port of sacrebleu's
    //! `extract_all_word_ngrams` / `_compute_segment_statistics` with
    //! `HashMap<Vec<String>, usize>` counters.

    use super::*;
    use crate::sacre_tokenize::python_split;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ngrams(tokens: &[String], max_order: usize) -> HashMap<Vec<String>, usize> {
        let mut m = HashMap::new();
        for n in 1..=max_order {
            for i in 0..(tokens.len() + 1).saturating_sub(n) {
                *m.entry(tokens[i..i + n].to_vec()).or_insert(0) += 1;
            }
        }
        m
    }

    fn naive_stats(hyp: &str, refs: &[String], o: &BleuOptions) -> BleuStats {
        let prep = |s: &str| -> Vec<String> {
            let s = if o.lowercase {
                python_lowercase(s).into_owned()
            } else {
                s.to_string()
            };
            let tok = o.tokenize.tokenize(python_rstrip(&s));
            python_split(&tok).map(str::to_string).collect()
        };
        let mut ref_ngrams: HashMap<Vec<String>, usize> = HashMap::new();
        let mut ref_lens = Vec::new();
        for r in refs {
            let toks = prep(r);
            ref_lens.push(toks.len() as i64);
            for (g, c) in ngrams(&toks, o.max_ngram_order) {
                let e = ref_ngrams.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        let hyp_toks = prep(hyp);
        let hyp_len = hyp_toks.len() as i64;
        let (mut closest_diff, mut closest_len) = (-1i64, -1i64);
        for &len in &ref_lens {
            let diff = (hyp_len - len).abs();
            if closest_diff == -1 || diff < closest_diff {
                closest_diff = diff;
                closest_len = len;
            } else if diff == closest_diff && len < closest_len {
                closest_len = len;
            }
        }
        let mut stats = BleuStats::zeros(o.max_ngram_order);
        stats.hyp_len = hyp_len as u64;
        stats.ref_len = closest_len as u64;
        for (g, c) in ngrams(&hyp_toks, o.max_ngram_order) {
            let n = g.len() - 1;
            stats.total[n] += c as u64;
            if let Some(&r) = ref_ngrams.get(&g) {
                stats.matching[n] += c.min(r) as u64;
            }
        }
        stats
    }

    fn text() -> impl Strategy<Value = String> {
        let words = prop::sample::select(vec![
            "the", "The", "cat", "CAT", "sat", "a", ".", ",", "-", "5", "1,000", "(x)", "中", "国",
            "，", "ΣΑΣ", " ", "  ", "\t", "&amp;", "it's", "mat.",
        ]);
        prop::collection::vec(words, 0..16).prop_map(|v| v.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        #[test]
        fn segment_stats_match_naive_port(
            hyp in text(),
            refs in prop::collection::vec(text(), 1..4),
            tok in prop::sample::select(BleuTokenizer::ALL.to_vec()),
            lowercase in any::<bool>(),
            max_ngram_order in 1usize..6,
        ) {
            let o = BleuOptions { tokenize: tok, lowercase, max_ngram_order, ..BleuOptions::default() };
            let fast = Bleu::new(o).unwrap().segment_stats(&hyp, &refs).unwrap();
            prop_assert_eq!(fast, naive_stats(&hyp, &refs, &o));
        }
    }
}
