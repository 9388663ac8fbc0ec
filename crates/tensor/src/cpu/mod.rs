//! CPU kernels: strided copies, element-wise maps, row kernels and GEMM.
//!
//! Parallel work is cut into tasks of a fixed size that does not depend on the
//! number of threads, and every reduction sums in a fixed order inside a task,
//! so results are bit-identical for any `RAYON_NUM_THREADS`.

pub(crate) mod float;
pub mod gemm;
pub(crate) mod gemv;
pub(crate) mod rows;
pub(crate) mod simd;
pub(crate) mod spin;

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::layout::{Layout, RowOffsets};

/// Below this many elements an op runs on the calling thread.
pub(crate) const PARALLEL_MIN_ELEMS: usize = 1 << 15;
/// Elements per parallel task (rounded to whole rows).
pub(crate) const TASK_ELEMS: usize = 1 << 14;

/// How far ahead, in bytes, the decoding kernels (GEMVs that stream each
/// weight once) prefetch the weight bytes they will read. The hardware
/// prefetchers stop at 4 KiB page boundaries; on a 2-vCPU Emerald Rapids
/// guest, a SmolLM2 decode step's Q4_0 products ran 1.5–2× faster with
/// these hints (1,024 bytes gained less; 2,048 to 6,144 about the same).
pub(crate) const PREFETCH_AHEAD: usize = 3072;

/// Hints the CPU to bring the cache line holding `p` into L1. A prefetch
/// never faults, so `p` may point anywhere (past the end of a buffer too);
/// compute it with `wrapping_add`.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints the cache; it never faults or reads
    // memory architecturally, whatever the address. SSE is baseline on
    // x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] into L2 only (`prefetcht1`): the line does not hold one of
/// the core's few L1 fill buffers while it arrives, so more lines can be
/// in flight. The f32 GEMV streamed faster with it, at twice the distance,
/// in most alternating runs (`docs/performance.md`, session 29), and the
/// AVX-512 GEMV streams f16 rows faster with it too (session 30), as decode
/// attention does its KV rows; the AVX2 kernel's f16 rows and the quantized
/// kernels were no faster with it and keep [`prefetch`].
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as for `prefetch`.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Rows per task for rows of `row_len` elements, so a task holds about
/// [`TASK_ELEMS`] elements. Depends on the shape only, never on the thread count.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (TASK_ELEMS / row_len.max(1)).max(1)
}

/// Copies the elements of `layout` out of `src` in row-major order,
/// converting each with `convert`.
pub(crate) fn gather_map<T, U, F>(src: &[T], layout: &Layout, convert: F) -> Vec<U>
where
    T: Copy + Sync,
    U: Copy + Send + bytemuck::Zeroable,
    F: Fn(T) -> U + Sync,
{
    let count = layout.elem_count();
    if count == 0 {
        return Vec::new();
    }
    if layout.is_contiguous() {
        let dense = &src[layout.offset()..layout.offset() + count];
        return if count >= PARALLEL_MIN_ELEMS {
            dense.par_iter().map(|&v| convert(v)).collect()
        } else {
            dense.iter().map(|&v| convert(v)).collect()
        };
    }
    let (dims, strides) = layout.coalesced();
    let rank = dims.len();
    let row_len = dims[rank - 1];
    let inner_stride = strides[rank - 1];
    let outer_dims = &dims[..rank - 1];
    let outer_strides = &strides[..rank - 1];
    let mut out = vec![U::zeroed(); count];
    let fill = |chunk: &mut [U], first_row: usize| {
        let mut rows =
            RowOffsets::starting_at(outer_dims, outer_strides, layout.offset(), first_row);
        for dst_row in chunk.chunks_mut(row_len) {
            let start = rows.next_offset();
            if inner_stride == 1 {
                for (d, &s) in dst_row.iter_mut().zip(&src[start..start + row_len]) {
                    *d = convert(s);
                }
            } else {
                for (j, d) in dst_row.iter_mut().enumerate() {
                    *d = convert(src[start + j * inner_stride]);
                }
            }
        }
    };
    let task_rows = rows_per_task(row_len);
    if count >= PARALLEL_MIN_ELEMS {
        out.par_chunks_mut(task_rows * row_len)
            .enumerate()
            .for_each(|(task, chunk)| fill(chunk, task * task_rows));
    } else {
        fill(&mut out, 0);
    }
    out
}

