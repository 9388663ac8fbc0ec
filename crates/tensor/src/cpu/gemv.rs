//! Matrix–vector products for decoding: a few activation rows (M ≤ 4)
//! times the transpose of a weight matrix stored row-major as (N, K), the
//! way linear layers keep it. Every output is one dot product over a
//! contiguous weight row, so the weight is streamed once, in place, with no
//! packing; f16 and bf16 weights are widened to f32 in registers.
//!
//! Each dot product sums with 16 lane accumulators folded pairwise, and a
//! task owns whole outputs, so results do not depend on the thread count.

use half::{bf16, f16};
use rayon::prelude::*;

use super::simd::{Kernel, dispatch};

/// Largest number of activation rows the kernel handles.
pub(crate) const GEMV_MAX_ROWS: usize = 4;

const LANES: usize = 16;

/// A weight element widened to f32 in a way the compiler vectorises.
pub(crate) trait WeightElem: Copy + Send + Sync {
    /// The value as f32.
    fn widen(self) -> f32;
}

impl WeightElem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl WeightElem for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

impl WeightElem for f16 {
    /// Branch-free IEEE half → single: the exponent is rebased by a
    /// multiplication (exact, subnormals included), infinities and NaNs by a
    /// select.
    #[inline(always)]
    fn widen(self) -> f32 {
        let h = u32::from(self.to_bits());
        let sign = (h & 0x8000) << 16;
        let magnitude = h & 0x7fff;
        let scaled = f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000); // 2^112
        let special = f32::from_bits((magnitude << 13) | 0x7f80_0000);
        let value = if magnitude >= 0x7c00 { special } else { scaled };
        f32::from_bits(value.to_bits() | sign)
    }
}

/// `out[i·n + j] = Σ_p a[i·k + p] · w[j·k + p]` for `i < m ≤ 4`, `j < n`.
pub(crate) fn gemv<W: WeightElem>(a: &[f32], m: usize, k: usize, w: &[W], n: usize) -> Vec<f32> {
    debug_assert!(m <= GEMV_MAX_ROWS && a.len() >= m * k && w.len() >= n * k);
    // Outputs are computed column-block by column-block; each task covers
    // about 16k weight elements.
    let cols_per_task = (super::TASK_ELEMS / k.max(1)).max(1);
    let mut by_col = vec![0.0f32; n * m];
    by_col
        .par_chunks_mut(cols_per_task * m)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * cols_per_task;
            let cols = out.len() / m;
            dispatch(GemvKernel {
                a,
                m,
                k,
                w: &w[first * k..(first + cols) * k],
                out,
            });
        });
    // (n, m) → (m, n).
    let mut out = vec![0.0f32; m * n];
    for (j, col) in by_col.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
    out
}

struct GemvKernel<'a, W> {
    a: &'a [f32],
    m: usize,
    k: usize,
    w: &'a [W],
    /// (cols, m) outputs.
    out: &'a mut [f32],
}

impl<W: WeightElem> Kernel for GemvKernel<'_, W> {
    type Output = ();

    #[inline(always)]
    fn run(self) -> Self::Output {
        match self.m {
            1 => columns::<W, 1>(self.a, self.k, self.w, self.out),
            2 => columns::<W, 2>(self.a, self.k, self.w, self.out),
            3 => columns::<W, 3>(self.a, self.k, self.w, self.out),
            _ => columns::<W, 4>(self.a, self.k, self.w, self.out),
        }
    }
}

#[inline(always)]
fn columns<W: WeightElem, const M: usize>(a: &[f32], k: usize, w: &[W], out: &mut [f32]) {
    for (row, dst) in w.chunks_exact(k).zip(out.chunks_exact_mut(M)) {
        let mut acc = [[0.0f32; LANES]; M];
        let mut w_chunks = row.chunks_exact(LANES);
        let mut p = 0;
        for chunk in &mut w_chunks {
            let mut wide = [0.0f32; LANES];
            for (x, &v) in wide.iter_mut().zip(chunk) {
                *x = v.widen();
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let a_chunk = &a[i * k + p..i * k + p + LANES];
                for ((s, &x), &y) in acc_i.iter_mut().zip(&wide).zip(a_chunk) {
                    *s += x * y;
                }
            }
            p += LANES;
        }
        let tail = w_chunks.remainder();
        for (i, acc_i) in acc.iter_mut().enumerate() {
            for (l, &v) in tail.iter().enumerate() {
                acc_i[l] += v.widen() * a[i * k + p + l];
            }
        }
        for (d, acc_i) in dst.iter_mut().zip(acc) {
            *d = fold(acc_i);
        }
    }
}

#[inline(always)]
fn fold(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0]
}
