//! Fused AdamW over f32 master weights: `kernels/adamw.cu`.

use super::THREADS;
use crate::device::{Arg, Launch, check_len};
use crate::kernels::ADAMW;
use crate::{GpuBuffer, GpuDevice, GpuFloat, Result};

/// The scalars of one AdamW step, as the trainer's CPU optimiser forms them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bias2_sqrt: f32,
    /// `1 − lr·weight_decay`, or 1 for parameters without decay.
    pub decay: f32,
}

impl AdamWStep {
    /// The scalars of step `t` (1-based) with learning rate `lr`.
    ///
    /// ```
    /// let step = kaiyuan_cuda::ops::adamw::AdamWStep::new(1e-3, 0.9, 0.999, 1e-8, 0.1, 1, true);
    /// assert!((step.step_size - 1e-2).abs() < 1e-7);
    /// assert!((step.decay - (1.0 - 1e-4)).abs() < 1e-7);
    /// ```
    pub fn new(
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        t: i32,
        decays: bool,
    ) -> Self {
        Self {
            step_size: (lr / (1.0 - beta1.powi(t))) as f32,
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: eps as f32,
            bias2_sqrt: (1.0 - beta2.powi(t)).sqrt() as f32,
            decay: if decays {
                (1.0 - lr * weight_decay) as f32
            } else {
                1.0
            },
        }
    }
}

/// One AdamW update of `params` (n) f32 with gradients `grads` (n) in `G`
/// and moments `m`, `v` (n) f32, all in place. `copy` (n), when given,
/// receives the updated parameters rounded to `G` (mixed precision).
pub fn adamw<G: GpuFloat>(
    device: &GpuDevice,
    params: &mut GpuBuffer<f32>,
    grads: &GpuBuffer<G>,
    (m, v): (&mut GpuBuffer<f32>, &mut GpuBuffer<f32>),
    step: AdamWStep,
    copy: Option<&mut GpuBuffer<G>>,
) -> Result<()> {
    const OP: &str = "adamw";
    let n = params.len();
    check_len(OP, "grads", grads, n)?;
    check_len(OP, "m", m, n)?;
    check_len(OP, "v", v, n)?;
    let mut placeholder;
    let (write_copy, copy) = match copy {
        Some(copy) => {
            check_len(OP, "copy", copy, n)?;
            (1, copy)
        }
        None => {
            // Never written (the flag is 0); a one-element buffer stands in.
            placeholder = device.zeros::<G>(1)?;
            (0, &mut placeholder)
        }
    };
    device.launch(
        &ADAMW,
        &format!("adamw_{}", G::SUFFIX),
        Launch::linear(n, THREADS),
        &mut [
            Arg::U64(n as u64),
            params.arg_mut(),
            grads.arg(),
            m.arg_mut(),
            v.arg_mut(),
            Arg::F32(step.step_size),
            Arg::F32(step.beta1),
            Arg::F32(step.beta2),
            Arg::F32(step.eps),
            Arg::F32(step.bias2_sqrt),
            Arg::F32(step.decay),
            Arg::I32(write_copy),
            copy.arg_mut(),
        ],
    )
}
