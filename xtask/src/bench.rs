//! `cargo xtask bench AREA`: our benchmark and a peer's, side by side.
//!
//! For every thread count the two sides run alternately (ours, then the
//! peer), so that machine noise hits both equally. Both print one flat JSON
//! object per measurement; see [`crate::flat_json`].
//!
//! - `gemm`: `kaiyuan bench gemm` against numpy's `a @ b` (OpenBLAS) from
//!   `fixtures/bench/gemm_numpy.py`, run with the venv under `target/venv`
//!   built from the pinned `fixtures/bench/requirements.txt`.
//! - `ops`: `kaiyuan bench ops` alone; each op's bandwidth is compared with
//!   the copy bandwidth measured in the same run.
//! - `eval`: `kaiyuan bench eval` against sacrebleu and rouge-score from
//!   `fixtures/bench/eval_peers.py`; see [`crate::bench_eval`].

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::flat_json::{self, Object};

/// The venv the Python peers run in, relative to the project root.
const VENV: &str = "target/venv";
/// The pinned requirements of the venv.
const REQUIREMENTS: &str = "fixtures/bench/requirements.txt";
/// A copy of the requirements the venv was last built from.
const VENV_STAMP: &str = "target/venv/kaiyuan-requirements.txt";
/// The numpy GEMM peer.
const GEMM_PEER: &str = "fixtures/bench/gemm_numpy.py";
/// Environment variables removed for the peer: set on this machine, they
/// select a slower OpenBLAS kernel.
const PEER_ENV_REMOVED: &[&str] = &["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

/// The group of kernels to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Area {
    /// Square f32 matrix multiplication, against numpy + OpenBLAS.
    Gemm,
    /// Memory-bound ops, against the measured copy bandwidth.
    Ops,
    /// Tokenizer encode and training, against tiktoken and HF tokenizers.
    Tokenizer,
    /// SmolLM2 prefill/decode tokens/s against llama.cpp on the same GGUF.
    Generate,
    /// Training tokens/s of a small LLaMA against PyTorch on CPU.
    Train,
    /// Quantized decoding (Q4_0, Q8_0, Q4_K GGUF) against llama.cpp.
    Quant,
    /// MinHash signatures against datasketch; the default cleaning pipeline's
    /// MB/s and peak RSS on 1 GB.
    Data,
    /// Corpus BLEU, chrF++ and ROUGE over 50,000 sentence pairs against
    /// sacrebleu and rouge-score.
    Eval,
}

impl Area {
    /// The area's name on the command line.
    fn name(self) -> &'static str {
        match self {
            Area::Gemm => "gemm",
            Area::Ops => "ops",
            Area::Tokenizer => "tokenizer",
            Area::Generate => "generate",
            Area::Train => "train",
            Area::Quant => "quant",
            Area::Data => "data",
            Area::Eval => "eval",
        }
    }
}

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Which kernels to benchmark.
    #[arg(value_enum)]
    pub area: Area,
    /// Thread counts to run with, comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,2"
    )]
    pub threads: Vec<usize>,
    /// Problem sizes, comma-separated (our benchmark's defaults when omitted).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Timed repetitions per measurement on both sides (medians are compared).
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Alternating rounds of ours and the peer per size (`gemm`).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// `quant` only: GGUF files to compare instead of SmolLM2's, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub models: Vec<std::path::PathBuf>,
    /// `generate` and `quant`: the KV cache's dtype on both sides (ours
    /// `--kv-dtype`, llama-bench's `-ctk`/`-ctv`). f16 is llama-bench's
    /// default; it has no f32 cache.
    #[arg(long, value_name = "DTYPE", default_value = "f16",
          value_parser = ["f16", "bf16"])]
    pub kv_dtype: String,
}

/// Runs the benchmark of `args.area` and prints the comparison.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--threads needs positive thread counts");
    }
    if !args.models.is_empty() && args.area != Area::Quant {
        bail!("--models is for `bench quant` (block-quantized GGUF files)");
    }
    match args.area {
        Area::Gemm => gemm(args),
        Area::Ops => ops(args),
        Area::Tokenizer => tokenizer(args),
        Area::Generate => crate::bench_generate::run(args),
        Area::Train => crate::bench_train::run(args),
        Area::Quant => crate::bench_generate::run_quantized(args),
        Area::Data => data(args),
        Area::Eval => crate::bench_eval::run(args),
    }
}

/// The data benchmark corpora, built from real text by data_peers.py.
const DATA_DOCS: &str = "target/bench/data_docs.jsonl";
const DATA_BIG: &str = "target/bench/data_big.jsonl";

