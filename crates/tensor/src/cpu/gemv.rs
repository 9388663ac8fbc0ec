//! Matrix–vector products for decoding: a few activation rows (M ≤ 4)
//! times the transpose of a weight matrix stored row-major as (N, K), the
//! way linear layers keep it. Every output is one dot product over a
//! contiguous weight row, so the weight is streamed once, in place, with no
//! packing; f16 and bf16 weights are widened to f32 in registers.
//!
//! Each dot product sums with 16 lane accumulators folded pairwise, and a
//! task owns whole outputs, so results do not depend on the thread count
//! (nor on how the outputs are split into tasks).

use half::{bf16, f16};

use super::simd::{Kernel, dispatch};
use super::spin::{SharedOut, columns_to_rows};

/// Largest number of activation rows the kernel handles.
pub(crate) const GEMV_MAX_ROWS: usize = 4;

const LANES: usize = 16;

/// `$call` with the const `$rows` bound to the activation row count `$m`
/// (1 to 4; more run as 4), so each count gets its own unrolled kernel.
macro_rules! by_rows {
    ($m:expr, |$rows:ident| $call:expr) => {
        match $m {
            1 => {
                const $rows: usize = 1;
                $call
            }
            2 => {
                const $rows: usize = 2;
                $call
            }
            3 => {
                const $rows: usize = 3;
                $call
            }
            _ => {
                const $rows: usize = 4;
                $call
            }
        }
    };
}

/// `WeightElem::columns_x86` for element types the x86 kernels read
/// (`x86::Load8`): the hand-written kernel when the CPU has AVX2, FMA and
/// F16C.
macro_rules! columns_x86_impl {
    () => {
        fn columns_x86(a: &[f32], m: usize, k: usize, w: &[Self], out: &mut [f32]) -> bool {
            #[cfg(target_arch = "x86_64")]
            {
                if x86::available_avx512() {
                    // SAFETY: `available_avx512` checked AVX-512F, AVX2, FMA
                    // and F16C on this CPU.
                    unsafe { x86::columns_avx512_any_m(a, m, k, w, out) };
                    return true;
                }
                if x86::available() {
                    // SAFETY: `available` checked AVX2, FMA and F16C on this CPU.
                    unsafe { x86::columns_any_m(a, m, k, w, out) };
                    return true;
                }
            }
            let _ = (a, m, k, w, out);
            false
        }
    };
}

/// A weight element widened to f32 in a way the compiler vectorises.
pub(crate) trait WeightElem: Copy + Send + Sync {
    /// The value as f32.
    fn widen(self) -> f32;

    /// Runs the columns with hand-written x86 kernels (AVX2 + FMA, F16C for
    /// f16) when this CPU has them; `false` when it does not (or for bf16),
    /// and the portable kernel runs instead.
    fn columns_x86(a: &[f32], m: usize, k: usize, w: &[Self], out: &mut [f32]) -> bool {
        let _ = (a, m, k, w, out);
        false
    }
}

impl WeightElem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    columns_x86_impl!();
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

    columns_x86_impl!();
}

