//! lm-eval's rolling log-likelihood (`--rolling`) against lm-eval itself.
//!
//! `fixtures/eval/rolling/make_reference.py` ran lm-eval 0.4.13's
//! `loglikelihood_rolling` (the wikitext recipe) with HF transformers 5.24 on
//! the tiny model of `fixtures/eval/mc/model` at `max_length=48`, over the
//! four documents of `fixtures/eval/rolling/docs.jsonl` (one spans five
//! windows, ending in a short one). Tolerances: each document's
//! log-likelihood within `1e-4 + 1e-6·|expected|` (lm-eval sums f32
//! log-probabilities); word and byte perplexity by their logarithms
//! (`|ln x − ln ref| ≤ 1e-5`, the summed nll's f32 error over the words or
//! bytes) and bits per byte within a relative `1e-6`.

use std::path::PathBuf;

use kaiyuan_eval::{PerplexityOptions, perplexity_of_documents};
use kaiyuan_models::ModelFiles;
use kaiyuan_tensor::DType;
use serde_json::Value;

#[test]
fn rolling_log_likelihoods_equal_lm_evals() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/eval");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("rolling/expected.json")).unwrap())
            .unwrap();
    let mut files = ModelFiles::open(root.join("mc/model")).unwrap();
    let model = files.take_model(DType::F32).unwrap();
    let tokenizer = files.require_tokenizer().unwrap();
    let docs: Vec<&str> = expected["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["text"].as_str().unwrap())
        .collect();
    let names = vec!["doc"; docs.len()];
    let options = PerplexityOptions {
        context: Some(expected["max_length"].as_u64().unwrap() as usize),
        rolling: true,
        ..PerplexityOptions::default()
    };
    let corpus = perplexity_of_documents(&model, tokenizer, &docs, &names, &options).unwrap();
    assert!(
        corpus.per_document[0].windows >= 3,
        "the long document spans several windows"
    );
    for (report, want) in corpus
        .per_document
        .iter()
        .zip(expected["documents"].as_array().unwrap())
    {
        let want = want["loglikelihood"].as_f64().unwrap();
        let got = -report.nll_sum;
        assert!(
            (got - want).abs() <= 1e-4 + 1e-6 * want.abs(),
            "{got} vs {want}"
        );
    }
    for (key, got) in [
        ("word_perplexity", corpus.word_perplexity),
        ("byte_perplexity", corpus.byte_perplexity),
        ("bits_per_byte", corpus.bits_per_byte),
    ] {
        let want = expected[key].as_f64().unwrap();
        let close = if key == "bits_per_byte" {
            (got / want - 1.0).abs() <= 1e-6
        } else {
            (got.ln() - want.ln()).abs() <= 1e-5
        };
        assert!(close, "{key}: {got} vs {want}");
    }
    // A stride has no meaning in the rolling recipe.
    let bad = PerplexityOptions {
        stride: Some(8),
        ..options
    };
    assert!(perplexity_of_documents(&model, tokenizer, &docs, &names, &bad).is_err());
}
