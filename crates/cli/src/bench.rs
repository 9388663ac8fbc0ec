//! `kaiyuan bench`: timings of the CPU kernels, printed as a table or as JSON
//! lines that `cargo xtask bench` compares against a peer implementation.

use kaiyuan_tensor::{RotaryEmbedding, RotaryLayout, Tensor};

/// Timed repetitions per measurement when `--repeats` is not given.
pub const DEFAULT_REPEATS: usize = 7;

/// The group of kernels a benchmark run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Area {
    /// Square f32 matrix multiplication (GFLOP/s).
    Gemm,
    /// Memory-bound ops (softmax, RMSNorm, rotary) against copy bandwidth (GB/s).
    Ops,
    /// Tokenizer encode throughput (MB/s) on the benchmark corpus.
    Tokenizer,
    /// Prefill and decode tokens/s of a model (`--model`), peak memory.
    Generate,
    /// Training tokens/s of a LLaMA-style model built from scratch.
    Train,
    /// MinHash signatures (128 permutations, 5-gram shingles) per second
    /// on the data benchmark corpus.
    Data,
    /// Corpus BLEU, chrF++ and ROUGE (pairs/s) over the evaluator's
    /// benchmark sentence pairs.
    Eval,
}

/// Settings of one benchmark run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Number of worker threads.
    pub threads: usize,
    /// Problem sizes; empty means the area's defaults.
    pub sizes: Vec<usize>,
    /// Print one JSON object per measurement instead of a table.
    pub json: bool,
    /// Timed repetitions per measurement; the median is reported.
    pub repeats: usize,
}

