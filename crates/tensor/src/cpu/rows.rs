//! Kernels over the rows (last axis) of contiguous data: softmax,
//! log-softmax, RMSNorm and LayerNorm.
//!
//! Each row is reduced by one task in a fixed order (16 lane accumulators,
//! folded pairwise), so results never depend on the thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::float::Float;
use super::simd::{Kernel, dispatch};
use super::{PARALLEL_MIN_ELEMS, assume_init_mut, rows_per_task};

const LANES: usize = 16;

/// Sum of `values` with 16 independent accumulators, folded pairwise.
#[inline(always)]
pub(crate) fn lane_sum<F: Float>(values: &[F]) -> F {
    lane_fold(values, |v| v)
}

/// Σ f(v) with 16 independent accumulators, folded pairwise.
#[inline(always)]
fn lane_fold<F: Float>(values: &[F], f: impl Fn(F) -> F) -> F {
    let mut acc = [F::zero(); LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = *a + f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = *a + f(v);
    }
    fold_lanes(acc)
}

/// Adds 16 lane accumulators pairwise.
#[inline(always)]
fn fold_lanes<F: Float>(mut acc: [F; LANES]) -> F {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] = acc[i] + acc[i + width];
        }
    }
    acc[0]
}

/// Maximum of `values` (NaN if any is NaN); −∞ for an empty row.
#[inline(always)]
fn lane_max<F: Float>(values: &[F]) -> F {
    let mut acc = [F::neg_infinity(); LANES];
    let mut nan = false;
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = if v > *a { v } else { *a };
            nan |= v.is_nan();
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = if v > *a { v } else { *a };
        nan |= v.is_nan();
    }
    if nan {
        return F::nan();
    }
    acc.iter()
        .fold(F::neg_infinity(), |m, &v| if v > m { v } else { m })
}

/// A per-row kernel. `row` must be `#[inline(always)]`, so it is compiled
/// inside the instruction-set wrapper chosen by [`dispatch`].
/// `row` must write every element of `y`.
trait RowOp<F>: Sync + Copy {
    fn row(&self, x: &[F], y: &mut [MaybeUninit<F>]);
}

/// Runs `op` over rows of length `n` of `input` (a whole number of rows),
/// in parallel tasks of whole rows for large inputs, into a new vector.
fn map_rows<F: Float, R: RowOp<F>>(input: &[F], n: usize, op: R) -> Vec<F> {
    if n == 0 || input.is_empty() {
        return Vec::new();
    }
    debug_assert_eq!(input.len() % n, 0);
    struct Rows<'a, F, R> {
        input: &'a [F],
        output: &'a mut [MaybeUninit<F>],
        n: usize,
        op: R,
    }
    impl<F: Float, R: RowOp<F>> Kernel for Rows<'_, F, R> {
        type Output = ();
        #[inline(always)]
        fn run(self) {
            for (x, y) in self
                .input
                .chunks_exact(self.n)
                .zip(self.output.chunks_exact_mut(self.n))
            {
                self.op.row(x, y);
            }
        }
    }
    let task = rows_per_task(n) * n;
    let fill = |output: &mut [MaybeUninit<F>]| {
        if input.len() >= PARALLEL_MIN_ELEMS {
            input
                .par_chunks(task)
                .zip(output.par_chunks_mut(task))
                .for_each(|(input, output)| {
                    dispatch(Rows {
                        input,
                        output,
                        n,
                        op,
                    })
                });
        } else {
            dispatch(Rows {
                input,
                output,
                n,
                op,
            });
        }
    };
    // SAFETY: `input` is a whole number of rows, the output is cut into the
    // same rows, and every `RowOp::row` writes its whole row.
    unsafe { super::uninit_vec(input.len(), fill) }
}

#[derive(Clone, Copy)]
struct Softmax {
    log: bool,
}

