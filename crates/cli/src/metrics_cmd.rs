//! `kaiyuan eval bleu|chrf|rouge|qa`: text metrics of a hypothesis file
//! against reference files, one segment per line (flags follow sacrebleu's
//! CLI where it has one).
//!
//! Lines are read as sacrebleu's CLI reads them: split at `\n`, trailing
//! whitespace removed. Hypothesis and reference files must have the same
//! number of lines (an error names both files and counts). Empty lines are
//! scored as empty segments, as sacrebleu scores them, and counted in the
//! output (`--on-empty error` refuses them instead, naming file and line):
//! nothing leaves a denominator unannounced.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use kaiyuan_eval::ab::{Aggregate, Metric, bleu_samples};
use kaiyuan_metrics::BleuTokenizer;
use kaiyuan_metrics::bleu::{Bleu, BleuOptions, Smoothing};
use kaiyuan_metrics::chrf::{Chrf, ChrfOptions};
use kaiyuan_metrics::rouge::{RougeOptions, RougeScorer, RougeTokenizer, RougeType};
use kaiyuan_metrics::sacre_tokenize::python_rstrip;
use kaiyuan_metrics::squad::{AnswerNormalization, qa_corpus};
use serde_json::{Value, json};

/// What to do with empty lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnEmpty {
    /// Score them as empty segments (sacrebleu's behaviour) and count them.
    Score,
    /// Refuse the input, naming the file and line.
    Error,
}

