//! chrF and chrF++ against sacrebleu's own results.
//!
//! Origin: `fixtures/eval/bleu/chrf_references.json`, written by
//! `fixtures/eval/bleu/make_references.py` with sacrebleu 2.6.0 (CPython
//! 3.11.7) on the 600 pairs of `fixtures/eval/text_pairs/pairs.jsonl`.
//!
//! Tolerance: scores within `|x - ref| <= 1e-9`; the statistics (`[hyp, ref,
//! match]` per order) exactly; signatures, names and sacrebleu's formatted
//! score line byte for byte.

mod common;

use common::{Mismatches, all_streams, corpus_input, load_json, load_pairs, u64s};
use kaiyuan_metrics::MetricsError;
use kaiyuan_metrics::chrf::{Chrf, ChrfOptions, corpus_chrf, sentence_chrf};
use serde_json::Value;

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
    let mut m = Mismatches::new("sacrebleu");
    for (ci, case) in cases.iter().enumerate() {
        let opts = options_of(case);
        let (hyps, streams) = corpus_input(&pairs, case);
        let label = format!(
            "corpus[{ci}] {} subset={}",
            label(&opts, streams.len()),
            case["subset"]
        );
        let chrf = Chrf::new(opts).unwrap();
        let stats = chrf.corpus_stats(&hyps, &streams).unwrap();
        let total = stats.total();
        let score = chrf.score_from_stats(&total, stats.nrefs);
        m.eq(
            || format!("{label} stats"),
            total.flat(),
            u64s(&case["stats"]),
        );
        m.float_at(&label, case, "score", score.score);
        m.str_at(&label, case, "name", &score.name());
        m.str_at(&label, case, "signature", &score.signature());
        m.str_at(&label, case, "formatted", &score.to_string());
        let direct = corpus_chrf(&hyps, &streams, &opts).unwrap();
        m.eq(|| format!("{label} corpus_chrf"), direct.score, score.score);
    }
    m.finish("chrf_references.json corpus");
}

#[test]
fn sentence_chrf_matches_sacrebleu() {
    let pairs = load_pairs();
    let fixture = load_json("fixtures/eval/bleu/chrf_references.json");
    let variants = fixture["sentence"].as_array().unwrap();
    let mut m = Mismatches::new("sacrebleu");
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
            m.score_and_stats(&label, row, score.score, stats.flat());
            m.str_at(&label, variant, "signature", &score.signature());
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
    m.finish("chrf_references.json sentence");
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
    let (hyps, refs) = all_streams(&pairs);
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
