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

mod common;

use common::{Mismatches, all_streams, corpus_input, f64s, load_json, load_pairs, u64s};
use kaiyuan_metrics::bleu::{Bleu, BleuOptions, BleuStats, Smoothing, corpus_bleu, sentence_bleu};
use kaiyuan_metrics::{BleuTokenizer, MetricsError};
use serde_json::Value;

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

/// sacrebleu's flat statistics: `[sys_len, ref_len, matching…, total…]`.
fn flat(stats: &BleuStats) -> Vec<u64> {
    let mut flat = vec![stats.hyp_len, stats.ref_len];
    flat.extend(&stats.matching);
    flat.extend(&stats.total);
    flat
}

#[test]
fn corpus_bleu_matches_sacrebleu() {
    let pairs = load_pairs();
    let fixture = load_json("fixtures/eval/bleu/bleu_references.json");
    let cases = fixture["corpus"].as_array().unwrap();
    assert!(cases.len() >= 80, "{} corpus cases", cases.len());
    let mut m = Mismatches::new("sacrebleu");
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

        m.eq(
            || format!("{label} stats"),
            flat(&total),
            u64s(&case["stats"]),
        );

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
        m.float_at(&label, case, "score", score.score);
        m.float_at(&label, case, "bp", score.bp);
        m.float_at(&label, case, "ratio", score.ratio);
        m.u64_at(&label, case, "sys_len", score.sys_len);
        m.u64_at(&label, case, "ref_len", score.ref_len);
        m.str_at(&label, case, "signature", &score.signature());
        m.str_at(&label, case, "formatted", &score.to_string());

        // The one-call API agrees with the stats route.
        let direct = corpus_bleu(&hyps, &streams, &opts).unwrap();
        m.eq(|| format!("{label} corpus_bleu"), direct.score, score.score);
    }
    m.finish("bleu_references.json corpus");
}

#[test]
fn sentence_bleu_matches_sacrebleu() {
    let pairs = load_pairs();
    let fixture = load_json("fixtures/eval/bleu/bleu_references.json");
    let variants = fixture["sentence"].as_array().unwrap();
    let mut m = Mismatches::new("sacrebleu");
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
            m.score_and_stats(&label, row, score.score, flat(&stats));
            m.str_at(&label, variant, "signature", &score.signature());
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
    m.finish("bleu_references.json sentence");
}

#[test]
fn tokenizers_match_sacrebleu() {
    let fixture = load_json("fixtures/eval/bleu/tokenizer_references.json");
    let cases = fixture["cases"].as_array().unwrap();
    let mut m = Mismatches::new("sacrebleu");
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
    m.finish("tokenizer_references.json");
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
    let (hyps, refs) = all_streams(&pairs);
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
