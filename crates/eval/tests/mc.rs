//! Multiple choice against lm-evaluation-harness and transformers.
//!
//! `fixtures/eval/mc/make_references.py` (lm-eval 0.4.13, transformers
//! 5.24, torch 2.15, float32; pinned in `fixtures/requirements.txt`) ran
//! lm-eval's own MMLU and C-Eval task files on the 20 questions of
//! `fixtures/eval/mc/data` (15 MMLU in 3 subjects, 5 C-Eval in 2) with a
//! tiny random LLaMA and its byte-level BPE tokenizer, at 0 and 3 shots
//! (MMLU) and 0 and 1 shot (C-Eval), and saved its `--log_samples` records;
//! per request it also saved the token ids and per-token log-probabilities
//! of a plain transformers forward pass.
//!
//! Checks and tolerances:
//! - every context and continuation string byte-identical to lm-eval's, from
//!   the CSV files and (MMLU) from the JSONL file;
//! - context and continuation token ids equal to transformers';
//! - each per-token log-probability within `1e-5 + 1e-5·|expected|` of
//!   transformers' (f64 there, from f32 logits in both);
//! - each choice's log-likelihood within `1e-4 + 1e-5·|expected|` of
//!   lm-eval's (which sums in f32), `is_greedy`, `acc` and `acc_norm` equal;
//! - batch sizes 1, 3 and 64 give bit-identical log-likelihoods.

use std::path::PathBuf;
use std::sync::OnceLock;

use kaiyuan_eval::mc::{
    McOptions, McQuestion, McReport, McTask, build_requests, encode_request, evaluate_mc,
    load_mc_dir, load_mc_file,
};
use kaiyuan_models::{Model, ModelFiles};
use kaiyuan_tensor::DType;
use kaiyuan_tokenizer::Tokenizer;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/eval/mc")
}

fn expected() -> &'static Value {
    static VALUE: OnceLock<Value> = OnceLock::new();
    VALUE.get_or_init(|| {
        let path = fixtures().join("expected.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("expected.json parses")
    })
}

fn model() -> &'static (Model, Tokenizer) {
    static MODEL: OnceLock<(Model, Tokenizer)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let mut files = ModelFiles::open(fixtures().join("model")).expect("fixture model opens");
        let model = files.take_model(DType::F32).expect("fixture model loads");
        let tokenizer = files
            .require_tokenizer()
            .expect("fixture tokenizer")
            .clone();
        (model, tokenizer)
    })
}

/// The questions and few-shot pool of one run of expected.json.
fn task_of(run: &Value) -> McTask {
    let data = fixtures().join("data");
    let subject = run["subject"].as_str().unwrap();
    let (eval, dev) = match run["family"].as_str().unwrap() {
        "mmlu" => (format!("{subject}_test.csv"), format!("{subject}_dev.csv")),
        _ => (format!("{subject}_val.csv"), format!("{subject}_dev.csv")),
    };
    McTask {
        questions: load_mc_file(data.join(eval), None).unwrap(),
        fewshot: load_mc_file(data.join(dev), None).unwrap(),
    }
}

fn runs() -> &'static [Value] {
    expected()["runs"].as_array().unwrap()
}

fn label(run: &Value) -> String {
    format!("{} {} {}-shot", run["family"], run["subject"], run["shots"])
}

#[test]
fn prompts_are_byte_identical_to_lm_eval() {
    let mut checked = 0;
    for run in runs() {
        let task = task_of(run);
        let shots = run["shots"].as_u64().unwrap() as usize;
        let samples = run["samples"].as_array().unwrap();
        assert_eq!(samples.len(), task.questions.len(), "{}", label(run));
        for (q, sample) in task.questions.iter().zip(samples) {
            let requests = build_requests(q, &task.fewshot, shots).unwrap();
            let expected = sample["requests"].as_array().unwrap();
            assert_eq!(requests.len(), expected.len());
            for (got, want) in requests.iter().zip(expected) {
                assert_eq!(
                    got.context,
                    want["context"].as_str().unwrap(),
                    "{} {}",
                    label(run),
                    q.source
                );
                assert_eq!(got.continuation, want["continuation"].as_str().unwrap());
                checked += 1;
            }
            assert_eq!(
                q.gold as u64,
                sample["target"].as_u64().unwrap(),
                "{}",
                q.source
            );
        }
    }
    assert_eq!(checked, 2 * 20 * 4);
}

