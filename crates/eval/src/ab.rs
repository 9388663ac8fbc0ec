//! A/B comparison of two evaluation reports with paired bootstrap
//! confidence intervals: is B worse than A, beyond noise and beyond a
//! threshold?
//!
//! A report's metrics each carry the per-item values they aggregate (one
//! per question, token or sentence) and how they aggregate. Both reports
//! must have scored the same items in the same order; then each bootstrap
//! resample draws item indices with replacement and scores A and B on the
//! same draw (Koehn 2004, as sacrebleu's `--paired-bs`). The 95% interval
//! of `B − A` comes from the 2.5th and 97.5th percentiles of 1,000 draws
//! (seeded, so a comparison is reproducible).
//!
//! A metric **regresses** when it moves in its worse direction (down for
//! accuracy and BLEU, up for perplexity and loss); the regression is
//! **significant** when the whole interval lies on the worse side of zero;
//! and it **fails the gate** when it is significant and larger than the
//! allowed regression.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{EvalError, Result};

/// How a metric's per-item values become the metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// The mean of one value per item (accuracy, exact match, ROUGE F).
    Mean,
    /// `exp` of the mean of one value per item (perplexity from per-token
    /// negative log-likelihoods).
    ExpMean,
    /// Corpus BLEU (sacrebleu's defaults: `exp` smoothing, 4-grams) from
    /// per-sentence statistics `[hyp_len, ref_len, matches₁..₄, totals₁..₄]`.
    Bleu,
}

impl Aggregate {
    /// The name written in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::ExpMean => "exp_mean",
            Self::Bleu => "bleu",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "mean" => Self::Mean,
            "exp_mean" => Self::ExpMean,
            "bleu" => Self::Bleu,
            _ => return None,
        })
    }

    /// The metric over the items `indices` of `samples`.
    fn apply(self, samples: &[Vec<f64>], indices: impl Iterator<Item = usize>) -> f64 {
        match self {
            Self::Mean | Self::ExpMean => {
                let (mut sum, mut n) = (0.0, 0usize);
                for i in indices {
                    sum += samples[i].first().copied().unwrap_or(f64::NAN);
                    n += 1;
                }
                let mean = sum / n as f64;
                if self == Self::ExpMean {
                    mean.exp()
                } else {
                    mean
                }
            }
            Self::Bleu => {
                let mut stats = [0.0f64; 10];
                for i in indices {
                    for (s, v) in stats.iter_mut().zip(&samples[i]) {
                        *s += v;
                    }
                }
                bleu_from_stats(&stats)
            }
        }
    }
}

/// sacrebleu's corpus BLEU (default options: `exp` smoothing, 4-grams)
/// from summed statistics `[hyp_len, ref_len, matches₁..₄, totals₁..₄]`.
fn bleu_from_stats(stats: &[f64; 10]) -> f64 {
    use kaiyuan_metrics::bleu::{Bleu, BleuOptions, BleuStats};
    use kaiyuan_metrics::sacre::NumRefs;
    let stats = BleuStats {
        hyp_len: stats[0] as u64,
        ref_len: stats[1] as u64,
        matching: stats[2..6].iter().map(|&v| v as u64).collect(),
        total: stats[6..10].iter().map(|&v| v as u64).collect(),
    };
    Bleu::new(BleuOptions::default())
        .map(|b| b.score_from_stats(&stats, NumRefs::Fixed(1)).score)
        .unwrap_or(f64::NAN)
}

/// Per-segment BLEU statistics as the items of an [`Aggregate::Bleu`]
/// metric: `[hyp_len, ref_len, matches₁..₄, totals₁..₄]` each.
///
/// ```
/// use kaiyuan_eval::ab::bleu_samples;
/// use kaiyuan_metrics::bleu::BleuStats;
/// let s = BleuStats { hyp_len: 3, ref_len: 4, matching: vec![2, 1, 0, 0], total: vec![3, 2, 1, 0] };
/// assert_eq!(bleu_samples(&[s])[0], [3.0, 4.0, 2.0, 1.0, 0.0, 0.0, 3.0, 2.0, 1.0, 0.0]);
/// ```
pub fn bleu_samples(segments: &[kaiyuan_metrics::bleu::BleuStats]) -> Vec<Vec<f64>> {
    segments
        .iter()
        .map(|s| {
            let mut v = vec![s.hyp_len as f64, s.ref_len as f64];
            v.extend(s.matching.iter().map(|&m| m as f64));
            v.extend(s.total.iter().map(|&t| t as f64));
            v
        })
        .collect()
}

