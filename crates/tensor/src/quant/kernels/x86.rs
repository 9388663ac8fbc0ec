//! x86-64 kernels: eight blocks at a time, their exact integer dot
//! products reduced into one vector of eight i32 (one per lane of the
//! module's fixed accumulation), then the float update of the module docs
//! on eight lanes at once. AVX2 multiplies bytes with `vpmaddubsw` +
//! `vpmaddwd`, AVX-512 VNNI with `vpdpbusd`; both are exact, so both match
//! the portable kernels bit for bit.

use std::arch::x86_64::*;

use super::{Kind, QuantActs, WRow, WeightView, X8, XRow, fold8, scales_mins_k4};
use crate::cpu::{PREFETCH_AHEAD, prefetch};

/// An instruction set's byte dot product.
trait Dot {
    /// Eight i32 partial sums of `w · x` over groups of four bytes, exact
    /// when every `w` (unsigned) is ≤ 128 and every `|x|` ≤ 127.
    ///
    /// # Safety
    /// The CPU has the instruction set of `Self`.
    unsafe fn dot(w: __m256i, x: __m256i) -> __m256i;
    /// As [`Dot::dot`], exact for any unsigned `w`.
    ///
    /// # Safety
    /// As [`Dot::dot`].
    unsafe fn dot_full(w: __m256i, x: __m256i) -> __m256i;
    /// `acc` plus [`Dot::dot`] (one instruction on VNNI).
    ///
    /// # Safety
    /// As [`Dot::dot`].
    #[inline(always)]
    unsafe fn dot_add(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: forwarded from this function's contract.
        unsafe { _mm256_add_epi32(acc, Self::dot(w, x)) }
    }
    /// `acc` plus [`Dot::dot_full`] (one instruction on VNNI).
    ///
    /// # Safety
    /// As [`Dot::dot`].
    #[inline(always)]
    unsafe fn dot_full_add(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: forwarded from this function's contract.
        unsafe { _mm256_add_epi32(acc, Self::dot_full(w, x)) }
    }
}

struct Avx2;
struct Vnni;

impl Dot for Avx2 {
    #[inline(always)]
    unsafe fn dot(w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: the caller guarantees AVX2. Pairs of products are at most
        // 2·128·127 < 2^15, so `vpmaddubsw` does not saturate.
        unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)) }
    }

    #[inline(always)]
    unsafe fn dot_full(w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: the caller guarantees AVX2; w = 16·hi + lo with both
        // nibbles ≤ 15, each dotted exactly.
        unsafe {
            let m4 = _mm256_set1_epi8(0x0F);
            let lo = Self::dot(_mm256_and_si256(w, m4), x);
            let hi = Self::dot(_mm256_and_si256(_mm256_srli_epi16(w, 4), m4), x);
            _mm256_add_epi32(lo, _mm256_slli_epi32(hi, 4))
        }
    }
}

impl Dot for Vnni {
    #[inline(always)]
    unsafe fn dot(w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: the caller guarantees AVX-512F/VL and VNNI.
        unsafe { dpbusd(w, x) }
    }

    #[inline(always)]
    unsafe fn dot_full(w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: as `dot`, which is exact for any u8.
        unsafe { Self::dot(w, x) }
    }

    #[inline(always)]
    unsafe fn dot_add(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: the caller guarantees AVX-512F/VL and VNNI.
        unsafe { dpbusd_add(acc, w, x) }
    }

    #[inline(always)]
    unsafe fn dot_full_add(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: as `dot_add`, which is exact for any u8.
        unsafe { dpbusd_add(acc, w, x) }
    }
}

/// `vpdpbusd` from zero: eight sums of four u8·i8 products, in i32 without
/// saturation. Inline assembly (equivalent to `_mm256_dpbusd_epi32`, which
/// was not yet stable when this kernel was written).
///
/// # Safety
/// The CPU has AVX-512F, AVX-512VL and AVX-512 VNNI.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn dpbusd(w: __m256i, x: __m256i) -> __m256i {
    // SAFETY: forwarded from this function's contract.
    unsafe { dpbusd_add(_mm256_setzero_si256(), w, x) }
}