/// A vector of `len` elements written by `fill`, without zeroing it first
/// (zeroing would cost a whole extra pass over memory for large outputs).
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn uninit_vec<T: Copy>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is `len`, and the caller guarantees that `fill`
    // initialised all `len` elements.
    unsafe { out.set_len(len) };
    out
}

/// Views a fully written slice of `MaybeUninit<T>` as `T`.
///
/// # Safety
/// Every element of `slice` must have been written.
#[inline(always)]
pub(crate) unsafe fn assume_init_mut<T>(slice: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, and the caller
    // guarantees every element is initialised.
    unsafe { &mut *(slice as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// Applies `f` to every element of `src` into a new vector, in parallel for
/// large inputs.
pub(crate) fn map<T, U, F>(src: &[T], f: F) -> Vec<U>
where
    T: Copy + Sync,
    U: Copy + Send,
    F: Fn(T) -> U + Sync + Send,
{
    let run = |out: &mut [MaybeUninit<U>], src: &[T]| {
        simd::with_simd(|| {
            for (o, &v) in out.iter_mut().zip(src) {
                o.write(f(v));
            }
        })
    };
    let fill = |out: &mut [MaybeUninit<U>]| {
        if src.len() >= PARALLEL_MIN_ELEMS {
            out.par_chunks_mut(TASK_ELEMS)
                .zip(src.par_chunks(TASK_ELEMS))
                .for_each(|(o, s)| run(o, s));
        } else {
            run(out, src);
        }
    };
    // SAFETY: `run` writes every element of every chunk, and the chunks of
    // `out` and `src` pair up one to one over the whole length.
    unsafe { uninit_vec(src.len(), fill) }
}

/// `src` widened to f32, in bulk: `half`'s slice conversion uses F16C eight
/// lanes at a time where the CPU has it (the same instruction its scalar
/// conversion uses, so the bits are the same), rather than a call per
/// element; chunks run in parallel for large inputs.
pub(crate) fn f16_to_f32(src: &[half::f16]) -> Vec<f32> {
    use half::slice::HalfFloatSliceExt;
    let mut out = vec![0.0f32; src.len()];
    if src.len() >= PARALLEL_MIN_ELEMS {
        out.par_chunks_mut(PARALLEL_MIN_ELEMS)
            .zip(src.par_chunks(PARALLEL_MIN_ELEMS))
            .for_each(|(o, s)| s.convert_to_f32_slice(o));
    } else {
        src.convert_to_f32_slice(&mut out);
    }
    out
}

/// `src` rounded to f16 (nearest, ties to even), in bulk (see
/// [`f16_to_f32`]).
pub(crate) fn f32_to_f16(src: &[f32]) -> Vec<half::f16> {
    use half::slice::HalfFloatSliceExt;
    let mut out = vec![half::f16::ZERO; src.len()];
    if src.len() >= PARALLEL_MIN_ELEMS {
        out.par_chunks_mut(PARALLEL_MIN_ELEMS)
            .zip(src.par_chunks(PARALLEL_MIN_ELEMS))
            .for_each(|(o, s)| o.convert_from_f32_slice(s));
    } else {
        out.convert_from_f32_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use half::f16;
    use proptest::prelude::*;

    /// Every f16 bit pattern widens to the bits of the per-element
    /// conversion (NaNs included), at a length that crosses the parallel
    /// chunking.
    #[test]
    fn bulk_widening_equals_per_element_for_every_half() {
        let all: Vec<f16> = (0..=u16::MAX)
            .chain(0..=u16::MAX)
            .map(f16::from_bits)
            .collect();
        let bulk = super::f16_to_f32(&all);
        for (h, w) in all.iter().zip(&bulk) {
            assert_eq!(w.to_bits(), h.to_f32().to_bits(), "{:#06x}", h.to_bits());
        }
    }

    proptest! {
        /// Bulk rounding to f16 equals the per-element rounding, bit for
        /// bit, for any f32 bits (subnormals, infinities, NaNs, ties).
        #[test]
        fn bulk_rounding_equals_per_element(bits in proptest::collection::vec(any::<u32>(), 0..40_000)) {
            let values: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            let bulk = super::f32_to_f16(&values);
            prop_assert_eq!(bulk.len(), values.len());
            for (v, h) in values.iter().zip(&bulk) {
                prop_assert_eq!(h.to_bits(), f16::from_f32(*v).to_bits(), "{}", v);
            }
        }
    }
}
