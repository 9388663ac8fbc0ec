//! `kaiyuan eval`: perplexity and multiple choice; BLEU, ROUGE and speed
//! are not built yet and say so (exit status 2).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use kaiyuan_eval::ab::{Aggregate, Metric};
use kaiyuan_eval::mc::{
    McFormat, McOptions, McReport, QuestionResult, SubjectScore, evaluate_mc, load_mc_task,
};
use kaiyuan_eval::runner::run_suite;
use kaiyuan_eval::suite::{Suite, TaskSpec};
use kaiyuan_eval::{
    CorpusPerplexity, PerplexityOptions, PerplexityReport, encode_text, perplexity_of_documents,
};

use crate::model_cmds::DTypeArg;

/// Arguments of `kaiyuan eval`: a suite (`--model --suite --output`) or
/// one evaluation (a subcommand).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    /// One evaluation instead of a suite.
    #[command(subcommand)]
    pub task: Option<EvalTask>,
    /// Run a suite.
    #[command(flatten)]
    pub suite: SuiteArgs,
}

/// Arguments of a suite run: `kaiyuan eval --model M --suite S --output DIR`.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// A model directory or a .gguf file.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The suite (TOML; see `docs/eval.md`).
    #[arg(long)]
    pub suite: Option<PathBuf>,
    /// Directory for report.json, report.md and report.html.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// Dequantize GGUF block weights (Q4_0, Q8_0, Q4_K, …) to --dtype at
    /// load. By default they stay quantized and run on the fused kernels,
    /// as llama.cpp runs them (about the file's size in memory).
    #[arg(long)]
    pub dequantize: bool,
}

fn suite_cmd(args: &SuiteArgs) -> anyhow::Result<()> {
    let (Some(model_path), Some(suite_path), Some(output)) =
        (&args.model, &args.suite, &args.output)
    else {
        anyhow::bail!(
            "kaiyuan eval needs --model, --suite and --output, or a subcommand (perplexity, mc, bleu, chrf, rouge, qa, speed, compare); see --help"
        );
    };
    let suite = Suite::from_file(suite_path)?;
    let mut files = crate::model_cmds::open_for_running(model_path, args.dequantize)?;
    let mut model = files.take_model(args.dtype.dtype())?;
    crate::device_arg::place(&mut model)?;
    let tokenizer = files.require_tokenizer()?;
    let report = run_suite(
        &model,
        tokenizer,
        &model_path.display().to_string(),
        &suite,
        |name| {
            eprintln!("task {name} …");
        },
    )?;
    report.write_all(output)?;
    let mut inputs: Vec<(String, &Path)> = vec![
        ("model".to_string(), model_path.as_path()),
        ("suite".to_string(), suite_path.as_path()),
    ];
    for task in &suite.tasks {
        for (key, path) in task.data_paths() {
            inputs.push((format!("{}.{key}", task.name()), path));
        }
    }
    let roles: Vec<(&str, &Path)> = inputs.iter().map(|(r, p)| (r.as_str(), *p)).collect();
    crate::provenance_cmd::record(
        output,
        "eval-report",
        serde_json::json!({"suite": suite.name, "dtype": args.dtype.dtype().name()}),
        &roles,
    )?;
    print!("{}", report.to_markdown());
    println!("\nreports: {}/report.{{json,md,html}}", output.display());
    Ok(())
}

/// The evaluations of `kaiyuan eval`.
#[derive(Debug, Subcommand)]
pub enum EvalTask {
    /// Perplexity of a text file (HF transformers' sliding-window recipe).
    Perplexity(PerplexityArgs),
    /// Multiple-choice accuracy by log-likelihood, prompts as lm-eval builds
    /// them (MMLU, C-Eval, CMMLU, JSONL).
    #[command(name = "mc", alias = "multiple-choice")]
    Mc(McArgs),
    /// Corpus BLEU of a hypothesis file against reference files, as sacrebleu.
    Bleu(crate::metrics_cmd::BleuArgs),
    /// Corpus chrF / chrF++ (--chrf-word-order 2), as sacrebleu.
    Chrf(crate::metrics_cmd::ChrfArgs),
    /// ROUGE-1/2/L/Lsum, as rouge-score (with a CJK tokenizer option).
    Rouge(crate::metrics_cmd::RougeArgs),
    /// Exact match and token F1 of answers (SQuAD / MLQA-zh normalisation).
    Qa(crate::metrics_cmd::QaArgs),
    /// Speed and memory: time to first token, prefill and decode tokens/s,
    /// peak RSS, file size.
    Speed(SpeedArgs),
    /// Compare two reports metric by metric with paired-bootstrap intervals;
    /// exit 1 on a significant regression beyond --max-regression.
    Compare(crate::registry_cmd::CompareArgs),
}

