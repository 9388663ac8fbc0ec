//! Exact match and token F1 against the Python scripts on the committed
//! references (`fixtures/eval/rouge/qa_answers.json`, written by
//! `fixtures/eval/rouge/make_references.py` with lm-evaluation-harness
//! 0.4.13): SQuAD v1.1's normalisation (`lm_eval.tasks.qasper.metrics`) and
//! MLQA's Chinese one (`lm_eval.tasks.mlqa.utils`, `lang="zh"`), for answers
//! cut from the English, Chinese and mixed text pairs plus hand-written
//! edge cases. Scores must be within `1e-9` of the reference and the
//! normalised prediction identical; a failure lists the first mismatches.

use kaiyuan_metrics::squad::{AnswerNormalization, normalize_answer, qa_corpus, qa_score};
use serde_json::Value;
use std::path::PathBuf;

const TOLERANCE: f64 = 1e-9;

fn reference() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/eval/rouge/qa_answers.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

#[test]
fn answers_match_python() {
    let reference = reference();
    let items = reference["items"].as_array().expect("items");
    let mut bad = Vec::new();
    let mut checked = 0;
    for item in items {
        let prediction = item["prediction"].as_str().expect("prediction");
        let golds = strings(&item["golds"]);
        for (key, normalization) in [
            ("squad", AnswerNormalization::Squad),
            ("cjk", AnswerNormalization::Cjk),
        ] {
            let expected = &item[key];
            let (em, f1) = (
                expected[0].as_f64().expect("em"),
                expected[1].as_f64().expect("f1"),
            );
            let normalized = expected[2].as_str().expect("normalized");
            let got = qa_score(prediction, &golds, normalization).expect("golds");
            let got_normalized = normalize_answer(prediction, normalization);
            checked += 1;
            if (got.exact_match - em).abs() > TOLERANCE
                || (got.f1 - f1).abs() > TOLERANCE
                || got_normalized != normalized
            {
                bad.push(format!(
                    "{key} {prediction:?} vs {golds:?}: got EM {} F1 {} {got_normalized:?}, \
                     Python EM {em} F1 {f1} {normalized:?}",
                    got.exact_match, got.f1
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {checked} answers differ; first ones:\n  {}",
        bad.len(),
        bad.iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    assert!(items.len() > 600);
}

#[test]
fn corpus_mean_is_mean_of_pairs() {
    let reference = reference();
    let items = reference["items"].as_array().expect("items");
    let predictions: Vec<&str> = items
        .iter()
        .map(|i| i["prediction"].as_str().expect("prediction"))
        .collect();
    let golds: Vec<Vec<String>> = items.iter().map(|i| strings(&i["golds"])).collect();
    let corpus = qa_corpus(&predictions, &golds, AnswerNormalization::Squad).expect("corpus");
    let n = items.len() as f64;
    let em: f64 = items
        .iter()
        .map(|i| i["squad"][0].as_f64().expect("em"))
        .sum::<f64>()
        / n;
    let f1: f64 = items
        .iter()
        .map(|i| i["squad"][1].as_f64().expect("f1"))
        .sum::<f64>()
        / n;
    assert!((corpus.mean.exact_match - em).abs() <= TOLERANCE);
    assert!((corpus.mean.f1 - f1).abs() <= TOLERANCE);
}
