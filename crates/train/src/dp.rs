//! DP-SGD (Abadi et al. 2016) as Opacus runs it: Poisson-sampled batches
//! (each training sequence joins a step's batch independently with
//! probability q), per-example gradients clipped to a global L2 norm C
//! (factor `min(1, C / (‖g‖ + 1e-6))`), their sum plus Gaussian noise
//! N(0, σ²C²) on every coordinate, divided by the expected batch size
//! q·N. The privacy spent is tracked by the RDP accountant of
//! [`crate::privacy`].
//!
//! Per-example gradients are computed one example at a time with the same
//! forward and backward as ordinary training (exact, and slower by the batch
//! size). Every random draw comes from a generator seeded by `(seed, step)`,
//! so a resumed run samples and adds the same noise.
//!
//! Also here: the *exposure* of planted canaries (Carlini et al., "The
//! Secret Sharer"), to measure what a model memorised.

use kaiyuan_models::Model;
use kaiyuan_tensor::{DType, Tensor, no_grad};
use serde::{Deserialize, Serialize};

use crate::init::SplitMix64;
use crate::loss::causal_lm_loss;
use crate::privacy::{DEFAULT_ORDERS, epsilon_from_rdp, rdp_subsampled_gaussian};
use crate::{Result, TrainError};

/// `[dp]`: DP-SGD settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DpConfig {
    /// Train with DP-SGD.
    pub enabled: bool,
    /// σ: noise standard deviation in units of `max_grad_norm`.
    pub noise_multiplier: f64,
    /// C: per-example gradient norm bound.
    pub max_grad_norm: f64,
    /// δ at which ε is reported.
    pub delta: f64,
}

impl Default for DpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            noise_multiplier: 1.1,
            max_grad_norm: 1.0,
            delta: 1e-5,
        }
    }
}

impl DpConfig {
    /// Checks the settings, naming the key.
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if !(self.noise_multiplier >= 0.0 && self.noise_multiplier.is_finite()) {
            return Err(TrainError::invalid(
                "dp.noise_multiplier",
                "must be a finite number ≥ 0",
            ));
        }
        if !(self.max_grad_norm > 0.0 && self.max_grad_norm.is_finite()) {
            return Err(TrainError::invalid(
                "dp.max_grad_norm",
                "must be a finite number > 0",
            ));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(TrainError::invalid("dp.delta", "must be in (0, 1)"));
        }
        Ok(())
    }
}

/// A generator for step `step` of a run seeded with `seed`, for purpose `stream`.
fn rng(seed: u64, step: u64, stream: u64) -> SplitMix64 {
    let mut mix = SplitMix64::new(seed ^ 0xD1FF_E2E7_1A1F_0000);
    let a = mix.next_u64();
    SplitMix64::new(
        a ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
    )
}

/// Indices of `0..n` in step `step`'s Poisson batch: each independently
/// with probability `q`.
pub fn poisson_batch(n: usize, q: f64, seed: u64, step: u64) -> Vec<usize> {
    let mut r = rng(seed, step, 1);
    (0..n).filter(|_| r.uniform() < q).collect()
}

/// What one private step did.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivateStep {
    /// Examples in the batch.
    pub batch: usize,
    /// Mean loss over the batch (NaN for an empty batch).
    pub loss: f64,
    /// Per-example gradient norms before clipping.
    pub norms: Vec<f64>,
}

/// Per-example gradient of `model`'s trainable tensors (in
/// `trainable_mut` order) and the example's loss.
pub fn example_gradient(model: &mut Model, ids: &[u32]) -> Result<(Vec<Tensor>, f64)> {
    let leaves = model.track_gradients();
    let labels: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    let loss = causal_lm_loss(model, &[ids.to_vec()], &[labels])?;
    let value = f64::from(loss.cast(DType::F32)?.to_scalar::<f32>()?);
    let grads = loss.backward()?;
    model.stop_tracking_gradients();
    let out = leaves
        .iter()
        .map(|(_, leaf)| match grads.get(leaf) {
            Some(g) => Ok(g.clone()),
            None => Ok(Tensor::zeros(leaf.shape(), leaf.dtype())?),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out, value))
}

/// Global L2 norm of a set of tensors.
pub fn global_norm(tensors: &[Tensor]) -> Result<f64> {
    let mut total = 0.0f64;
    for t in tensors {
        total += t
            .cast(DType::F64)?
            .to_vec::<f64>()?
            .iter()
            .map(|x| x * x)
            .sum::<f64>();
    }
    Ok(total.sqrt())
}

