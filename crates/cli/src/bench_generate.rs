//! `kaiyuan bench generate`: prefill and decode speed of a real model, peak
//! memory, and the bandwidth bound of decoding, as one JSON line or a table.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use kaiyuan_eval::speed::{SpeedOptions, measure_speed};
pub use kaiyuan_eval::speed::{median, peak_rss_bytes};
use kaiyuan_models::ModelFiles;
use kaiyuan_models::loader::memory_estimate;
use kaiyuan_tensor::DType;

/// What to measure.
#[derive(Debug, Clone)]
pub struct GenerateBench<'a> {
    /// Model directory or GGUF file.
    pub model: &'a Path,
    /// Compute dtype.
    pub dtype: DType,
    /// KV cache dtype.
    pub kv_dtype: DType,
    /// Prompt length of the prefill measurement.
    pub prompt_tokens: usize,
    /// Tokens generated in the decode measurement.
    pub decode_tokens: usize,
    /// Timed repetitions (medians are reported).
    pub repeats: usize,
    /// Threads (for the report; the caller installs the pool).
    pub threads: usize,
    /// Print JSON.
    pub json: bool,
    /// Keep GGUF block weights quantized (the fused kernels) instead of
    /// dequantizing them to `dtype`.
    pub quantized: bool,
}

/// Copy bandwidth (read + write bytes per second) over a 512 MiB buffer on
/// the current pool, the memory roofline decode is compared with.
fn copy_bandwidth() -> f64 {
    use rayon::prelude::*;
    let n = 64 << 20; // f64 elements: 512 MiB
    let source = vec![1.0f64; n];
    let mut target = vec![0.0f64; n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        target
            .par_chunks_mut(1 << 17)
            .zip(source.par_chunks(1 << 17))
            .for_each(|(t, s)| t.copy_from_slice(s));
        best = best.min(start.elapsed().as_secs_f64());
        std::hint::black_box(&target);
    }
    (2 * n * 8) as f64 / best
}

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct GenerateMeasurement {
    /// Per timed round: prompt tokens per second of the prefill.
    pub prefill_tok_s: Vec<f64>,
    /// Per timed round: generated tokens per second of the decode loop.
    pub decode_tok_s: Vec<f64>,
    /// Per timed round: seconds from the prompt to the first generated
    /// token (prefill + argmax of its logits).
    pub ttft_s: Vec<f64>,
    /// Peak resident set size after loading and running, in bytes.
    pub peak_rss_bytes: u64,
    /// Bytes of the model's files.
    pub file_bytes: u64,
    /// Bytes of the weights as loaded (the estimate's).
    pub weight_bytes: usize,
    /// Inspect's whole memory estimate.
    pub estimate_bytes: usize,
    /// Its KV-cache part.
    pub kv_cache_bytes: usize,
}

/// Loads the model and times `repeats` rounds of prefill then greedy decode
/// (after one warm-up round).
pub fn measure(b: &GenerateBench<'_>) -> anyhow::Result<GenerateMeasurement> {
    anyhow::ensure!(
        b.prompt_tokens >= 1 && b.decode_tokens >= 1,
        "token counts must be positive"
    );
    let open = if b.quantized {
        ModelFiles::open_quantized
    } else {
        ModelFiles::open
    };
    let mut files = open(b.model).with_context(|| format!("loading {}", b.model.display()))?;
    let file_bytes = files.file_bytes;
    let context = b.prompt_tokens + b.decode_tokens + 1;
    let estimate = memory_estimate(&files, b.dtype, b.kv_dtype, context);
    let mut model = files.take_model(b.dtype)?;
    model.set_kv_dtype(b.kv_dtype)?;
    // The tokenizer and what the load left: returned now rather than
    // after the allocator's purge delay, which would hold them through the
    // first prefill.
    drop(files);
    crate::return_freed_memory();
    let options = SpeedOptions {
        prompt_tokens: b.prompt_tokens,
        decode_tokens: b.decode_tokens,
        repeats: b.repeats,
    };
    let speed = measure_speed(&model, &options)?;
    let m = GenerateMeasurement {
        prefill_tok_s: speed.prefill_tok_s,
        decode_tok_s: speed.decode_tok_s,
        ttft_s: speed.ttft_s,
        peak_rss_bytes: speed.peak_rss_bytes.unwrap_or(0),
        file_bytes,
        weight_bytes: estimate.weights,
        estimate_bytes: estimate.total(),
        kv_cache_bytes: estimate.kv_cache,
    };
    Ok(m)
}

/// Runs the measurement and prints it.
pub fn run(b: &GenerateBench<'_>) -> anyhow::Result<()> {
    let m = measure(b)?;
    // The peak is read before the bandwidth measurement allocates its
    // buffers, so it is the model's (load included).
    let peak = m.peak_rss_bytes;
    let file_bytes = m.file_bytes;
    let bandwidth = copy_bandwidth();
    let prefill = median(&m.prefill_tok_s);
    let decode = median(&m.decode_tok_s);
    let weight_bytes = m.weight_bytes as f64;
    let bound = bandwidth / weight_bytes;
    if b.json {
        println!(
            "{}",
            serde_json::json!({
                "area": "generate",
                "model": b.model.display().to_string(),
                "dtype": b.dtype.name(),
                "kv_dtype": b.kv_dtype.name(),
                "threads": b.threads,
                "prompt_tokens": b.prompt_tokens,
                "decode_tokens": b.decode_tokens,
                "prefill_tok_s": prefill,
                "decode_tok_s": decode,
                "copy_gbps": bandwidth / 1e9,
                "weight_bytes": m.weight_bytes,
                "bandwidth_bound_tok_s": bound,
                "fraction_of_bound": decode / bound,
                "peak_rss_bytes": peak,
                "file_bytes": file_bytes,
                "quantized": b.quantized,
                "ttft_ms": 1e3 * median(&m.ttft_s),
                "estimate_bytes": m.estimate_bytes,
                "kv_cache_bytes": m.kv_cache_bytes,
            })
        );
    } else {
        let mib = |x: f64| x / (1024.0 * 1024.0);
        println!(
            "model {} ({}, KV cache {}), {} threads",
            b.model.display(),
            b.dtype.name(),
            b.kv_dtype.name(),
            b.threads
        );
        println!(
            "prefill {} tokens: {prefill:.1} tokens/s (median of {})",
            b.prompt_tokens, b.repeats
        );
        println!(
            "decode {} tokens: {decode:.1} tokens/s = {:.0}% of the bandwidth bound {bound:.1} tokens/s ({:.1} GB/s copy, {:.1} MiB weights)",
            b.decode_tokens,
            100.0 * decode / bound,
            bandwidth / 1e9,
            mib(weight_bytes)
        );
        println!(
            "peak RSS {:.1} MiB; inspect's estimate {:.1} MiB",
            mib(peak as f64),
            mib(m.estimate_bytes as f64)
        );
    }
    Ok(())
}
