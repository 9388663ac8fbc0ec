//! `kaiyuan eval`: perplexity today; multiple choice, BLEU, ROUGE and speed
//! belong to the evaluator issue and say so (exit status 2).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use kaiyuan_eval::{PerplexityOptions, PerplexityReport, encode_text, perplexity};
use kaiyuan_models::ModelFiles;

use crate::model_cmds::DTypeArg;
use crate::{NOT_IMPLEMENTED, Passthrough};

/// Arguments of `kaiyuan eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The evaluation to run.
    #[command(subcommand)]
    pub task: EvalTask,
}

/// The evaluations of `kaiyuan eval`.
#[derive(Debug, Subcommand)]
pub enum EvalTask {
    /// Perplexity of a text file (HF transformers' sliding-window recipe).
    Perplexity(PerplexityArgs),
    /// Multiple-choice accuracy by log-likelihood (MMLU, C-Eval, JSONL).
    MultipleChoice(Passthrough),
    /// BLEU and chrF of generated text (sacrebleu-compatible).
    Bleu(Passthrough),
    /// ROUGE of generated text (rouge-score-compatible).
    Rouge(Passthrough),
    /// Speed and memory of prefill and decoding.
    Speed(Passthrough),
}

impl EvalTask {
    /// The subcommand's name as typed on the command line.
    fn name(&self) -> &'static str {
        match self {
            Self::Perplexity(_) => "perplexity",
            Self::MultipleChoice(_) => "multiple-choice",
            Self::Bleu(_) => "bleu",
            Self::Rouge(_) => "rouge",
            Self::Speed(_) => "speed",
        }
    }
}

/// Arguments of `kaiyuan eval perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// A model directory (config.json + safetensors + tokenizer.json) or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text file, tokenized as one sequence with the tokenizer's
    /// special tokens (e.g. BOS) added, as HF tokenizers do.
    #[arg(long)]
    pub text: PathBuf,
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
    /// Windows per forward call [default: within 2048 tokens and 256 MiB of logits].
    #[arg(long)]
    pub batch_size: Option<usize>,
}

/// Runs `kaiyuan eval …` and returns the exit status.
pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    match args.task {
        EvalTask::Perplexity(p) => {
            perplexity_cmd(&p)?;
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprintln!(
                "kaiyuan eval {}: not yet implemented: see docs/roadmap.md",
                other.name()
            );
            Ok(ExitCode::from(NOT_IMPLEMENTED))
        }
    }
}

fn perplexity_cmd(args: &PerplexityArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("reading --text {}", args.text.display()))?;
    let mut files = ModelFiles::open(&args.model)?;
    let model = files.take_model(args.dtype.dtype())?;
    let tokenizer = files.require_tokenizer()?;
    let ids = encode_text(tokenizer, &text)?;
    let options = PerplexityOptions {
        context: args.context,
        stride: args.stride,
        per_token: args.per_token,
        batch_size: args.batch_size,
    };
    let start = std::time::Instant::now();
    let report = perplexity(&model, &ids, &options)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        println!("{}", json_report(&report, seconds));
    } else {
        if let Some(logprobs) = &report.logprobs {
            print_per_token(&report, &ids, logprobs, tokenizer);
        }
        println!(
            "perplexity {:.4} over {} tokens (nll mean {:.6} nats/token, sum {:.4}); \
             {} tokens in, context {}, stride {}, {} window{}, {:.2} s",
            report.perplexity,
            report.tokens_scored,
            report.nll_mean,
            report.nll_sum,
            ids.len(),
            report.context,
            report.stride,
            report.windows,
            if report.windows == 1 { "" } else { "s" },
            seconds
        );
    }
    Ok(())
}

/// The report as one JSON object (`logprobs` only with `--per-token`).
fn json_report(report: &PerplexityReport, seconds: f64) -> serde_json::Value {
    let mut value = serde_json::json!({
        "perplexity": report.perplexity,
        "tokens_scored": report.tokens_scored,
        "nll_sum": report.nll_sum,
        "nll_mean": report.nll_mean,
        "context": report.context,
        "stride": report.stride,
        "windows": report.windows,
        "seconds": seconds,
    });
    if let (Some(logprobs), Some(map)) = (&report.logprobs, value.as_object_mut()) {
        map.insert("logprobs".into(), serde_json::json!(logprobs));
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
            task: EvalTask::Perplexity(p),
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
    fn later_eval_tasks_exit_with_two() {
        for task in ["multiple-choice", "bleu", "rouge", "speed"] {
            let cli = Cli::try_parse_from(["kaiyuan", "eval", task, "--anything", "x"]).unwrap();
            let crate::Command::Eval(args) = cli.command else {
                panic!("{task}: not parsed as eval");
            };
            assert_eq!(
                run(args).unwrap(),
                ExitCode::from(NOT_IMPLEMENTED),
                "{task}"
            );
        }
    }

    #[test]
    fn perplexity_requires_model_and_text() {
        assert!(Cli::try_parse_from(["kaiyuan", "eval", "perplexity", "--text", "t"]).is_err());
        assert!(Cli::try_parse_from(["kaiyuan", "eval", "perplexity", "--model", "m"]).is_err());
    }
}
