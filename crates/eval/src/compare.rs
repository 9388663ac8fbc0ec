//! Comparing a model with a reference on the same text, token by token: what
//! a quantized (or pruned, distilled…) model lost. The measures are those of
//! llama.cpp's `llama-perplexity --kl-divergence`:
//!
//! - perplexity of both, and `ln(PPL_c / PPL_r)` = mean of the per-token
//!   differences `d_i = nll_c,i − nll_r,i`, with the standard error of that
//!   mean (`sd(d)/√n`); ΔPPL = PPL_c − PPL_r with its standard error by the
//!   delta method (`PPL_c · se(d̄)`), and the same in percent;
//! - mean KL divergence `KL(p_r ‖ p_c)` over the vocabulary at each scored
//!   position (nats), with its standard error, and its maximum;
//! - top-1 agreement: how often both models' most likely next token is the
//!   same, with its binomial standard error.
//!
//! Windows are disjoint blocks of `context` tokens; each scores every token
//! but its first (the perplexity recipe with `stride == context`). All sums
//! run in f64 in window order, so results do not depend on threads.

use kaiyuan_models::{Logits, Model};
use kaiyuan_tensor::DType;
use rayon::prelude::*;

use crate::perplexity::windows;
use crate::{EvalError, Result};

/// What [`compare_models`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Tokens scored.
    pub tokens: usize,
    /// Perplexity of the reference.
    pub ppl_reference: f64,
    /// Perplexity of the candidate.
    pub ppl_candidate: f64,
    /// `PPL_c − PPL_r`.
    pub delta_ppl: f64,
    /// Standard error of `delta_ppl`.
    pub delta_ppl_stderr: f64,
    /// `100 · (PPL_c / PPL_r − 1)`.
    pub delta_ppl_percent: f64,
    /// Standard error of `delta_ppl_percent`.
    pub delta_ppl_percent_stderr: f64,
    /// Mean `KL(p_r ‖ p_c)` per scored position, in nats.
    pub kl_mean: f64,
    /// Standard error of `kl_mean`.
    pub kl_stderr: f64,
    /// Largest KL divergence at one position.
    pub kl_max: f64,
    /// Fraction of positions where both models' argmax agree.
    pub top1_agreement: f64,
    /// Standard error of `top1_agreement`.
    pub top1_stderr: f64,
}

/// Per-token statistics of one position.
#[derive(Clone, Copy, Default)]
struct Token {
    nll_r: f64,
    nll_c: f64,
    kl: f64,
    agree: bool,
}

/// Log-softmax of one row of logits, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let log_z = max + sum.ln();
    row.iter().map(|&x| f64::from(x) - log_z).collect()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Compares `candidate` with `reference` on `ids` in disjoint windows of
/// `context` tokens (see the module docs). Both models must share the
/// vocabulary.
///
/// # Errors
///
/// [`EvalError::InvalidOption`] for a context below 2;
/// [`EvalError::InvalidInput`] for models with different vocabularies or
/// fewer than 2 ids; [`EvalError::NotANumber`] for NaN logits.
pub fn compare_models(
    reference: &Model,
    candidate: &Model,
    ids: &[u32],
    context: usize,
) -> Result<Comparison> {
    let vocab = reference.config().vocab_size;
    if candidate.config().vocab_size != vocab {
        return Err(EvalError::input(
            "models",
            format!(
                "vocabularies differ: {} and {}",
                vocab,
                candidate.config().vocab_size
            ),
        ));
    }
    if ids.len() < 2 {
        return Err(EvalError::input("ids", "at least 2 tokens are needed"));
    }
    let mut tokens: Vec<Token> = Vec::new();
    for w in windows(ids.len(), context, context)? {
        let row = vec![ids[w.begin..w.end].to_vec()];
        let logits_r = reference
            .forward(&row, &mut reference.new_cache(), Logits::All)?
            .cast(DType::F32)?
            .to_vec::<f32>()?;
        let logits_c = candidate
            .forward(&row, &mut candidate.new_cache(), Logits::All)?
            .cast(DType::F32)?
            .to_vec::<f32>()?;
        // Position p predicts token p + 1; scored tokens are first_scored..end.
        let first = w.first_scored - w.begin - 1;
        let last = w.end - w.begin - 1;
        let window_tokens: Vec<Token> = (first..last)
            .into_par_iter()
            .map(|p| {
                let target = ids[w.begin + p + 1] as usize;
                let r = &logits_r[p * vocab..(p + 1) * vocab];
                let c = &logits_c[p * vocab..(p + 1) * vocab];
                let (lr, lc) = (log_softmax(r), log_softmax(c));
                let kl: f64 = lr.iter().zip(&lc).map(|(a, b)| a.exp() * (a - b)).sum();
                Token {
                    nll_r: -lr[target],
                    nll_c: -lc[target],
                    kl: kl.max(0.0),
                    agree: argmax(r) == argmax(c),
                }
            })
            .collect();
        tokens.extend(window_tokens);
    }
    if let Some(position) = tokens
        .iter()
        .position(|t| t.nll_r.is_nan() || t.nll_c.is_nan() || t.kl.is_nan())
    {
        return Err(EvalError::NotANumber { position });
    }
    let n = tokens.len() as f64;
    let mean = |f: &dyn Fn(&Token) -> f64| tokens.iter().map(f).sum::<f64>() / n;
    let stderr = |f: &dyn Fn(&Token) -> f64, m: f64| {
        if tokens.len() < 2 {
            return 0.0;
        }
        let var = tokens.iter().map(|t| (f(t) - m).powi(2)).sum::<f64>() / (n - 1.0);
        (var / n).sqrt()
    };
    let nll_r = mean(&|t| t.nll_r);
    let nll_c = mean(&|t| t.nll_c);
    let diff = mean(&|t| t.nll_c - t.nll_r);
    let diff_se = stderr(&|t| t.nll_c - t.nll_r, diff);
    let kl = mean(&|t| t.kl);
    let agree = mean(&|t| f64::from(u8::from(t.agree)));
    let (ppl_r, ppl_c) = (nll_r.exp(), nll_c.exp());
    Ok(Comparison {
        tokens: tokens.len(),
        ppl_reference: ppl_r,
        ppl_candidate: ppl_c,
        delta_ppl: ppl_c - ppl_r,
        delta_ppl_stderr: ppl_c * diff_se,
        delta_ppl_percent: 100.0 * (diff.exp() - 1.0),
        delta_ppl_percent_stderr: 100.0 * diff.exp() * diff_se,
        kl_mean: kl,
        kl_stderr: stderr(&|t| t.kl, kl),
        kl_max: tokens.iter().map(|t| t.kl).fold(0.0, f64::max),
        top1_agreement: agree,
        top1_stderr: (agree * (1.0 - agree) / n).sqrt(),
    })
}
