//! `cargo xtask bench train`: training tokens/s of the same LLaMA-style
//! model (3.4 M parameters; see `crates/cli/src/bench_train.rs`), batch and
//! sequence length, ours (`kaiyuan bench train`) against PyTorch on CPU
//! (`fixtures/bench/train_torch.py`), same thread count, alternating rounds.
//!
//! PyTorch runs from `KAIYUAN_TORCH_PYTHON` when set, else from a venv under
//! `target/venv-train` built from `fixtures/bench/requirements-train.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::bench::{Args, capture_json_lines, median, print_table};

const VENV: &str = "target/venv-train";
const REQUIREMENTS: &str = "fixtures/bench/requirements-train.txt";
const PEER: &str = "fixtures/bench/train_torch.py";

fn torch_python() -> anyhow::Result<PathBuf> {
    if let Some(python) = std::env::var_os("KAIYUAN_TORCH_PYTHON") {
        return Ok(PathBuf::from(python));
    }
    let python = Path::new(VENV).join("bin/python");
    if python.exists() {
        return Ok(python);
    }
    let status = crate::run_echoed(Command::new("python3").args(["-m", "venv", VENV]))?;
    if !status.success() {
        bail!("creating the venv {VENV} failed ({status})");
    }
    let status = crate::run_echoed(Command::new(Path::new(VENV).join("bin/pip")).args([
        "install",
        "-r",
        REQUIREMENTS,
    ]))?;
    if !status.success() {
        bail!("installing {REQUIREMENTS} into {VENV} failed ({status})");
    }
    Ok(python)
}

fn number(object: &crate::flat_json::Object, key: &str) -> anyhow::Result<f64> {
    object
        .num(key)
        .with_context(|| format!("the result lacks `{key}`"))
}

/// Runs the comparison: for each thread count, `args.rounds` alternating
/// rounds of `args.repeats` timed steps on each side; medians compared.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let python = torch_python()?;
    let batch = args.sizes.first().copied().unwrap_or(8);
    let seq = args.sizes.get(1).copied().unwrap_or(128);
    let mut rows = Vec::new();
    for &threads in &args.threads {
        let (mut ours, mut peer, mut our_gflops) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds.max(1) {
            let mut cmd = crate::cargo();
            cmd.args([
                "run",
                "--release",
                "-p",
                "kaiyuan-cli",
                "--",
                "bench",
                "train",
                "--json",
            ])
            .args([
                "--threads",
                &threads.to_string(),
                "--repeats",
                &args.repeats.to_string(),
            ])
            .args(["--sizes", &format!("{batch},{seq}")]);
            let o = capture_json_lines(&mut cmd)?;
            let o = o.first().context("`kaiyuan bench train` printed nothing")?;
            ours.push(number(o, "tokens_per_s")?);
            our_gflops.push(number(o, "gflops")?);
            let mut cmd = Command::new(&python);
            cmd.arg(PEER)
                .args([
                    "--threads",
                    &threads.to_string(),
                    "--steps",
                    &args.repeats.to_string(),
                ])
                .args(["--batch", &batch.to_string(), "--seq", &seq.to_string()]);
            let p = capture_json_lines(&mut cmd)?;
            let p = p.first().context("the PyTorch peer printed nothing")?;
            peer.push(number(p, "tokens_per_s")?);
        }
        let (o, p, g) = (
            median(&mut ours),
            median(&mut peer),
            median(&mut our_gflops),
        );
        rows.push(vec![
            threads.to_string(),
            format!("{batch}x{seq}"),
            format!("{o:.0}"),
            format!("{p:.0}"),
            format!("{:.2}", o / p),
            format!("{g:.1}"),
        ]);
    }
    print_table(
        &[
            "threads",
            "batch",
            "ours tok/s",
            "pytorch tok/s",
            "ratio",
            "our GFLOP/s (6N)",
        ],
        &rows,
    );
    Ok(())
}
