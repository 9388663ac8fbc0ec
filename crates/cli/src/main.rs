//! `kaiyuan`: the command-line front end of the Kaiyuan (开源) LLM toolchain.
//!
//! Every capability of the workspace is reached through one subcommand of this
//! binary; `cargo xtask <command>` forwards to it. Subcommands whose capability
//! belongs to a later issue report that they are not yet implemented (pointing
//! at `docs/roadmap.md`) and exit with status 2 rather than printing anything
//! that could be mistaken for a result.

mod bench;
mod bench_generate;
mod bench_train;
mod block_cache;
mod clean_cmd;
mod demo_cmd;
mod demo_report;
mod device_arg;
mod eval_cmd;
mod metrics_cmd;
mod model_cmds;
mod program_pages;
mod provenance_cmd;
mod quantize_cmd;
mod registry_cmd;
mod tokenize;
mod train_cmd;

/// mimalloc keeps freed pages for reuse, so the large outputs that ops
/// allocate do not fault in fresh zeroed pages on every call (glibc returns
/// allocations over 32 MiB to the kernel at once); for the commands that
/// run a model, blocks of 64 KiB or more are instead maps of their own,
/// with freed ones kept for the next request of their size class
/// ([`block_cache`]).
#[global_allocator]
static ALLOCATOR: block_cache::BlockCache = block_cache::BlockCache::new();

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Writes `bytes` to a temporary file beside `path` (named after this
/// process), then renames it into place: readers see the old file or the
/// whole new one, never a part.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Kaiyuan (开源): tokenize, train, quantize, evaluate and run LLMs.
#[derive(Debug, Parser)]
#[command(name = "kaiyuan", version, about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
    /// Where `generate`, `eval`, `train` and `bench train` run: cpu, cuda or cuda:N.
    /// Without a usable CUDA device this stops with "no CUDA device".
    #[arg(long, global = true, default_value = "cpu")]
    device: kaiyuan_tensor::Device,
}

/// The subcommands of `kaiyuan`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Pretrain or fine-tune a model (full, LoRA, DP-SGD, distillation, pruning).
    Train(train_cmd::TrainArgs),
    /// Quantize a model (RTN, GPTQ; safetensors, HF-GPTQ and GGUF outputs).
    Quantize(quantize_cmd::QuantizeArgs),
    /// Evaluate models: perplexity, multiple choice, BLEU, ROUGE, speed, reports.
    Eval(eval_cmd::EvalArgs),
    /// Clean a corpus: normalise, remove PII, filter, deduplicate.
    Clean(clean_cmd::CleanArgs),
    /// Versioned model directories with an atomically switched `current`,
    /// promotion gated by `eval compare`.
    Registry(registry_cmd::RegistryArgs),
    /// Encode and decode text with a tokenizer.json or a tiktoken file.
    Tokenizer(tokenize::TokenizerArgs),
    /// Generate text with a model.
    Generate(model_cmds::GenerateArgs),
    /// Convert model files between GGUF and safetensors.
    Convert(model_cmds::ConvertArgs),
    /// Show a model's architecture, size, licence and memory estimate.
    Inspect(model_cmds::InspectArgs),
    /// Show an artefact's provenance chain back to its raw inputs and check
    /// every link (exit 1 when a file or a parent manifest changed).
    Provenance(provenance_cmd::ProvenanceArgs),
    /// Run the end-to-end demo: clean, train a tokenizer and a model, quantize, evaluate, report.
    Demo(demo_cmd::DemoArgs),
    /// Benchmark the CPU kernels (prints JSON lines with `--json`).
    Bench(BenchArgs),
}

