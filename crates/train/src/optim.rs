//! Optimisers (AdamW, SGD), learning-rate schedules and gradient clipping,
//! each following PyTorch's (and transformers') definition step for step so
//! results agree to rounding (`fixtures/train/make_optim_reference.py`).
//!
//! Parameters and gradients are [`Tensor`]s; optimiser state is kept in f32
//! vectors per parameter, updated in parallel chunks (the result does not
//! depend on the thread count: every element is updated independently).
//!
//! ```
//! use kaiyuan_tensor::Tensor;
//! use kaiyuan_train::optim::{AdamW, AdamWConfig};
//! # fn main() -> kaiyuan_train::Result<()> {
//! let mut w = Tensor::from_vec(vec![1.0f32, -1.0], &[1, 2])?;
//! let g = Tensor::from_vec(vec![0.5f32, -0.5], &[1, 2])?;
//! let mut opt = AdamW::new(AdamWConfig { lr: 0.1, ..AdamWConfig::default() });
//! opt.step(&mut [("w", &mut w, &g)], 1.0)?;
//! // The first Adam step moves every weight by about lr against its gradient.
//! let v = w.to_vec::<f32>()?;
//! assert!((v[0] - (1.0 - 0.1 - 0.1 * 0.01)).abs() < 1e-5);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use kaiyuan_tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::{Result, TrainError};

/// Elements per parallel chunk of an update.
const CHUNK: usize = 1 << 14;

/// One parameter to update: its name, the tensor (replaced in place) and its
/// gradient (same shape).
pub type ParamRef<'a> = (&'a str, &'a mut Tensor, &'a Tensor);

