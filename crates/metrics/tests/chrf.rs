//! chrF and chrF++ against sacrebleu's own results.
//!
//! Origin: `fixtures/eval/bleu/chrf_references.json`, written by
//! `fixtures/eval/bleu/make_references.py` with sacrebleu 2.6.0 (CPython
//! 3.11.7) on the 600 pairs of `fixtures/eval/text_pairs/pairs.jsonl`.
//!
//! Tolerance: scores within `|x - ref| <= 1e-9`; the statistics (`[hyp, ref,
//! match]` per order) exactly; signatures, names and sacrebleu's formatted
//! score line byte for byte.

use std::path::PathBuf;

use kaiyuan_metrics::MetricsError;
use kaiyuan_metrics::chrf::{Chrf, ChrfOptions, corpus_chrf, sentence_chrf};
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

fn options_of(case: &Value) -> ChrfOptions {
    ChrfOptions {
        char_order: case["char_order"].as_u64().unwrap() as usize,
        word_order: case["word_order"].as_u64().unwrap() as usize,
        beta: case["beta"].as_u64().unwrap() as u32,
        lowercase: case["lowercase"].as_bool().unwrap(),
        whitespace: case["whitespace"].as_bool().unwrap(),
        eps_smoothing: case["eps_smoothing"].as_bool().unwrap(),
    }
}

fn u64s(v: &[Value]) -> Vec<u64> {
    v.iter().map(|x| x.as_u64().unwrap()).collect()
}

fn indices(v: Option<&Value>) -> Vec<usize> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.as_u64().unwrap() as usize).collect())
        .unwrap_or_default()
}

fn label(o: &ChrfOptions, nrefs: usize) -> String {
    format!(
        "nc={} nw={} beta={} lc={} space={} eps={} nrefs={nrefs}",
        o.char_order, o.word_order, o.beta, o.lowercase, o.whitespace, o.eps_smoothing
    )
}