/// Arguments of `kaiyuan bench`.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Which kernels to measure.
    #[arg(value_enum)]
    area: bench::Area,
    /// Number of worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Problem sizes, comma-separated (the area's defaults when omitted).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Print one JSON object per measurement instead of a table.
    #[arg(long)]
    json: bool,
    /// Timed repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = bench::DEFAULT_REPEATS)]
    repeats: usize,
    /// Model for `bench generate` (directory or .gguf).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Compute dtype for `bench generate`; for `bench train`, bf16 or f16
    /// is mixed precision (that dtype forward and backward, f32 parameters).
    #[arg(long, value_enum, default_value_t = model_cmds::DTypeArg::F32)]
    dtype: model_cmds::DTypeArg,
    /// KV cache dtype for `bench generate` [default: f32].
    #[arg(long, value_enum)]
    kv_dtype: Option<model_cmds::DTypeArg>,
    /// Prompt tokens of the prefill measurement (`bench generate`).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Decoded tokens of the decode measurement (`bench generate`).
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// `bench generate`: GGUF block weights run quantized; the default
    /// now, accepted for older scripts (see --dequantize).
    #[arg(long, hide = true)]
    quantized: bool,
    /// `bench generate`: dequantize GGUF block weights to --dtype at load
    /// instead of running them on the quantized kernels.
    #[arg(long)]
    dequantize: bool,
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike);
/// libmimalloc-sys does not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets how long mimalloc keeps freed memory mapped before it returns it to
/// the kernel (`-1`: never; this mimalloc's default is 1,000 ms).
///
/// - Training: never. It frees and reallocates the same large buffers
///   every step, and re-faulting them cost a fifth of a training step in
///   kernel page zeroing.
/// - Running a model (generate, eval, inspect, quantize, `bench
///   generate`): 250 ms. A prefill chunk frees tens of megabytes of
///   activations per layer; held for a whole second, what was freed but
///   not yet reused added 37 MiB to the peak of a 1,024-token Q4_0 prompt
///   (218.9 → 181.3 MiB at 250 ms, prefill speed unchanged at 474 / 472
///   tokens/s; at 10 ms it fell to 394). Those were measured before
///   [`block_cache`] mapped the blocks of 64 KiB or more on their own for
///   these commands; the delay now governs only the smaller blocks left in
///   mimalloc's arenas.
/// - Anything else keeps the default.
fn set_purge_delay(ms: std::os::raw::c_long) {
    // SAFETY: called once near the start of `main`, before any other thread
    // exists (the option table is not thread-safe), with a valid option
    // index and value.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// Returns the memory freed so far to the kernel: registered to run while
/// a model loads, after its metadata and tokenizer are read and before its
/// weights are placed, and called by `bench generate` once the loaded
/// files (tokenizer included) are dropped. Without it the tokenizer's
/// short-lived tables (about 30 MB for a 49k vocabulary) were still
/// resident when the weights arrived, and set the peak. It also drops this
/// process's pages of code and read-only data that loading used
/// ([`program_pages`]); those decoding needs fault back in.
pub(crate) fn return_freed_memory() {
    ALLOCATOR.release();
    // SAFETY: mi_collect takes no pointers and may be called at any time
    // from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
    program_pages::drop_clean_program_pages();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runs_model = matches!(
        &cli.command,
        Command::Generate(_) | Command::Eval(_) | Command::Inspect(_) | Command::Quantize(_)
    ) || matches!(&cli.command, Command::Bench(b) if b.area == bench::Area::Generate);
    let purge_delay_ms = match &cli.command {
        Command::Train(_) => Some(-1),
        Command::Bench(b) if b.area == bench::Area::Train => Some(-1),
        _ if runs_model => Some(250),
        _ => None,
    };
    if let Some(ms) = purge_delay_ms {
        set_purge_delay(ms);
    }
    // The commands that run a model reuse freed activation blocks; the
    // others keep mimalloc's behaviour.
    if runs_model {
        ALLOCATOR.enable();
    }
    kaiyuan_models::loader::set_before_weights_hook(return_freed_memory);
    match check_device(cli.device, &cli.command).and_then(|()| run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kaiyuan: error: {}", error_message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text
/// the message already ends with (our library errors print their source,
/// e.g. `file: No such file or directory`, and also expose it as the cause).
fn error_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Refuses `--device` on commands it does not apply to, and probes CUDA for
/// those it does.
fn check_device(device: kaiyuan_tensor::Device, command: &Command) -> anyhow::Result<()> {
    let name = match command {
        Command::Generate(_) => "generate",
        Command::Eval(_) => "eval",
        Command::Train(_) => "train",
        Command::Bench(b) if b.area == bench::Area::Train => "bench train",
        _ if !device.is_cuda() => return Ok(()),
        _ => anyhow::bail!("--device applies to generate, eval, train and bench train only"),
    };
    device_arg::check(device, name)
}

/// Runs one subcommand and returns the process exit status.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Eval(args) => eval_cmd::run(args),
        Command::Quantize(args) => {
            quantize_cmd::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Train(args) => {
            train_cmd::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Clean(args) => {
            clean_cmd::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Registry(args) => registry_cmd::registry_cmd(&args),
        Command::Provenance(args) => provenance_cmd::run(&args),
        Command::Tokenizer(args) => {
            tokenize::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => {
            model_cmds::generate_cmd(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(args) => {
            model_cmds::inspect_cmd(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            demo_cmd::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert(args) => {
            model_cmds::convert_cmd(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) if args.area == bench::Area::Generate => {
            let model = args
                .model
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("bench generate needs --model DIR_OR_GGUF"))?;
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(args.threads.max(1))
                .build()?;
            let spec = bench_generate::GenerateBench {
                model,
                dtype: args.dtype.dtype(),
                kv_dtype: model_cmds::DTypeArg::kv_dtype(args.kv_dtype),
                prompt_tokens: args.prompt_tokens,
                decode_tokens: args.decode_tokens,
                repeats: args.repeats.max(1),
                threads: args.threads.max(1),
                json: args.json,
                quantized: !args.dequantize,
            };
            pool.install(|| bench_generate::run(&spec))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) if args.area == bench::Area::Train => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(args.threads.max(1))
                .build()?;
            let batch = args.sizes.first().copied().unwrap_or(8);
            let seq = args.sizes.get(1).copied().unwrap_or(128);
            pool.install(|| {
                bench_train::run(
                    args.repeats.max(1),
                    batch,
                    seq,
                    args.threads.max(1),
                    match args.dtype.dtype() {
                        kaiyuan_tensor::DType::F32 => None,
                        low => Some(low),
                    },
                    args.json,
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            let opts = bench::Options {
                threads: args.threads,
                sizes: args.sizes,
                json: args.json,
                repeats: args.repeats,
            };
            bench::run(args.area, &opts)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn clean_prints_its_config_without_input_or_output() {
        assert!(Cli::try_parse_from(["kaiyuan", "clean", "--print-config"]).is_ok());
        assert!(Cli::try_parse_from(["kaiyuan", "clean", "--input", "a.jsonl"]).is_err());
        assert!(Cli::try_parse_from(["kaiyuan", "clean", "--output", "out"]).is_err());
    }

    #[test]
    fn error_messages_do_not_repeat_a_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let err = anyhow::Error::new(kaiyuan_provenance::ProvenanceError::Io {
            path: "x.json".into(),
            source: io,
        })
        .context("recording the provenance of out");
        assert_eq!(
            error_message(&err),
            "recording the provenance of out: x.json: No such file"
        );
    }

    #[test]
    fn demo_parses_its_options() {
        let cli = Cli::try_parse_from(["kaiyuan", "demo", "--quick", "--out", "x", "--seed", "3"])
            .unwrap();
        match cli.command {
            Command::Demo(d) => {
                assert!(d.quick && !d.fresh);
                assert_eq!(
                    (d.out.as_path(), d.seed, d.steps),
                    (std::path::Path::new("x"), 3, None)
                );
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn train_parses_sets() {
        let cli = Cli::try_parse_from([
            "kaiyuan",
            "train",
            "--set",
            "max_steps=3",
            "--set",
            "lr=1e-3",
        ])
        .unwrap();
        match cli.command {
            Command::Train(t) => assert_eq!(t.sets, ["max_steps=3", "lr=1e-3"]),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bench_parses_sizes_and_flags() {
        let cli = Cli::try_parse_from([
            "kaiyuan",
            "bench",
            "gemm",
            "--threads",
            "2",
            "--sizes",
            "512,1024",
            "--json",
        ])
        .unwrap();
        match cli.command {
            Command::Bench(b) => {
                assert_eq!(b.area, bench::Area::Gemm);
                assert_eq!(b.threads, 2);
                assert_eq!(b.sizes, [512, 1024]);
                assert!(b.json);
                assert_eq!(b.repeats, bench::DEFAULT_REPEATS);
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