/// `vpdpbusd` into `acc`: adds eight sums of four u8·i8 products, in i32
/// without saturation.
///
/// # Safety
/// As [`dpbusd`].
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn dpbusd_add(mut acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    // SAFETY: the instruction exists on this CPU (see above); it reads and
    // writes only the three registers.
    unsafe {
        std::arch::asm!(
            "vpdpbusd {acc}, {w}, {x}",
            acc = inout(ymm_reg) acc,
            w = in(ymm_reg) w,
            x = in(ymm_reg) x,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// One output on AVX2.
///
/// # Safety
/// The CPU has AVX2 and F16C; `w` and `x` hold whole rows of `kind` with
/// consistent lengths (checked by `rows_chunk`).
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn row_avx2(kind: Kind, w: WRow<'_>, x: XRow<'_>) -> f32 {
    // SAFETY: forwarded from this function's contract.
    unsafe { row::<Avx2>(kind, w, x) }
}

/// One output on AVX-512 VNNI.
///
/// # Safety
/// The CPU has AVX2, F16C, AVX-512F, AVX-512VL and AVX-512 VNNI; sizes as
/// for [`row_avx2`].
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512vnni")]
pub(super) unsafe fn row_vnni(kind: Kind, w: WRow<'_>, x: XRow<'_>) -> f32 {
    // SAFETY: forwarded from this function's contract.
    unsafe { row::<Vnni>(kind, w, x) }
}

/// Outputs `out[j] = row(first + j) · x` of consecutive weight rows on
/// AVX2, the loop inside the kernel's instruction sets (one call per chunk
/// of rows rather than per row).
///
/// # Safety
/// As [`row_avx2`], for rows `first..first + out.len()` of `w`.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn rows_avx2(
    kind: Kind,
    w: &WeightView<'_>,
    first: usize,
    x: XRow<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { rows::<Avx2>(kind, w, first, x, out) }
}

/// [`rows_avx2`] on AVX-512 VNNI.
///
/// # Safety
/// As [`row_vnni`], for rows `first..first + out.len()` of `w`.
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512vnni")]
pub(super) unsafe fn rows_vnni(
    kind: Kind,
    w: &WeightView<'_>,
    first: usize,
    x: XRow<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { rows::<Vnni>(kind, w, first, x, out) }
}

/// The row loop with the format chosen once.
#[inline(always)]
unsafe fn rows<D: Dot>(kind: Kind, w: &WeightView<'_>, first: usize, x: XRow<'_>, out: &mut [f32]) {
    /// The rows in order, each after a prefetch of the bytes
    /// PREFETCH_AHEAD on from it (the rows are contiguous).
    #[inline(always)]
    fn each(out: &mut [f32], w: &WeightView<'_>, first: usize, mut dot: impl FnMut(usize) -> f32) {
        let base = w.bytes.as_ptr().wrapping_add(PREFETCH_AHEAD);
        for (j, o) in out.iter_mut().enumerate() {
            let r = first + j;
            for line in (0..w.row_bytes).step_by(64) {
                prefetch(base.wrapping_add(r * w.row_bytes + line));
            }
            *o = dot(r);
        }
    }
    // SAFETY: (all arms) forwarded from the callers' contracts.
    unsafe {
        match kind {
            Kind::Q8_0 => each(out, w, first, |r| blocks32::<D, 0>(w.row(r), x)),
            Kind::Q4_0 => each(out, w, first, |r| blocks32::<D, 1>(w.row(r), x)),
            // Interleaved groups run through `x8_rows` (see `rows_chunk`).
            Kind::Q4_0x8 | Kind::Q5_0x8 | Kind::Q8_0x8 | Kind::Q4_1x8 => {}
            Kind::Q4_1 => each(out, w, first, |r| blocks32::<D, 2>(w.row(r), x)),
            Kind::Q5_0 => each(out, w, first, |r| blocks32::<D, 5>(w.row(r), x)),
            Kind::Q5_1 => each(out, w, first, |r| blocks32::<D, 6>(w.row(r), x)),
            Kind::Int4 => each(out, w, first, |r| blocks32::<D, 3>(w.row(r), x)),
            Kind::Int8 => each(out, w, first, |r| blocks32::<D, 4>(w.row(r), x)),
            Kind::Q4K => each(out, w, first, |r| k4::<D, false>(w.row(r).bytes, x)),
            Kind::Q5K => each(out, w, first, |r| k4::<D, true>(w.row(r).bytes, x)),
            Kind::Q6K => each(out, w, first, |r| q6_k(w.row(r).bytes, x)),
        }
    }
}

#[inline(always)]
unsafe fn row<D: Dot>(kind: Kind, w: WRow<'_>, x: XRow<'_>) -> f32 {
    // SAFETY: (all arms) forwarded from the callers' contracts.
    unsafe {
        match kind {
            Kind::Q8_0 => blocks32::<D, 0>(w, x),
            Kind::Q4_0 => blocks32::<D, 1>(w, x),
            Kind::Q4_0x8 | Kind::Q5_0x8 | Kind::Q8_0x8 | Kind::Q4_1x8 => 0.0,
            Kind::Q4_1 => blocks32::<D, 2>(w, x),
            Kind::Q5_0 => blocks32::<D, 5>(w, x),
            Kind::Q5_1 => blocks32::<D, 6>(w, x),
            Kind::Int4 => blocks32::<D, 3>(w, x),
            Kind::Int8 => blocks32::<D, 4>(w, x),
            Kind::Q4K => k4::<D, false>(w.bytes, x),
            Kind::Q5K => k4::<D, true>(w.bytes, x),
            Kind::Q6K => q6_k(w.bytes, x),
        }
    }
}

/// `kernels::quantize_row` on AVX2: per block, the largest magnitude and
/// the finiteness test eight lanes at a time, `q = cvtps2dq(x·id)` (round
/// to nearest even, the default rounding mode, as `round_ties_even_small`)
/// packed to i8 (no value saturates: |x·id| ≤ 127 plus rounding), and the
/// sum of the i32 codes. A block holding NaN or infinity goes to the
/// scalar `quantize_block`.
///
/// # Safety
/// The CPU has AVX2; `row` holds 32 × blocks values, `q` as many codes and
/// `dx`, `xsum`, `dxs` one entry per block (checked by `quantize_row`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_row_avx2(
    row: &[f32],
    q: &mut [i8],
    dx: &mut [f32],
    xsum: &mut [i32],
    dxs: &mut [f32],
) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let inf = _mm256_set1_epi32(0x7F80_0000);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (b, block) in row.chunks_exact(32).enumerate() {
        let codes = &mut q[32 * b..32 * b + 32];
        // SAFETY: `block` holds 32 values and `codes` 32 bytes; AVX2 is
        // enabled.
        let (d, s) = unsafe {
            let p = block.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let a = [
                _mm256_and_ps(v[0], abs),
                _mm256_and_ps(v[1], abs),
                _mm256_and_ps(v[2], abs),
                _mm256_and_ps(v[3], abs),
            ];
            // |x| below infinity's bits: finite (NaN's bits are above).
            let all_finite = _mm256_and_si256(
                _mm256_and_si256(
                    _mm256_cmpgt_epi32(inf, _mm256_castps_si256(a[0])),
                    _mm256_cmpgt_epi32(inf, _mm256_castps_si256(a[1])),
                ),
                _mm256_and_si256(
                    _mm256_cmpgt_epi32(inf, _mm256_castps_si256(a[2])),
                    _mm256_cmpgt_epi32(inf, _mm256_castps_si256(a[3])),
                ),
            );
            if _mm256_movemask_epi8(all_finite) != -1 {
                super::quantize_block(block, codes)
            } else {
                let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
                let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
                let d = _mm_cvtss_f32(m) / 127.0;
                let id = _mm256_set1_ps(if d >= f32::MIN_POSITIVE { 1.0 / d } else { 0.0 });
                let i = [
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[0], id)),
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[1], id)),
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[2], id)),
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[3], id)),
                ];
                let packed = _mm256_packs_epi16(
                    _mm256_packs_epi32(i[0], i[1]),
                    _mm256_packs_epi32(i[2], i[3]),
                );
                let packed = _mm256_permutevar8x32_epi32(packed, order);
                _mm256_storeu_si256(codes.as_mut_ptr().cast(), packed);
                let sum =
                    _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
                let sum = _mm_add_epi32(
                    _mm256_castsi256_si128(sum),
                    _mm256_extracti128_si256(sum, 1),
                );
                let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
                let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01));
                (d, _mm_cvtsi128_si32(sum))
            }
        };
        dx[b] = d;
        xsum[b] = s;
        dxs[b] = d * s as f32;
    }
}