/// Opacus' clipping factor for a per-example norm.
pub fn clip_factor(norm: f64, max_grad_norm: f64) -> f64 {
    (max_grad_norm / (norm + 1e-6)).min(1.0)
}

/// The privatised gradient of one step: per-example gradients of
/// `examples`, each clipped to `config.max_grad_norm`, summed, plus
/// N(0, (σC)²) noise drawn from `(seed, step)`, divided by
/// `expected_batch`. Returned in `trainable_mut` order.
pub fn private_gradient(
    model: &mut Model,
    examples: &[Vec<u32>],
    config: &DpConfig,
    expected_batch: f64,
    seed: u64,
    step: u64,
) -> Result<(Vec<Tensor>, PrivateStep)> {
    let shapes: Vec<(Vec<usize>, DType)> = model
        .trainable_mut()
        .iter()
        .map(|(_, t)| (t.shape().to_vec(), t.dtype()))
        .collect();
    let mut sums: Vec<Vec<f64>> = shapes
        .iter()
        .map(|(s, _)| vec![0.0; s.iter().product()])
        .collect();
    let mut norms = Vec::with_capacity(examples.len());
    let mut loss_total = 0.0;
    for ids in examples {
        let (grads, loss) = example_gradient(model, ids)?;
        loss_total += loss;
        let norm = global_norm(&grads)?;
        let factor = clip_factor(norm, config.max_grad_norm);
        norms.push(norm);
        for (sum, g) in sums.iter_mut().zip(&grads) {
            for (s, v) in sum.iter_mut().zip(g.cast(DType::F64)?.to_vec::<f64>()?) {
                *s += v * factor;
            }
        }
    }
    let std = config.noise_multiplier * config.max_grad_norm;
    let mut noise = rng(seed, step, 2);
    let mut out = Vec::with_capacity(sums.len());
    for (sum, (shape, dtype)) in sums.into_iter().zip(shapes) {
        let values: Vec<f64> = sum
            .into_iter()
            .map(|s| (s + if std > 0.0 { noise.normal() * std } else { 0.0 }) / expected_batch)
            .collect();
        out.push(Tensor::from_vec(values, &shape)?.cast(dtype)?);
    }
    let batch = examples.len();
    Ok((
        out,
        PrivateStep {
            batch,
            loss: loss_total / batch as f64,
            norms,
        },
    ))
}

/// ε spent after `steps` steps at sampling rate `q` and `config`'s σ and δ.
pub fn epsilon(config: &DpConfig, q: f64, steps: u64) -> Result<f64> {
    if steps == 0 {
        return Ok(0.0);
    }
    let rdp = rdp_subsampled_gaussian(q, config.noise_multiplier, steps, DEFAULT_ORDERS)?;
    Ok(epsilon_from_rdp(DEFAULT_ORDERS, &rdp, config.delta)?.0)
}

/// Exposure of a canary: with `secret` among `candidates` (other secrets of
/// the same form, the secret excluded), rank all by the model's loss on
/// `prefix + candidate` and return `log2(|R|) − log2(rank)`, where |R| is
/// the number of candidates plus one and rank 1 is the lowest loss. The
/// maximum, log2(|R|), means the secret is the model's first guess.
pub fn exposure(
    model: &Model,
    prefix: &[u32],
    secret: &[u32],
    candidates: &[Vec<u32>],
) -> Result<f64> {
    let score = |tail: &[u32]| -> Result<f64> {
        let ids: Vec<u32> = prefix.iter().chain(tail).copied().collect();
        // Only the secret's tokens count.
        let labels: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if i < prefix.len() {
                    crate::loss::IGNORE
                } else {
                    i64::from(x)
                }
            })
            .collect();
        let loss = no_grad(|| causal_lm_loss(model, std::slice::from_ref(&ids), &[labels]))?;
        Ok(f64::from(loss.cast(DType::F32)?.to_scalar::<f32>()?))
    };
    let secret_loss = score(secret)?;
    let mut rank = 1usize;
    for c in candidates {
        if score(c)? < secret_loss {
            rank += 1;
        }
    }
    let space = (candidates.len() + 1) as f64;
    Ok(space.log2() - (rank as f64).log2())
}