/// One timed measurement.
struct Measurement {
    name: &'static str,
    size: usize,
    median_s: f64,
    /// `("gflops", value)` or `("gbps", value)`.
    rate: (&'static str, f64),
    /// Values computed by the timed code, printed for checking against the
    /// peer (`("score", BLEU)`, …); empty for kernels.
    scores: Vec<(&'static str, f64)>,
}

/// Runs the benchmarks of `area` with `opts` on a pool of `opts.threads`
/// threads and prints the medians.
pub fn run(area: Area, opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(opts.threads >= 1, "--threads must be at least 1");
    anyhow::ensure!(opts.repeats >= 1, "--repeats must be at least 1");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()?;
    let results = pool.install(|| match area {
        Area::Gemm => gemm(opts),
        Area::Ops => ops(opts),
        Area::Tokenizer => tokenizer(opts),
        Area::Generate => anyhow::bail!("bench generate needs --model"),
        Area::Train => anyhow::bail!("bench train runs through its own entry point"),
        Area::Data => data(opts),
        Area::Eval => eval(opts),
    })?;
    for m in &results {
        let (unit, value) = m.rate;
        let scores: String = m
            .scores
            .iter()
            .map(|(key, v)| {
                if opts.json {
                    format!(r#","{key}":{v}"#)
                } else {
                    format!("  {key} {v:.6}")
                }
            })
            .collect();
        if opts.json {
            println!(
                r#"{{"area":"{}","name":"{}","size":{},"threads":{},"median_s":{:e},"{unit}":{value:.3}{scores}}}"#,
                match area {
                    Area::Gemm => "gemm",
                    Area::Ops => "ops",
                    Area::Tokenizer => "tokenizer",
                    Area::Generate => "generate",
                    Area::Train => "train",
                    Area::Data => "data",
                    Area::Eval => "eval",
                },
                m.name,
                m.size,
                opts.threads,
                m.median_s,
            );
        } else {
            println!(
                "{:<10} size {:>9}  threads {}  median {:>10.3} ms  {value:>8.1} {unit}{scores}",
                m.name,
                m.size,
                opts.threads,
                m.median_s * 1e3
            );
        }
    }
    Ok(())
}

/// Median wall time of `repeats` runs of `f`, after one warm-up run.
fn median_seconds<T>(
    repeats: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<f64> {
    std::hint::black_box(f()?);
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = std::time::Instant::now();
        std::hint::black_box(f()?);
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Square f32 products `a·b`, n = each size; GFLOP/s = 2n³ / median.
fn gemm(opts: &Options) -> anyhow::Result<Vec<Measurement>> {
    let sizes = if opts.sizes.is_empty() {
        vec![512, 1024, 2048]
    } else {
        opts.sizes.clone()
    };
    let mut out = Vec::new();
    for &n in &sizes {
        let a = Tensor::rand_uniform(&[n, n], -1.0, 1.0, 1)?;
        let b = Tensor::rand_uniform(&[n, n], -1.0, 1.0, 2)?;
        let median_s = median_seconds(opts.repeats, || Ok(a.matmul(&b)?))?;
        let flops = 2.0 * (n as f64).powi(3);
        out.push(Measurement {
            name: "sgemm",
            size: n,
            median_s,
            rate: ("gflops", flops / median_s / 1e9),
            scores: Vec::new(),
        });
    }
    Ok(out)
}

/// Memory-bound ops over `size` f32 elements (rows of 4096), in GB/s of
/// bytes read + written, beside a plain copy of the same bytes.
fn ops(opts: &Options) -> anyhow::Result<Vec<Measurement>> {
    const ROW: usize = 4096;
    // 16 MiB and 64 MiB of f32: both larger than L2, the second larger than L3.
    let sizes = if opts.sizes.is_empty() {
        vec![1 << 22, 1 << 24]
    } else {
        opts.sizes.clone()
    };
    let mut out = Vec::new();
    for &size in &sizes {
        let rows = (size / ROW).max(1);
        let n = rows * ROW;
        let bytes = (2 * n * 4) as f64; // one read and one write of every element
        let rate = |median_s: f64| ("gbps", bytes / median_s / 1e9);
        let x = Tensor::rand_uniform(&[rows, ROW], -4.0, 4.0, 3)?;
        let source = x.to_vec::<f32>()?;
        let mut target = vec![0.0f32; n];
        let copy_s = median_seconds(opts.repeats, || {
            parallel_copy(&source, &mut target);
            Ok(())
        })?;
        out.push(Measurement {
            name: "copy",
            size: n,
            median_s: copy_s,
            rate: rate(copy_s),
            scores: Vec::new(),
        });
        let softmax_s = median_seconds(opts.repeats, || Ok(x.softmax(-1)?))?;
        out.push(Measurement {
            name: "softmax",
            size: n,
            median_s: softmax_s,
            rate: rate(softmax_s),
            scores: Vec::new(),
        });
        let weight = Tensor::rand_uniform(&[ROW], 0.5, 1.5, 4)?;
        let rms_s = median_seconds(opts.repeats, || Ok(x.rms_norm(&weight, 1e-6)?))?;
        out.push(Measurement {
            name: "rms_norm",
            size: n,
            median_s: rms_s,
            rate: rate(rms_s),
            scores: Vec::new(),
        });
        // Rotary on (B, H, T, D) = (1, 32, n / 4096, 128), LLaMA-style heads.
        let q = x.reshape(&[1, 32, n / (32 * 128), 128])?;
        let rope = RotaryEmbedding::new(128, 10_000.0, RotaryLayout::HalfSplit)?;
        let rope_s = median_seconds(opts.repeats, || Ok(rope.apply(&q, 0)?))?;
        out.push(Measurement {
            name: "rotary",
            size: n,
            median_s: rope_s,
            rate: rate(rope_s),
            scores: Vec::new(),
        });
        // Decoding's matrix–vector product: one row times a transposed
        // (rows, 4096) weight; GB/s of weight bytes read.
        let row = Tensor::rand_uniform(&[1, ROW], -1.0, 1.0, 5)?;
        let wt = x.t()?;
        let gemv_s = median_seconds(opts.repeats, || Ok(row.matmul(&wt)?))?;
        out.push(Measurement {
            name: "gemv",
            size: n,
            median_s: gemv_s,
            rate: ("gbps", (n * 4) as f64 / gemv_s / 1e9),
            scores: Vec::new(),
        });
        let x16 = x.cast(kaiyuan_tensor::DType::F16)?;
        let row16 = row.cast(kaiyuan_tensor::DType::F16)?;
        let wt16 = x16.t()?;
        let gemv16_s = median_seconds(opts.repeats, || Ok(row16.matmul(&wt16)?))?;
        out.push(Measurement {
            name: "gemv_f16",
            size: n,
            median_s: gemv16_s,
            rate: ("gbps", (n * 2) as f64 / gemv16_s / 1e9),
            scores: Vec::new(),
        });
    }
    Ok(out)
}

/// The tokenizer benchmark corpus (built by `fixtures/bench/tokenizer_corpus.py`).
const TOKENIZER_CORPUS: &str = "target/bench/tokenizer_corpus.txt";

/// Encode throughput on the corpus, one document per line: cl100k through
/// the tiktoken loader and Llama-3 through its `tokenizer.json`, line by line
/// on one thread (`encode`), and as one batch on the pool (`batch`).
fn tokenizer(opts: &Options) -> anyhow::Result<Vec<Measurement>> {
    use anyhow::Context;
    use kaiyuan_tokenizer::{EncodeOptions, TiktokenSpec, Tokenizer};
    let text = std::fs::read_to_string(TOKENIZER_CORPUS).with_context(|| {
        format!("{TOKENIZER_CORPUS}: build it with fixtures/bench/tokenizer_corpus.py")
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    let spec = TiktokenSpec::known("cl100k_base").context("cl100k spec")?;
    // (encode name, batch name, tokenizer)
    let vocabularies = [
        (
            "cl100k_encode",
            "cl100k_batch",
            Tokenizer::from_tiktoken("target/vocab-cache/tiktoken/cl100k_base.tiktoken", &spec)?,
        ),
        (
            "llama3_encode",
            "llama3_batch",
            Tokenizer::from_file("target/vocab-cache/llama3/tokenizer.json")?,
        ),
    ];
    let mut out = Vec::new();
    for (encode_name, batch_name, tok) in &vocabularies {
        let encode_s = median_seconds(opts.repeats, || {
            let mut n = 0usize;
            for line in &lines {
                n += tok.encode(line)?.ids.len();
            }
            Ok(n)
        })?;
        let batch_s = median_seconds(opts.repeats, || {
            Ok(tok.encode_batch(&lines, EncodeOptions::default())?.len())
        })?;
        for (name, median_s) in [(*encode_name, encode_s), (*batch_name, batch_s)] {
            out.push(Measurement {
                name,
                size: bytes,
                median_s,
                rate: ("mbps", bytes as f64 / median_s / 1e6),
                scores: Vec::new(),
            });
        }
    }
    Ok(out)
}

/// `target.copy_from_slice(source)` split over the current pool in 1 MiB pieces.
fn parallel_copy(source: &[f32], target: &mut [f32]) {
    use rayon::prelude::*;
    target
        .par_chunks_mut(1 << 18)
        .zip(source.par_chunks(1 << 18))
        .for_each(|(t, s)| t.copy_from_slice(s));
}

/// The data benchmark's documents (JSONL, ~1 KB each), written by
/// `fixtures/bench/data_peers.py corpus`.
pub const DATA_CORPUS: &str = "target/bench/data_docs.jsonl";

/// MinHash signatures of the first `size` documents (default 20,000) of
/// [`DATA_CORPUS`], 128 permutations over word 5-grams, on the current pool
/// (documents split across its threads); rate in documents per second.
fn data(opts: &Options) -> anyhow::Result<Vec<Measurement>> {
    use anyhow::Context;
    use kaiyuan_data::minhash::MinHasher;
    use rayon::prelude::*;
    let text = std::fs::read_to_string(DATA_CORPUS).with_context(|| {
        format!("{DATA_CORPUS}: build it with fixtures/bench/data_peers.py corpus")
    })?;
    let size = opts.sizes.first().copied().unwrap_or(20_000);
    let docs: Vec<String> = text
        .lines()
        .take(size)
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).context("a bad line in the data corpus")?;
            Ok(v["text"].as_str().unwrap_or_default().to_string())
        })
        .collect::<anyhow::Result<_>>()?;
    let bytes: usize = docs.iter().map(String::len).sum();
    let hasher = MinHasher::new(128, 5, 1);
    let median_s = median_seconds(opts.repeats, || {
        Ok(docs
            .par_iter()
            .map(|d| hasher.signature(d)[0] as u64)
            .sum::<u64>())
    })?;
    Ok(vec![
        Measurement {
            name: "minhash_docs",
            size: docs.len(),
            median_s,
            rate: ("docs_per_s", docs.len() as f64 / median_s),
            scores: Vec::new(),
        },
        Measurement {
            name: "minhash_mb",
            size: bytes,
            median_s,
            rate: ("mbps", bytes as f64 / median_s / 1e6),
            scores: Vec::new(),
        },
    ])
}

/// The evaluator benchmark's sentence pairs (JSONL, `{"id", "lang", "hyp",
/// "refs": [r1, r2]}`), written by `fixtures/eval/text_pairs/make_pairs.py
/// --count 50000 --output target/bench/eval_pairs.jsonl`.
pub const EVAL_PAIRS: &str = "target/bench/eval_pairs.jsonl";

/// The ROUGE types `bench eval` computes, with the keys their mean F-measures
/// are printed under.
const EVAL_ROUGE_TYPES: [(kaiyuan_metrics::RougeType, &str); 4] = [
    (kaiyuan_metrics::RougeType::N(1), "rouge1_f"),
    (kaiyuan_metrics::RougeType::N(2), "rouge2_f"),
    (kaiyuan_metrics::RougeType::L, "rougeL_f"),
    (kaiyuan_metrics::RougeType::LSum, "rougeLsum_f"),
];

/// Text metrics over the first `size` pairs (default: all) of
/// [`EVAL_PAIRS`], each on the current pool, rate in pairs per second:
/// corpus BLEU (13a, exp smoothing) against the first reference and against
/// both, chrF++ against the first, and ROUGE-1/2/L/Lsum with stemming of
/// every hypothesis against its first reference (a fresh scorer per run and,
/// with more than one thread, per chunk of pairs, so no stem cache carries
/// over between runs). Loading the pairs is not timed; the scores come with
/// the timings so the peer's can be checked against them.
fn eval(opts: &Options) -> anyhow::Result<Vec<Measurement>> {
    use anyhow::Context;
    use kaiyuan_metrics::{
        BleuOptions, ChrfOptions, RougeOptions, RougeScorer, corpus_bleu, corpus_chrf,
    };
    use rayon::prelude::*;
    let text = std::fs::read_to_string(EVAL_PAIRS).with_context(|| {
        format!(
            "{EVAL_PAIRS}: build it with python3 fixtures/eval/text_pairs/make_pairs.py \
             --count 50000 --output {EVAL_PAIRS}"
        )
    })?;
    let size = opts.sizes.first().copied().unwrap_or(usize::MAX);
    let (mut hyps, mut refs1, mut refs2) = (Vec::new(), Vec::new(), Vec::new());
    for (i, line) in text.lines().take(size).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{EVAL_PAIRS}:{}: bad JSON", i + 1))?;
        let field = |value: &serde_json::Value| {
            value
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("{EVAL_PAIRS}:{}: needs `hyp` and two `refs`", i + 1))
        };
        hyps.push(field(&v["hyp"])?);
        refs1.push(field(&v["refs"][0])?);
        refs2.push(field(&v["refs"][1])?);
    }
    let n = hyps.len();
    anyhow::ensure!(n > 0, "{EVAL_PAIRS} holds no pairs");
    anyhow::ensure!(
        size == usize::MAX || n == size,
        "{EVAL_PAIRS} holds {n} pairs, fewer than the {size} asked for"
    );
    let measurement = |name, median_s: f64, scores| Measurement {
        name,
        size: n,
        median_s,
        rate: ("pairs_per_s", n as f64 / median_s),
        scores,
    };
    let mut out = Vec::new();

    let bleu_options = BleuOptions::default();
    for (name, streams) in [
        ("bleu_1ref", vec![refs1.as_slice()]),
        ("bleu_2ref", vec![refs1.as_slice(), refs2.as_slice()]),
    ] {
        let mut score = f64::NAN;
        let median_s = median_seconds(opts.repeats, || {
            score = corpus_bleu(&hyps, &streams, &bleu_options)?.score;
            Ok(())
        })?;
        out.push(measurement(name, median_s, vec![("score", score)]));
    }

    let chrf_options = ChrfOptions::chrf_plus_plus();
    let mut score = f64::NAN;
    let median_s = median_seconds(opts.repeats, || {
        score = corpus_chrf(&hyps, &[refs1.as_slice()], &chrf_options)?.score;
        Ok(())
    })?;
    out.push(measurement("chrfpp_1ref", median_s, vec![("score", score)]));

    let template = RougeScorer::new(RougeOptions {
        use_stemmer: true,
        ..RougeOptions::default()
    })?;
    // One chunk on one thread; a few per thread otherwise, for balance.
    let threads = rayon::current_num_threads();
    let chunk = if threads == 1 {
        n
    } else {
        n.div_ceil(threads * 4)
    };
    let mut means = [f64::NAN; EVAL_ROUGE_TYPES.len()];
    let median_s = median_seconds(opts.repeats, || {
        let chunks = refs1
            .par_chunks(chunk)
            .zip(hyps.par_chunks(chunk))
            .map(|(targets, predictions)| {
                Ok(template
                    .clone()
                    .score_corpus(targets, predictions)?
                    .per_pair)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (mean, (rouge_type, _)) in means.iter_mut().zip(EVAL_ROUGE_TYPES) {
            let sum: f64 = chunks
                .iter()
                .flatten()
                .map(|s| s.get(rouge_type).map_or(0.0, |s| s.fmeasure))
                .sum();
            *mean = sum / n as f64;
        }
        Ok(())
    })?;
    let scores = EVAL_ROUGE_TYPES
        .iter()
        .zip(means)
        .map(|((_, key), mean)| (*key, mean))
        .collect();
    out.push(measurement("rouge_stem", median_s, scores));
    Ok(out)
}