/// Whole interleaved groups of `format` on AVX2: weight row `r`'s output
/// to `out[r·m + i]` (the group loop inside the instruction set, one call
/// per chunk of rows).
///
/// # Safety
/// The CPU has AVX2 and F16C; `bytes` holds whole groups of
/// `format.block_bytes()` bytes per block of `x`, `out` an output per row
/// and activation row, `i < m` (checked by `kernels::x8_rows`).
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn x8_rows_avx2(
    format: X8,
    bytes: &[u8],
    x: XRow<'_>,
    m: usize,
    i: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { x8_rows_of::<Avx2>(format, bytes, x, m, i, out) }
}

/// [`x8_rows_avx2`] on AVX-512 VNNI.
///
/// # Safety
/// As [`x8_rows_avx2`], with AVX-512F, AVX-512VL and AVX-512 VNNI.
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512vnni")]
pub(super) unsafe fn x8_rows_vnni(
    format: X8,
    bytes: &[u8],
    x: XRow<'_>,
    m: usize,
    i: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { x8_rows_of::<Vnni>(format, bytes, x, m, i, out) }
}

/// The interleaved formats as const generic parameters.
const Q4: u8 = 0;
const Q5: u8 = 1;
const Q8: u8 = 2;
const Q41: u8 = 3;

/// Bytes of one block column of an interleaved group of format `F`.
const fn x8_block_bytes(f: u8) -> usize {
    match f {
        Q4 => 144,
        Q5 => 176,
        Q41 => 160,
        _ => 272,
    }
}

/// [`x8_rows`] with the format chosen once.
#[inline(always)]
unsafe fn x8_rows_of<D: Dot>(
    format: X8,
    bytes: &[u8],
    x: XRow<'_>,
    m: usize,
    i: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the callers' contracts.
    unsafe {
        match format {
            X8::Q4_0 => x8_rows::<D, Q4>(bytes, x, m, i, out),
            X8::Q5_0 => x8_rows::<D, Q5>(bytes, x, m, i, out),
            X8::Q8_0 => x8_rows::<D, Q8>(bytes, x, m, i, out),
            X8::Q4_1 => x8_rows::<D, Q41>(bytes, x, m, i, out),
        }
    }
}

#[inline(always)]
unsafe fn x8_rows<D: Dot, const F: u8>(
    bytes: &[u8],
    x: XRow<'_>,
    m: usize,
    i: usize,
    out: &mut [f32],
) {
    let group_bytes = x8_block_bytes(F) * x.dx.len();
    for (g, group) in bytes.chunks_exact(group_bytes).enumerate() {
        // SAFETY: `group` holds a block column per block of `x`; the caller
        // guarantees the instruction sets.
        let y = unsafe { x8::<D, F>(group, x) };
        for (r, y) in y.into_iter().enumerate() {
            out[(8 * g + r) * m + i] = y;
        }
    }
}

/// One interleaved group: per block, 32-byte loads hold four code bytes
/// of each row (one row per i32 lane): Q4_0 and Q5_0 four loads whose low
/// and high nibbles (Q5_0: with each row's fifth bits spread from its `qh`
/// lane) are the codes, Q8_0 eight loads of whole codes. Each is dotted
/// with one broadcast 4-byte piece of the activations, so the block's
/// eight exact `isum`s come out in the eight lanes without a horizontal
/// reduction. The float update and fold are the module's, with one
/// accumulator vector per lane index `b mod 8` (its eight entries are the
/// eight rows).
#[inline(always)]
unsafe fn x8<D: Dot, const F: u8>(group: &[u8], x: XRow<'_>) -> [f32; 8] {
    let nb = x.dx.len();
    let size = x8_block_bytes(F);
    debug_assert!(group.len() == size * nb && x.q.len() == 32 * nb);
    // SAFETY: every block index passed to `x8_block` is < nb, as it
    // requires; the instruction sets are enabled by the callers.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut b0 = 0;
        let ahead = group.as_ptr().wrapping_add(PREFETCH_AHEAD);
        while b0 + 8 <= nb {
            for (j, acc) in acc.iter_mut().enumerate() {
                // Every line of the block column PREFETCH_AHEAD bytes on
                // (groups of a chunk follow each other in memory).
                let at = ahead.wrapping_add(size * (b0 + j));
                for line in (0..size).step_by(64) {
                    prefetch(at.wrapping_add(line));
                }
                *acc = _mm256_add_ps(*acc, x8_block::<D, F>(group, x, b0 + j));
            }
            b0 += 8;
        }
        for (j, acc) in acc.iter_mut().enumerate().take(nb - b0) {
            *acc = _mm256_add_ps(*acc, x8_block::<D, F>(group, x, b0 + j));
        }
        lanes(fold_lanes(&acc))
    }
}