/// Arguments of `kaiyuan eval perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// A model directory (config.json + safetensors + tokenizer.json) or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text file, tokenized as one sequence with the tokenizer's
    /// special tokens (e.g. BOS) added, as HF tokenizers do; or a `.jsonl`
    /// file, one document per line (each scored on its own, then summed).
    #[arg(long)]
    pub text: PathBuf,
    /// The text field of a `.jsonl` --text.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// lm-eval's rolling log-likelihood (its wikitext recipe: a prefix
    /// token, disjoint windows of --context predicted tokens, every token
    /// scored) instead of HF's sliding window.
    #[arg(long, conflicts_with = "stride")]
    pub rolling: bool,
    /// llama.cpp's `llama-perplexity` recipe (needs --context, its `-c`):
    /// the text as one sequence, disjoint chunks of --context tokens each
    /// starting with the BOS, the second half of each scored.
    #[arg(long, conflicts_with_all = ["stride", "rolling"], requires = "context")]
    pub llama_cpp: bool,
    /// Tokens per window [default: the model's max_position_embeddings].
    #[arg(long)]
    pub context: Option<usize>,
    /// Tokens between window starts; each window scores only tokens the
    /// previous one did not [default: the context].
    #[arg(long)]
    pub stride: Option<usize>,
    /// Also print the log-probability of every scored token.
    #[arg(long)]
    pub per_token: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// Dequantize GGUF block weights (Q4_0, Q8_0, Q4_K, …) to --dtype at
    /// load. By default they stay quantized and run on the fused kernels,
    /// as llama.cpp runs them (about the file's size in memory).
    #[arg(long)]
    pub dequantize: bool,
    /// Windows per forward call [default: within 2048 tokens and 256 MiB of logits].
    #[arg(long)]
    pub batch_size: Option<usize>,
}