/// Settings of [`AdamW`] (PyTorch's defaults except `weight_decay`, which
/// follows transformers' `TrainingArguments`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Peak learning rate (a schedule multiplies it per step).
    pub lr: f64,
    /// β₁, the decay of the first moment.
    pub beta1: f64,
    /// β₂, the decay of the second moment.
    pub beta2: f64,
    /// ε added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay; never applied to parameters of rank < 2
    /// (biases and norm weights).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    fn validate(&self) -> Result<()> {
        let checks = [
            ("lr", self.lr >= 0.0 && self.lr.is_finite()),
            ("beta1", (0.0..1.0).contains(&self.beta1)),
            ("beta2", (0.0..1.0).contains(&self.beta2)),
            ("eps", self.eps > 0.0 && self.eps.is_finite()),
            (
                "weight_decay",
                self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            ),
        ];
        for (what, ok) in checks {
            if !ok {
                return Err(TrainError::invalid(
                    what,
                    format!("out of range in {self:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// First and second moments of one parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// Exponential average of gradients.
    pub m: Vec<f32>,
    /// Exponential average of squared gradients.
    pub v: Vec<f32>,
}

/// AdamW (Loshchilov & Hutter) exactly as `torch.optim.AdamW`: decoupled
/// decay `p ← p·(1 − lr·wd)`, then `p ← p − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε)`.
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamWConfig,
    step: u64,
    state: BTreeMap<String, Moments>,
    /// Moments of parameters on a CUDA device, kept there (f32); `state`
    /// holds their host copy only after [`AdamW::sync_state`].
    device_state: BTreeMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    /// A fresh optimiser.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            state: BTreeMap::new(),
            device_state: BTreeMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The moments by parameter name (for checkpoints); those of device
    /// parameters as of the last [`AdamW::sync_state`].
    pub fn state(&self) -> &BTreeMap<String, Moments> {
        &self.state
    }

    /// Copies the moments of device parameters to the host, so that
    /// [`AdamW::state`] is current.
    pub fn sync_state(&mut self) -> Result<()> {
        for (name, (m, v)) in &self.device_state {
            self.state.insert(
                name.clone(),
                Moments {
                    m: m.to_vec::<f32>()?,
                    v: v.to_vec::<f32>()?,
                },
            );
        }
        Ok(())
    }

    /// Restores the step count and moments saved from [`AdamW::state`].
    pub fn restore(&mut self, step: u64, state: BTreeMap<String, Moments>) {
        self.step = step;
        self.state = state;
        self.device_state.clear();
    }

    /// The update of one parameter on a CUDA device: the fused kernel, with
    /// the moments kept on the device (uploaded from a restored state, or
    /// zeros, the first time).
    fn device_step(
        &mut self,
        name: &str,
        param: &mut Tensor,
        grad: &Tensor,
        step: kaiyuan_tensor::AdamWStep,
    ) -> Result<()> {
        let device = param.device();
        if param.dtype() != DType::F32 {
            return Err(TrainError::invalid(
                name,
                format!(
                    "{} parameters on {device}: the device optimiser keeps f32 master weights",
                    param.dtype()
                ),
            ));
        }
        let (mut m, mut v) = match self.device_state.remove(name) {
            Some(moments) => moments,
            None => match self.state.get(name) {
                Some(host) => (
                    Tensor::from_slice(&host.m, param.shape())?.to_device(device)?,
                    Tensor::from_slice(&host.v, param.shape())?.to_device(device)?,
                ),
                None => (
                    Tensor::zeros(param.shape(), DType::F32)?.to_device(device)?,
                    Tensor::zeros(param.shape(), DType::F32)?.to_device(device)?,
                ),
            },
        };
        // In place when the parameter's buffer is the model's alone (the
        // trainer drops its gradient leaves first); the moments always are.
        kaiyuan_tensor::adamw_step(param, grad, &mut m, &mut v, step)?;
        self.device_state.insert(name.to_string(), (m, v));
        Ok(())
    }

    /// One update of every parameter with learning rate `lr_scale · lr`
    /// (the schedule's factor). Parameters are f32 or f64 tensors; their
    /// gradients must match their shapes.
    pub fn step(&mut self, params: &mut [ParamRef<'_>], lr_scale: f64) -> Result<()> {
        self.config.validate()?;
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let lr = c.lr * lr_scale;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = (lr / bias1) as f32;
        let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
        let bias2_sqrt = bias2_sqrt as f32;
        for (name, param, grad) in params.iter_mut() {
            if param.device().is_cuda() {
                let decays = param.rank() >= 2;
                let step = kaiyuan_tensor::AdamWStep::new(
                    lr,
                    c.beta1,
                    c.beta2,
                    c.eps,
                    c.weight_decay,
                    t,
                    decays,
                );
                self.device_step(name, param, grad, step)?;
                continue;
            }
            let (mut p, g) = values(name, param, grad)?;
            let moments = self
                .state
                .entry(name.to_string())
                .or_insert_with(|| Moments {
                    m: vec![0.0; p.len()],
                    v: vec![0.0; p.len()],
                });
            if moments.m.len() != p.len() {
                return Err(TrainError::invalid(
                    *name,
                    format!(
                        "optimiser state has {} elements, the parameter {}",
                        moments.m.len(),
                        p.len()
                    ),
                ));
            }
            let decay = if param.rank() >= 2 {
                (1.0 - lr * c.weight_decay) as f32
            } else {
                1.0
            };
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(
                    moments
                        .m
                        .par_chunks_mut(CHUNK)
                        .zip(moments.v.par_chunks_mut(CHUNK)),
                )
                .for_each(|((p, g), (m, v))| {
                    for i in 0..p.len() {
                        p[i] *= decay;
                        // torch: exp_avg.lerp_(grad, 1 − β₁)
                        m[i] += (g[i] - m[i]) * (1.0 - b1);
                        v[i] = v[i] * b2 + (1.0 - b2) * g[i] * g[i];
                        let denom = v[i].sqrt() / bias2_sqrt + eps;
                        p[i] -= step_size * (m[i] / denom);
                    }
                });
            **param = rebuild(p, param)?;
        }
        Ok(())
    }
}

/// Settings of [`Sgd`] (PyTorch's `torch.optim.SGD` without dampening or Nesterov).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Momentum (0 for plain SGD).
    pub momentum: f64,
    /// L2 penalty added to the gradient (`g + wd·p`), not applied to
    /// parameters of rank < 2.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }
}

/// Stochastic gradient descent with momentum as `torch.optim.SGD`:
/// `b ← μ·b + g` (b = g on the first step), `p ← p − lr·b`.
#[derive(Clone, Debug)]
pub struct Sgd {
    config: SgdConfig,
    momentum: BTreeMap<String, Vec<f32>>,
}

impl Sgd {
    /// A fresh optimiser.
    pub fn new(config: SgdConfig) -> Self {
        Self {
            config,
            momentum: BTreeMap::new(),
        }
    }

    /// The momentum buffers by parameter name (for checkpoints).
    pub fn state(&self) -> &BTreeMap<String, Vec<f32>> {
        &self.momentum
    }

    /// Restores buffers saved from [`Sgd::state`].
    pub fn restore(&mut self, state: BTreeMap<String, Vec<f32>>) {
        self.momentum = state;
    }

    /// One update with learning rate `lr_scale · lr`.
    pub fn step(&mut self, params: &mut [ParamRef<'_>], lr_scale: f64) -> Result<()> {
        let c = self.config;
        if !(c.lr >= 0.0 && c.momentum >= 0.0 && c.weight_decay >= 0.0) {
            return Err(TrainError::invalid(
                "sgd",
                format!("negative setting in {c:?}"),
            ));
        }
        let lr = (c.lr * lr_scale) as f32;
        let mu = c.momentum as f32;
        for (name, param, grad) in params.iter_mut() {
            let (mut p, g) = values(name, param, grad)?;
            let wd = if param.rank() >= 2 {
                c.weight_decay as f32
            } else {
                0.0
            };
            let first = !self.momentum.contains_key(*name);
            let buf = self
                .momentum
                .entry(name.to_string())
                .or_insert_with(|| vec![0.0; p.len()]);
            if buf.len() != p.len() {
                return Err(TrainError::invalid(
                    *name,
                    "momentum buffer size differs from the parameter",
                ));
            }
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(buf.par_chunks_mut(CHUNK))
                .for_each(|((p, g), b)| {
                    for i in 0..p.len() {
                        let d = g[i] + wd * p[i];
                        let step = if mu == 0.0 {
                            d
                        } else {
                            b[i] = if first { d } else { mu * b[i] + d };
                            b[i]
                        };
                        p[i] -= lr * step;
                    }
                });
            **param = rebuild(p, param)?;
        }
        Ok(())
    }
}

/// The parameter and gradient as f32 vectors after checking they agree.
fn values(name: &str, param: &Tensor, grad: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    if param.shape() != grad.shape() {
        return Err(TrainError::invalid(
            name,
            format!(
                "gradient shape {:?} differs from the parameter's {:?}",
                grad.shape(),
                param.shape()
            ),
        ));
    }
    if !param.dtype().is_float() {
        return Err(TrainError::invalid(
            name,
            format!("cannot train a {} tensor", param.dtype()),
        ));
    }
    let p = param.cast(DType::F32)?.to_vec::<f32>()?;
    let g = grad.cast(DType::F32)?.to_vec::<f32>()?;
    Ok((p, g))
}

/// A tensor of the parameter's shape and dtype holding `values`.
fn rebuild(values: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, like.shape())?.cast(like.dtype())?)
}

/// Scales gradients so their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (coefficient `max_norm / (norm + 1e-6)`,
/// applied only when below 1). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [&mut Tensor], max_norm: f64) -> Result<f64> {
    let mut total = 0.0f64;
    // Gradients on a device are summed there in f32, and one number comes
    // back for all of them.
    let mut on_device: Option<Tensor> = None;
    for g in grads.iter() {
        if g.device().is_cuda() {
            let g = g.cast(DType::F32)?;
            let n = g.elem_count();
            let squares = g.mul(&g)?.reshape(&[n])?.sum(0, false)?;
            on_device = Some(match on_device {
                Some(sum) => sum.add(&squares)?,
                None => squares,
            });
            continue;
        }
        let v = g.cast(DType::F64)?.to_vec::<f64>()?;
        total += v.iter().map(|x| x * x).sum::<f64>();
    }
    if let Some(sum) = on_device {
        total += f64::from(sum.to_scalar::<f32>()?);
    }
    let norm = total.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            **g = g.affine(coef, 0.0)?;
        }
    }
    Ok(norm)
}