/// Four bits of each i32 lane of `v` (bits `shift..shift + 4`) as four
/// bytes of that lane, `0x10` where the bit is set.
///
/// # Safety
/// AVX2 is enabled.
#[inline(always)]
unsafe fn fifth_bits(qh: __m256i, shift: i32) -> __m256i {
    // SAFETY: AVX2 is enabled by the callers.
    unsafe {
        let nibble = _mm256_srlv_epi32(qh, _mm256_set1_epi32(shift));
        // Each lane's low byte into all four of its bytes, then byte j
        // tests bit j.
        let spread = _mm256_shuffle_epi8(
            nibble,
            _mm256_setr_epi8(
                0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, //
                0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12,
            ),
        );
        let bit = _mm256_set1_epi32(0x0804_0201);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
}

/// Block `b` of an interleaved group: the eight rows' `(d·dx)·isum`.
///
/// # Safety
/// `b` < the block count of `x`, and `group` holds a block column per
/// block; the instruction sets of `D` and F16C are enabled.
#[inline(always)]
unsafe fn x8_block<D: Dot, const F: u8>(group: &[u8], x: XRow<'_>, b: usize) -> __m256 {
    // SAFETY: forwarded from this function's contract.
    unsafe { x8_apply::<D, F>(&x8_unpack::<F>(group, b), x, b) }
}

/// Block column `b` of an interleaved group, unpacked once for any number
/// of activation rows: per piece of four code bytes, the eight rows'
/// codes, and the eight rows' `d` (and Q4_1's `m`).
struct Unpacked {
    /// Q4_0, Q5_0, Q4_1: `codes[k]` the low codes of piece `k < 4` and
    /// `codes[4 + k]` its high codes, Q5_0's with their fifth bits; Q8_0:
    /// `codes[k]` piece `k < 8` as stored (code + 128).
    codes: [__m256i; 8],
    d: __m256,
    /// Q4_1's minimums (zero for the other formats).
    m: __m256,
}

/// Unpacks block column `b` of an interleaved group ([`Unpacked`]).
///
/// # Safety
/// `group` holds block column `b`; AVX2 and F16C are enabled.
#[inline(always)]
unsafe fn x8_unpack<const F: u8>(group: &[u8], b: usize) -> Unpacked {
    debug_assert!(group.len() >= x8_block_bytes(F) * (b + 1));
    // SAFETY: the block column (x8_block_bytes(F) bytes at its offset)
    // lies in `group`; the instruction sets are enabled by the callers.
    unsafe {
        let p = group.as_ptr().add(x8_block_bytes(F) * b);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
        let m = if F == Q41 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast()))
        } else {
            _mm256_setzero_ps()
        };
        let mut codes = [_mm256_setzero_si256(); 8];
        if F == Q8 {
            for (k, codes) in codes.iter_mut().enumerate() {
                *codes = _mm256_loadu_si256(p.add(16 + 32 * k).cast());
            }
            return Unpacked { codes, d, m };
        }
        let m4 = _mm256_set1_epi8(0x0F);
        let qs = p.add(if F == Q5 {
            48
        } else if F == Q41 {
            32
        } else {
            16
        });
        let qh = if F == Q5 {
            _mm256_loadu_si256(p.add(16).cast())
        } else {
            _mm256_setzero_si256()
        };
        for k in 0..4 {
            let v = _mm256_loadu_si256(qs.add(32 * k).cast());
            let mut lo = _mm256_and_si256(v, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if F == Q5 {
                lo = _mm256_or_si256(lo, fifth_bits(qh, 4 * k as i32));
                hi = _mm256_or_si256(hi, fifth_bits(qh, 16 + 4 * k as i32));
            }
            codes[k] = lo;
            codes[4 + k] = hi;
        }
        Unpacked { codes, d, m }
    }
}

/// The eight rows' `(d·dx)·isum` (Q4_1: plus `m·dxs`) of block `b` of `x`
/// against the block's unpacked codes and scales ([`x8_unpack`]). Each
/// row's `isum` is exact, so it does not depend on the order of the
/// partial sums.
///
/// # Safety
/// `b` < the block count of `x`; the instruction sets of `D` and F16C are
/// enabled.
#[inline(always)]
unsafe fn x8_apply<D: Dot, const F: u8>(block: &Unpacked, x: XRow<'_>, b: usize) -> __m256 {
    let codes = &block.codes;
    debug_assert!(b < x.dx.len() && x.q.len() == 32 * x.dx.len());
    // SAFETY: block b's 32 codes lie in `x.q` (32 per block) and `dx`,
    // `xsum` have an entry per block.
    unsafe {
        let xq = x.q.as_ptr().add(32 * b);
        let piece = |k: usize| _mm256_set1_epi32(xq.add(4 * k).cast::<i32>().read_unaligned());
        let mut lo_sum = _mm256_setzero_si256();
        let mut hi_sum = _mm256_setzero_si256();
        if F == Q8 {
            // Codes + 128 fill a byte, beyond `dot`'s exact range on AVX2.
            for k in 0..4 {
                lo_sum = D::dot_full_add(lo_sum, codes[k], piece(k));
                hi_sum = D::dot_full_add(hi_sum, codes[4 + k], piece(4 + k));
            }
        } else {
            for k in 0..4 {
                lo_sum = D::dot_add(lo_sum, codes[k], piece(k));
                hi_sum = D::dot_add(hi_sum, codes[4 + k], piece(4 + k));
            }
        }
        // The stored codes' offset: 8 (Q4_0), 16 (Q5_0), 128 (Q8_0), none
        // (Q4_1, whose minimum comes after).
        let offset = match F {
            Q4 => 8,
            Q5 => 16,
            Q41 => 0,
            _ => 128,
        };
        let xsum = _mm256_set1_epi32(offset * *x.xsum.get_unchecked(b));
        let isum = _mm256_sub_epi32(_mm256_add_epi32(lo_sum, hi_sum), xsum);
        let dx = _mm256_set1_ps(*x.dx.get_unchecked(b));
        let t = _mm256_mul_ps(_mm256_mul_ps(block.d, dx), _mm256_cvtepi32_ps(isum));
        if F == Q41 {
            let dxs = _mm256_set1_ps(*x.dxs.get_unchecked(b));
            _mm256_add_ps(t, _mm256_mul_ps(block.m, dxs))
        } else {
            t
        }
    }
}

/// The module's fold of eight lane vectors (lane index `b mod 8`, one
/// entry per row).
#[inline(always)]
unsafe fn fold_lanes(acc: &[__m256; 8]) -> __m256 {
    // SAFETY: AVX is enabled by the callers.
    unsafe {
        _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6])),
            _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7])),
        )
    }
}