/// Arguments of `kaiyuan eval mc`.
#[derive(Debug, Args)]
pub struct McArgs {
    /// A model directory (config.json + safetensors + tokenizer.json) or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// Questions: a file (MMLU/C-Eval/CMMLU CSV, or JSONL with question,
    /// choices, answer[, subject] or context, choices, gold), or a directory
    /// of `{subject}_test|val` files with their `{subject}_dev` files.
    #[arg(long)]
    pub task: PathBuf,
    /// Few-shot examples [default: the `{subject}_dev` file beside --task].
    #[arg(long)]
    pub fewshot: Option<PathBuf>,
    /// Prompt layout: mmlu, ceval, cmmlu or generic [default: from the file].
    #[arg(long)]
    pub format: Option<String>,
    /// Solved examples before each question.
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// Score only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Rows per forward call [default: about 4,096 tokens per call].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// Dequantize GGUF block weights (Q4_0, Q8_0, Q4_K, …) to --dtype at
    /// load. By default they stay quantized and run on the fused kernels,
    /// as llama.cpp runs them (about the file's size in memory).
    #[arg(long)]
    pub dequantize: bool,
    /// Write every question's prompts, log-likelihoods and per-token
    /// log-probabilities to this JSONL file (lm-eval's --log_samples).
    #[arg(long)]
    pub log_samples: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kaiyuan eval speed`.
#[derive(Debug, Args)]
pub struct SpeedArgs {
    /// A model directory or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt tokens (a fixed pseudo-random prompt).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens generated greedily after the prompt.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Timed rounds after one warm-up (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// KV cache dtype [default: f32]: f16 halves the cache (llama.cpp's
    /// default), rounding each key and value once (exact for an f16
    /// model), but widening it at every read slows long-context decoding.
    #[arg(long, value_enum)]
    pub kv_dtype: Option<DTypeArg>,
    /// GGUF block weights run quantized: the default now, accepted for
    /// older scripts (see --dequantize).
    #[arg(long, hide = true)]
    pub quantized: bool,
    /// Dequantize GGUF block weights (Q4_0, Q8_0, Q4_K, …) to --dtype at
    /// load. By default they stay quantized and run on the fused kernels,
    /// as llama.cpp runs them (about the file's size in memory).
    #[arg(long)]
    pub dequantize: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kaiyuan eval …` and returns the exit status.
pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let Some(task) = args.task else {
        suite_cmd(&args.suite)?;
        return Ok(ExitCode::SUCCESS);
    };
    match task {
        EvalTask::Perplexity(p) => {
            perplexity_cmd(&p)?;
            Ok(ExitCode::SUCCESS)
        }
        EvalTask::Mc(m) => {
            mc_cmd(&m)?;
            Ok(ExitCode::SUCCESS)
        }
        EvalTask::Compare(c) => crate::registry_cmd::compare_cmd(&c),
        EvalTask::Bleu(a) => crate::metrics_cmd::bleu_cmd(&a).map(|()| ExitCode::SUCCESS),
        EvalTask::Chrf(a) => crate::metrics_cmd::chrf_cmd(&a).map(|()| ExitCode::SUCCESS),
        EvalTask::Rouge(a) => crate::metrics_cmd::rouge_cmd(&a).map(|()| ExitCode::SUCCESS),
        EvalTask::Qa(a) => crate::metrics_cmd::qa_cmd(&a).map(|()| ExitCode::SUCCESS),
        EvalTask::Speed(a) => {
            speed_cmd(&a)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The documents of `--text`: the whole file, or with a `.jsonl` file one
/// document per line from `--field`, each named `file:line`.
fn read_documents(path: &Path, field: &str) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --text {}", path.display()))?;
    if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
        return Ok(vec![(path.display().to_string(), text)]);
    }
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = format!("{}:{}", path.display(), i + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{name}: not a JSON object"))?;
        let doc = value
            .get(field)
            .and_then(|v| v.as_str())
            .with_context(|| format!("{name}: no string field `{field}` (see --field)"))?;
        docs.push((name, doc.to_string()));
    }
    anyhow::ensure!(!docs.is_empty(), "{} holds no documents", path.display());
    Ok(docs)
}

/// `eval perplexity --llama-cpp`: the score `llama-perplexity -c N` prints.
fn llama_cpp_perplexity_cmd(args: &PerplexityArgs, context: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("reading --text {}", args.text.display()))?;
    let mut files = crate::model_cmds::open_for_running(&args.model, args.dequantize)?;
    let mut model = files.take_model(args.dtype.dtype())?;
    crate::device_arg::place(&mut model)?;
    let tokenizer = files.require_tokenizer()?;
    let ids = kaiyuan_eval::encode_text(tokenizer, &text)?;
    // The BOS the tokenizer adds to every sequence, if any (llama.cpp's add_bos).
    let bos = kaiyuan_eval::encode_text(tokenizer, "")?.first().copied();
    let start = std::time::Instant::now();
    let report = kaiyuan_eval::perplexity_llama_cpp(&model, &ids, context, bos, false)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "schema": "kaiyuan.eval.perplexity/1",
                "recipe": "llama.cpp",
                "perplexity": report.perplexity,
                "tokens": ids.len(),
                "tokens_scored": report.tokens_scored,
                "nll_sum": report.nll_sum,
                "nll_mean": report.nll_mean,
                "context": context,
                "chunks": report.windows,
                "seconds": seconds,
            })
        );
    } else {
        println!(
            "perplexity {:.4} over {} tokens (llama.cpp recipe: {} chunks of {context} of the text's {} tokens, second halves scored), {seconds:.2} s",
            report.perplexity,
            report.tokens_scored,
            report.windows,
            ids.len()
        );
    }
    Ok(())
}

