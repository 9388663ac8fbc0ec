//! BLEU and the BLEU tokenizers against sacrebleu's own results.
//!
//! Origin: `fixtures/eval/bleu/bleu_references.json` and
//! `fixtures/eval/bleu/tokenizer_references.json`, written by
//! `fixtures/eval/bleu/make_references.py` with sacrebleu 2.6.0 (regex
//! 2026.11.19, CPython 3.11.7) on the 600 pairs of
//! `fixtures/eval/text_pairs/pairs.jsonl`.
//!
//! Tolerance: every float (score, precisions, brevity penalty, ratio) within
//! `|x - ref| <= 1e-9`; counts, totals and lengths exactly; signatures,
//! sacrebleu's formatted score line and tokenizer outputs byte for byte.
//!
//! sacrebleu's `BLEUScore.counts` / `.totals` include the `add-k` value added
//! to orders 2 and up; ours are the counted statistics, so for `add-k` the
//! reference counts are compared after subtracting k (where smoothing ran,
//! i.e. some n-gram matched). The fixture also holds the raw statistics
//! (`stats`), compared as they are.

use std::path::PathBuf;

use kaiyuan_metrics::bleu::{Bleu, BleuOptions, Smoothing, corpus_bleu, sentence_bleu};
use kaiyuan_metrics::{BleuTokenizer, MetricsError};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load_json(rel: &str) -> Value {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Pair {
    lang: String,
    hyp: String,
    refs: [String; 2],
}

fn load_pairs() -> Vec<Pair> {
    let path = root().join("fixtures/eval/text_pairs/pairs.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Pair {
                lang: v["lang"].as_str().unwrap().to_string(),
                hyp: v["hyp"].as_str().unwrap().to_string(),
                refs: [
                    v["refs"][0].as_str().unwrap().to_string(),
                    v["refs"][1].as_str().unwrap().to_string(),
                ],
            }
        })
        .collect()
}

/// Collects mismatches and fails with the first few.
#[derive(Default)]
struct Mismatches(Vec<String>);

impl Mismatches {
    fn float(&mut self, what: impl Fn() -> String, got: f64, want: f64) {
        if (got - want).abs() > TOL || got.is_nan() != want.is_nan() {
            self.0
                .push(format!("{}: got {got:?}, sacrebleu {want:?}", what()));
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: impl Fn() -> String, got: T, want: T) {
        if got != want {
            self.0
                .push(format!("{}: got {got:?}, sacrebleu {want:?}", what()));
        }
    }

    fn finish(self, checked: usize) {
        if !self.0.is_empty() {
            let first: Vec<&String> = self.0.iter().take(12).collect();
            panic!(
                "{} mismatches (of {checked} cases); first ones:\n  {}",
                self.0.len(),
                first
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
        }
    }
}

fn options_of(case: &Value) -> BleuOptions {
    let tokenize: BleuTokenizer = case["tokenize"].as_str().unwrap().parse().unwrap();
    let mut smooth: Smoothing = case["smooth"].as_str().unwrap().parse().unwrap();
    if let Some(v) = case.get("smooth_value").and_then(Value::as_f64) {
        smooth = smooth.with_value(v).unwrap();
    }
    BleuOptions {
        tokenize,
        smooth,
        lowercase: case["lowercase"].as_bool().unwrap(),
        effective_order: case["effective_order"].as_bool().unwrap(),
        max_ngram_order: 4,
    }
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn indices(v: Option<&Value>) -> Vec<usize> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.as_u64().unwrap() as usize).collect())
        .unwrap_or_default()
}

/// The hypotheses and reference streams a corpus case describes.
fn corpus_input(pairs: &[Pair], case: &Value) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let subset = case["subset"].as_str().unwrap();
    let chosen: Vec<usize> = match subset {
        "all" => (0..pairs.len()).collect(),
        s if s.starts_with("segment:") => vec![s["segment:".len()..].parse().unwrap()],
        lang => (0..pairs.len())
            .filter(|&i| pairs[i].lang == lang)
            .collect(),
    };
    let nrefs = case["nrefs"].as_u64().unwrap() as usize;
    let none_at = indices(case.get("ref2_none"));
    let empty_at = indices(case.get("ref2_empty"));
    let hyps = chosen.iter().map(|&i| pairs[i].hyp.clone()).collect();
    let streams = (0..nrefs)
        .map(|r| {
            chosen
                .iter()
                .map(|&i| {
                    if r == 1 && none_at.contains(&i) {
                        None
                    } else if r == 1 && empty_at.contains(&i) {
                        Some(String::new())
                    } else {
                        Some(pairs[i].refs[r].clone())
                    }
                })
                .collect()
        })
        .collect();
    (hyps, streams)
}