/// `R` activation rows against one interleaved group: per activation row
/// the eight outputs [`x8`] gives for it, bit for bit (the same blocks
/// into the same lanes in the same order, the same fold). Each block
/// column is unpacked once for all `R` rows, and the blocks of one lane
/// index (`j`, `j + 8`, …) run together so that the `R` partial sums stay
/// in registers.
///
/// # Safety
/// As [`x8`], for each row of `xs` (all with the same block count).
#[inline(always)]
unsafe fn x8_tile<D: Dot, const F: u8, const R: usize>(
    group: &[u8],
    xs: &[XRow<'_>; R],
) -> [[f32; 8]; R] {
    let nb = xs[0].dx.len();
    debug_assert!(group.len() == x8_block_bytes(F) * nb && xs.iter().all(|x| x.q.len() == 32 * nb));
    // SAFETY: every block index passed on is < nb; the instruction sets
    // are enabled by the callers.
    unsafe {
        let mut lanes_of = [[_mm256_setzero_ps(); 8]; R];
        for j in 0..nb.min(8) {
            let mut acc = [_mm256_setzero_ps(); R];
            for b in (j..nb).step_by(8) {
                let block = x8_unpack::<F>(group, b);
                for (acc, &x) in acc.iter_mut().zip(xs) {
                    *acc = _mm256_add_ps(*acc, x8_apply::<D, F>(&block, x, b));
                }
            }
            for (lanes, acc) in lanes_of.iter_mut().zip(acc) {
                lanes[j] = acc;
            }
        }
        lanes_of.map(|l| lanes(fold_lanes(&l)))
    }
}

/// Every activation row of `x` against whole interleaved groups `bytes`
/// of `format`: the output of the group's weight row `r` (counting from
/// the first group) for activation row `i` goes to `out + r·rs + i·is`.
/// Rows run four at a time through [`x8_tile`] (then two, then one), so
/// each output is [`x8`]'s.
///
/// # Safety
/// The CPU has AVX2 and F16C; `bytes` holds whole groups of
/// `format.block_bytes()` bytes per block of `x`; `out + r·rs + i·is` is
/// valid for writes, and not read or written by anyone else during the
/// call, for every weight row `r` of `bytes` and activation row `i` of `x`.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn x8_gemm_avx2(
    format: X8,
    bytes: &[u8],
    x: &QuantActs,
    out: *mut f32,
    (rs, is): (usize, usize),
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { x8_gemm_of::<Avx2>(format, bytes, x, out, (rs, is)) }
}

/// [`x8_gemm_avx2`] on AVX-512 VNNI.
///
/// # Safety
/// As [`x8_gemm_avx2`], with AVX-512F, AVX-512VL and AVX-512 VNNI.
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512vnni")]
pub(super) unsafe fn x8_gemm_vnni(
    format: X8,
    bytes: &[u8],
    x: &QuantActs,
    out: *mut f32,
    (rs, is): (usize, usize),
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { x8_gemm_of::<Vnni>(format, bytes, x, out, (rs, is)) }
}

/// [`x8_gemm`] with the format chosen once.
#[inline(always)]
unsafe fn x8_gemm_of<D: Dot>(
    format: X8,
    bytes: &[u8],
    x: &QuantActs,
    out: *mut f32,
    (rs, is): (usize, usize),
) {
    // SAFETY: forwarded from the callers' contracts.
    unsafe {
        match format {
            X8::Q4_0 => x8_gemm::<D, Q4>(bytes, x, out, rs, is),
            X8::Q5_0 => x8_gemm::<D, Q5>(bytes, x, out, rs, is),
            X8::Q8_0 => x8_gemm::<D, Q8>(bytes, x, out, rs, is),
            X8::Q4_1 => x8_gemm::<D, Q41>(bytes, x, out, rs, is),
        }
    }
}

#[inline(always)]
unsafe fn x8_gemm<D: Dot, const F: u8>(
    bytes: &[u8],
    x: &QuantActs,
    out: *mut f32,
    rs: usize,
    is: usize,
) {
    let m = x.m;
    let group_bytes = x8_block_bytes(F) * x.nb;
    assert!(
        group_bytes > 0 && bytes.len().is_multiple_of(group_bytes),
        "interleaved kernel called with inconsistent sizes"
    );
    for (g, group) in bytes.chunks_exact(group_bytes).enumerate() {
        let put = |i: usize, ys: &[[f32; 8]]| {
            for (k, y) in ys.iter().enumerate() {
                for (r, &v) in y.iter().enumerate() {
                    // SAFETY: weight row 8g + r of `bytes` and activation
                    // row i + k < m: a place the caller gave this call.
                    unsafe { *out.add((8 * g + r) * rs + (i + k) * is) = v };
                }
            }
        };
        let mut i = 0;
        // SAFETY: `group` holds a block column per block of every row of
        // `x`; the caller guarantees the instruction sets.
        unsafe {
            while i + 4 <= m {
                let xs = [x.row(i), x.row(i + 1), x.row(i + 2), x.row(i + 3)];
                put(i, &x8_tile::<D, F, 4>(group, &xs));
                i += 4;
            }
            if i + 2 <= m {
                put(i, &x8_tile::<D, F, 2>(group, &[x.row(i), x.row(i + 1)]));
                i += 2;
            }
            if i < m {
                put(i, &x8_tile::<D, F, 1>(group, &[x.row(i)]));
            }
        }
    }
}

/// Eight vectors of eight i32 partial sums → one vector of their eight
/// totals (exact: integer adds).
#[inline(always)]
unsafe fn reduce8(v: &[__m256i; 8]) -> __m256i {
    // SAFETY: AVX2 is enabled by the calling function's target features.
    unsafe {
        let a = _mm256_hadd_epi32(v[0], v[1]);
        let b = _mm256_hadd_epi32(v[2], v[3]);
        let c = _mm256_hadd_epi32(v[4], v[5]);
        let d = _mm256_hadd_epi32(v[6], v[7]);
        let ab = _mm256_hadd_epi32(a, b);
        let cd = _mm256_hadd_epi32(c, d);
        let lo = _mm256_permute2x128_si256(ab, cd, 0x20);
        let hi = _mm256_permute2x128_si256(ab, cd, 0x31);
        _mm256_add_epi32(lo, hi)
    }
}

/// Stores the lanes.
#[inline(always)]
unsafe fn lanes(acc: __m256) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 f32; AVX is enabled by the caller.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
    out
}

/// 16 bytes of nibbles → 32 bytes (low nibbles first, as ggml orders them).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p` and AVX2.
    unsafe {
        let v = _mm_loadu_si128(p.cast());
        let both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }
}

/// Bytes per 32-element block of each `K` of [`blocks32`].
const BLOCK_BYTES: [usize; 7] = [34, 18, 20, 16, 32, 22, 24];