fn perplexity_cmd(args: &PerplexityArgs) -> anyhow::Result<()> {
    if let (true, Some(context)) = (args.llama_cpp, args.context) {
        return llama_cpp_perplexity_cmd(args, context);
    }
    let docs = read_documents(&args.text, &args.field)?;
    let mut files = crate::model_cmds::open_for_running(&args.model, args.dequantize)?;
    let mut model = files.take_model(args.dtype.dtype())?;
    crate::device_arg::place(&mut model)?;
    let tokenizer = files.require_tokenizer()?;
    let options = PerplexityOptions {
        context: args.context,
        stride: args.stride,
        per_token: args.per_token,
        batch_size: args.batch_size,
        rolling: args.rolling,
    };
    let texts: Vec<&str> = docs.iter().map(|(_, t)| t.as_str()).collect();
    let names: Vec<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
    let start = std::time::Instant::now();
    let corpus = perplexity_of_documents(&model, tokenizer, &texts, &names, &options)?;
    let seconds = start.elapsed().as_secs_f64();
    let Some(first) = corpus.per_document.first() else {
        anyhow::bail!("no documents scored");
    };
    if args.json {
        let task = TaskSpec::Perplexity {
            name: "perplexity".into(),
            data: args.text.clone(),
            field: args.field.clone(),
            context: args.context,
            stride: args.stride,
            rolling: args.rolling,
            limit: None,
        };
        let report = with_provenance(json_report(&corpus, seconds), &task)?;
        println!("{report}");
        return Ok(());
    }
    if args.per_token {
        for (text, report) in texts.iter().zip(&corpus.per_document) {
            if let Some(logprobs) = &report.logprobs {
                print_per_token(report, &encode_text(tokenizer, text)?, logprobs, tokenizer);
            }
        }
    }
    let windows: usize = corpus.per_document.iter().map(|r| r.windows).sum();
    println!(
        "perplexity {:.4} over {} tokens (nll mean {:.6} nats/token, sum {:.4}); \
         word perplexity {:.4}, bits per byte {:.4} ({} words, {} bytes); \
         {} document{}, context {}, stride {}, {} window{}, {:.2} s",
        corpus.perplexity,
        corpus.tokens_scored,
        corpus.nll_sum / corpus.tokens_scored as f64,
        corpus.nll_sum,
        corpus.word_perplexity,
        corpus.bits_per_byte,
        corpus.words,
        corpus.bytes,
        corpus.documents,
        if corpus.documents == 1 { "" } else { "s" },
        first.context,
        first.stride,
        windows,
        if windows == 1 { "" } else { "s" },
        seconds
    );
    Ok(())
}

/// `report` with the task's provenance (`eval compare` checks it).
fn with_provenance(
    mut report: serde_json::Value,
    task: &TaskSpec,
) -> anyhow::Result<serde_json::Value> {
    if let Some(map) = report.as_object_mut() {
        map.insert("provenance".into(), task.provenance()?);
    }
    Ok(report)
}

/// The report as one JSON object (`logprobs`, in document order, only with
/// `--per-token`).
fn json_report(corpus: &CorpusPerplexity, seconds: f64) -> serde_json::Value {
    let first = &corpus.per_document[0];
    let logprobs: Option<Vec<f32>> = corpus
        .per_document
        .iter()
        .map(|r| r.logprobs.clone())
        .collect::<Option<Vec<_>>>()
        .map(|v| v.concat());
    let mut value = serde_json::json!({
        "schema": "kaiyuan.eval.perplexity/1",
        "perplexity": corpus.perplexity,
        "tokens_scored": corpus.tokens_scored,
        "nll_sum": corpus.nll_sum,
        "nll_mean": corpus.nll_sum / corpus.tokens_scored as f64,
        "word_perplexity": corpus.word_perplexity,
        "byte_perplexity": corpus.byte_perplexity,
        "bits_per_byte": corpus.bits_per_byte,
        "documents": corpus.documents,
        "words": corpus.words,
        "bytes": corpus.bytes,
        "context": first.context,
        "stride": first.stride,
        "windows": corpus.per_document.iter().map(|r| r.windows).sum::<usize>(),
        "seconds": seconds,
    });
    // For `eval compare`: per-token nll as the bootstrap's items (with --per-token).
    let nll: Vec<Vec<f64>> = logprobs
        .iter()
        .flatten()
        .map(|&lp| vec![-f64::from(lp)])
        .collect();
    let metric = Metric {
        value: corpus.perplexity,
        higher_is_better: false,
        aggregate: Aggregate::ExpMean,
        samples: nll,
    };
    if let Some(map) = value.as_object_mut() {
        if let Some(logprobs) = logprobs {
            map.insert("logprobs".into(), serde_json::json!(logprobs));
        }
        map.insert(
            "metrics".into(),
            serde_json::json!({ "perplexity": metric.to_json() }),
        );
    }
    value
}

/// One line per scored token: position, id, token text and log-probability.
fn print_per_token(
    report: &PerplexityReport,
    ids: &[u32],
    logprobs: &[f32],
    tokenizer: &kaiyuan_tokenizer::Tokenizer,
) {
    let Ok(windows) = kaiyuan_eval::windows(ids.len(), report.context, report.stride) else {
        return;
    };
    println!("position\tid\ttoken\tlogprob");
    let positions = windows.iter().flat_map(|w| w.first_scored..w.end);
    for (pos, lp) in positions.zip(logprobs) {
        let id = ids[pos];
        let token = tokenizer.id_to_token(id).unwrap_or_default();
        println!("{pos}\t{id}\t{}\t{lp:.6}", token.escape_debug());
    }
}