/// For each weight `(w, n)`: `out[i·n + j] = Σ_p a[i·k + p] · w[j·k + p]`
/// for `i < m ≤ 4`, `j < n`. Several weights (a layer's query, key and
/// value projections, say) run as one job of the spinning pool, the same
/// outputs bit for bit as one at a time, with one hand-off to the workers
/// instead of one per matrix (the key and value matrices of a GQA model are
/// too small to keep two threads busy on their own).
pub(crate) fn gemv_many<W: WeightElem>(
    a: &[f32],
    m: usize,
    k: usize,
    weights: &[(&[W], usize)],
) -> Vec<Vec<f32>> {
    debug_assert!(m <= GEMV_MAX_ROWS && a.len() >= m * k);
    debug_assert!(weights.iter().all(|(w, n)| w.len() >= n * k));
    // Every output is one whole dot product, so how the columns are cut
    // into pieces, and which thread runs a piece, cannot change any result.
    // A few pieces per thread, no smaller than 64k weight elements, run on
    // the spinning workers of `spin` (parking and waking rayon workers
    // between the short products of a decode step costs as much as them).
    // Pieces never straddle two matrices.
    let total: usize = weights.iter().map(|&(_, n)| n).sum();
    let pieces_wanted = 4 * rayon::current_num_threads();
    let cols_per_piece = total
        .div_ceil(pieces_wanted)
        .max((1 << 16) / k.max(1))
        .max(1);
    let mut pieces: Vec<(usize, usize, usize)> = Vec::new(); // (matrix, first column, columns)
    for (matrix, &(_, n)) in weights.iter().enumerate() {
        let mut first = 0;
        while first < n {
            let cols = cols_per_piece.min(n - first);
            pieces.push((matrix, first, cols));
            first += cols;
        }
    }
    let mut by_col: Vec<Vec<f32>> = weights.iter().map(|&(_, n)| vec![0.0f32; n * m]).collect();
    let outs: Vec<SharedOut> = by_col
        .iter_mut()
        .map(|o| SharedOut(o.as_mut_ptr()))
        .collect();
    super::spin::run(pieces.len(), &|piece| {
        let (matrix, first, cols) = pieces[piece];
        // SAFETY: piece `piece` alone writes outputs `first·m .. (first +
        // cols)·m` of matrix `matrix`'s buffer (first + cols ≤ its n), which
        // outlives `run`; pieces never overlap.
        let out =
            unsafe { std::slice::from_raw_parts_mut(outs[matrix].get().add(first * m), cols * m) };
        let w = &weights[matrix].0[first * k..(first + cols) * k];
        if !W::columns_x86(a, m, k, w, out) {
            dispatch(GemvKernel { a, m, k, w, out });
        }
    });
    by_col
        .into_iter()
        .zip(weights)
        .map(|(out, &(_, n))| columns_to_rows(out, m, n))
        .collect()
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
        by_rows!(self.m, |M| columns::<W, M>(
            self.a, self.k, self.w, self.out
        ))
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

/// AVX2 + FMA kernels (F16C widens f16 weights), 8 lanes × 2 accumulators
/// per activation row, and AVX-512 ones, 16 lanes × 2 accumulators, which
/// CPUs with AVX-512F run instead. They fuse multiply and add, so they round
/// differently from the portable kernel (and from each other); each is
/// still deterministic.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    use half::f16;

    use crate::cpu::{PREFETCH_AHEAD, prefetch, prefetch_l2};

    /// Whether this CPU has AVX2, FMA and F16C (checked once).
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        })
    }

    /// Whether this CPU also has AVX-512F (checked once).
    pub(super) fn available_avx512() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| available() && std::arch::is_x86_feature_detected!("avx512f"))
    }

    /// Sixteen weights widened to f32.
    pub(super) trait Load16: Load8 {
        /// Loads `w[p..p + 16]`.
        ///
        /// # Safety
        /// `p + 16 <= w.len()` and the CPU has AVX-512F (and F16C).
        unsafe fn load16(w: &[Self], p: usize) -> __m512;
    }

    impl Load16 for f32 {
        #[inline(always)]
        unsafe fn load16(w: &[Self], p: usize) -> __m512 {
            // SAFETY: the caller guarantees `p + 16 <= w.len()`.
            unsafe { _mm512_loadu_ps(w.as_ptr().add(p)) }
        }
    }

    impl Load16 for f16 {
        #[inline(always)]
        unsafe fn load16(w: &[Self], p: usize) -> __m512 {
            // SAFETY: the caller guarantees `p + 16 <= w.len()` (16 halves
            // = 32 bytes) and AVX-512F, whose conversion this is.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(w.as_ptr().add(p).cast::<__m256i>())) }
        }
    }

    /// Eight weights widened to f32.
    pub(super) trait Load8: Copy {
        /// Whether the kernel prefetches rows of this type into L2
        /// ([`prefetch_l2`], twice as far ahead) rather than into L1.
        const PREFETCH_TO_L2: bool;

        /// Loads `w[p..p + 8]`.
        ///
        /// # Safety
        /// `p + 8 <= w.len()` and the CPU has AVX2 and F16C.
        unsafe fn load8(w: &[Self], p: usize) -> __m256;
    }

    impl Load8 for f32 {
        const PREFETCH_TO_L2: bool = true;

        #[inline(always)]
        unsafe fn load8(w: &[Self], p: usize) -> __m256 {
            // SAFETY: the caller guarantees `p + 8 <= w.len()`.
            unsafe { _mm256_loadu_ps(w.as_ptr().add(p)) }
        }
    }

    impl Load8 for f16 {
        const PREFETCH_TO_L2: bool = false;

        #[inline(always)]
        unsafe fn load8(w: &[Self], p: usize) -> __m256 {
            // SAFETY: the caller guarantees `p + 8 <= w.len()` (8 halves =
            // 16 bytes) and F16C.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(p).cast::<__m128i>())) }
        }
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `a.len() >= m·k`, `w.len()` is a
    /// multiple of `k` and `out.len() == m · w.len() / k`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn columns_any_m<W: Load8 + super::WeightElem>(
        a: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        out: &mut [f32],
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { by_rows!(m, |M| columns::<W, M>(a, k, w, out)) }
    }

    /// As [`columns_any_m`], 16 lanes wide.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX2, FMA and F16C; `a.len() >= m·k`,
    /// `w.len()` is a multiple of `k` and `out.len() == m · w.len() / k`.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn columns_avx512_any_m<W: Load16 + super::WeightElem>(
        a: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        out: &mut [f32],
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { by_rows!(m, |M| columns_avx512::<W, M>(a, k, w, out)) }
    }

    /// 32 weights a step in two 16-lane accumulators per activation row.
    /// Every weight line is prefetched into L2, `2 · PREFETCH_AHEAD` bytes
    /// ahead: with 512-bit loads that streams f16 rows 15–20% faster than
    /// the AVX2 kernel's L1 hints on the development machine (and f32
    /// rows no slower); see `docs/performance.md`.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn columns_avx512<W: Load16 + super::WeightElem, const M: usize>(
        a: &[f32],
        k: usize,
        w: &[W],
        out: &mut [f32],
    ) {
        debug_assert!(a.len() >= M * k);
        let full = k - k % 32;
        let step_bytes = 32 * std::mem::size_of::<W>();
        for (row, dst) in w.chunks_exact(k).zip(out.chunks_exact_mut(M)) {
            let mut acc0 = [_mm512_setzero_ps(); M];
            let mut acc1 = [_mm512_setzero_ps(); M];
            let base = row.as_ptr().cast::<u8>();
            let mut p = 0;
            while p < full {
                let at = p * std::mem::size_of::<W>();
                let mut line = 0;
                while line < step_bytes {
                    prefetch_l2(base.wrapping_add(2 * PREFETCH_AHEAD + at + line));
                    line += 64;
                }
                // SAFETY: p + 32 <= full <= k = row.len(), and for every
                // i < M, i·k + p + 32 <= M·k <= a.len().
                unsafe {
                    let w0 = W::load16(row, p);
                    let w1 = W::load16(row, p + 16);
                    for i in 0..M {
                        let x = a.as_ptr().add(i * k + p);
                        acc0[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x), acc0[i]);
                        acc1[i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x.add(16)), acc1[i]);
                    }
                }
                p += 32;
            }
            for (i, d) in dst.iter_mut().enumerate() {
                let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
                for q in p..k {
                    sum += row[q].widen() * a[i * k + q];
                }
                *d = sum;
            }
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: AVX is enabled by the calling function's target features.
        unsafe {
            let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
            let one = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
            _mm_cvtss_f32(one)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn columns<W: Load8 + super::WeightElem, const M: usize>(
        a: &[f32],
        k: usize,
        w: &[W],
        out: &mut [f32],
    ) {
        debug_assert!(a.len() >= M * k);
        let full = k - k % 16;
        for (row, dst) in w.chunks_exact(k).zip(out.chunks_exact_mut(M)) {
            let mut acc0 = [_mm256_setzero_ps(); M];
            let mut acc1 = [_mm256_setzero_ps(); M];
            let mut p = 0;
            // The weight rows are contiguous: a line PREFETCH_AHEAD bytes
            // on (f32: twice that, into L2) per 16 elements (64 bytes of
            // f32, 32 of f16).
            let base = row.as_ptr().cast::<u8>();
            while p < full {
                let at = p * std::mem::size_of::<W>();
                if W::PREFETCH_TO_L2 {
                    prefetch_l2(base.wrapping_add(2 * PREFETCH_AHEAD + at));
                } else {
                    prefetch(base.wrapping_add(PREFETCH_AHEAD + at));
                }
                // SAFETY: p + 16 <= full <= k = row.len(), and for every
                // i < M, i·k + p + 16 <= M·k <= a.len().
                unsafe {
                    let w0 = W::load8(row, p);
                    let w1 = W::load8(row, p + 8);
                    for i in 0..M {
                        let x = a.as_ptr().add(i * k + p);
                        acc0[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), acc0[i]);
                        acc1[i] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x.add(8)), acc1[i]);
                    }
                }
                p += 16;
            }
            for (i, d) in dst.iter_mut().enumerate() {
                // SAFETY: AVX is enabled by this function's target features.
                let mut sum = unsafe { hsum(_mm256_add_ps(acc0[i], acc1[i])) };
                for q in p..k {
                    sum += row[q].widen() * a[i * k + q];
                }
                *d = sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference<W: WeightElem>(a: &[f32], m: usize, k: usize, w: &[W], n: usize) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(w[j * k + p].widen()))
                    .sum();
            }
        }
        out
    }

    fn portable<W: WeightElem>(a: &[f32], m: usize, k: usize, w: &[W], n: usize) -> Vec<f32> {
        let mut by_col = vec![0.0f32; n * m];
        dispatch(GemvKernel {
            a,
            m,
            k,
            w,
            out: &mut by_col,
        });
        let mut out = vec![0.0f32; m * n];
        for (j, col) in by_col.chunks_exact(m).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * n + j] = v;
            }
        }
        out
    }

    /// Each hand-written x86 kernel this CPU can run, by name, with its
    /// outputs as (m, n) rows.
    #[cfg(target_arch = "x86_64")]
    fn x86_kernels<W: x86::Load16 + WeightElem>(
        a: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        n: usize,
    ) -> Vec<(&'static str, Vec<f32>)> {
        let mut runs = Vec::new();
        let mut by_col = vec![0.0f32; n * m];
        if x86::available() {
            // SAFETY: `available` checked AVX2, FMA and F16C; the buffers
            // have the sizes the kernel needs.
            unsafe { x86::columns_any_m(a, m, k, w, &mut by_col) };
            runs.push(("avx2", columns_to_rows(by_col.clone(), m, n)));
        }
        if x86::available_avx512() {
            // SAFETY: as above, and `available_avx512` checked AVX-512F.
            unsafe { x86::columns_avx512_any_m(a, m, k, w, &mut by_col) };
            runs.push(("avx512", columns_to_rows(by_col, m, n)));
        } else {
            eprintln!("SKIPPED: the AVX-512 GEMV kernel (this CPU has no AVX-512F)");
        }
        runs
    }

    /// Both x86 kernels (AVX2, and AVX-512 where this CPU has it) agree
    /// with an f64 reference for every row count and lengths around their
    /// 16- and 32-element steps, for f32 and f16 weights.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_kernels_match_reference() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 31, 3),
            (2, 32, 5),
            (3, 33, 7),
            (4, 47, 9),
            (4, 64, 2),
            (1, 576, 40),
            (4, 1000, 3),
        ] {
            let a = values(m * k, 3 + k as u64);
            let w32 = values(n * k, 11 + n as u64);
            let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            let tol = |r: f64| 1e-5 * k as f64 + 1e-5 * r.abs();
            let want32 = reference(&a, m, k, &w32, n);
            let want16 = reference(&a, m, k, &w16, n);
            for (name, got) in x86_kernels(&a, m, k, &w32, n) {
                for (g, r) in got.iter().zip(&want32) {
                    assert!(
                        (f64::from(*g) - r).abs() <= tol(*r),
                        "{name} f32 m={m} k={k} n={n}: {g} vs {r}"
                    );
                }
            }
            for (name, got) in x86_kernels(&a, m, k, &w16, n) {
                for (g, r) in got.iter().zip(&want16) {
                    assert!(
                        (f64::from(*g) - r).abs() <= tol(*r),
                        "{name} f16 m={m} k={k} n={n}: {g} vs {r}"
                    );
                }
            }
        }
    }

    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut z = seed;
        (0..count)
            .map(|_| {
                z = z
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Both kernels (the x86 one where this CPU has it, and the portable one
    /// that other CPUs run) agree with an f64 reference for every row count
    /// and lengths around the 8/16-lane widths.
    #[test]
    fn kernels_match_reference() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 15, 3),
            (2, 16, 5),
            (3, 17, 7),
            (4, 33, 9),
            (4, 576, 40),
            (1, 1000, 3),
        ] {
            let a = values(m * k, 1 + k as u64);
            let w32 = values(n * k, 7 + n as u64);
            let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            let wb: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
            let tol = |r: f64| 1e-5 * k as f64 + 1e-5 * r.abs();
            let check = |got: &[f32], want: &[f64], what: &str| {
                for (g, r) in got.iter().zip(want) {
                    assert!(
                        (f64::from(*g) - r).abs() <= tol(*r),
                        "{what} m={m} k={k} n={n}: {g} vs {r}"
                    );
                }
            };
            check(
                &gemv_many(&a, m, k, &[(&w32[..], n)])[0],
                &reference(&a, m, k, &w32, n),
                "f32",
            );
            check(
                &portable(&a, m, k, &w32, n),
                &reference(&a, m, k, &w32, n),
                "f32 portable",
            );
            check(
                &gemv_many(&a, m, k, &[(&w16[..], n)])[0],
                &reference(&a, m, k, &w16, n),
                "f16",
            );
            check(
                &portable(&a, m, k, &w16, n),
                &reference(&a, m, k, &w16, n),
                "f16 portable",
            );
            check(
                &gemv_many(&a, m, k, &[(&wb[..], n)])[0],
                &reference(&a, m, k, &wb, n),
                "bf16",
            );
        }
    }

    /// The branch-free f16 widening equals `half`'s conversion for all
    /// 65 536 bit patterns (NaNs compared as NaN).
    #[test]
    fn f16_widening_is_exact() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (got, want) = (h.widen(), h.to_f32());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }
}