/// How the learning rate changes over training (transformers'
/// `get_*_schedule_with_warmup`): a linear warmup from 0 over
/// `warmup_steps`, then constant, linear decay to 0, or a half cosine to 0,
/// at step `total_steps`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// Warmup, then the peak rate.
    Constant {
        /// Steps of linear warmup.
        warmup_steps: u64,
    },
    /// Warmup, then linear decay to 0 at `total_steps`.
    Linear {
        /// Steps of linear warmup.
        warmup_steps: u64,
        /// Step at which the rate reaches 0.
        total_steps: u64,
    },
    /// Warmup, then a half cosine to 0 at `total_steps`.
    Cosine {
        /// Steps of linear warmup.
        warmup_steps: u64,
        /// Step at which the rate reaches 0.
        total_steps: u64,
    },
}

impl Schedule {
    /// The factor on the peak learning rate at `step` (0-based: the factor
    /// used by the optimiser's `step + 1`-th update, as a PyTorch
    /// `LambdaLR` before its first `scheduler.step()`).
    pub fn factor(&self, step: u64) -> f64 {
        let warm = |w: u64| (step < w).then(|| step as f64 / w.max(1) as f64);
        match *self {
            Schedule::Constant { warmup_steps } => warm(warmup_steps).unwrap_or(1.0),
            Schedule::Linear {
                warmup_steps,
                total_steps,
            } => warm(warmup_steps).unwrap_or_else(|| {
                let left = total_steps.saturating_sub(step) as f64;
                (left / total_steps.saturating_sub(warmup_steps).max(1) as f64).max(0.0)
            }),
            Schedule::Cosine {
                warmup_steps,
                total_steps,
            } => warm(warmup_steps).unwrap_or_else(|| {
                let progress = (step - warmup_steps) as f64
                    / total_steps.saturating_sub(warmup_steps).max(1) as f64;
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }),
        }
    }
}