/// Input files shared by the text metrics.
#[derive(Debug, Args)]
pub struct TextInputs {
    /// The system output, one segment per line.
    #[arg(long, short = 'i')]
    pub hyp: PathBuf,
    /// Reference files (one stream each), line-aligned with --hyp.
    #[arg(long = "ref", short = 'r', num_args = 1.., required = true)]
    pub refs: Vec<PathBuf>,
    /// Empty lines: score them as empty segments and count them, or refuse them.
    #[arg(long, value_enum, default_value_t = OnEmpty::Score)]
    pub on_empty: OnEmpty,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--sentence-level` (sacrebleu's `-sl`): one score per segment.
#[derive(Debug, Args)]
pub struct SentenceLevel {
    /// Score every segment on its own (BLEU with effective order, as
    /// sacrebleu's `--sentence-level`); one line (or JSON object) each.
    #[arg(long = "sentence-level", alias = "sl")]
    pub sentence_level: bool,
}

/// Prints per-segment scores: sacrebleu's formatted line, or a JSON object
/// per line with `--json`.
fn print_sentences<S: std::fmt::Display>(
    inputs: &TextInputs,
    scores: impl Iterator<Item = (f64, String, S)>,
) {
    for (line, (score, signature, formatted)) in scores.enumerate() {
        if inputs.json {
            println!(
                "{}",
                json!({"line": line + 1, "score": score, "signature": signature})
            );
        } else {
            println!("{formatted}");
        }
    }
}

/// The references of segment `i` across the streams.
fn segment_refs(refs: &[Vec<String>], i: usize) -> Vec<&str> {
    refs.iter().map(|s| s[i].as_str()).collect()
}

/// Arguments of `kaiyuan eval bleu`.
#[derive(Debug, Args)]
pub struct BleuArgs {
    #[command(flatten)]
    pub inputs: TextInputs,
    #[command(flatten)]
    pub sentence: SentenceLevel,
    /// Tokenizer: 13a, intl, zh, char or none.
    #[arg(long, default_value = "13a")]
    pub tokenize: String,
    /// Smoothing: exp, floor, add-k or none.
    #[arg(long, default_value = "exp")]
    pub smooth_method: String,
    /// Smoothing value for floor (default 0.1) and add-k (default 1).
    #[arg(long)]
    pub smooth_value: Option<f64>,
    /// Lowercase hypotheses and references.
    #[arg(long, short = 'l')]
    pub lowercase: bool,
    /// Effective order (for sentence-level use).
    #[arg(long)]
    pub effective_order: bool,
}

/// Arguments of `kaiyuan eval chrf`.
#[derive(Debug, Args)]
pub struct ChrfArgs {
    #[command(flatten)]
    pub inputs: TextInputs,
    #[command(flatten)]
    pub sentence: SentenceLevel,
    /// Character n-gram order.
    #[arg(long, default_value_t = 6)]
    pub chrf_char_order: usize,
    /// Word n-gram order (2 gives chrF++).
    #[arg(long, default_value_t = 0)]
    pub chrf_word_order: usize,
    /// Recall weight.
    #[arg(long, default_value_t = 2)]
    pub chrf_beta: u32,
    /// Keep whitespace in character n-grams.
    #[arg(long)]
    pub chrf_whitespace: bool,
    /// Lowercase.
    #[arg(long, short = 'l')]
    pub lowercase: bool,
    /// Epsilon smoothing (chrF++.py's behaviour) instead of sacrebleu's default.
    #[arg(long)]
    pub chrf_eps_smoothing: bool,
}

/// Arguments of `kaiyuan eval rouge`.
#[derive(Debug, Args)]
pub struct RougeArgs {
    #[command(flatten)]
    pub inputs: TextInputs,
    /// ROUGE types, comma-separated (rouge1…rouge9, rougeL, rougeLsum).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rouge1,rouge2,rougeL,rougeLsum"
    )]
    pub types: Vec<String>,
    /// Porter-stem tokens longer than 3 characters (rouge-score's use_stemmer).
    #[arg(long)]
    pub stem: bool,
    /// Tokenizer: default (rouge-score's; Chinese scores 0) or cjk.
    #[arg(long, default_value = "default")]
    pub tokenize: String,
}

/// Arguments of `kaiyuan eval qa`.
#[derive(Debug, Args)]
pub struct QaArgs {
    #[command(flatten)]
    pub inputs: TextInputs,
    /// Answer normalisation: squad (English) or cjk (MLQA-zh).
    #[arg(long, default_value = "squad")]
    pub normalize: String,
}

/// The lines of a file as sacrebleu's CLI reads them.
fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| python_rstrip(l).to_string())
        .collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    Ok(lines)
}

/// Hypotheses, reference streams, and the empty-line counts.
struct Loaded {
    hyps: Vec<String>,
    refs: Vec<Vec<String>>,
    empty_hyps: usize,
    empty_refs: usize,
}

fn load(inputs: &TextInputs) -> anyhow::Result<Loaded> {
    let hyps = read_lines(&inputs.hyp)?;
    if hyps.is_empty() {
        bail!("{} has no lines", inputs.hyp.display());
    }
    let mut refs = Vec::new();
    for path in &inputs.refs {
        let lines = read_lines(path)?;
        if lines.len() != hyps.len() {
            bail!(
                "{} has {} lines but {} has {}: hypotheses and references must be line-aligned",
                inputs.hyp.display(),
                hyps.len(),
                path.display(),
                lines.len()
            );
        }
        refs.push(lines);
    }
    let count_empty = |path: &Path, lines: &[String]| -> anyhow::Result<usize> {
        let empty: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_empty())
            .map(|(i, _)| i + 1)
            .collect();
        if inputs.on_empty == OnEmpty::Error && !empty.is_empty() {
            bail!(
                "{}:{}: empty line (--on-empty error)",
                path.display(),
                empty[0]
            );
        }
        Ok(empty.len())
    };
    let empty_hyps = count_empty(&inputs.hyp, &hyps)?;
    let mut empty_refs = 0;
    for (path, lines) in inputs.refs.iter().zip(&refs) {
        empty_refs += count_empty(path, lines)?;
    }
    Ok(Loaded {
        hyps,
        refs,
        empty_hyps,
        empty_refs,
    })
}

/// Prints the text report, or with `--json` `value` joined with the inputs'
/// common fields (files, segments, empty-line counts).
/// Prints the score, or with `--json` the report with its task provenance:
/// `settings` and the reference files (the hypotheses are what is scored).
fn print_or_json(
    inputs: &TextInputs,
    text: &str,
    value: Value,
    loaded: &Loaded,
    mut settings: Value,
) -> anyhow::Result<()> {
    if inputs.json {
        if let Some(map) = settings.as_object_mut() {
            map.insert("on_empty".into(), json!(format!("{:?}", inputs.on_empty)));
        }
        let names: Vec<String> = (0..inputs.refs.len())
            .map(|i| format!("refs[{i}]"))
            .collect();
        let data: Vec<(&str, &std::path::Path)> = names
            .iter()
            .zip(&inputs.refs)
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .collect();
        let provenance = kaiyuan_eval::task_provenance::task_provenance(settings, &data)?;
        let value = merge(value, common_json(inputs, loaded));
        println!("{}", merge(value, json!({ "provenance": provenance })));
    } else {
        println!("{text}");
        println!(
            "{} segments, {} reference stream{}; empty lines scored as empty: {} hypotheses, {} references",
            loaded.hyps.len(),
            loaded.refs.len(),
            if loaded.refs.len() == 1 { "" } else { "s" },
            loaded.empty_hyps,
            loaded.empty_refs
        );
    }
    Ok(())
}

fn common_json(inputs: &TextInputs, loaded: &Loaded) -> Value {
    json!({
        "hyp": inputs.hyp.display().to_string(),
        "refs": inputs.refs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "segments": loaded.hyps.len(),
        "empty_hypotheses": loaded.empty_hyps,
        "empty_references": loaded.empty_refs,
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Runs `kaiyuan eval bleu`.
pub fn bleu_cmd(args: &BleuArgs) -> anyhow::Result<()> {
    let mut smooth: Smoothing = args.smooth_method.parse()?;
    if let Some(v) = args.smooth_value {
        smooth = smooth.with_value(v)?;
    }
    let options = BleuOptions {
        tokenize: args.tokenize.parse::<BleuTokenizer>()?,
        smooth,
        lowercase: args.lowercase,
        effective_order: args.effective_order || args.sentence.sentence_level,
        ..BleuOptions::default()
    };
    let loaded = load(&args.inputs)?;
    let bleu = Bleu::new(options)?;
    if args.sentence.sentence_level {
        let mut scores = Vec::with_capacity(loaded.hyps.len());
        for (i, hyp) in loaded.hyps.iter().enumerate() {
            let s = bleu.sentence_score(hyp, &segment_refs(&loaded.refs, i))?;
            scores.push((s.score, s.signature(), s));
        }
        print_sentences(&args.inputs, scores.into_iter());
        return Ok(());
    }
    let stats = bleu.corpus_stats(&loaded.hyps, &loaded.refs)?;
    let score = bleu.score_from_stats(&stats.total(), stats.nrefs);
    // Per-segment statistics for `eval compare` (its bootstrap uses
    // sacrebleu's defaults, so they are written only for those).
    let default_scoring = matches!(options.smooth, Smoothing::Exp) && !options.effective_order;
    let samples: Vec<Vec<f64>> = if default_scoring {
        bleu_samples(&stats.segments)
    } else {
        Vec::new()
    };
    let metric = Metric {
        value: score.score,
        higher_is_better: true,
        aggregate: Aggregate::Bleu,
        samples,
    };
    // Whole numbers print as integers, as sacrebleu's JSON has them.
    let as_json = |v: Vec<f64>| -> Vec<Value> {
        v.into_iter()
            .map(|x| {
                if x.fract() == 0.0 && x.abs() < 9e15 {
                    json!(x as i64)
                } else {
                    json!(x)
                }
            })
            .collect()
    };
    let (sacre_counts, sacre_totals) = score.sacrebleu_counts_totals();
    let (sacre_counts, sacre_totals) = (as_json(sacre_counts), as_json(sacre_totals));
    let value = json!({
        "schema": "kaiyuan.eval.bleu/1",
        "name": "BLEU",
        "score": score.score,
        "signature": score.signature(),
        "verbose_score": score.verbose(),
        // As sacrebleu's JSON reports them (add-k included), and as counted.
        "counts": sacre_counts,
        "totals": sacre_totals,
        "raw_counts": score.counts,
        "raw_totals": score.totals,
        "precisions": score.precisions,
        "bp": score.bp,
        "ratio": score.ratio,
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "metrics": { "bleu": metric.to_json() },
    });
    print_or_json(
        &args.inputs,
        &format!("{score}\n{}", score.signature()),
        value,
        &loaded,
        json!({"signature": score.signature()}),
    )
}

/// Runs `kaiyuan eval chrf`.
pub fn chrf_cmd(args: &ChrfArgs) -> anyhow::Result<()> {
    let options = ChrfOptions {
        char_order: args.chrf_char_order,
        word_order: args.chrf_word_order,
        beta: args.chrf_beta,
        lowercase: args.lowercase,
        whitespace: args.chrf_whitespace,
        eps_smoothing: args.chrf_eps_smoothing,
    };
    let loaded = load(&args.inputs)?;
    let chrf = Chrf::new(options)?;
    if args.sentence.sentence_level {
        let mut scores = Vec::with_capacity(loaded.hyps.len());
        for (i, hyp) in loaded.hyps.iter().enumerate() {
            let s = chrf.sentence_score(hyp, &segment_refs(&loaded.refs, i))?;
            scores.push((s.score, s.signature(), s));
        }
        print_sentences(&args.inputs, scores.into_iter());
        return Ok(());
    }
    let score = chrf.corpus_score(&loaded.hyps, &loaded.refs)?;
    // chrF is not a mean of segment scores, so no per-item samples.
    let metric = Metric {
        value: score.score,
        higher_is_better: true,
        aggregate: Aggregate::Mean,
        samples: Vec::new(),
    };
    let value = json!({
        "schema": "kaiyuan.eval.chrf/1",
        "name": score.name(),
        "score": score.score,
        "signature": score.signature(),
        "metrics": { score.name(): metric.to_json() },
    });
    print_or_json(
        &args.inputs,
        &format!("{score}\n{}", score.signature()),
        value,
        &loaded,
        json!({"signature": score.signature()}),
    )
}

/// Runs `kaiyuan eval rouge`: the mean over segments of each type's
/// precision, recall and F (with several reference files, each segment
/// takes its best reference by F, as rouge-score's `score_multi`).
pub fn rouge_cmd(args: &RougeArgs) -> anyhow::Result<()> {
    let types = args
        .types
        .iter()
        .map(|t| t.parse::<RougeType>())
        .collect::<Result<Vec<_>, _>>()?;
    let options = RougeOptions {
        types: types.clone(),
        use_stemmer: args.stem,
        tokenizer: args.tokenize.parse::<RougeTokenizer>()?,
        split_summaries: false,
    };
    let loaded = load(&args.inputs)?;
    let mut scorer = RougeScorer::new(options)?;
    let corpus = if loaded.refs.len() == 1 {
        scorer.score_corpus(&loaded.refs[0], &loaded.hyps)?
    } else {
        let per_segment: Vec<Vec<&str>> = (0..loaded.hyps.len())
            .map(|i| segment_refs(&loaded.refs, i))
            .collect();
        scorer.score_multi_corpus(&per_segment, &loaded.hyps)?
    };
    let mut metrics = serde_json::Map::new();
    let mut scores = serde_json::Map::new();
    let mut lines = Vec::new();
    for (t, mean) in corpus.mean.iter() {
        let f: Vec<f64> = corpus
            .per_pair
            .iter()
            .map(|s| s.get(t).map_or(0.0, |s| s.fmeasure))
            .collect();
        let mut metric = Metric::mean(&f, true);
        metric.value = mean.fmeasure;
        metrics.insert(t.name().to_string(), metric.to_json());
        scores.insert(
            t.name().to_string(),
            json!({"precision": mean.precision, "recall": mean.recall, "fmeasure": mean.fmeasure}),
        );
        lines.push(format!(
            "{:<10} P {:.6}  R {:.6}  F {:.6}",
            t.name(),
            mean.precision,
            mean.recall,
            mean.fmeasure
        ));
    }
    lines.push(format!(
        "mean over segments; stemmer {}, tokenizer {}",
        if args.stem { "on" } else { "off" },
        args.tokenize
    ));
    let value = json!({
        "schema": "kaiyuan.eval.rouge/1",
        "use_stemmer": args.stem,
        "tokenizer": args.tokenize,
        "scores": scores,
        "metrics": metrics,
    });
    print_or_json(
        &args.inputs,
        &lines.join("\n"),
        value,
        &loaded,
        json!({"metric": "rouge", "types": args.types, "stem": args.stem, "tokenize": args.tokenize}),
    )
}

/// Runs `kaiyuan eval qa`: exact match and token F1 (best over references).
pub fn qa_cmd(args: &QaArgs) -> anyhow::Result<()> {
    let norm: AnswerNormalization = args.normalize.parse()?;
    let loaded = load(&args.inputs)?;
    let golds: Vec<Vec<&str>> = (0..loaded.hyps.len())
        .map(|i| segment_refs(&loaded.refs, i))
        .collect();
    let corpus = qa_corpus(&loaded.hyps, &golds, norm)?;
    let em: Vec<f64> = corpus.per_pair.iter().map(|s| s.exact_match).collect();
    let f1: Vec<f64> = corpus.per_pair.iter().map(|s| s.f1).collect();
    let value = json!({
        "schema": "kaiyuan.eval.qa/1",
        "normalization": args.normalize,
        "exact_match": corpus.mean.exact_match,
        "f1": corpus.mean.f1,
        "metrics": {
            "exact_match": Metric::mean(&em, true).to_json(),
            "f1": Metric::mean(&f1, true).to_json(),
        },
    });
    let text = format!(
        "exact match {:.4}  token F1 {:.4} ({} normalisation)",
        corpus.mean.exact_match, corpus.mean.f1, args.normalize
    );
    print_or_json(
        &args.inputs,
        &text,
        value,
        &loaded,
        json!({"metric": "qa", "normalize": args.normalize}),
    )
}