/// `bench data`: MinHash signatures per second (128 permutations, word
/// 5-grams, ~1 KB documents) against datasketch on one thread, then the
/// default pipeline (fixtures/pipeline.toml) on ~1 GB with 2 threads and
/// `--memory-budget 256MB`: MB/s and peak RSS (median of up to 3 runs).
fn data(args: &Args) -> anyhow::Result<()> {
    let python = ensure_venv()?;
    if !Path::new(DATA_DOCS).exists() || !Path::new(DATA_BIG).exists() {
        let status = crate::run_echoed(Command::new("python3").args([
            "fixtures/bench/data_peers.py",
            "corpus",
            "--mb",
            "1024",
        ]))?;
        if !status.success() {
            bail!("building the data corpora failed ({status})");
        }
    }
    let mut rows = Vec::new();
    for &threads in &args.threads {
        let ours = run_ours(args, threads)?;
        let ours_rate = ours
            .iter()
            .find(|l| l.str("name") == Some("minhash_docs"))
            .and_then(|l| l.num("docs_per_s"));
        let mut peer_cmd = Command::new(&python);
        peer_cmd
            .args(["fixtures/bench/data_peers.py", "minhash", "--n", "2000"])
            .args(["--repeats", &args.repeats.min(3).to_string()]);
        peer_cmd
            .env("OMP_NUM_THREADS", "1")
            .env("OPENBLAS_NUM_THREADS", "1");
        let peer = if threads == 1 {
            capture_json_lines(&mut peer_cmd)?
        } else {
            Vec::new()
        };
        let peer_rate = peer.first().and_then(|p| p.num("docs_per_s"));
        rows.push(vec![
            "minhash (docs/s)".to_owned(),
            threads.to_string(),
            ours_rate.map_or("-".into(), |r| format!("{r:.0}")),
            peer_rate.map_or("-".into(), |r| format!("{r:.0}")),
            match (ours_rate, peer_rate) {
                (Some(o), Some(p)) => format!("{:.1}", o / p),
                _ => "-".into(),
            },
            if threads == 1 {
                "datasketch 2.0.0, 1 thread".into()
            } else {
                String::new()
            },
        ]);
    }
    println!();
    print_table(
        &["measure", "threads", "ours", "peer", "ours/peer", "peer"],
        &rows,
    );
    let build =
        crate::run_echoed(crate::cargo().args(["build", "--release", "-p", "kaiyuan-cli"]))?;
    if !build.success() {
        bail!("building kaiyuan-cli failed ({build})");
    }
    let mut runs = Vec::new();
    for _ in 0..args.repeats.clamp(1, 3) {
        let mut cmd = Command::new(crate::kaiyuan_release());
        cmd.args([
            "clean",
            "--input",
            DATA_BIG,
            "--output",
            "target/bench/clean-out",
            "--threads",
            "2",
        ])
        .args(["--memory-budget", "256MB", "--json"]);
        let lines = capture_json_lines(&mut cmd)?;
        let line = lines
            .into_iter()
            .next()
            .context("`kaiyuan clean --json` printed no result")?;
        runs.push((
            line.num("mbps").unwrap_or(0.0),
            line.num("peak_rss_mb").unwrap_or(0.0),
            line.num("input_mb").unwrap_or(0.0),
        ));
    }
    let mut mbps: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let mut rss: Vec<f64> = runs.iter().map(|r| r.1).collect();
    let input_mb = runs.first().map_or(0.0, |r| r.2);
    println!(
        "\ndefault pipeline on {input_mb:.0} MB, 2 threads, --memory-budget 256MB: median {:.1} MB/s (runs: {}), peak RSS median {:.0} MB (limit 256 + 150 = 406 MB)",
        median(&mut mbps),
        runs.iter()
            .map(|r| format!("{:.1}", r.0))
            .collect::<Vec<_>>()
            .join(", "),
        median(&mut rss)
    );
    Ok(())
}

/// The tokenizer encode corpus and the training corpus, built from real text.
const TOKENIZER_CORPUS: &str = "target/bench/tokenizer_corpus.txt";
const TRAIN_CORPUS: &str = "target/bench/train_corpus_15mb.txt";