/// One metric of a report.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// The metric's value as reported.
    pub value: f64,
    /// Whether larger is better (accuracy) or worse (perplexity).
    pub higher_is_better: bool,
    /// How `samples` aggregate to `value`.
    pub aggregate: Aggregate,
    /// Per-item values (empty when the report has none: then no interval).
    pub samples: Vec<Vec<f64>>,
}

impl Metric {
    /// A metric that is the mean of `values` (one per item).
    pub fn mean(values: &[f64], higher_is_better: bool) -> Self {
        let samples: Vec<Vec<f64>> = values.iter().map(|&v| vec![v]).collect();
        let value = Aggregate::Mean.apply(&samples, 0..samples.len());
        Self {
            value,
            higher_is_better,
            aggregate: Aggregate::Mean,
            samples,
        }
    }

    /// The metric as a JSON object (`value`, `higher_is_better`,
    /// `aggregate`, `samples`).
    pub fn to_json(&self) -> Value {
        let samples: Vec<Value> = self
            .samples
            .iter()
            .map(|s| if s.len() == 1 { json!(s[0]) } else { json!(s) })
            .collect();
        json!({
            "value": self.value,
            "higher_is_better": self.higher_is_better,
            "aggregate": self.aggregate.name(),
            "samples": samples,
        })
    }
}

/// Reads the `metrics` object of a report (`{"name": {"value", "higher_is_better",
/// "aggregate", "samples"}}`); `origin` names the report in errors.
///
/// ```
/// use kaiyuan_eval::ab::metrics_of_report;
/// let report = serde_json::json!({"schema": "kaiyuan.eval.mc/1", "metrics": {
///     "acc": {"value": 0.5, "higher_is_better": true, "aggregate": "mean", "samples": [1, 0]}}});
/// let metrics = metrics_of_report(&report, "a.json")?;
/// assert_eq!(metrics["acc"].samples.len(), 2);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidInput`] naming the report and the metric for a
/// missing `metrics` object, a missing or mistyped field, or an unknown
/// aggregate.
pub fn metrics_of_report(report: &Value, origin: &str) -> Result<BTreeMap<String, Metric>> {
    let metrics = report
        .get("metrics")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            EvalError::input(
                origin,
                "no `metrics` object (is this a kaiyuan eval --json report?)",
            )
        })?;
    let mut out = BTreeMap::new();
    for (name, m) in metrics {
        let here = format!("{origin}: metric `{name}`");
        let value = m
            .get("value")
            .and_then(Value::as_f64)
            .ok_or_else(|| EvalError::input(&here, "missing numeric `value`"))?;
        let higher_is_better = m
            .get("higher_is_better")
            .and_then(Value::as_bool)
            .ok_or_else(|| EvalError::input(&here, "missing boolean `higher_is_better`"))?;
        let aggregate_name = m.get("aggregate").and_then(Value::as_str).unwrap_or("mean");
        let aggregate = Aggregate::parse(aggregate_name).ok_or_else(|| {
            EvalError::input(
                &here,
                format!("unknown aggregate `{aggregate_name}` (mean, exp_mean, bleu)"),
            )
        })?;
        let mut samples = Vec::new();
        for (i, s) in m
            .get("samples")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let sample = match s {
                Value::Number(n) => n.as_f64().map(|x| vec![x]),
                Value::Array(a) => a.iter().map(Value::as_f64).collect(),
                _ => None,
            }
            .ok_or_else(|| {
                EvalError::input(
                    &here,
                    format!("sample {i} is not a number or a list of numbers"),
                )
            })?;
            samples.push(sample);
        }
        out.insert(
            name.clone(),
            Metric {
                value,
                higher_is_better,
                aggregate,
                samples,
            },
        );
    }
    Ok(out)
}

/// Options of [`compare_reports`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompareOptions {
    /// Largest allowed regression before the gate fails.
    pub max_regression: Threshold,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            max_regression: Threshold::Relative(0.01),
            resamples: 1000,
            seed: 12345,
        }
    }
}

/// An allowed regression: relative to A's value, or in the metric's units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// A fraction of A's value (`1%` is `Relative(0.01)`).
    Relative(f64),
    /// In the metric's units (`0.5`).
    Absolute(f64),
}

impl std::str::FromStr for Threshold {
    type Err = EvalError;

    /// `"1%"` → relative, `"0.5"` → absolute.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || EvalError::option("max-regression", format!("`{s}` is not like 1% or 0.5"));
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(v >= 0.0 && v.is_finite()) {
                return Err(bad());
            }
            Ok(Self::Relative(v / 100.0))
        } else {
            let v: f64 = s.parse().map_err(|_| bad())?;
            if !(v >= 0.0 && v.is_finite()) {
                return Err(bad());
            }
            Ok(Self::Absolute(v))
        }
    }
}