/// The 32 five-bit codes of a Q5_0/Q5_1 block from its `qh` (4 bytes at
/// `p`) and the 16 nibble bytes after it, one byte per element (see
/// `blocks::codes_q5`).
///
/// # Safety
/// 20 readable bytes at `p`; AVX2 is enabled.
#[inline(always)]
unsafe fn codes5(p: *const u8) -> __m256i {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        let qh = _mm256_set1_epi32(p.cast::<i32>().read_unaligned());
        // Byte e takes byte e/8 of qh (each 128-bit lane holds all four),
        // then tests bit e mod 8.
        let pick = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(qh, pick), bit), bit);
        _mm256_or_si256(
            nibbles(p.add(4)),
            _mm256_and_si256(set, _mm256_set1_epi8(0x10)),
        )
    }
}

/// Rows of 32-element blocks. `K`: 0 = Q8_0, 1 = Q4_0, 2 = Q4_1, 3 = Int4,
/// 4 = Int8, 5 = Q5_0, 6 = Q5_1. Whole groups of eight blocks go through [`group32`] with a
/// constant count (unrolled, the partial sums in registers); a shorter
/// last group with the count it has. Both run the same arithmetic.
#[inline(always)]
unsafe fn blocks32<D: Dot, const K: u8>(w: WRow<'_>, x: XRow<'_>) -> f32 {
    let nb = x.dx.len();
    let size = BLOCK_BYTES[K as usize];
    debug_assert!(w.bytes.len() == nb * size && x.q.len() == 32 * nb);
    let mut b0 = 0;
    // Int: the group of block b0 + k and blocks left in it (no division
    // per block).
    let mut cursor = (0usize, w.group_blocks);
    // SAFETY: every call covers blocks b0..b0 + count ≤ nb, as `group32`
    // requires; the caller guarantees the instruction sets.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        while b0 + 8 <= nb {
            acc = group32::<D, K>(&w, &x, b0, 8, &mut cursor, acc);
            b0 += 8;
        }
        if b0 < nb {
            acc = group32::<D, K>(&w, &x, b0, nb - b0, &mut cursor, acc);
        }
        fold8(lanes(acc))
    }
}

/// Adds blocks `b0..b0 + count` (count ≤ 8) of one row to the eight lanes
/// of `acc` (lane k: block b0 + k). `cursor` is the Int formats' (group,
/// blocks left in it) at block b0, advanced past the last block.
///
/// # Safety
/// `b0 + count ≤ nb`, the row's block count, with `w` and `x` of
/// consistent sizes (checked by `rows_chunk`); the instruction sets of `D`
/// and F16C are enabled.
#[inline(always)]
unsafe fn group32<D: Dot, const K: u8>(
    w: &WRow<'_>,
    x: &XRow<'_>,
    b0: usize,
    count: usize,
    cursor: &mut (usize, usize),
    acc: __m256,
) -> __m256 {
    let size = BLOCK_BYTES[K as usize];
    // SAFETY: every block index `b` below is < b0 + count ≤ nb, so its
    // `size` bytes lie in `w.bytes` (nb·size bytes) and its 32 codes in
    // `x.q` (32·nb); `load8` reads only entries b0..b0 + count of `x.dx`,
    // `x.xsum` and `x.dxs`; the caller guarantees the instruction sets.
    unsafe {
        let wp = w.bytes.as_ptr();
        let xp = x.q.as_ptr();
        // The last group may hold fewer than 8 blocks: the missing ones
        // have zero codes, scales and `dx`, so their lanes add +0.0,
        // which leaves every lane unchanged (a lane, starting at +0.0
        // and only ever added to, is never −0.0).
        let mut parts = [_mm256_setzero_si256(); 8];
        let mut d = [0u16; 8];
        let mut m = [0u16; 8];
        for k in 0..count {
            let b = b0 + k;
            let blk = wp.add(size * b);
            let xv = _mm256_loadu_si256(xp.add(32 * b).cast());
            parts[k] = match K {
                0 => {
                    d[k] = blk.cast::<u16>().read_unaligned();
                    let v = _mm256_loadu_si256(blk.add(2).cast());
                    D::dot(_mm256_sign_epi8(v, v), _mm256_sign_epi8(xv, v))
                }
                1 => {
                    d[k] = blk.cast::<u16>().read_unaligned();
                    D::dot(nibbles(blk.add(2)), xv)
                }
                2 => {
                    d[k] = blk.cast::<u16>().read_unaligned();
                    m[k] = blk.add(2).cast::<u16>().read_unaligned();
                    D::dot(nibbles(blk.add(4)), xv)
                }
                5 => {
                    d[k] = blk.cast::<u16>().read_unaligned();
                    D::dot(codes5(blk.add(2)), xv)
                }
                6 => {
                    d[k] = blk.cast::<u16>().read_unaligned();
                    m[k] = blk.add(2).cast::<u16>().read_unaligned();
                    D::dot(codes5(blk.add(4)), xv)
                }
                _ => {
                    if K == 3 {
                        D::dot(nibbles(blk), xv)
                    } else {
                        D::dot_full(_mm256_loadu_si256(blk.cast()), xv)
                    }
                }
            };
        }
        let mut isum = reduce8(&parts);
        if K == 1 || K == 5 {
            // Q4_0's offset 8 = 2^3, Q5_0's 16 = 2^4.
            let xs = _mm256_castps_si256(load8(x.xsum.as_ptr().cast(), b0, count));
            let shift = _mm_cvtsi32_si128(if K == 1 { 3 } else { 4 });
            isum = _mm256_sub_epi32(isum, _mm256_sll_epi32(xs, shift));
        }
        let (scale, int_min) = if K <= 2 || K >= 5 {
            (_mm256_cvtph_ps(halves(&d)), _mm256_setzero_ps())
        } else {
            int_scales(w, count, cursor)
        };
        let dx = load8(x.dx.as_ptr(), b0, count);
        let t = _mm256_mul_ps(_mm256_mul_ps(scale, dx), _mm256_cvtepi32_ps(isum));
        if K == 0 || K == 1 || K == 5 {
            _mm256_add_ps(acc, t)
        } else {
            let min = if K == 2 || K == 6 {
                _mm256_cvtph_ps(halves(&m))
            } else {
                int_min
            };
            let dxs = load8(x.dxs.as_ptr(), b0, count);
            _mm256_add_ps(acc, _mm256_add_ps(t, _mm256_mul_ps(min, dxs)))
        }
    }
}