fn speed_cmd(args: &SpeedArgs) -> anyhow::Result<()> {
    use crate::bench_generate::{GenerateBench, measure, median};
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let bench = GenerateBench {
        model: &args.model,
        dtype: args.dtype.dtype(),
        kv_dtype: DTypeArg::kv_dtype(args.kv_dtype),
        prompt_tokens: args.prompt_tokens,
        decode_tokens: args.decode_tokens,
        repeats: args.repeats,
        threads: rayon::current_num_threads(),
        json: args.json,
        quantized: !args.dequantize && !crate::device_arg::current().is_cuda(),
    };
    let m = measure(&bench)?;
    let mib = |b: f64| b / f64::from(1u32 << 20);
    let ttft_ms: Vec<f64> = m.ttft_s.iter().map(|s| s * 1e3).collect();
    let (prefill, decode, ttft) = (
        median(&m.prefill_tok_s),
        median(&m.decode_tok_s),
        median(&ttft_ms),
    );
    if args.json {
        let metric = |values: &[f64], value: f64, higher: bool| {
            let mut metric = Metric::mean(values, higher);
            metric.value = value;
            metric.to_json()
        };
        println!(
            "{}",
            serde_json::json!({
                "schema": "kaiyuan.eval.speed/1",
                "model": args.model.display().to_string(),
                "dtype": args.dtype.dtype().name(),
                "threads": rayon::current_num_threads(),
                "prompt_tokens": args.prompt_tokens,
                "decode_tokens": args.decode_tokens,
                "repeats": args.repeats,
                "ttft_ms": ttft,
                "prefill_tok_s": prefill,
                "decode_tok_s": decode,
                "peak_rss_bytes": m.peak_rss_bytes,
                "file_bytes": m.file_bytes,
                "weight_bytes": m.weight_bytes,
                "provenance": TaskSpec::Speed {
                    name: "speed".into(),
                    prompt_tokens: args.prompt_tokens,
                    decode_tokens: args.decode_tokens,
                    repeats: args.repeats,
                }
                .provenance()?,
                "metrics": {
                    "ttft_ms": metric(&ttft_ms, ttft, false),
                    "prefill_tok_s": metric(&m.prefill_tok_s, prefill, true),
                    "decode_tok_s": metric(&m.decode_tok_s, decode, true),
                    "peak_rss_mib": metric(&[], mib(m.peak_rss_bytes as f64), false),
                },
            })
        );
    } else {
        println!(
            "time to first token {ttft:.1} ms ({} prompt tokens); prefill {prefill:.1} tokens/s; decode {decode:.1} tokens/s ({} tokens); medians of {} rounds, {} threads",
            args.prompt_tokens,
            args.decode_tokens,
            args.repeats,
            rayon::current_num_threads()
        );
        println!(
            "peak RSS {:.1} MiB; files {:.1} MiB; weights as loaded {:.1} MiB",
            mib(m.peak_rss_bytes as f64),
            mib(m.file_bytes as f64),
            mib(m.weight_bytes as f64)
        );
    }
    Ok(())
}