impl<F: Float> RowOp<F> for Softmax {
    #[inline(always)]
    fn row(&self, x: &[F], y: &mut [MaybeUninit<F>]) {
        let max = lane_max(x);
        if !max.is_finite() {
            // A NaN or +∞ anywhere, or a row of −∞: exp(x − max) has a NaN,
            // and so has the whole row (as in PyTorch).
            for o in y.iter_mut() {
                o.write(F::nan());
            }
            return;
        }
        // Every x − max is ≤ 0 or −∞ now. exp into y, summed on the way in
        // the same 16 lanes `lane_sum` uses.
        let mut acc = [F::zero(); LANES];
        let mut ys = y.chunks_exact_mut(LANES);
        let mut xs = x.chunks_exact(LANES);
        for (yc, xc) in (&mut ys).zip(&mut xs) {
            let (Ok(yc), Ok(xc)) = (
                <&mut [MaybeUninit<F>; LANES]>::try_from(yc),
                <&[F; LANES]>::try_from(xc),
            ) else {
                continue; // chunks_exact yields exactly LANES elements
            };
            for l in 0..LANES {
                let e = (xc[l] - max).exp_nonpositive();
                yc[l].write(e);
                acc[l] = acc[l] + e;
            }
        }
        for ((o, &v), a) in ys
            .into_remainder()
            .iter_mut()
            .zip(xs.remainder())
            .zip(acc.iter_mut())
        {
            let e = (v - max).exp_nonpositive();
            o.write(e);
            *a = *a + e;
        }
        let sum = fold_lanes(acc);
        // SAFETY: the loops above wrote every element (`y` and `x` have one length).
        let y = unsafe { assume_init_mut(y) };
        if self.log {
            let log_sum = sum.ln();
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v - max - log_sum;
            }
        } else {
            let inv = F::one() / sum;
            for o in y.iter_mut() {
                *o = *o * inv;
            }
        }
    }
}

/// Softmax (or log-softmax) of each row of length `n`: `out = exp(x − max) / Σ`.
/// A row of −∞ gives NaN, as in PyTorch.
pub(crate) fn softmax_rows<F: Float>(input: &[F], n: usize, log: bool) -> Vec<F> {
    map_rows(input, n, Softmax { log })
}

#[derive(Clone, Copy)]
struct RmsNorm<'a, F> {
    weight: &'a [F],
    eps: F,
}

impl<F: Float> RowOp<F> for RmsNorm<'_, F> {
    #[inline(always)]
    fn row(&self, x: &[F], y: &mut [MaybeUninit<F>]) {
        let mean_square = lane_fold(x, |v| v * v) / F::of(x.len() as f64);
        let scale = F::one() / (mean_square + self.eps).sqrt();
        for ((o, &v), &w) in y.iter_mut().zip(x).zip(self.weight) {
            o.write(v * scale * w);
        }
    }
}

/// RMSNorm of each row: `out = x / sqrt(mean(x²) + eps) · weight`.
pub(crate) fn rms_norm_rows<F: Float>(input: &[F], weight: &[F], eps: F) -> Vec<F> {
    map_rows(input, weight.len(), RmsNorm { weight, eps })
}

#[derive(Clone, Copy)]
struct LayerNorm<'a, F> {
    weight: Option<&'a [F]>,
    bias: Option<&'a [F]>,
    eps: F,
}

impl<F: Float> RowOp<F> for LayerNorm<'_, F> {
    #[inline(always)]
    fn row(&self, x: &[F], y: &mut [MaybeUninit<F>]) {
        let count = F::of(x.len() as f64);
        let mean = lane_sum(x) / count;
        let var = lane_fold(x, |v| (v - mean) * (v - mean)) / count;
        let scale = F::one() / (var + self.eps).sqrt();
        for (o, &v) in y.iter_mut().zip(x) {
            o.write((v - mean) * scale);
        }
        // SAFETY: the loop above wrote every element.
        let y = unsafe { assume_init_mut(y) };
        if let Some(w) = self.weight {
            for (o, &w) in y.iter_mut().zip(w) {
                *o = *o * w;
            }
        }
        if let Some(b) = self.bias {
            for (o, &b) in y.iter_mut().zip(b) {
                *o = *o + b;
            }
        }
    }
}

/// LayerNorm of each row: `out = (x − mean) / sqrt(var + eps) · weight + bias`
/// with the biased variance; `weight`/`bias` of length `n` or absent.
pub(crate) fn layer_norm_rows<F: Float>(
    input: &[F],
    n: usize,
    weight: Option<&[F]>,
    bias: Option<&[F]>,
    eps: F,
) -> Vec<F> {
    map_rows(input, n, LayerNorm { weight, bias, eps })
}