/// `bench tokenizer`: encode MB/s (ours against tiktoken on cl100k and HF on
/// Llama-3, one thread; ours in batch on 1 and 2 threads) and training a 32k
/// vocabulary on ~15 MB (ours against HF: seconds, peak memory, same merges).
fn tokenizer(args: &Args) -> anyhow::Result<()> {
    let python = ensure_venv()?;
    let fetch = crate::run_echoed(
        Command::new("bash").args(["fixtures/tokenizer/fetch_vocabs.sh", "--with-text"]),
    )?;
    if !fetch.success() {
        bail!("fixtures/tokenizer/fetch_vocabs.sh failed ({fetch})");
    }
    for (path, mb) in [(TOKENIZER_CORPUS, "12"), (TRAIN_CORPUS, "16.5")] {
        if !Path::new(path).exists() {
            let status = crate::run_echoed(Command::new("python3").args([
                "fixtures/bench/tokenizer_corpus.py",
                path,
                "--mb",
                mb,
            ]))?;
            if !status.success() {
                bail!("building {path} failed ({status})");
            }
        }
    }
    let mut rows = Vec::new();
    let mut batch_rates: Vec<(f64, f64)> = Vec::new();
    for &threads in &args.threads {
        let ours = run_ours(args, threads)?;
        let mut peer_cmd = Command::new(&python);
        peer_cmd
            .args([
                "fixtures/bench/tokenizer_peers.py",
                "encode",
                "--corpus",
                TOKENIZER_CORPUS,
            ])
            .args(["--repeats", &args.repeats.min(3).to_string()]);
        let peer = if threads == 1 {
            capture_json_lines(&mut peer_cmd)?
        } else {
            Vec::new()
        };
        for line in &ours {
            let name = line.str("name").unwrap_or("?");
            let mbps = line.num("mbps").context("a tokenizer line has no `mbps`")?;
            if name == "cl100k_batch" {
                batch_rates.push((threads as f64, mbps));
            }
            let theirs = peer.iter().find(|p| p.str("name") == Some(name));
            rows.push(vec![
                name.to_owned(),
                fmt_int(line.num("threads").unwrap_or(threads as f64)),
                format!("{mbps:.1}"),
                theirs
                    .and_then(|p| p.num("mbps"))
                    .map_or("-".into(), |m| format!("{m:.1}")),
                theirs
                    .and_then(|p| p.num("mbps"))
                    .map_or("-".into(), |m| format!("{:.2}", mbps / m)),
                theirs.and_then(|p| p.str("peer")).unwrap_or("").to_owned(),
            ]);
        }
    }
    println!();
    print_table(
        &[
            "encode",
            "threads",
            "ours MB/s",
            "peer MB/s",
            "ours/peer",
            "peer",
        ],
        &rows,
    );
    if let (Some(one), Some(two)) = (
        batch_rates.iter().find(|r| r.0 == 1.0),
        batch_rates.iter().find(|r| r.0 == 2.0),
    ) {
        println!(
            "\nbatch encode (cl100k): 2 threads / 1 thread = {:.2}",
            two.1 / one.1
        );
    }
    // Training, each side in its own process (peak RSS from wait4).
    let build =
        crate::run_echoed(crate::cargo().args(["build", "--release", "-p", "kaiyuan-cli"]))?;
    if !build.success() {
        bail!("building kaiyuan-cli failed ({build})");
    }
    let mut train_cmd = Command::new(&python);
    train_cmd
        .args([
            "fixtures/bench/tokenizer_peers.py",
            "train",
            "--corpus",
            TRAIN_CORPUS,
            "--vocab-size",
            "32000",
        ])
        .args([
            "--ours",
            &crate::kaiyuan_release().to_string_lossy(),
            "--repeats",
            &args.repeats.clamp(1, 3).to_string(),
        ]);
    let train = capture_json_lines(&mut train_cmd)?;
    let rows: Vec<Vec<String>> = train
        .iter()
        .map(|t| {
            vec![
                t.str("peer").unwrap_or("?").to_owned(),
                t.num("size").map_or("-".into(), fmt_int),
                t.num("vocab").map_or("-".into(), fmt_int),
                t.num("median_s").map_or("-".into(), |s| format!("{s:.2}")),
                t.num("peak_mb").map_or("-".into(), |m| format!("{m:.0}")),
            ]
        })
        .collect();
    println!();
    print_table(
        &[
            "trainer",
            "corpus bytes",
            "vocab",
            "seconds (median)",
            "peak RSS MB",
        ],
        &rows,
    );
    let secs = |name: &str| {
        train
            .iter()
            .find(|t| t.str("name") == Some(name))
            .and_then(|t| t.num("median_s"))
    };
    if let (Some(ours), Some(hf)) = (secs("train_ours"), secs("train_hf")) {
        let same = matches!(
            train.first().and_then(|t| t.get("same_merges")),
            Some(crate::flat_json::Value::Bool(true))
        );
        println!(
            "\ntraining: HF/ours time = {:.2}; identical merges: {same}",
            hf / ours
        );
    }
    Ok(())
}