/// The Int formats' scales and minimums of `count` blocks starting at
/// the group and blocks left in it that `cursor` holds (lane k: block k,
/// lanes ≥ count +0.0), advancing `cursor` past them. Eight blocks inside
/// one group broadcast its pair; eight blocks over whole groups of 1, 2 or
/// 4 blocks (groups of 32, 64, 128) spread 8, 4 or 2 pairs by a permute;
/// anything else is gathered block by block. Every path gives each lane
/// the same values.
///
/// # Safety
/// The blocks lie in the row (`w.scales` and `w.mins` hold one entry per
/// group of the row, `group_blocks` blocks each, the last possibly
/// shorter); AVX2 is enabled.
#[inline(always)]
unsafe fn int_scales(w: &WRow<'_>, count: usize, cursor: &mut (usize, usize)) -> (__m256, __m256) {
    let gb = w.group_blocks;
    let (g, left) = cursor;
    // SAFETY: group g holds the first block and the groups read below
    // hold the later ones, all in the row, so every index is below
    // `scales.len() = mins.len()`; the caller guarantees AVX2.
    unsafe {
        let (sp, mp) = (w.scales.as_ptr().add(*g), w.mins.as_ptr().add(*g));
        if count == 8 && *left >= 8 {
            let pair = (_mm256_set1_ps(*sp), _mm256_set1_ps(*mp));
            *left -= 8;
            if *left == 0 {
                *g += 1;
                *left = gb;
            }
            return pair;
        }
        if count == 8 && *left == gb && matches!(gb, 1 | 2 | 4) {
            // Groups g .. g + 8/gb, whole; lane k takes group g + k/gb.
            let (spread, index) = match gb {
                1 => (
                    (_mm256_loadu_ps(sp), _mm256_loadu_ps(mp)),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                ),
                2 => (
                    (
                        _mm256_castps128_ps256(_mm_loadu_ps(sp)),
                        _mm256_castps128_ps256(_mm_loadu_ps(mp)),
                    ),
                    _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
                ),
                _ => (
                    (
                        _mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd(sp.cast()))),
                        _mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd(mp.cast()))),
                    ),
                    _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
                ),
            };
            *g += 8 / gb;
            return (
                _mm256_permutevar8x32_ps(spread.0, index),
                _mm256_permutevar8x32_ps(spread.1, index),
            );
        }
        let (mut sf, mut mf) = ([0.0f32; 8], [0.0f32; 8]);
        for k in 0..count {
            sf[k] = *w.scales.get_unchecked(*g);
            mf[k] = *w.mins.get_unchecked(*g);
            *left -= 1;
            if *left == 0 {
                *g += 1;
                *left = gb;
            }
        }
        (_mm256_loadu_ps(sf.as_ptr()), _mm256_loadu_ps(mf.as_ptr()))
    }
}

/// Eight u16 as a vector, built in registers (storing them one by one and
/// loading them at once would stall store forwarding).
#[inline(always)]
unsafe fn halves(h: &[u16; 8]) -> __m128i {
    let v = |i: usize| h[i] as i16;
    // SAFETY: SSE2 is part of x86-64.
    unsafe { _mm_set_epi16(v(7), v(6), v(5), v(4), v(3), v(2), v(1), v(0)) }
}

/// Entries `b0..b0 + count` (count ≤ 8) of a 32-bit array, zero-padded to 8.
///
/// # Safety
/// `p.add(b0 + count)` is within (or one past) the array; AVX2 is enabled.
#[inline(always)]
unsafe fn load8(p: *const f32, b0: usize, count: usize) -> __m256 {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        if count == 8 {
            _mm256_loadu_ps(p.add(b0))
        } else {
            // Lanes k < count are loaded, the rest are +0.0 and not read.
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lane);
            _mm256_maskload_ps(p.add(b0), mask)
        }
    }
}

/// Q4_K (`FIVE == false`) and Q5_K rows.
#[inline(always)]
unsafe fn k4<D: Dot, const FIVE: bool>(bytes: &[u8], x: XRow<'_>) -> f32 {
    // SAFETY: forwarded from the callers' contracts.
    let [y] = unsafe { k4_tile::<D, FIVE, 1>(bytes, &[x]) };
    y
}

/// One Q4_K or Q5_K weight row against `R` activation rows: each result is
/// [`k4`]'s for that row (the same per-row arithmetic in the same order);
/// each super-block's codes, scales and minimums are unpacked once for all
/// `R` rows.
///
/// # Safety
/// Every row of `xs` has 8 blocks per super-block of `bytes` (whole
/// super-blocks); the instruction sets of `D` and F16C are enabled.
#[inline(always)]
unsafe fn k4_tile<D: Dot, const FIVE: bool, const R: usize>(
    bytes: &[u8],
    xs: &[XRow<'_>; R],
) -> [f32; R] {
    let size = if FIVE { 176 } else { 144 };
    let supers = bytes.len() / size;
    debug_assert!(
        xs.iter()
            .all(|x| x.dx.len() == 8 * supers && x.q.len() == 256 * supers)
    );
    // SAFETY: super-block `s` < supers reads its `size` bytes and the 256
    // codes and 8 entries of each row of `xs` at 8·s, all in bounds (sizes
    // above); the caller guarantees the instruction sets.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let m4 = _mm256_set1_epi8(0x0F);
        for (s, blk) in bytes.chunks_exact(size).enumerate() {
            let p = blk.as_ptr();
            let qs = p.add(if FIVE { 48 } else { 16 });
            let qh = if FIVE {
                _mm256_loadu_si256(p.add(16).cast())
            } else {
                _mm256_setzero_si256()
            };
            // Sub-block 2·pair's codes, then 2·pair + 1's.
            let mut codes = [_mm256_setzero_si256(); 8];
            for pair in 0..4 {
                let v = _mm256_loadu_si256(qs.add(32 * pair).cast());
                let mut lo = _mm256_and_si256(v, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if FIVE {
                    let high_bit = |j: usize| {
                        let bit = _mm256_set1_epi8((1u8 << j) as i8);
                        let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
                    };
                    lo = _mm256_or_si256(lo, high_bit(2 * pair));
                    hi = _mm256_or_si256(hi, high_bit(2 * pair + 1));
                }
                codes[2 * pair] = lo;
                codes[2 * pair + 1] = hi;
            }
            let (sc, mn) = scales_mins_k4(&blk[4..16]);
            let sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sc.as_ptr().cast()));
            let mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(mn.as_ptr().cast())));
            let d = _mm256_set1_ps(super::f16_at(blk, 0));
            let dmin_mn = _mm256_mul_ps(_mm256_set1_ps(super::f16_at(blk, 2)), mn);
            for (acc, x) in acc.iter_mut().zip(xs) {
                let xp = x.q.as_ptr().add(256 * s);
                let mut parts = [_mm256_setzero_si256(); 8];
                for (j, part) in parts.iter_mut().enumerate() {
                    *part = D::dot(codes[j], _mm256_loadu_si256(xp.add(32 * j).cast()));
                }
                let isum = _mm256_mullo_epi32(reduce8(&parts), sc);
                let dx = _mm256_loadu_ps(x.dx.as_ptr().add(8 * s));
                let dxs = _mm256_loadu_ps(x.dxs.as_ptr().add(8 * s));
                let t = _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum));
                let u = _mm256_mul_ps(dmin_mn, dxs);
                *acc = _mm256_sub_ps(_mm256_add_ps(*acc, t), u);
            }
        }
        acc.map(|a| fold8(lanes(a)))
    }
}