#[test]
fn the_jsonl_layout_gives_the_same_prompts_as_the_csv() {
    let data = fixtures().join("data");
    let jsonl = load_mc_file(data.join("mmlu.jsonl"), None).unwrap();
    let by_subject = |s: &str| -> Vec<&McQuestion> {
        jsonl
            .iter()
            .filter(|q| q.subject.as_deref() == Some(s))
            .collect()
    };
    for run in runs().iter().filter(|r| r["family"] == "mmlu") {
        let task = task_of(run);
        let shots = run["shots"].as_u64().unwrap() as usize;
        let subject = run["subject"].as_str().unwrap();
        for (q, sample) in by_subject(subject)
            .into_iter()
            .zip(run["samples"].as_array().unwrap())
        {
            let requests = build_requests(q, &task.fewshot, shots).unwrap();
            assert_eq!(
                requests[0].context,
                sample["requests"][0]["context"].as_str().unwrap()
            );
            assert_eq!(q.gold as u64, sample["target"].as_u64().unwrap());
        }
    }
}

#[test]
fn the_directory_loader_finds_every_split() {
    let task = load_mc_dir(fixtures().join("data"), None).unwrap();
    assert_eq!((task.questions.len(), task.fewshot.len()), (20, 12));
}

fn close(got: f64, want: f64, atol: f64, rtol: f64) -> bool {
    (got - want).abs() <= atol + rtol * want.abs()
}

fn evaluate(run: &Value, batch_size: Option<usize>) -> McReport {
    let (model, tokenizer) = model();
    let options = McOptions {
        shots: run["shots"].as_u64().unwrap() as usize,
        batch_size,
        per_token: true,
        ..McOptions::default()
    };
    evaluate_mc(model, tokenizer, &task_of(run), &options).unwrap()
}