#[test]
fn corpus_bleu_matches_sacrebleu() {
    let pairs = load_pairs();
    let fixture = load_json("fixtures/eval/bleu/bleu_references.json");
    let cases = fixture["corpus"].as_array().unwrap();
    assert!(cases.len() >= 80, "{} corpus cases", cases.len());
    let mut m = Mismatches::default();
    for (ci, case) in cases.iter().enumerate() {
        let opts = options_of(case);
        let (hyps, streams) = corpus_input(&pairs, case);
        let label = format!(
            "corpus[{ci}] tok={} smooth={} lc={} eff={} nrefs={} subset={}",
            opts.tokenize,
            opts.smooth.signature(),
            opts.lowercase,
            opts.effective_order,
            streams.len(),
            case["subset"]
        );
        let bleu = Bleu::new(opts).unwrap();
        let stats = bleu.corpus_stats(&hyps, &streams).unwrap();
        let total = stats.total();
        let score = bleu.score_from_stats(&total, stats.nrefs);

        let raw = u64s(&case["stats"]);
        let mut ours = vec![total.hyp_len, total.ref_len];
        ours.extend(&total.matching);
        ours.extend(&total.total);
        m.eq(|| format!("{label} stats"), ours, raw);

        // sacrebleu's reported counts include add-k's k (orders >= 2) once
        // smoothing ran.
        let k = match opts.smooth {
            Smoothing::AddK(k) if score.counts.iter().any(|&c| c > 0) => k,
            _ => 0.0,
        };
        let want_counts = f64s(&case["counts"]);
        let want_totals = f64s(&case["totals"]);
        for n in 0..4 {
            let add = if n > 0 { k } else { 0.0 };
            m.eq(
                || format!("{label} counts[{n}]"),
                score.counts[n] as f64 + add,
                want_counts[n],
            );
            m.eq(
                || format!("{label} totals[{n}]"),
                score.totals[n] as f64 + add,
                want_totals[n],
            );
        }
        let want_prec = f64s(&case["precisions"]);
        for (n, (&got, &want)) in score.precisions.iter().zip(&want_prec).enumerate() {
            m.float(|| format!("{label} precisions[{n}]"), got, want);
        }
        m.eq(
            || format!("{label} orders"),
            score.precisions.len(),
            want_prec.len(),
        );
        m.float(
            || format!("{label} score"),
            score.score,
            case["score"].as_f64().unwrap(),
        );
        m.float(
            || format!("{label} bp"),
            score.bp,
            case["bp"].as_f64().unwrap(),
        );
        m.float(
            || format!("{label} ratio"),
            score.ratio,
            case["ratio"].as_f64().unwrap(),
        );
        m.eq(
            || format!("{label} sys_len"),
            score.sys_len,
            case["sys_len"].as_u64().unwrap(),
        );
        m.eq(
            || format!("{label} ref_len"),
            score.ref_len,
            case["ref_len"].as_u64().unwrap(),
        );
        m.eq(
            || format!("{label} signature"),
            score.signature(),
            case["signature"].as_str().unwrap().to_string(),
        );
        m.eq(
            || format!("{label} formatted"),
            score.to_string(),
            case["formatted"].as_str().unwrap().to_string(),
        );

        // The one-call API agrees with the stats route.
        let direct = corpus_bleu(&hyps, &streams, &opts).unwrap();
        m.eq(|| format!("{label} corpus_bleu"), direct.score, score.score);
    }
    m.finish(cases.len());
}

#[test]
fn sentence_bleu_matches_sacrebleu() {
    let pairs = load_pairs();
    let fixture = load_json("fixtures/eval/bleu/bleu_references.json");
    let variants = fixture["sentence"].as_array().unwrap();
    let mut m = Mismatches::default();
    let mut checked = 0;
    for variant in variants {
        let mut v = variant.clone();
        v["smooth_value"] = Value::Null;
        let opts = options_of(&v);
        let nrefs = variant["nrefs"].as_u64().unwrap() as usize;
        let bleu = Bleu::new(opts).unwrap();
        let rows = variant["rows"].as_array().unwrap();
        assert_eq!(rows.len(), pairs.len());
        for (i, (row, pair)) in rows.iter().zip(&pairs).enumerate() {
            let label = format!(
                "sentence pair {i} tok={} smooth={} lc={} eff={} nrefs={nrefs}",
                opts.tokenize,
                opts.smooth.name(),
                opts.lowercase,
                opts.effective_order
            );
            let refs: Vec<&str> = pair.refs[..nrefs].iter().map(String::as_str).collect();
            let score = bleu.sentence_score(&pair.hyp, &refs).unwrap();
            let stats = bleu.segment_stats(&pair.hyp, &refs).unwrap();
            let row: Vec<f64> = f64s(row);
            m.float(|| format!("{label} score"), score.score, row[0]);
            let mut ours = vec![stats.hyp_len, stats.ref_len];
            ours.extend(&stats.matching);
            ours.extend(&stats.total);
            let want: Vec<u64> = row[1..].iter().map(|&x| x as u64).collect();
            m.eq(|| format!("{label} stats"), ours, want);
            m.eq(
                || format!("{label} signature"),
                score.signature(),
                variant["signature"].as_str().unwrap().to_string(),
            );
            checked += 1;
        }
    }
    // The free function with sacrebleu's sentence defaults.
    let s = sentence_bleu(
        &pairs[0].hyp,
        &[&pairs[0].refs[0]],
        &BleuOptions::sentence_default(),
    )
    .unwrap();
    let first = &variants
        .iter()
        .find(|v| v["tokenize"] == "13a" && v["nrefs"] == 1 && v["smooth"] == "exp")
        .unwrap()["rows"][0][0];
    m.float(
        || "sentence_bleu pair 0".to_string(),
        s.score,
        first.as_f64().unwrap(),
    );
    m.finish(checked);
}

