//! Exact match and token F1 against the Python scripts on the committed
//! references (`fixtures/eval/rouge/qa_answers.json`, written by
//! `fixtures/eval/rouge/make_references.py` with lm-evaluation-harness
//! 0.4.13): SQuAD v1.1's normalisation (`lm_eval.tasks.qasper.metrics`) and
//! MLQA's Chinese one (`lm_eval.tasks.mlqa.utils`, `lang="zh"`), for answers
//! cut from the English, Chinese and mixed text pairs plus hand-written
//! edge cases. Scores must be within `1e-9` of the reference and the
//! normalised prediction identical; a failure lists the first mismatches.

mod common;

use common::{Mismatches, TOLERANCE, load_json, strings};
use kaiyuan_metrics::squad::{AnswerNormalization, normalize_answer, qa_corpus, qa_score};
use serde_json::Value;

fn reference() -> Value {
    load_json("fixtures/eval/rouge/qa_answers.json")
}

#[test]
fn answers_match_python() {
    let reference = reference();
    let items = reference["items"].as_array().expect("items");
    let mut m = Mismatches::new("Python");
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
            let what = || format!("{key} {prediction:?} vs {golds:?}");
            m.float(|| format!("{} EM", what()), got.exact_match, em);
            m.float(|| format!("{} F1", what()), got.f1, f1);
            m.eq(
                || format!("{} normalized", what()),
                normalize_answer(prediction, normalization).as_str(),
                normalized,
            );
        }
    }
    m.finish("qa_answers.json");
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