#[test]
fn tokens_log_probs_and_choices_equal_transformers_and_lm_eval() {
    let (_, tokenizer) = model();
    let mut mismatches = Vec::new();
    let mut requests_checked = 0;
    let mut norms_checked = 0;
    for run in runs() {
        let report = evaluate(run, None);
        for (result, sample) in report
            .questions
            .iter()
            .zip(run["samples"].as_array().unwrap())
        {
            for ((choice, request), want) in result
                .choices
                .iter()
                .zip(&result.requests)
                .zip(sample["requests"].as_array().unwrap())
            {
                let reference = &want["transformers"];
                let (ctx, cont) = encode_request(tokenizer, Some(0), request).unwrap();
                let ids = |v: &Value| -> Vec<u32> {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as u32)
                        .collect()
                };
                assert_eq!(ctx, ids(&reference["context_ids"]), "{}", result.source);
                assert_eq!(
                    cont,
                    ids(&reference["continuation_ids"]),
                    "{}",
                    result.source
                );
                let logprobs = choice.logprobs.as_ref().unwrap();
                for (k, (got, want)) in logprobs
                    .iter()
                    .zip(reference["logprobs"].as_array().unwrap())
                    .enumerate()
                {
                    let want = want.as_f64().unwrap();
                    if !close(*got, want, 1e-5, 1e-5) {
                        mismatches.push(format!(
                            "{} {} token {k}: {got} vs {want}",
                            label(run),
                            result.source
                        ));
                    }
                }
                let ll = want["loglikelihood"].as_f64().unwrap();
                if !close(choice.loglikelihood, ll, 1e-4, 1e-5) {
                    mismatches.push(format!(
                        "{} {}: ll {} vs lm-eval {ll}",
                        label(run),
                        result.source,
                        choice.loglikelihood
                    ));
                }
                assert_eq!(
                    choice.is_greedy,
                    want["is_greedy"].as_bool().unwrap(),
                    "{}",
                    result.source
                );
                requests_checked += 1;
            }
            assert_eq!(
                result.acc(),
                sample["acc"].as_f64().unwrap(),
                "{} {}",
                label(run),
                result.source
            );
            // lm-eval's MMLU task reports acc only; C-Eval both.
            if let Some(acc_norm) = sample["acc_norm"].as_f64() {
                assert_eq!(result.acc_norm(), acc_norm, "{}", result.source);
                norms_checked += 1;
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {:#?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    assert_eq!((requests_checked, norms_checked), (160, 10));
}

#[test]
fn batch_size_does_not_change_a_bit() {
    let run = runs()
        .iter()
        .find(|r| r["family"] == "mmlu" && r["shots"] == 3)
        .unwrap();
    let bits = |report: &McReport| -> Vec<u64> {
        report
            .questions
            .iter()
            .flat_map(|q| q.choices.iter().map(|c| c.loglikelihood.to_bits()))
            .collect()
    };
    let one = bits(&evaluate(run, Some(1)));
    assert_eq!(one, bits(&evaluate(run, Some(3))));
    assert_eq!(one, bits(&evaluate(run, Some(64))));
}

/// The same prompts on tiny Qwen2, Mistral (a 64-token sliding window),
/// Falcon and GLM models with the same tokenizer (`fixtures/eval/mc/archs`):
/// per-token log-probabilities within `1e-5 + 1e-5·|expected|` of
/// transformers', log-likelihoods within `1e-4 + 1e-5·|expected|` of
/// lm-eval's, and the same `is_greedy`, `acc` and `acc_norm`.
#[test]
fn other_architectures_equal_transformers_and_lm_eval() {
    let path = fixtures().join("expected_archs.json");
    let archs: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let archs = archs["archs"].as_object().unwrap();
    assert_eq!(archs.len(), 4);
    let mut mismatches = Vec::new();
    for (arch, arch_runs) in archs {
        let mut files = ModelFiles::open(fixtures().join("archs").join(arch)).unwrap();
        let model = files.take_model(DType::F32).unwrap();
        let tokenizer = files.require_tokenizer().unwrap();
        for (run, arch_run) in runs().iter().zip(arch_runs.as_array().unwrap()) {
            assert_eq!(run["subject"], arch_run["subject"]);
            let options = McOptions {
                shots: run["shots"].as_u64().unwrap() as usize,
                per_token: true,
                ..McOptions::default()
            };
            let report = evaluate_mc(&model, tokenizer, &task_of(run), &options).unwrap();
            for (result, sample) in report
                .questions
                .iter()
                .zip(arch_run["samples"].as_array().unwrap())
            {
                for (choice, want) in result
                    .choices
                    .iter()
                    .zip(sample["requests"].as_array().unwrap())
                {
                    let expected = want["transformers"]["logprobs"].as_array().unwrap();
                    let got = choice.logprobs.as_ref().unwrap();
                    assert_eq!(got.len(), expected.len(), "{arch} {}", result.source);
                    for (g, w) in got.iter().zip(expected) {
                        let w = w.as_f64().unwrap();
                        if !close(*g, w, 1e-5, 1e-5) {
                            mismatches.push(format!(
                                "{arch} {} {}: {g} vs {w}",
                                label(run),
                                result.source
                            ));
                        }
                    }
                    let ll = want["loglikelihood"].as_f64().unwrap();
                    if !close(choice.loglikelihood, ll, 1e-4, 1e-5) {
                        mismatches.push(format!(
                            "{arch} {}: ll {} vs {ll}",
                            result.source, choice.loglikelihood
                        ));
                    }
                    assert_eq!(
                        choice.is_greedy,
                        want["is_greedy"].as_bool().unwrap(),
                        "{arch} {}",
                        result.source
                    );
                }
                assert_eq!(
                    result.acc(),
                    sample["acc"].as_f64().unwrap(),
                    "{arch} {}",
                    result.source
                );
                if let Some(acc_norm) = sample["acc_norm"].as_f64() {
                    assert_eq!(result.acc_norm(), acc_norm, "{arch} {}", result.source);
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {:#?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
}
