//! `kaiyuan train`: pretraining and fine-tuning with a progress bar.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use kaiyuan_train::config::TrainConfig;
use kaiyuan_train::trainer::{self, Event};

/// Arguments of `kaiyuan train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Training config (TOML); without it the defaults train a small
    /// LLaMA-style model on the embedded bilingual corpus.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory: checkpoint-<step>/, final/, metrics.jsonl, loss.svg.
    #[arg(long, default_value = "target/train")]
    pub out: PathBuf,
    /// Continue the run in this directory (or from this checkpoint) with its
    /// saved config.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Override a config key, e.g. `--set max_steps=100 --set lr=1e-3`
    /// (bare keys are looked up in every section; `section.key` is explicit).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print the resolved config as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Write the config's training and validation documents to
    /// `DIR/train.jsonl` and `DIR/validation.jsonl` (field `text`) and exit:
    /// calibration and held-out text for `quantize` and `eval`.
    #[arg(long, value_name = "DIR")]
    pub export_data: Option<PathBuf>,
}

/// Writes `docs` as JSONL (`{"text": …}` per line) to `path`, atomically.
fn write_jsonl(path: &std::path::Path, docs: &[String]) -> anyhow::Result<()> {
    let mut text = String::new();
    for doc in docs {
        text.push_str(&serde_json::json!({ "text": doc }).to_string());
        text.push('\n');
    }
    crate::write_atomic(path, text)
}

/// Runs `kaiyuan train`.
pub fn run(mut args: TrainArgs) -> anyhow::Result<()> {
    let device = crate::device_arg::current();
    if device.is_cuda() {
        // `--device` is the last word on where this run trains.
        args.sets.push(format!("train.device={device}"));
    }
    let config = match &args.resume {
        // The checkpoint's own config is used; parse the defaults only to
        // check the overrides early.
        Some(_) => TrainConfig::load(None, &args.sets)?,
        None => TrainConfig::load(args.config.as_ref(), &args.sets)?,
    };
    if args.print_config {
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    if let Some(dir) = &args.export_data {
        let docs = kaiyuan_train::data::read_documents(&config)?;
        std::fs::create_dir_all(dir)?;
        write_jsonl(&dir.join("train.jsonl"), &docs.train)?;
        write_jsonl(&dir.join("validation.jsonl"), &docs.validation)?;
        eprintln!(
            "wrote {} training and {} validation documents to {}",
            docs.train.len(),
            docs.validation.len(),
            dir.display()
        );
        return Ok(());
    }
    let bar = ProgressBar::hidden();
    let mut on_event = |event: Event<'_>| match event {
        Event::Message(m) if bar.is_hidden() => eprintln!("{m}"),
        Event::Message(m) => bar.println(m),
        Event::Start { start, max_steps } => {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(max_steps);
            bar.set_position(start);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.reset_eta();
        }
        Event::Step(m) => {
            bar.set_position(m.step);
            bar.set_message(format!(
                "loss {:.4}  lr {:.2e}  {:.0} tok/s",
                m.loss, m.lr, m.tokens_per_second
            ));
        }
        Event::Eval(e) => bar.println(format!(
            "step {}: validation loss {:.4}, perplexity {:.2}",
            e.step, e.val_loss, e.val_perplexity
        )),
        Event::Checkpoint(p) => bar.println(format!("saved {}", p.display())),
    };
    let out = args.out.clone();
    let report = trainer::run(
        &config,
        &out,
        args.resume.as_deref(),
        &args.sets,
        &mut on_event,
    )?;
    bar.finish_and_clear();
    eprintln!(
        "trained {} parameters for {} steps: loss {:.4} -> {:.4}{}; {:.0} tokens/s",
        report.parameters,
        report.steps,
        report.first_loss,
        report.last_loss,
        report
            .validation
            .as_ref()
            .map(|v| format!(", validation perplexity {:.2}", v.val_perplexity))
            .unwrap_or_default(),
        report.tokens_per_second
    );
    eprintln!(
        "model: {}; metrics: {}; plot: {}",
        report.final_dir.display(),
        out.join("metrics.jsonl").display(),
        out.join("loss.svg").display()
    );
    Ok(())
}