#[test]
fn corpus_chrf_matches_sacrebleu() {
    let pairs = load_pairs();
    let fixture = load_json("fixtures/eval/bleu/chrf_references.json");
    let cases = fixture["corpus"].as_array().unwrap();
    assert!(cases.len() >= 32, "{} corpus cases", cases.len());
    let mut m = Mismatches::default();
    for (ci, case) in cases.iter().enumerate() {
        let opts = options_of(case);
        let subset = case["subset"].as_str().unwrap();
        let chosen: Vec<usize> = (0..pairs.len())
            .filter(|&i| subset == "all" || pairs[i].lang == subset)
            .collect();
        let nrefs = case["nrefs"].as_u64().unwrap() as usize;
        let none_at = indices(case.get("ref2_none"));
        let empty_at = indices(case.get("ref2_empty"));
        let hyps: Vec<&str> = chosen.iter().map(|&i| pairs[i].hyp.as_str()).collect();
        let streams: Vec<Vec<Option<&str>>> = (0..nrefs)
            .map(|r| {
                chosen
                    .iter()
                    .map(|&i| {
                        if r == 1 && none_at.contains(&i) {
                            None
                        } else if r == 1 && empty_at.contains(&i) {
                            Some("")
                        } else {
                            Some(pairs[i].refs[r].as_str())
                        }
                    })
                    .collect()
            })
            .collect();
        let label = format!("corpus[{ci}] {} subset={subset}", label(&opts, nrefs));
        let chrf = Chrf::new(opts).unwrap();
        let stats = chrf.corpus_stats(&hyps, &streams).unwrap();
        let total = stats.total();
        let score = chrf.score_from_stats(&total, stats.nrefs);
        m.eq(
            || format!("{label} stats"),
            total.flat(),
            u64s(case["stats"].as_array().unwrap()),
        );
        m.float(
            || format!("{label} score"),
            score.score,
            case["score"].as_f64().unwrap(),
        );
        m.eq(
            || format!("{label} name"),
            score.name(),
            case["name"].as_str().unwrap().to_string(),
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
        let direct = corpus_chrf(&hyps, &streams, &opts).unwrap();
        m.eq(|| format!("{label} corpus_chrf"), direct.score, score.score);
    }
    m.finish(cases.len());
}

#[test]
fn sentence_chrf_matches_sacrebleu() {
    let pairs = load_pairs();
    let fixture = load_json("fixtures/eval/bleu/chrf_references.json");
    let variants = fixture["sentence"].as_array().unwrap();
    let mut m = Mismatches::default();
    let mut checked = 0;
    for variant in variants {
        let opts = options_of(variant);
        let nrefs = variant["nrefs"].as_u64().unwrap() as usize;
        let chrf = Chrf::new(opts).unwrap();
        let rows = variant["rows"].as_array().unwrap();
        assert_eq!(rows.len(), pairs.len());
        for (i, (row, pair)) in rows.iter().zip(&pairs).enumerate() {
            let label = format!("sentence pair {i} {}", label(&opts, nrefs));
            let refs: Vec<&str> = pair.refs[..nrefs].iter().map(String::as_str).collect();
            let score = chrf.sentence_score(&pair.hyp, &refs).unwrap();
            let stats = chrf.segment_stats(&pair.hyp, &refs).unwrap();
            let row = row.as_array().unwrap();
            m.float(
                || format!("{label} score"),
                score.score,
                row[0].as_f64().unwrap(),
            );
            m.eq(|| format!("{label} stats"), stats.flat(), u64s(&row[1..]));
            m.eq(
                || format!("{label} signature"),
                score.signature(),
                variant["signature"].as_str().unwrap().to_string(),
            );
            checked += 1;
        }
    }
    let s = sentence_chrf(&pairs[0].hyp, &[&pairs[0].refs[0]], &ChrfOptions::default()).unwrap();
    let first = &variants
        .iter()
        .find(|v| v["word_order"] == 0 && v["nrefs"] == 1)
        .unwrap()["rows"][0][0];
    m.float(
        || "sentence_chrf pair 0".to_string(),
        s.score,
        first.as_f64().unwrap(),
    );
    m.finish(checked);
}

#[test]
fn stream_length_mismatch_names_the_stream_and_both_lengths() {
    let hyps = ["a", "b"];
    let refs = [vec!["a", "b", "c"]];
    let err = corpus_chrf(&hyps, &refs, &ChrfOptions::default()).unwrap_err();
    assert!(matches!(err, MetricsError::InvalidInput { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("references[0]"), "{msg}");
    assert!(msg.contains('3') && msg.contains('2'), "{msg}");
}

#[test]
fn invalid_input_and_options_are_errors() {
    let opts = ChrfOptions::default();
    let no_hyps: [&str; 0] = [];
    assert!(corpus_chrf(&no_hyps, &[Vec::<&str>::new()], &opts).is_err());
    let no_refs: [Vec<&str>; 0] = [];
    assert!(corpus_chrf(&["a"], &no_refs, &opts).is_err());
    assert!(sentence_chrf("a", &[None::<String>], &opts).is_err());
    let err = Chrf::new(ChrfOptions {
        char_order: 0,
        word_order: 0,
        ..opts
    })
    .unwrap_err();
    assert!(matches!(err, MetricsError::InvalidOption { .. }), "{err:?}");
}

#[test]
fn statistics_sum_to_the_corpus_score() {
    let pairs = load_pairs();
    let hyps: Vec<&str> = pairs.iter().map(|p| p.hyp.as_str()).collect();
    let refs: Vec<Vec<&str>> = (0..2)
        .map(|r| pairs.iter().map(|p| p.refs[r].as_str()).collect())
        .collect();
    let chrf = Chrf::new(ChrfOptions::chrf_plus_plus()).unwrap();
    let stats = chrf.corpus_stats(&hyps, &refs).unwrap();
    let mut by_hand = stats.segments[0].clone();
    for s in &stats.segments[1..] {
        by_hand += s;
    }
    assert_eq!(by_hand, stats.total());
    assert_eq!(
        chrf.score_from_stats(&by_hand, stats.nrefs),
        chrf.corpus_score(&hyps, &refs).unwrap()
    );
}
