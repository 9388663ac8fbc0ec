//! Speed and memory of a loaded model: time to first token, prefill and
//! decode tokens per second, and the process's peak resident memory.
//!
//! A round feeds a fixed pseudo-random prompt (ids from 100 on, away from
//! the special tokens of real vocabularies), takes the argmax of the last
//! logits (the first generated token: its time is the *time to first
//! token*), then decodes greedily through the KV cache. One warm-up round
//! runs first; every later round is kept, so callers report medians.

use std::time::Instant;

use kaiyuan_models::{Logits, Model};

use crate::{EvalError, Result};

/// What [`measure_speed`] times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpeedOptions {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens decoded after the prompt.
    pub decode_tokens: usize,
    /// Timed rounds after the warm-up.
    pub repeats: usize,
}

impl Default for SpeedOptions {
    fn default() -> Self {
        Self {
            prompt_tokens: 128,
            decode_tokens: 64,
            repeats: 5,
        }
    }
}

/// Per timed round: the measurements of [`measure_speed`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpeedReport {
    /// Seconds from the prompt to the first generated token.
    pub ttft_s: Vec<f64>,
    /// Prompt tokens per second of the prefill.
    pub prefill_tok_s: Vec<f64>,
    /// Generated tokens per second of the decode loop.
    pub decode_tok_s: Vec<f64>,
    /// Peak resident set size of the process after the rounds (bytes;
    /// `None` where `/proc` is unavailable).
    pub peak_rss_bytes: Option<u64>,
}

/// The median of `values` (the upper one for an even count; NaN when empty).
///
/// ```
/// assert_eq!(kaiyuan_eval::speed::median(&[3.0, 1.0, 2.0]), 2.0);
/// ```
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Peak resident set size of this process in bytes (`VmHWM` of
/// `/proc/self/status`), when known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The fixed prompt of a speed round: `n` pseudo-random ids below `vocab`.
pub fn speed_prompt(n: usize, vocab: usize) -> Vec<u32> {
    let vocab = vocab.max(1) as u32;
    let base = 100u32.min(vocab - 1);
    (0..n as u32)
        .map(|i| base + (i.wrapping_mul(2_654_435_761) >> 8) % (vocab - base).max(1))
        .collect()
}

/// Times `options.repeats` rounds of prefill and greedy decode on `model`.
///
/// ```
/// use kaiyuan_eval::speed::{SpeedOptions, measure_speed};
/// use kaiyuan_models::ModelFiles;
/// use kaiyuan_tensor::DType;
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/eval/mc/model");
/// let model = ModelFiles::open(dir)?.take_model(DType::F32)?;
/// let options = SpeedOptions { prompt_tokens: 16, decode_tokens: 4, repeats: 2 };
/// let report = measure_speed(&model, &options)?;
/// assert_eq!(report.decode_tok_s.len(), 2);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidOption`] for zero tokens or repeats, or more tokens
/// than the model's positions; model errors.
pub fn measure_speed(model: &Model, options: &SpeedOptions) -> Result<SpeedReport> {
    let SpeedOptions {
        prompt_tokens,
        decode_tokens,
        repeats,
    } = *options;
    if prompt_tokens == 0 || decode_tokens == 0 || repeats == 0 {
        return Err(EvalError::option(
            "speed",
            "prompt tokens, decode tokens and repeats must all be at least 1",
        ));
    }
    let max = model.config().max_position_embeddings;
    if prompt_tokens + decode_tokens + 1 > max {
        return Err(EvalError::option(
            "speed",
            format!(
                "{prompt_tokens} prompt + {decode_tokens} decoded tokens exceed the model's {max} positions"
            ),
        ));
    }
    let prompt = speed_prompt(prompt_tokens, model.config().vocab_size);
    let mut report = SpeedReport::default();
    for round in 0..=repeats {
        let mut cache = model.new_cache_for(prompt_tokens + decode_tokens);
        let start = Instant::now();
        let logits = model.prefill(std::slice::from_ref(&prompt), &mut cache)?;
        let prefill_s = start.elapsed().as_secs_f64();
        let mut next = logits.argmax(-1, false)?.to_vec::<u32>()?;
        let ttft = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..decode_tokens {
            let logits = model.forward(std::slice::from_ref(&next), &mut cache, Logits::Last)?;
            next = logits.argmax(-1, false)?.to_vec::<u32>()?;
        }
        let decode_s = start.elapsed().as_secs_f64();
        if round > 0 {
            report.ttft_s.push(ttft);
            report.prefill_tok_s.push(prompt_tokens as f64 / prefill_s);
            report.decode_tok_s.push(decode_tokens as f64 / decode_s);
        }
    }
    report.peak_rss_bytes = peak_rss_bytes();
    Ok(report)
}