/// Outputs of Q4_K or Q5_K weight rows `first..first + count` of `w` for
/// every activation row of `x`, into `out` as (count, m): per weight row,
/// activation rows four at a time through [`k4_tile`].
///
/// # Safety
/// The CPU has AVX2 and F16C; `w` is Q4_K or Q5_K with rows `first..first
/// + count` and `x` of consistent sizes, `out.len() = count·m` (checked by
/// `kernels::rows_chunk`).
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn k4_rows_avx2(
    w: &WeightView<'_>,
    first: usize,
    x: &QuantActs,
    out: &mut [f32],
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { k4_rows::<Avx2>(w, first, x, out) }
}

/// [`k4_rows_avx2`] on AVX-512 VNNI.
///
/// # Safety
/// As [`k4_rows_avx2`], with AVX-512F, AVX-512VL and AVX-512 VNNI.
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512vnni")]
pub(super) unsafe fn k4_rows_vnni(
    w: &WeightView<'_>,
    first: usize,
    x: &QuantActs,
    out: &mut [f32],
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { k4_rows::<Vnni>(w, first, x, out) }
}

#[inline(always)]
unsafe fn k4_rows<D: Dot>(w: &WeightView<'_>, first: usize, x: &QuantActs, out: &mut [f32]) {
    // SAFETY: forwarded from the callers' contracts (whole super-blocks
    // per row, 8 activation blocks per super-block).
    unsafe {
        if w.kind == Kind::Q5K {
            k4_rows_of::<D, true>(w, first, x, out)
        } else {
            k4_rows_of::<D, false>(w, first, x, out)
        }
    }
    #[inline(always)]
    unsafe fn k4_rows_of<D: Dot, const FIVE: bool>(
        w: &WeightView<'_>,
        first: usize,
        x: &QuantActs,
        out: &mut [f32],
    ) {
        let m = x.m;
        for (j, dst) in out.chunks_exact_mut(m).enumerate() {
            let bytes = w.row(first + j).bytes;
            let mut i = 0;
            // SAFETY: forwarded from the callers' contracts.
            unsafe {
                while i + 4 <= m {
                    let xs = [x.row(i), x.row(i + 1), x.row(i + 2), x.row(i + 3)];
                    dst[i..i + 4].copy_from_slice(&k4_tile::<D, FIVE, 4>(bytes, &xs));
                    i += 4;
                }
                while i < m {
                    dst[i] = k4::<D, FIVE>(bytes, x.row(i));
                    i += 1;
                }
            }
        }
    }
}

/// Q6_K rows (same instructions on both instruction sets: the i8 scales of
/// the 16-element halves multiply `vpmaddubsw`'s pairs in `vpmaddwd`).
#[inline(always)]
unsafe fn q6_k(bytes: &[u8], x: XRow<'_>) -> f32 {
    let supers = bytes.len() / 210;
    debug_assert!(x.dx.len() == 8 * supers && x.q.len() == 256 * supers);
    // SAFETY: as in `k4`, with 210-byte blocks.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let m4 = _mm256_set1_epi8(0x0F);
        let m30 = _mm256_set1_epi8(0x30);
        let c32 = _mm256_set1_epi8(32);
        for (s, blk) in bytes.chunks_exact(210).enumerate() {
            let p = blk.as_ptr();
            let xp = x.q.as_ptr().add(256 * s);
            let sc = p.add(192).cast::<i8>();
            let mut parts = [_mm256_setzero_si256(); 8];
            for h in 0..2 {
                let ql0 = _mm256_loadu_si256(p.add(64 * h).cast());
                let ql1 = _mm256_loadu_si256(p.add(64 * h + 32).cast());
                let qh = _mm256_loadu_si256(p.add(128 + 32 * h).cast());
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        _mm256_and_si256(qh, m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                    ),
                ];
                for (jj, q) in q.into_iter().enumerate() {
                    let j = 4 * h + jj;
                    let v = _mm256_sub_epi8(q, c32);
                    let xv = _mm256_loadu_si256(xp.add(32 * j).cast());
                    let pairs =
                        _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(xv, v));
                    let scales = _mm256_set_m128i(
                        _mm_set1_epi16(i16::from(*sc.add(2 * j + 1))),
                        _mm_set1_epi16(i16::from(*sc.add(2 * j))),
                    );
                    parts[j] = _mm256_madd_epi16(pairs, scales);
                }
            }
            let isum = reduce8(&parts);
            let d = _mm256_set1_ps(super::f16_at(blk, 208));
            let dx = _mm256_loadu_ps(x.dx.as_ptr().add(8 * s));
            acc = _mm256_add_ps(
                acc,
                _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum)),
            );
        }
        fold8(lanes(acc))
    }
}
