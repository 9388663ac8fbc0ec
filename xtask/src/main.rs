//! `cargo xtask`: project automation for Kaiyuan.
//!
//! Run `cargo xtask --help` for the list of commands. Capability commands
//! (`train`, `quantize`, …) are forwarded to the `kaiyuan` binary built in
//! release mode; `ci` runs the same checks as `.ci/run`; `bench` runs our
//! benchmarks next to a peer implementation and prints both with the ratio.
//!
//! This crate stays light on purpose (clap and anyhow only), so that it
//! compiles quickly; all real work happens in `kaiyuan-cli`.

mod bench;
mod bench_eval;
mod bench_generate;
mod bench_train;
mod ci;
mod flat_json;
mod forward;
mod gpu_bundle;
mod hot_symbols;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Kaiyuan project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Cmd,
}

/// The commands of `cargo xtask`.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Train or fine-tune a model (forwarded to `kaiyuan train`).
    #[command(disable_help_flag = true)]
    Train(forward::Args),
    /// Quantize a model (forwarded to `kaiyuan quantize`).
    #[command(disable_help_flag = true)]
    Quantize(forward::Args),
    /// Evaluate a model (forwarded to `kaiyuan eval`).
    #[command(disable_help_flag = true)]
    Eval(forward::Args),
    /// Clean a corpus (forwarded to `kaiyuan clean`).
    #[command(disable_help_flag = true)]
    Clean(forward::Args),
    /// Promote, roll back or list model versions (forwarded to `kaiyuan registry`).
    #[command(disable_help_flag = true)]
    Registry(forward::Args),
    /// Train or run a tokenizer (forwarded to `kaiyuan tokenizer`).
    #[command(disable_help_flag = true)]
    Tokenizer(forward::Args),
    /// Generate text (forwarded to `kaiyuan generate`).
    #[command(disable_help_flag = true)]
    Generate(forward::Args),
    /// Convert model files (forwarded to `kaiyuan convert`).
    #[command(disable_help_flag = true)]
    Convert(forward::Args),
    /// Inspect a model (forwarded to `kaiyuan inspect`).
    #[command(disable_help_flag = true)]
    Inspect(forward::Args),
    /// Show and check an artefact's provenance chain (forwarded to `kaiyuan provenance`).
    #[command(disable_help_flag = true)]
    Provenance(forward::Args),
    /// Run the end-to-end demo (forwarded to `kaiyuan demo`).
    #[command(disable_help_flag = true)]
    Demo(forward::Args),
    /// Run the CI checks: fmt, clippy with warnings denied, tests.
    Ci,
    /// Benchmark our kernels against a peer implementation.
    Bench(bench::Args),
    /// Build the CUDA test and benchmark binaries for a GPU machine without
    /// Rust (into target/gpu-bundle/; run crates/cuda/gpu/check.sh there).
    GpuBundle,
    /// Record which functions running a model executes, so that the
    /// release binary places them together (crates/cli/hot-symbols.txt;
    /// needs valgrind).
    HotSymbols,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = project_root();
    std::env::set_current_dir(&root)
        .with_context(|| format!("cannot enter the project root {}", root.display()))?;

    let forwarded = |name: &str, args: forward::Args| forward::run(name, &args.args);
    let status = match cli.command {
        Cmd::Train(args) => forwarded("train", args)?,
        Cmd::Quantize(args) => forwarded("quantize", args)?,
        Cmd::Eval(args) => forwarded("eval", args)?,
        Cmd::Clean(args) => forwarded("clean", args)?,
        Cmd::Registry(args) => forwarded("registry", args)?,
        Cmd::Tokenizer(args) => forwarded("tokenizer", args)?,
        Cmd::Generate(args) => forwarded("generate", args)?,
        Cmd::Convert(args) => forwarded("convert", args)?,
        Cmd::Inspect(args) => forwarded("inspect", args)?,
        Cmd::Demo(args) => forwarded("demo", args)?,
        Cmd::Provenance(args) => forwarded("provenance", args)?,
        Cmd::Ci => return ci::run(),
        Cmd::Bench(args) => return bench::run(&args),
        Cmd::GpuBundle => return gpu_bundle::run(),
        Cmd::HotSymbols => return hot_symbols::run(),
    };
    exit_like(status)
}

/// The workspace root: the parent of this crate's manifest directory.
fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A `cargo` command, using the `CARGO` that invoked us when there is one.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The release `kaiyuan` binary that `cargo build --release -p kaiyuan-cli`
/// writes: under `$CARGO_TARGET_DIR` when it is set, else `target/`.
fn kaiyuan_release() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| "target".into(), std::path::PathBuf::from)
        .join("release/kaiyuan")
}

/// Renders a command line for progress messages.
fn display_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with inherited stdio, echoing it to stderr first.
fn run_echoed(cmd: &mut Command) -> anyhow::Result<ExitStatus> {
    let line = display_command(cmd);
    eprintln!("$ {line}");
    cmd.status()
        .with_context(|| format!("cannot start `{line}`"))
}

/// Exits the process with the status of a child: success returns, a non-zero
/// code is passed on, death by a signal becomes status 1.
fn exit_like(status: ExitStatus) -> anyhow::Result<()> {
    if status.success() {
        return Ok(());
    }
    std::process::exit(status.code().filter(|&c| c != 0).unwrap_or(1))
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
    fn forwarded_commands_keep_every_argument() {
        let cli = Cli::try_parse_from(["xtask", "train", "--help", "--set", "lr=1e-3"]).unwrap();
        match cli.command {
            Cmd::Train(args) => assert_eq!(args.args, ["--help", "--set", "lr=1e-3"]),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bench_defaults_to_one_and_two_threads() {
        let cli = Cli::try_parse_from(["xtask", "bench", "gemm"]).unwrap();
        match cli.command {
            Cmd::Bench(args) => {
                assert_eq!(args.threads, [1, 2]);
                assert!(args.sizes.is_empty());
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
