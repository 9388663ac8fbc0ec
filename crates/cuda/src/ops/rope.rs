//! Rotary position embedding, forward and backward: `kernels/rope.cu`.

use super::{THREADS, dim};
use crate::device::{Arg, Launch, check_len};
use crate::kernels::ROPE;
use crate::{CudaError, GpuBuffer, GpuDevice, GpuFloat, Result};

/// The f32 cos and sin tables, (positions, inv_freq.len()) row-major, for
/// the angles `position · inv_freq[k]` formed in f32 (as HF transformers and
/// the CPU backend do).
///
/// ```
/// let (cos, sin) = kaiyuan_cuda::ops::rope::angle_tables(&[1.0, 0.5], &[0, 2]);
/// assert_eq!(cos[..2], [1.0, 1.0]);
/// assert_eq!(sin[2], 2.0f32.sin());
/// assert_eq!(sin[3], 1.0f32.sin());
/// ```
pub fn angle_tables(inv_freq: &[f64], positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(positions.len() * inv_freq.len());
    let mut sin = Vec::with_capacity(positions.len() * inv_freq.len());
    for &position in positions {
        for &frequency in inv_freq {
            let (s, c) = (position as f32 * frequency as f32).sin_cos();
            cos.push(c);
            sin.push(s);
        }
    }
    (cos, sin)
}

/// Rotates the first `rotary_dim` features of each row of `x`
/// (outer, t, d) by the angles of `cos`/`sin` (t, rotary_dim/2) — backwards
/// when `inverse` (the gradient). `interleaved`: pairs (2i, 2i+1) instead of
/// (i, i + rotary_dim/2). Features past `rotary_dim` are copied.
#[allow(clippy::too_many_arguments)]
pub fn rope<T: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    (outer, t, d): (usize, usize, usize),
    rotary_dim: usize,
    interleaved: bool,
    (cos, sin): (&GpuBuffer<f32>, &GpuBuffer<f32>),
    inverse: bool,
    y: &mut GpuBuffer<T>,
) -> Result<()> {
    const OP: &str = "rotary";
    if !rotary_dim.is_multiple_of(2) || rotary_dim > d {
        return Err(CudaError::shape(
            OP,
            format!("rotary_dim {rotary_dim} must be even and at most the head dim {d}"),
        ));
    }
    let half = rotary_dim / 2;
    check_len(OP, "x", x, outer * t * d)?;
    check_len(OP, "y", y, outer * t * d)?;
    check_len(OP, "cos", cos, t * half)?;
    check_len(OP, "sin", sin, t * half)?;
    let items = outer * t * (half + d - rotary_dim);
    device.launch(
        &ROPE,
        &format!("rope_{}", T::SUFFIX),
        Launch::linear(items, THREADS),
        &mut [
            Arg::U64(outer as u64),
            Arg::I32(dim(OP, "T", t)?),
            Arg::I32(dim(OP, "D", d)?),
            Arg::I32(dim(OP, "rotary_dim", rotary_dim)?),
            Arg::I32(interleaved as i32),
            Arg::F32(if inverse { -1.0 } else { 1.0 }),
            x.arg(),
            cos.arg(),
            sin.arg(),
            y.arg_mut(),
        ],
    )
}