/// `bench gemm`: ours and numpy in alternating rounds for every size and
/// thread count (the VM's noise drifts, so each round runs both sides back
/// to back); reports the median GFLOP/s of each side and the median of the
/// per-round ratios.
fn gemm(args: &Args) -> anyhow::Result<()> {
    let python = ensure_venv()?;
    let sizes = if args.sizes.is_empty() {
        vec![512, 1024, 2048]
    } else {
        args.sizes.clone()
    };
    let mut rows = Vec::new();
    for &threads in &args.threads {
        for &size in &sizes {
            let mut ours_rates = Vec::new();
            let mut peer_rates = Vec::new();
            let mut ratios = Vec::new();
            let mut blas = String::new();
            for _ in 0..args.rounds {
                let one = Args {
                    sizes: vec![size],
                    ..args.clone()
                };
                let ours = run_ours(&one, threads)?;
                let ours_gflops = ours
                    .iter()
                    .find_map(|l| l.num("gflops"))
                    .context("a gemm line has no `gflops`")?;
                let peer = run_peer(&python, threads, &[size], args.repeats)?;
                let theirs = peer.first().context("numpy printed no result")?;
                let theirs_gflops = theirs.num("gflops").context("numpy line has no `gflops`")?;
                blas = describe_blas(theirs, threads as f64);
                ours_rates.push(ours_gflops);
                peer_rates.push(theirs_gflops);
                ratios.push(ours_gflops / theirs_gflops);
            }
            rows.push(vec![
                "sgemm".to_owned(),
                size.to_string(),
                threads.to_string(),
                format!("{:.1}", median(&mut ours_rates)),
                format!("{:.1}", median(&mut peer_rates)),
                format!("{:.2}", median(&mut ratios)),
                format!("{:.2}–{:.2}", min(&ratios), max(&ratios)),
                blas,
            ]);
        }
    }
    println!();
    print_table(
        &[
            "kernel",
            "size",
            "threads",
            "ours GFLOP/s",
            "numpy GFLOP/s",
            "ours/numpy (median of rounds)",
            "range",
            "numpy BLAS (threadpoolctl)",
        ],
        &rows,
    );
    Ok(())
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// `bench ops`: our ops' bandwidth against the copy bandwidth of the same run.
fn ops(args: &Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &threads in &args.threads {
        let ours = run_ours(args, threads)?;
        let copies: Vec<&Object> = ours
            .iter()
            .filter(|o| o.str("name") == Some("copy"))
            .collect();
        if copies.is_empty() {
            bail!("`kaiyuan bench ops` printed no `copy` line to compare with");
        }
        for line in &ours {
            let gbps = line.num("gbps").context("an ops line has no `gbps`")?;
            let size = line.num("size");
            // The copy of the same size when there is one, else the first.
            let copy = copies
                .iter()
                .find(|c| size.is_some() && c.num("size") == size)
                .unwrap_or(&copies[0]);
            let copy_gbps = copy.num("gbps").context("the copy line has no `gbps`")?;
            rows.push(vec![
                line.str("name").unwrap_or("?").to_owned(),
                size.map_or("-".into(), fmt_int),
                fmt_int(line.num("threads").unwrap_or(threads as f64)),
                format!("{gbps:.1}"),
                format!("{copy_gbps:.1}"),
                format!("{:.2}", gbps / copy_gbps),
            ]);
        }
    }
    println!();
    print_table(
        &["op", "size", "threads", "GB/s", "copy GB/s", "op/copy"],
        &rows,
    );
    Ok(())
}

/// Runs `kaiyuan bench AREA --json` with `threads` and returns its lines.
pub(crate) fn run_ours(args: &Args, threads: usize) -> anyhow::Result<Vec<Object>> {
    let mut cmd = crate::cargo();
    cmd.args(["run", "--release", "-p", "kaiyuan-cli", "--", "bench"])
        .arg(args.area.name())
        .args(["--json", "--threads", &threads.to_string()])
        .args(["--repeats", &args.repeats.to_string()]);
    if !args.sizes.is_empty() {
        cmd.args(["--sizes", &join(&args.sizes)]);
    }
    let lines = capture_json_lines(&mut cmd)?;
    if lines.is_empty() {
        bail!("`kaiyuan bench {}` printed no results", args.area.name());
    }
    Ok(lines)
}

/// Runs the numpy GEMM peer with `threads` BLAS threads.
fn run_peer(
    python: &Path,
    threads: usize,
    sizes: &[usize],
    repeats: usize,
) -> anyhow::Result<Vec<Object>> {
    let mut cmd = Command::new(python);
    cmd.arg(GEMM_PEER)
        .args(["--threads", &threads.to_string()])
        .args(["--sizes", &join(sizes)])
        .args(["--repeats", &repeats.to_string()]);
    for var in PEER_ENV_REMOVED {
        cmd.env_remove(var);
    }
    capture_json_lines(&mut cmd)
}

/// Runs `cmd` (stderr passed through) and parses every stdout line that
/// starts with `{`; other lines are echoed to stderr.
pub(crate) fn capture_json_lines(cmd: &mut Command) -> anyhow::Result<Vec<Object>> {
    let line = crate::display_command(cmd);
    eprintln!("$ {line}");
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !output.status.success() {
        bail!("`{line}` failed ({})", output.status);
    }
    let stdout = String::from_utf8(output.stdout)
        .with_context(|| format!("`{line}` printed invalid UTF-8"))?;
    let mut objects = Vec::new();
    for text in stdout.lines() {
        let text = text.trim();
        if text.starts_with('{') {
            let object = flat_json::parse(text)
                .with_context(|| format!("`{line}` printed a bad JSON line: {text}"))?;
            objects.push(object);
        } else if !text.is_empty() {
            eprintln!("{text}");
        }
    }
    Ok(objects)
}

/// Makes sure `target/venv` exists and holds `fixtures/bench/requirements.txt`;
/// returns its interpreter.
pub(crate) fn ensure_venv() -> anyhow::Result<std::path::PathBuf> {
    let python = Path::new(VENV).join("bin/python");
    let wanted = std::fs::read_to_string(REQUIREMENTS)
        .with_context(|| format!("cannot read {REQUIREMENTS}"))?;
    let installed = std::fs::read_to_string(VENV_STAMP).ok();
    if python.exists() && installed.as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    if !python.exists() {
        let status = crate::run_echoed(Command::new("python3").args(["-m", "venv", VENV]))?;
        if !status.success() {
            bail!("creating the venv {VENV} failed ({status})");
        }
    }
    let pip = Path::new(VENV).join("bin/pip");
    let status = crate::run_echoed(Command::new(pip).args(["install", "-r", REQUIREMENTS]))?;
    if !status.success() {
        bail!("installing {REQUIREMENTS} into {VENV} failed ({status})");
    }
    std::fs::write(VENV_STAMP, wanted).with_context(|| format!("cannot write {VENV_STAMP}"))?;
    Ok(python)
}

/// The peer's BLAS as threadpoolctl reports it, flagging a thread count that
/// differs from ours.
fn describe_blas(peer: &Object, our_threads: f64) -> String {
    let mut text = peer.str("blas").unwrap_or("unknown BLAS").to_owned();
    let n = peer.num("blas_num_threads");
    if let Some(n) = n.filter(|&n| n != our_threads) {
        text.push_str(&format!(
            " [MISMATCH: {n} BLAS threads vs {our_threads} ours]"
        ));
    }
    text
}

/// `a,b,c`.
fn join(values: &[usize]) -> String {
    values
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A JSON number that should be an integer, printed as one.
fn fmt_int(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

/// Prints `rows` under `headers`, columns padded to their widest cell; the
/// first and last columns (names) are left-aligned, the numbers between them
/// right-aligned.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, (cell, &w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = w.saturating_sub(cell.chars().count());
            if i == 0 || i + 1 == widths.len() {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        println!("{}", line.trim_end());
    };
    render(&mut headers.iter().copied());
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    render(&mut rule.iter().map(String::as_str));
    for row in rows {
        render(&mut row.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_rounds() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        assert_eq!((min(&[2.0, 1.5]), max(&[2.0, 1.5])), (1.5, 2.0));
    }

    #[test]
    fn blas_thread_mismatch_is_flagged() {
        let peer = flat_json::parse(r#"{"blas":"openblas","blas_num_threads":2}"#).unwrap();
        assert_eq!(describe_blas(&peer, 2.0), "openblas");
        assert!(describe_blas(&peer, 1.0).contains("MISMATCH"));
    }

    #[test]
    fn integers_print_without_fraction() {
        assert_eq!(fmt_int(2048.0), "2048");
        assert_eq!(fmt_int(1.5), "1.5");
        assert_eq!(join(&[512, 1024]), "512,1024");
    }
}
