//! Running a [`Suite`] on one model: every task in order, each into a
//! [`TaskReport`] whose metrics carry per-item values for `eval compare`.

use std::path::Path;
use std::time::Instant;

use kaiyuan_metrics::bleu::{Bleu, BleuOptions};
use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer, RougeTokenizer};
use kaiyuan_metrics::squad::{AnswerNormalization, qa_corpus};
use kaiyuan_models::Model;
use kaiyuan_models::generate::{GenerationConfig, generate};
use kaiyuan_tokenizer::Tokenizer;
use serde_json::{Value, json};

use crate::ab::{Aggregate, Metric, bleu_samples};
use crate::mc::{McOptions, evaluate_mc, load_mc_task};
use crate::perplexity::{PerplexityOptions, encode_text, perplexity_of_documents};
use crate::report::{SuiteReport, TaskReport};
use crate::speed::{SpeedOptions, measure_speed, median};
use crate::suite::{Suite, TaskSpec};
use crate::{EvalError, Result};

/// Runs every task of `suite` with `model` and its `tokenizer`; `model_name`
/// labels the report. `progress` hears each task's name as it starts.
///
/// ```
/// use kaiyuan_eval::runner::run_suite;
/// use kaiyuan_eval::suite::Suite;
/// use kaiyuan_models::ModelFiles;
/// use kaiyuan_tensor::DType;
/// let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/eval");
/// let mut files = ModelFiles::open(format!("{fixtures}/mc/model"))?;
/// let model = files.take_model(DType::F32)?;
/// let suite = Suite::from_toml_str("inline", std::path::Path::new(fixtures), r#"
///     name = "doc"
///     [[task]]
///     kind = "mc"
///     data = "mc/data/computer_network_val.csv"
/// "#)?;
/// let report = run_suite(&model, files.require_tokenizer()?, "tiny", &suite, |_| {})?;
/// assert_eq!(report.tasks[0].metrics["acc"].samples.len(), 3);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// The first task's error, prefixed by the task's name.
pub fn run_suite(
    model: &Model,
    tokenizer: &Tokenizer,
    model_name: &str,
    suite: &Suite,
    mut progress: impl FnMut(&str),
) -> Result<SuiteReport> {
    let mut tasks = Vec::with_capacity(suite.tasks.len());
    for task in &suite.tasks {
        progress(task.name());
        let start = Instant::now();
        let mut report = run_task(model, tokenizer, task)
            .map_err(|e| EvalError::input(format!("task `{}`", task.name()), e.to_string()))?;
        report.seconds = start.elapsed().as_secs_f64();
        report.provenance = task
            .provenance()
            .map_err(|e| EvalError::input(format!("task `{}`", task.name()), e.to_string()))?;
        tasks.push(report);
    }
    Ok(SuiteReport {
        suite: suite.name.clone(),
        description: suite.description.clone(),
        model: model_name.to_string(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        tasks,
    })
}

fn task_report(spec: &TaskSpec) -> TaskReport {
    TaskReport {
        name: spec.name().to_string(),
        kind: spec.kind().to_string(),
        seconds: 0.0,
        metrics: Default::default(),
        details: Value::Null,
        chart: Vec::new(),
        provenance: Value::Null,
    }
}

fn read_jsonl(path: &Path, limit: Option<usize>) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::input(path.display().to_string(), e.to_string()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().take(limit.unwrap_or(usize::MAX)) {
        let here = format!("{}:{}", path.display(), i + 1);
        let value =
            serde_json::from_str(line).map_err(|e| EvalError::input(&here, e.to_string()))?;
        out.push((here, value));
    }
    if out.is_empty() {
        return Err(EvalError::input(
            path.display().to_string(),
            "holds no records",
        ));
    }
    Ok(out)
}

fn run_task(model: &Model, tokenizer: &Tokenizer, spec: &TaskSpec) -> Result<TaskReport> {
    let mut report = task_report(spec);
    match spec {
        TaskSpec::Perplexity {
            data,
            field,
            context,
            stride,
            rolling,
            limit,
            ..
        } => {
            let docs: Vec<(String, String)> =
                if data.extension().and_then(|e| e.to_str()) == Some("jsonl") {
                    read_jsonl(data, *limit)?
                        .into_iter()
                        .map(|(here, v)| {
                            let text = v.get(field).and_then(Value::as_str).map(str::to_string);
                            text.map(|t| (here.clone(), t)).ok_or_else(|| {
                                EvalError::input(here, format!("no string field `{field}`"))
                            })
                        })
                        .collect::<Result<_>>()?
                } else {
                    let text = std::fs::read_to_string(data)
                        .map_err(|e| EvalError::input(data.display().to_string(), e.to_string()))?;
                    vec![(data.display().to_string(), text)]
                };
            let options = PerplexityOptions {
                context: *context,
                stride: *stride,
                per_token: true,
                batch_size: None,
                rolling: *rolling,
            };
            let texts: Vec<&str> = docs.iter().map(|(_, t)| t.as_str()).collect();
            let names: Vec<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
            let corpus = perplexity_of_documents(model, tokenizer, &texts, &names, &options)?;
            let nll: Vec<Vec<f64>> = corpus
                .per_document
                .iter()
                .flat_map(|r| r.logprobs.iter().flatten().map(|&lp| vec![-f64::from(lp)]))
                .collect();
            report.metrics.insert(
                "perplexity".into(),
                Metric {
                    value: corpus.perplexity,
                    higher_is_better: false,
                    aggregate: Aggregate::ExpMean,
                    samples: nll,
                },
            );
            for (name, value) in [
                ("bits_per_byte", corpus.bits_per_byte),
                ("word_perplexity", corpus.word_perplexity),
            ] {
                report.metrics.insert(
                    name.into(),
                    Metric {
                        value,
                        higher_is_better: false,
                        aggregate: Aggregate::Mean,
                        samples: Vec::new(),
                    },
                );
            }
            report.details = json!({
                "documents": corpus.documents, "tokens_scored": corpus.tokens_scored,
                "nll_sum": corpus.nll_sum, "words": corpus.words, "bytes": corpus.bytes,
                "byte_perplexity": corpus.byte_perplexity,
                "context": corpus.per_document[0].context, "stride": corpus.per_document[0].stride,
            });
        }
        TaskSpec::Mc {
            data,
            fewshot,
            format,
            shots,
            limit,
            ..
        } => {
            let format = format.as_deref().map(str::parse).transpose()?;
            let task = load_mc_task(data, fewshot.as_deref(), format, *shots)?;
            let options = McOptions {
                shots: *shots,
                limit: *limit,
                ..McOptions::default()
            };
            let mc = evaluate_mc(model, tokenizer, &task, &options)?;
            let acc: Vec<f64> = mc.questions.iter().map(|q| q.acc()).collect();
            let acc_norm: Vec<f64> = mc.questions.iter().map(|q| q.acc_norm()).collect();
            report
                .metrics
                .insert("acc".into(), Metric::mean(&acc, true));
            report
                .metrics
                .insert("acc_norm".into(), Metric::mean(&acc_norm, true));
            report.chart = mc
                .subjects
                .iter()
                .map(|s| {
                    (
                        s.subject.clone().unwrap_or_else(|| "(none)".into()),
                        s.acc.mean,
                    )
                })
                .collect();
            report.details = json!({
                "questions": mc.overall.questions, "shots": mc.shots, "truncated": mc.truncated,
                "acc_stderr": finite(mc.overall.acc.stderr),
                "subjects": mc.subjects.iter().map(|s| json!({
                    "subject": s.subject, "questions": s.questions, "acc": s.acc.mean, "acc_norm": s.acc_norm.mean,
                })).collect::<Vec<_>>(),
            });
        }
        TaskSpec::Generation {
            data,
            prompt_field,
            reference_field,
            metrics,
            max_new_tokens,
            stop,
            bleu_tokenize,
            rouge_tokenize,
            limit,
            ..
        } => {
            let records = read_jsonl(data, *limit)?;
            let mut prompts = Vec::with_capacity(records.len());
            let mut references: Vec<Vec<String>> = Vec::with_capacity(records.len());
            for (here, v) in &records {
                let prompt = v.get(prompt_field).and_then(Value::as_str).ok_or_else(|| {
                    EvalError::input(here, format!("no string field `{prompt_field}`"))
                })?;
                let refs: Vec<String> = match v.get(reference_field) {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                if refs.is_empty() {
                    return Err(EvalError::input(
                        here,
                        format!(
                            "field `{reference_field}` must be a string or a non-empty list of strings"
                        ),
                    ));
                }
                prompts.push(prompt.to_string());
                references.push(refs);
            }
            let config = GenerationConfig {
                max_new_tokens: *max_new_tokens,
                stop_token_ids: model.config().eos_token_ids.clone(),
                stop_strings: stop.clone(),
                ..GenerationConfig::default()
            };
            let mut outputs = Vec::with_capacity(prompts.len());
            for (prompt, (here, _)) in prompts.iter().zip(&records) {
                let ids = encode_text(tokenizer, prompt)?;
                let out = generate(model, tokenizer, &ids, &config, None, |_| {})
                    .map_err(|e| EvalError::input(here, e.to_string()))?;
                outputs.push(out.text.trim().to_string());
            }
            score_generation(
                &mut report,
                &outputs,
                &references,
                metrics,
                bleu_tokenize,
                rouge_tokenize,
            )?;
            report.details = json!({
                "prompts": prompts.len(),
                "samples": prompts.iter().zip(&outputs).zip(&references).take(20).map(|((p, o), r)| json!({
                    "prompt": p, "output": o, "references": r,
                })).collect::<Vec<_>>(),
                // Every output, in the data file's order: what a leak or
                // contamination check needs, which the 20 samples are not.
                "outputs": outputs,
            });
        }
        TaskSpec::Speed {
            prompt_tokens,
            decode_tokens,
            repeats,
            ..
        } => {
            let options = SpeedOptions {
                prompt_tokens: *prompt_tokens,
                decode_tokens: *decode_tokens,
                repeats: *repeats,
            };
            let speed = measure_speed(model, &options)?;
            let ttft_ms: Vec<f64> = speed.ttft_s.iter().map(|s| s * 1e3).collect();
            let with_median = |values: &[f64], higher: bool| {
                let mut m = Metric::mean(values, higher);
                m.value = median(values);
                m
            };
            report
                .metrics
                .insert("ttft_ms".into(), with_median(&ttft_ms, false));
            report.metrics.insert(
                "prefill_tok_s".into(),
                with_median(&speed.prefill_tok_s, true),
            );
            report.metrics.insert(
                "decode_tok_s".into(),
                with_median(&speed.decode_tok_s, true),
            );
            if let Some(peak) = speed.peak_rss_bytes {
                report.metrics.insert(
                    "peak_rss_mib".into(),
                    Metric {
                        value: peak as f64 / f64::from(1u32 << 20),
                        higher_is_better: false,
                        aggregate: Aggregate::Mean,
                        samples: Vec::new(),
                    },
                );
            }
            report.chart = vec![
                ("prefill tok/s".into(), median(&speed.prefill_tok_s)),
                ("decode tok/s".into(), median(&speed.decode_tok_s)),
            ];
            report.details = json!({
                "prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens, "repeats": repeats,
                "threads": rayon::current_num_threads(),
            });
        }
    }
    Ok(report)
}

/// JSON has no NaN.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Scores generated `outputs` against `references` with the named metrics.
fn score_generation(
    report: &mut TaskReport,
    outputs: &[String],
    references: &[Vec<String>],
    metrics: &[String],
    bleu_tokenize: &str,
    rouge_tokenize: &str,
) -> Result<()> {
    let streams = references.iter().map(Vec::len).max().unwrap_or(0);
    // sacrebleu's layout: one stream per reference position, `None` where a
    // segment has fewer references.
    let ref_streams: Vec<Vec<Option<String>>> = (0..streams)
        .map(|j| references.iter().map(|r| r.get(j).cloned()).collect())
        .collect();
    let to_eval = |e: kaiyuan_metrics::MetricsError| EvalError::input("metrics", e.to_string());
    for metric in metrics {
        match metric.as_str() {
            "bleu" => {
                let options = BleuOptions {
                    tokenize: bleu_tokenize.parse().map_err(to_eval)?,
                    ..BleuOptions::default()
                };
                let bleu = Bleu::new(options).map_err(to_eval)?;
                let stats = bleu.corpus_stats(outputs, &ref_streams).map_err(to_eval)?;
                let score = bleu.score_from_stats(&stats.total(), stats.nrefs);
                let samples = bleu_samples(&stats.segments);
                report.metrics.insert(
                    "bleu".into(),
                    Metric {
                        value: score.score,
                        higher_is_better: true,
                        aggregate: Aggregate::Bleu,
                        samples,
                    },
                );
            }
            "chrf" | "chrf++" => {
                let options = if metric == "chrf" {
                    ChrfOptions::default()
                } else {
                    ChrfOptions::chrf_plus_plus()
                };
                let score = Chrf::new(options)
                    .map_err(to_eval)?
                    .corpus_score(outputs, &ref_streams)
                    .map_err(to_eval)?;
                report.metrics.insert(
                    metric.clone(),
                    Metric {
                        value: score.score,
                        higher_is_better: true,
                        aggregate: Aggregate::Mean,
                        samples: Vec::new(),
                    },
                );
            }
            "rouge" => {
                let options = RougeOptions {
                    tokenizer: rouge_tokenize.parse::<RougeTokenizer>().map_err(to_eval)?,
                    use_stemmer: true,
                    ..RougeOptions::default()
                };
                let mut scorer = RougeScorer::new(options).map_err(to_eval)?;
                let corpus = scorer
                    .score_multi_corpus(references, outputs)
                    .map_err(to_eval)?;
                for (t, _) in corpus.mean.iter() {
                    let f: Vec<f64> = corpus
                        .per_pair
                        .iter()
                        .map(|s| s.get(t).map_or(0.0, |s| s.fmeasure))
                        .collect();
                    report
                        .metrics
                        .insert(t.name().to_string(), Metric::mean(&f, true));
                }
            }
            "exact_match" | "f1" => {
                let norm = if rouge_tokenize == "cjk" {
                    AnswerNormalization::Cjk
                } else {
                    AnswerNormalization::Squad
                };
                let corpus = qa_corpus(outputs, references, norm).map_err(to_eval)?;
                let values: Vec<f64> = corpus
                    .per_pair
                    .iter()
                    .map(|s| if metric == "f1" { s.f1 } else { s.exact_match })
                    .collect();
                report
                    .metrics
                    .insert(metric.clone(), Metric::mean(&values, true));
            }
            other => {
                return Err(EvalError::option(
                    "metrics",
                    format!(
                        "unknown metric `{other}`: expected bleu, chrf, chrf++, rouge, exact_match or f1"
                    ),
                ));
            }
        }
    }
    report.chart = report
        .metrics
        .iter()
        .map(|(k, m)| (k.clone(), m.value))
        .collect();
    Ok(())
}