#[test]
fn tokenizers_match_sacrebleu() {
    let fixture = load_json("fixtures/eval/bleu/tokenizer_references.json");
    let cases = fixture["cases"].as_array().unwrap();
    let mut m = Mismatches::default();
    for (i, case) in cases.iter().enumerate() {
        let text = case["text"].as_str().unwrap();
        for tok in BleuTokenizer::ALL {
            m.eq(
                || format!("case {i} {tok} of {text:?}"),
                tok.tokenize(text),
                case[tok.name()].as_str().unwrap().to_string(),
            );
        }
        m.eq(
            || format!("case {i} lower of {text:?}"),
            kaiyuan_metrics::sacre_tokenize::python_lowercase(text).into_owned(),
            case["lower"].as_str().unwrap().to_string(),
        );
    }
    m.finish(cases.len());
}

#[test]
fn stream_length_mismatch_names_the_stream_and_both_lengths() {
    let hyps = ["a", "b", "c"];
    let refs = [vec!["a", "b", "c"], vec!["a", "b"]];
    let err = corpus_bleu(&hyps, &refs, &BleuOptions::default()).unwrap_err();
    assert!(matches!(err, MetricsError::InvalidInput { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("references[1]"), "{msg}");
    assert!(msg.contains('2') && msg.contains('3'), "{msg}");
}

#[test]
fn unknown_names_are_option_errors() {
    let err = "13b".parse::<BleuTokenizer>().unwrap_err();
    assert!(
        matches!(&err, MetricsError::InvalidOption { option, .. } if option == "tokenize"),
        "{err:?}"
    );
    assert!(err.to_string().contains("13b"));
    let err = "ad-k".parse::<Smoothing>().unwrap_err();
    assert!(matches!(err, MetricsError::InvalidOption { .. }), "{err:?}");
    assert!(err.to_string().contains("ad-k"));
}

#[test]
fn invalid_input_and_options_are_errors() {
    let opts = BleuOptions::default();
    let no_hyps: [&str; 0] = [];
    let no_refs: [Vec<&str>; 0] = [];
    assert!(corpus_bleu(&no_hyps, &[Vec::<&str>::new()], &opts).is_err());
    let err = corpus_bleu(&["a"], &no_refs, &opts).unwrap_err();
    assert!(err.to_string().starts_with("references"), "{err}");
    let err = corpus_bleu(&["a", "b"], &[vec![Some("a"), None]], &opts).unwrap_err();
    assert!(err.to_string().contains("segment 1"), "{err}");
    assert!(sentence_bleu("a", &[None::<&str>], &opts).is_err());
    assert!(sentence_bleu::<&str>("a", &[], &opts).is_err());
    for smooth in [
        Smoothing::Floor(-0.1),
        Smoothing::AddK(f64::NAN),
        Smoothing::AddK(f64::INFINITY),
    ] {
        let bad = BleuOptions { smooth, ..opts };
        let err = Bleu::new(bad).unwrap_err();
        assert!(matches!(err, MetricsError::InvalidOption { .. }), "{err:?}");
    }
    assert!(
        Bleu::new(BleuOptions {
            max_ngram_order: 0,
            ..opts
        })
        .is_err()
    );
    assert!(Smoothing::None.with_value(1.0).is_err());
}

#[test]
fn statistics_sum_to_the_corpus_score() {
    let pairs = load_pairs();
    let hyps: Vec<&str> = pairs.iter().map(|p| p.hyp.as_str()).collect();
    let refs: Vec<Vec<&str>> = (0..2)
        .map(|r| pairs.iter().map(|p| p.refs[r].as_str()).collect())
        .collect();
    let bleu = Bleu::new(BleuOptions::default()).unwrap();
    let stats = bleu.corpus_stats(&hyps, &refs).unwrap();
    let mut by_hand = stats.segments[0].clone();
    for s in &stats.segments[1..] {
        by_hand += s;
    }
    assert_eq!(by_hand, stats.total());
    let score = bleu.score_from_stats(&by_hand, stats.nrefs);
    assert_eq!(score, bleu.corpus_score(&hyps, &refs).unwrap());
}

#[test]
fn larger_orders_and_owned_inputs_work() {
    let opts = BleuOptions {
        max_ngram_order: 6,
        ..BleuOptions::default()
    };
    let hyps = vec!["a b c d e f g".to_string()];
    let refs = vec![vec!["a b c d e f g".to_string()]];
    let s = corpus_bleu(&hyps, &refs, &opts).unwrap();
    assert_eq!(s.counts, [7, 6, 5, 4, 3, 2]);
    // exp(6 ln(100) / 6) is not exactly 100 in floating point.
    assert!((s.score - 100.0).abs() < 1e-9, "{}", s.score);
}