/// The comparison of one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricComparison {
    /// The metric's name.
    pub name: String,
    /// A's value.
    pub a: f64,
    /// B's value.
    pub b: f64,
    /// `B − A`.
    pub delta: f64,
    /// 95% paired-bootstrap interval of `B − A` (None without per-item
    /// values).
    pub interval: Option<(f64, f64)>,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// B is worse than A by more than the interval allows to be noise.
    pub significant_regression: bool,
    /// B is significantly worse and by more than the allowed regression.
    pub fails_gate: bool,
}

/// Compares every metric both reports have (sorted by name); metrics in one
/// report only are left out (see [`unpaired_metrics`]).
///
/// ```
/// use kaiyuan_eval::ab::{CompareOptions, Metric, compare_reports};
/// use std::collections::BTreeMap;
/// let a = BTreeMap::from([("acc".to_string(), Metric::mean(&[1.0; 200], true))]);
/// let mut worse = vec![1.0; 200];
/// worse[..40].fill(0.0);
/// let b = BTreeMap::from([("acc".to_string(), Metric::mean(&worse, true))]);
/// let rows = compare_reports(&a, &b, &CompareOptions::default())?;
/// assert!(rows[0].significant_regression && rows[0].fails_gate);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidInput`] naming the metric when A and B disagree on
/// its direction or aggregate, or hold different numbers of items (they
/// cannot be paired); [`EvalError::InvalidOption`] for zero resamples.
pub fn compare_reports(
    a: &BTreeMap<String, Metric>,
    b: &BTreeMap<String, Metric>,
    options: &CompareOptions,
) -> Result<Vec<MetricComparison>> {
    if options.resamples == 0 {
        return Err(EvalError::option("resamples", "must be at least 1"));
    }
    let mut rows = Vec::new();
    for (name, ma) in a {
        let Some(mb) = b.get(name) else { continue };
        if ma.higher_is_better != mb.higher_is_better || ma.aggregate != mb.aggregate {
            return Err(EvalError::input(
                format!("metric `{name}`"),
                "A and B disagree on higher_is_better or aggregate",
            ));
        }
        let interval = match (ma.samples.len(), mb.samples.len()) {
            (0, _) | (_, 0) => None,
            (na, nb) if na != nb => {
                return Err(EvalError::input(
                    format!("metric `{name}`"),
                    format!("A has {na} items and B {nb}: paired comparison needs the same items"),
                ));
            }
            _ => Some(paired_bootstrap(ma, mb, options.resamples, options.seed)),
        };
        let delta = mb.value - ma.value;
        // Positive when B is worse.
        let worse = |d: f64| if ma.higher_is_better { -d } else { d };
        let significant_regression =
            interval.is_some_and(|(lo, hi)| worse(lo) > 0.0 && worse(hi) > 0.0);
        let allowed = match options.max_regression {
            Threshold::Relative(r) => r * ma.value.abs(),
            Threshold::Absolute(x) => x,
        };
        rows.push(MetricComparison {
            name: name.clone(),
            a: ma.value,
            b: mb.value,
            delta,
            interval,
            higher_is_better: ma.higher_is_better,
            significant_regression,
            fails_gate: significant_regression && worse(delta) > allowed,
        });
    }
    Ok(rows)
}

/// Metric names that only one of the reports has.
pub fn unpaired_metrics(a: &BTreeMap<String, Metric>, b: &BTreeMap<String, Metric>) -> Vec<String> {
    a.keys()
        .filter(|k| !b.contains_key(*k))
        .chain(b.keys().filter(|k| !a.contains_key(*k)))
        .cloned()
        .collect()
}

/// SplitMix64: a small, well-mixed, seedable generator (the bootstrap needs
/// reproducible, not cryptographic, draws).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³²
    /// for the item counts of an evaluation).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// The 95% interval of `B − A` over `resamples` paired resamples.