fn mc_cmd(args: &McArgs) -> anyhow::Result<()> {
    let format = args
        .format
        .as_deref()
        .map(str::parse::<McFormat>)
        .transpose()?;
    let task = load_mc_task(&args.task, args.fewshot.as_deref(), format, args.shots)?;
    let mut files = crate::model_cmds::open_for_running(&args.model, args.dequantize)?;
    let mut model = files.take_model(args.dtype.dtype())?;
    crate::device_arg::place(&mut model)?;
    let tokenizer = files.require_tokenizer()?;
    let options = McOptions {
        shots: args.shots,
        batch_size: args.batch_size,
        limit: args.limit,
        per_token: args.log_samples.is_some(),
    };
    let start = std::time::Instant::now();
    let report = evaluate_mc(&model, tokenizer, &task, &options)?;
    let seconds = start.elapsed().as_secs_f64();
    if let Some(path) = &args.log_samples {
        let mut text = String::new();
        for q in &report.questions {
            text.push_str(&mc_sample_json(q).to_string());
            text.push('\n');
        }
        crate::write_atomic(path, text)?;
    }
    if args.json {
        let task = TaskSpec::Mc {
            name: "mc".into(),
            data: args.task.clone(),
            fewshot: args.fewshot.clone(),
            format: args.format.clone(),
            shots: args.shots,
            limit: args.limit,
        };
        println!(
            "{}",
            with_provenance(mc_json(args, &report, seconds), &task)?
        );
        return Ok(());
    }
    println!(
        "{:<40} {:>6} {:>16} {:>16}",
        "subject", "n", "acc", "acc_norm"
    );
    let row = |name: &str, s: &SubjectScore| {
        println!(
            "{name:<40} {:>6} {:>8.4} ± {:.4} {:>8.4} ± {:.4}",
            s.questions, s.acc.mean, s.acc.stderr, s.acc_norm.mean, s.acc_norm.stderr
        );
    };
    for s in &report.subjects {
        row(s.subject.as_deref().unwrap_or("(none)"), s);
    }
    row("all", &report.overall);
    println!(
        "{} questions, {}-shot, {} truncated to fit the model, {seconds:.2} s",
        report.overall.questions, report.shots, report.truncated
    );
    Ok(())
}

fn score_json(s: &SubjectScore) -> serde_json::Value {
    serde_json::json!({
        "subject": s.subject,
        "questions": s.questions,
        "acc": s.acc.mean,
        "acc_stderr": finite(s.acc.stderr),
        "acc_norm": s.acc_norm.mean,
        "acc_norm_stderr": finite(s.acc_norm.stderr),
    })
}

/// JSON has no NaN: a standard error of one question is written as null.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn mc_json(args: &McArgs, report: &McReport, seconds: f64) -> serde_json::Value {
    serde_json::json!({
        "schema": "kaiyuan.eval.mc/1",
        "model": args.model.display().to_string(),
        "task": args.task.display().to_string(),
        "shots": report.shots,
        "overall": score_json(&report.overall),
        "subjects": report.subjects.iter().map(score_json).collect::<Vec<_>>(),
        "truncated": report.truncated,
        "seconds": seconds,
        "metrics": {
            "acc": Metric::mean(&report.questions.iter().map(|q| q.acc()).collect::<Vec<_>>(), true).to_json(),
            "acc_norm": Metric::mean(&report.questions.iter().map(|q| q.acc_norm()).collect::<Vec<_>>(), true).to_json(),
        },
    })
}

fn mc_sample_json(q: &QuestionResult) -> serde_json::Value {
    let requests: Vec<serde_json::Value> = q
        .requests
        .iter()
        .zip(&q.choices)
        .map(|(r, c)| {
            serde_json::json!({
                "context": r.context,
                "continuation": r.continuation,
                "loglikelihood": c.loglikelihood,
                "is_greedy": c.is_greedy,
                "tokens": c.tokens,
                "logprobs": c.logprobs,
            })
        })
        .collect();
    serde_json::json!({
        "source": q.source,
        "subject": q.subject,
        "gold": q.gold,
        "prediction": q.prediction,
        "acc": q.acc(),
        "acc_norm": q.acc_norm(),
        "truncated": q.truncated,
        "requests": requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cli;
    use clap::Parser;

    #[test]
    fn perplexity_parses_every_flag() {
        let cli = Cli::try_parse_from([
            "kaiyuan",
            "eval",
            "perplexity",
            "--model",
            "m.gguf",
            "--text",
            "t.txt",
            "--context",
            "128",
            "--stride",
            "64",
            "--per-token",
            "--json",
            "--dtype",
            "bf16",
        ])
        .unwrap();
        let crate::Command::Eval(EvalArgs {
            task: Some(EvalTask::Perplexity(p)),
            ..
        }) = cli.command
        else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(p.model, PathBuf::from("m.gguf"));
        assert_eq!((p.context, p.stride), (Some(128), Some(64)));
        assert!(p.per_token && p.json);
        assert_eq!(p.dtype, DTypeArg::Bf16);
        assert_eq!(p.batch_size, None);
    }

    #[test]
    fn perplexity_requires_model_and_text() {
        assert!(Cli::try_parse_from(["kaiyuan", "eval", "perplexity", "--text", "t"]).is_err());
        assert!(Cli::try_parse_from(["kaiyuan", "eval", "perplexity", "--model", "m"]).is_err());
    }
}
