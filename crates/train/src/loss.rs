//! Losses of a causal language model.

use kaiyuan_models::{Logits, Model};
use kaiyuan_tensor::{DType, Tensor};

use crate::{Result, TrainError};

/// Label of a position that takes no part in the loss (PyTorch's
/// `ignore_index`).
pub const IGNORE: i64 = -100;

/// Next-token cross-entropy of `model` on a batch: rows of equal length T
/// (pad on the right and label the padding [`IGNORE`]); `labels[b][t]` is
/// the target for position t, so position t's logits are scored against
/// `labels[b][t + 1]`, as HF transformers' `ForCausalLMLoss` does. The mean
/// is over kept positions; the result is a scalar tensor that records a
/// graph when the model's parameters are tracked.
///
/// Shapes: ids (B, T) → logits (B, T, V) → scored (B·(T − 1), V).
///
/// Half-precision logits (f16, bf16) are widened to f32 first, so the loss
/// and its gradient are f32, as under PyTorch's autocast.
pub fn causal_lm_loss(model: &Model, ids: &[Vec<u32>], labels: &[Vec<i64>]) -> Result<Tensor> {
    let (logits, targets) = shifted_logits(model, ids, labels)?;
    let logits = match logits.dtype() {
        DType::F16 | DType::BF16 => logits.cast(DType::F32)?,
        _ => logits,
    };
    Ok(logits.cross_entropy(&targets)?)
}

/// Logits (B·(T − 1), V) of every position but the last and their targets
/// (B·(T − 1)), the labels shifted left by one.
pub fn shifted_logits(
    model: &Model,
    ids: &[Vec<u32>],
    labels: &[Vec<i64>],
) -> Result<(Tensor, Tensor)> {
    let b = ids.len();
    let t = ids.first().map_or(0, Vec::len);
    if b == 0 || t < 2 {
        return Err(TrainError::invalid(
            "batch",
            format!("need at least one row of two or more tokens, got {b} rows of {t}"),
        ));
    }
    if ids.iter().any(|r| r.len() != t) || labels.len() != b || labels.iter().any(|r| r.len() != t)
    {
        return Err(TrainError::invalid(
            "batch",
            "every row of ids and labels must have the same length (pad on the right with IGNORE labels)",
        ));
    }
    let mut cache = model.new_cache();
    let logits = model.forward(ids, &mut cache, Logits::All)?;
    let v = logits.shape()[2];
    let logits = logits.narrow(1, 0, t - 1)?.reshape(&[b * (t - 1), v])?;
    let targets: Vec<i64> = labels
        .iter()
        .flat_map(|row| row[1..].iter().copied())
        .collect();
    let targets = Tensor::from_vec(targets, &[b * (t - 1)])?;
    Ok((logits, targets))
}