fn paired_bootstrap(a: &Metric, b: &Metric, resamples: usize, seed: u64) -> (f64, f64) {
    let n = a.samples.len();
    let mut rng = SplitMix64(seed);
    let mut deltas: Vec<f64> = (0..resamples)
        .map(|_| {
            let draw: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            b.aggregate.apply(&b.samples, draw.iter().copied())
                - a.aggregate.apply(&a.samples, draw.iter().copied())
        })
        .collect();
    deltas.sort_by(f64::total_cmp);
    let at = |q: f64| deltas[((q * resamples as f64) as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(name: &str, m: Metric) -> BTreeMap<String, Metric> {
        BTreeMap::from([(name.to_string(), m)])
    }

    fn ppl(nll: &[f64]) -> Metric {
        let samples: Vec<Vec<f64>> = nll.iter().map(|&v| vec![v]).collect();
        Metric {
            value: Aggregate::ExpMean.apply(&samples, 0..samples.len()),
            higher_is_better: false,
            aggregate: Aggregate::ExpMean,
            samples,
        }
    }

    /// Per-token nll with a deterministic spread around `centre`.
    fn nll(n: usize, centre: f64) -> Vec<f64> {
        (0..n)
            .map(|i| centre + ((i * 7919 % 101) as f64 / 50.0 - 1.0))
            .collect()
    }

    #[test]
    fn higher_is_better_significant_and_insignificant() {
        let a = vec![1.0; 500];
        let mut b = a.clone();
        b[..60].fill(0.0); // 12 points down: significant
        let rows = compare_reports(
            &metrics("acc", Metric::mean(&a, true)),
            &metrics("acc", Metric::mean(&b, true)),
            &CompareOptions::default(),
        )
        .unwrap();
        assert!(
            rows[0].significant_regression && rows[0].fails_gate,
            "{rows:?}"
        );
        // One question of 500 flips: within noise.
        let mut c = vec![1.0; 250];
        c.extend(vec![0.0; 250]);
        let mut d = c.clone();
        d[0] = 0.0;
        let rows = compare_reports(
            &metrics("acc", Metric::mean(&c, true)),
            &metrics("acc", Metric::mean(&d, true)),
            &CompareOptions::default(),
        )
        .unwrap();
        let (lo, hi) = rows[0].interval.unwrap();
        assert!(lo < 0.0 && hi >= 0.0, "{rows:?}");
        assert!(!rows[0].significant_regression && !rows[0].fails_gate);
        // An improvement is never a regression.
        let rows = compare_reports(
            &metrics("acc", Metric::mean(&b, true)),
            &metrics("acc", Metric::mean(&a, true)),
            &CompareOptions::default(),
        )
        .unwrap();
        assert!(!rows[0].significant_regression && rows[0].delta > 0.0);
    }

    #[test]
    fn lower_is_better_regresses_upwards() {
        let a = ppl(&nll(2000, 2.0));
        let b = ppl(&nll(2000, 2.1)); // every token 0.1 nats worse
        let rows = compare_reports(
            &metrics("ppl", a.clone()),
            &metrics("ppl", b.clone()),
            &CompareOptions::default(),
        )
        .unwrap();
        assert!(
            rows[0].delta > 0.0 && rows[0].significant_regression && rows[0].fails_gate,
            "{rows:?}"
        );
        // The same change is an improvement the other way round.
        let rows = compare_reports(
            &metrics("ppl", b),
            &metrics("ppl", a.clone()),
            &CompareOptions::default(),
        )
        .unwrap();
        assert!(!rows[0].significant_regression);
        // Significant but within a generous threshold: passes the gate.
        let c = ppl(&nll(2000, 2.01));
        let options = CompareOptions {
            max_regression: "5%".parse().unwrap(),
            ..CompareOptions::default()
        };
        let rows = compare_reports(&metrics("ppl", a), &metrics("ppl", c), &options).unwrap();
        assert!(
            rows[0].significant_regression && !rows[0].fails_gate,
            "{rows:?}"
        );
    }

    #[test]
    fn bleu_from_stats_matches_a_hand_computation() {
        // hyp 10, ref 12; precisions 6/10, 3/9, 1/8, 0/7 (exp smoothing: 100/(2·7)).
        let stats = [10.0, 12.0, 6.0, 3.0, 1.0, 0.0, 10.0, 9.0, 8.0, 7.0];
        let p = [60.0f64, 100.0 / 3.0, 12.5, 100.0 / 14.0];
        let expected = (1.0f64 - 1.2).exp() * (p.iter().map(|x| x.ln()).sum::<f64>() / 4.0).exp();
        assert!((bleu_from_stats(&stats) - expected).abs() < 1e-12);
    }

    #[test]
    fn unpairable_reports_are_refused() {
        let e = compare_reports(
            &metrics("acc", Metric::mean(&[1.0; 3], true)),
            &metrics("acc", Metric::mean(&[1.0; 4], true)),
            &CompareOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("3 items") && e.to_string().contains("acc"),
            "{e}"
        );
        assert!("x%".parse::<Threshold>().is_err() && "-1".parse::<Threshold>().is_err());
        assert_eq!(
            "2%".parse::<Threshold>().unwrap(),
            Threshold::Relative(0.02)
        );
    }

    #[test]
    fn the_bootstrap_is_reproducible() {
        let a = Metric::mean(&nll(300, 0.5), true);
        let b = Metric::mean(&nll(300, 0.45), true);
        assert_eq!(
            paired_bootstrap(&a, &b, 200, 7),
            paired_bootstrap(&a, &b, 200, 7)
        );
    }
}
