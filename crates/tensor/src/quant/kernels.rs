//! Fused dequantize-and-dot kernels for [`QMatrix::matmul_t`](super::QMatrix::matmul_t).
//!
//! Weights are never dequantized. Each 32-element block `b` of each
//! activation row is quantized once (not per weight row) to i8:
//! `dx_b = amax_b / 127` (f32), `q = round_ties_even(x · (1/dx_b))` with
//! `1/dx_b` computed once in f32 (a block whose `dx_b` is zero or below
//! `f32::MIN_POSITIVE` gets `q = 0`; one with a non-finite value gets
//! `dx_b = NaN`), and keeps `xsum_b = Σ q` (i32) and `dxs_b = dx_b · xsum_b`
//! (f32).
//!
//! Per weight block × activation block the integer dot product `isum` is
//! exact in i32, and the f32 accumulation is fixed: eight lane
//! accumulators, block `b` going to lane `b mod 8` (sub-block `j` of a
//! 256-element block to lane `j`), each updated in block order with
//! separate multiplies and adds (no fused multiply-add), then folded as
//! `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`. Per format (`d`, `m`, `dmin`
//! are the block's f16 values widened exactly, `s`, `mn` the group's f32
//! scale and minimum, `sc`, `mn6` the 6-bit sub-block values, `sc8` the
//! i8 scales of Q6_K):
//!
//! | format | isum (exact i32) | lane update |
//! |---|---|---|
//! | Q8_0 | `Σ q_w·q` | `l += (d·dx)·isum` |
//! | Q4_0 | `Σ q_w·q − 8·xsum` | `l += (d·dx)·isum` |
//! | Q4_1 | `Σ q_w·q` | `l += (d·dx)·isum + m·dxs` |
//! | Q5_0 | `Σ q_w·q − 16·xsum` | `l += (d·dx)·isum` |
//! | Q5_1 | `Σ q_w·q` | `l += (d·dx)·isum + m·dxs` |
//! | Q4_K, Q5_K | `sc_j · Σ q_w·q` | `l = (l + (d·dx)·isum) − (dmin·mn6_j)·dxs` |
//! | Q6_K | `sc8_2j·Σ_{first 16}(q_w−32)·q + sc8_2j+1·Σ_{last 16}(q_w−32)·q` | `l += (d·dx)·isum` |
//! | Int4, Int8 | `Σ q_w·q` | `l += (s·dx)·isum + mn·dxs` |
//!
//! Every `isum` is below 2^24 in magnitude, so its conversion to f32 is
//! exact. The AVX-512 VNNI, AVX2 and portable kernels compute the same
//! integers and the same float operations in the same order, so their
//! results are bit-identical; each output is one whole dot product, so
//! how rows are split between threads cannot change it either.
//!
//! Q4_0, Q4_1, Q5_0 and Q8_0 rows interleaved eight at a time ([`Kind::Q4_0x8`], see
//! `super::order`) run the same formula with the same lanes: each of eight
//! accumulator vectors holds one lane index `b mod 8` for the eight rows,
//! and the fold adds those vectors in the order above. So a matrix gives
//! the same bits in either order; interleaving only removes the horizontal
//! sums (each block's eight `isum`s come out one per vector lane).
//!
//! With several activation rows (prefill, batches), the x86 kernels of the
//! interleaved orders unpack each block column once for four activation
//! rows and keep the four rows' partial sums of one lane index in
//! registers (blocks `j`, `j + 8`, … in turn): the same lanes updated in the
//! same order, so every row gets the one-row kernel's bits. A 128-row
//! Q4_0 product of 4096 × 4096 runs at 2.7× the GFLOP/s of the dense f32
//! GEMM on weights dequantized beforehand (`benches/quant_gemv.rs`), so Q4_0 and
//! Q5_0 never take the dense path. Q4_K and Q5_K rows likewise unpack each
//! super-block once for four activation rows (1.9× at 8 rows); at 128 rows
//! they are level with the dense path, which they keep from
//! `QMatrix::DENSE_MIN_ROWS` rows on.

use std::sync::OnceLock;

use half::f16;
use rayon::prelude::*;

use super::blocks::{BlockType, codes_q5, scales_mins_k4};
use super::matrix::KernelIsa;
use super::order::GROUP_ROWS;
use crate::cpu::spin::{SharedOut, columns_to_rows};

#[cfg(target_arch = "x86_64")]
mod x86;

/// The kernels' view of a weight encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Q8_0,
    Q4_0,
    /// Q4_0 in [`BlockOrder::Interleaved8`](super::BlockOrder::Interleaved8):
    /// groups of eight rows, run eight outputs per pass.
    Q4_0x8,
    /// Q5_0 interleaved the same way.
    Q5_0x8,
    /// Q8_0 interleaved the same way (codes stored + 128).
    Q8_0x8,
    /// Q4_1 interleaved the same way.
    Q4_1x8,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
    Int4,
    Int8,
}

impl Kind {
    pub(crate) fn of_block(ty: BlockType) -> Kind {
        match ty {
            BlockType::Q8_0 => Kind::Q8_0,
            BlockType::Q4_0 => Kind::Q4_0,
            BlockType::Q4_1 => Kind::Q4_1,
            BlockType::Q5_0 => Kind::Q5_0,
            BlockType::Q5_1 => Kind::Q5_1,
            BlockType::Q4_K => Kind::Q4K,
            BlockType::Q5_K => Kind::Q5K,
            BlockType::Q6_K => Kind::Q6K,
        }
    }

    /// Bytes per 32 elements (per 256 for the K formats).
    fn unit_bytes(self) -> usize {
        match self {
            Kind::Q8_0 | Kind::Q8_0x8 => 34,
            Kind::Q4_0 | Kind::Q4_0x8 => 18,
            Kind::Q4_1 | Kind::Q4_1x8 => 20,
            Kind::Q5_0 | Kind::Q5_0x8 => 22,
            Kind::Q5_1 => 24,
            Kind::Q4K => 144,
            Kind::Q5K => 176,
            Kind::Q6K => 210,
            Kind::Int4 => 16,
            Kind::Int8 => 32,
        }
    }

    /// Elements per unit of [`Kind::unit_bytes`].
    fn unit_elems(self) -> usize {
        match self {
            Kind::Q4K | Kind::Q5K | Kind::Q6K => 256,
            _ => 32,
        }
    }
}

/// The formats stored in [`BlockOrder::Interleaved8`](super::BlockOrder::Interleaved8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum X8 {
    Q4_0,
    Q5_0,
    Q8_0,
    Q4_1,
}

impl X8 {
    /// The interleaved format a kind runs, if it is one.
    fn of(kind: Kind) -> Option<X8> {
        match kind {
            Kind::Q4_0x8 => Some(X8::Q4_0),
            Kind::Q5_0x8 => Some(X8::Q5_0),
            Kind::Q8_0x8 => Some(X8::Q8_0),
            Kind::Q4_1x8 => Some(X8::Q4_1),
            _ => None,
        }
    }

    /// Bytes of one block column of an interleaved group (eight blocks).
    fn block_bytes(self) -> usize {
        GROUP_ROWS
            * match self {
                X8::Q4_0 => 18,
                X8::Q5_0 => 22,
                X8::Q8_0 => 34,
                X8::Q4_1 => 20,
            }
    }
}

/// A weight matrix as the kernels read it.
pub(crate) struct WeightView<'a> {
    pub(crate) kind: Kind,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// rows × row_bytes.
    pub(crate) bytes: &'a [u8],
    pub(crate) row_bytes: usize,
    /// Int only: rows × ⌈blocks per row / group_blocks⌉ (a shorter last group).
    pub(crate) scales: &'a [f32],
    pub(crate) mins: &'a [f32],
    /// Int only: 32-element blocks per group, and groups per row.
    pub(crate) group_blocks: usize,
    pub(crate) groups: usize,
}

/// Activation rows quantized per 32-element block.
pub(crate) struct QuantActs {
    m: usize,
    /// Blocks per row.
    nb: usize,
    /// m × cols.
    q: Vec<i8>,
    /// m × nb each.
    dx: Vec<f32>,
    xsum: Vec<i32>,
    dxs: Vec<f32>,
}

/// One quantized activation row.
#[derive(Clone, Copy)]
pub(crate) struct XRow<'a> {
    q: &'a [i8],
    dx: &'a [f32],
    xsum: &'a [i32],
    dxs: &'a [f32],
}

impl QuantActs {
    fn row(&self, i: usize) -> XRow<'_> {
        let nb = self.nb;
        XRow {
            q: &self.q[i * nb * 32..(i + 1) * nb * 32],
            dx: &self.dx[i * nb..(i + 1) * nb],
            xsum: &self.xsum[i * nb..(i + 1) * nb],
            dxs: &self.dxs[i * nb..(i + 1) * nb],
        }
    }
}

/// Quantizes `m` rows of `cols` values (`cols` a multiple of 32), first
/// gathering `x[perm[j]]` into column `j` when a permutation is given.
pub(crate) fn quantize_activations(
    x: &[f32],
    m: usize,
    cols: usize,
    perm: Option<&[u32]>,
) -> QuantActs {
    let nb = cols / 32;
    let mut acts = QuantActs {
        m,
        nb,
        q: vec![0; m * cols],
        dx: vec![0.0; m * nb],
        xsum: vec![0; m * nb],
        dxs: vec![0.0; m * nb],
    };
    if m == 0 || nb == 0 {
        return acts;
    }
    /// One row's outputs: codes, dx, xsum, dxs (as zipped).
    type RowOut<'a> = (
        ((&'a mut [i8], &'a mut [f32]), &'a mut [i32]),
        &'a mut [f32],
    );
    let quantize_one = |(i, (((q, dx), xsum), dxs)): (usize, RowOut<'_>)| {
        let src = &x[i * cols..(i + 1) * cols];
        let mut gathered = Vec::new();
        let row: &[f32] = match perm {
            Some(p) => {
                gathered.extend(p.iter().map(|&j| src[j as usize]));
                &gathered
            }
            None => src,
        };
        quantize_row(row, q, dx, xsum, dxs);
    };
    if m * cols >= 1 << 16 {
        acts.q
            .par_chunks_mut(cols)
            .zip(acts.dx.par_chunks_mut(nb))
            .zip(acts.xsum.par_chunks_mut(nb))
            .zip(acts.dxs.par_chunks_mut(nb))
            .enumerate()
            .for_each(quantize_one);
    } else {
        acts.q
            .chunks_mut(cols)
            .zip(acts.dx.chunks_mut(nb))
            .zip(acts.xsum.chunks_mut(nb))
            .zip(acts.dxs.chunks_mut(nb))
            .enumerate()
            .for_each(quantize_one);
    }
    acts
}

/// Quantizes a row of whole blocks (`row.len()` = 32 × blocks) into its
/// codes `q` and per-block `dx`, `xsum`, `dxs`: on AVX2 eight values at a
/// time (the same bits as [`quantize_block`], which it falls back to for
/// blocks holding NaN or infinity), elsewhere by [`quantize_block`].
fn quantize_row(row: &[f32], q: &mut [i8], dx: &mut [f32], xsum: &mut [i32], dxs: &mut [f32]) {
    let nb = row.len() / 32;
    assert!(
        row.len() == 32 * nb
            && q.len() == row.len()
            && dx.len() == nb
            && xsum.len() == nb
            && dxs.len() == nb,
        "activation quantization called with inconsistent sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if detected() != KernelIsa::Portable {
        // SAFETY: the CPU has AVX2 (`detected` found it); sizes checked above.
        unsafe { x86::quantize_row_avx2(row, q, dx, xsum, dxs) };
        return;
    }
    for (b, block) in row.chunks_exact(32).enumerate() {
        let (d, s) = quantize_block(block, &mut q[32 * b..32 * b + 32]);
        dx[b] = d;
        xsum[b] = s;
        dxs[b] = d * s as f32;
    }
}

/// Quantizes one block of 32 values into `q`; returns `(dx, Σq)`. The
/// reference the vector path of [`quantize_row`] is tested against.
pub(crate) fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let mut amax = 0.0f32;
    let mut finite = true;
    for &v in x {
        amax = amax.max(v.abs());
        finite &= v.is_finite();
    }
    let dx = if finite { amax / 127.0 } else { f32::NAN };
    let id = if dx >= f32::MIN_POSITIVE {
        1.0 / dx
    } else {
        0.0
    };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        // |v·id| ≤ 127 plus rounding; `as` saturates, and maps NaN to 0.
        *q = round_ties_even_small(v * id) as i8;
        sum += i32::from(*q);
    }
    (dx, sum)
}

/// `y.round_ties_even()` for `|y| < 2^22` (and NaN for NaN), without a
/// libm call: baseline x86-64 has no rounding instruction (SSE4.1's
/// `roundss`), so `round_ties_even` compiles to a call of `rintf` per
/// element, which cost 2.6 % of a Q4_0 decode. Adding and subtracting
/// 1.5 · 2^23 rounds to an integer in the FPU's round-to-nearest-even mode:
/// the sum lies in [2^23, 2^24), where the spacing of f32 is 1, and the
/// constant is even, so ties go to the even integer as `round_ties_even`'s
/// do. Larger magnitudes are not rounded correctly (the activations' are at
/// most 127.5).
#[inline(always)]
fn round_ties_even_small(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (y + MAGIC) - MAGIC
}

/// The best instruction set of this CPU, detected once.
pub(crate) fn detected() -> KernelIsa {
    static ISA: OnceLock<KernelIsa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("f16c") {
                if has!("avx512f") && has!("avx512vl") && has!("avx512vnni") {
                    return KernelIsa::Avx512Vnni;
                }
                return KernelIsa::Avx2;
            }
        }
        KernelIsa::Portable
    })
}

/// Activation rows up to which the spinning pool of `cpu::spin` runs the
/// product (decoding); more rows run on rayon (prefill).
const DECODE_MAX_ROWS: usize = 4;
/// Weight rows per rayon task when prefilling: a task dots its rows
/// (kilobytes, hot in L1/L2) against every activation row.
const PREFILL_ROWS: usize = 16;
/// Smallest piece of a decode product, in weight bytes.
const MIN_PIECE_BYTES: usize = 1 << 15;

/// `y = x·Wᵀ` as (m, rows) f32 on `isa`, which this CPU must support.
pub(crate) fn matmul_t(w: &WeightView<'_>, x: &QuantActs, isa: KernelIsa) -> Vec<f32> {
    let (m, n) = (x.m, w.rows);
    if m == 0 || n == 0 {
        return vec![0.0; m * n];
    }
    if m <= DECODE_MAX_ROWS {
        return matmul_t_many(std::slice::from_ref(w), x, isa)
            .pop()
            .unwrap_or_default();
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(format) = X8::of(w.kind)
        && isa != KernelIsa::Portable
    {
        return x8_matmul_t(w, format, x, isa);
    }
    // (n, m): weight row r's outputs are contiguous, so a task's rows own
    // one contiguous range.
    let mut by_row = vec![0.0f32; n * m];
    by_row
        .par_chunks_mut(PREFILL_ROWS * m)
        .enumerate()
        .for_each(|(task, out)| {
            rows_chunk(isa, w, task * PREFILL_ROWS, out.len() / m, x, out);
        });
    columns_to_rows(by_row, m, n)
}

/// [`matmul_t`] of an interleaved `format` on AVX2 or AVX-512 VNNI: tasks
/// of [`PREFILL_ROWS`] weight rows write their columns of the (m, rows)
/// result in place (no transposition afterwards).
#[cfg(target_arch = "x86_64")]
fn x8_matmul_t(w: &WeightView<'_>, format: X8, x: &QuantActs, isa: KernelIsa) -> Vec<f32> {
    let (m, n) = (x.m, w.rows);
    assert!(
        n % GROUP_ROWS == 0
            && PREFILL_ROWS.is_multiple_of(GROUP_ROWS)
            && w.bytes.len() >= n * w.row_bytes
            && x.nb * 32 == w.cols
            && w.row_bytes == x.nb * w.kind.unit_bytes(),
        "interleaved kernel called with inconsistent sizes"
    );
    let fill = |y: &mut [std::mem::MaybeUninit<f32>]| {
        let shared = SharedOut(y.as_mut_ptr().cast::<f32>());
        let tasks = n.div_ceil(PREFILL_ROWS);
        (0..tasks).into_par_iter().for_each(|task| {
            let first = task * PREFILL_ROWS;
            let count = PREFILL_ROWS.min(n - first);
            let bytes = &w.bytes[first * w.row_bytes..(first + count) * w.row_bytes];
            // SAFETY: the task writes y[i·n + first + r] for r < count and
            // i < m: inside y (m·n elements; first + count ≤ n), which
            // outlives the parallel loop, and no other task writes those
            // columns. `first` and `count` are multiples of 8 (n is), so
            // `bytes` holds whole groups. `matmul_t_on` checked that this
            // CPU supports `isa`.
            unsafe {
                let out = shared.get().add(first);
                match isa {
                    KernelIsa::Avx512Vnni => x86::x8_gemm_vnni(format, bytes, x, out, (1, n)),
                    _ => x86::x8_gemm_avx2(format, bytes, x, out, (1, n)),
                }
            }
        });
    };
    // SAFETY: the tasks cover every column 0..n and each writes its
    // columns for every row i < m, so all m·n elements are written.
    unsafe { crate::cpu::uninit_vec(m * n, fill) }
}

/// `y_i = x·W_iᵀ` as (m, rows_i) f32 for several matrices against the same
/// quantized activations; when decoding, the pieces of rows of all of them
/// run as one job of the spinning pool (one wait instead of one per
/// matrix). Each output is the same whole dot product either way.
pub(crate) fn matmul_t_many(ws: &[WeightView<'_>], x: &QuantActs, isa: KernelIsa) -> Vec<Vec<f32>> {
    let m = x.m;
    if m == 0 || m > DECODE_MAX_ROWS {
        return ws.iter().map(|w| matmul_t(w, x, isa)).collect();
    }
    // Per matrix (n, m): weight row r's outputs are contiguous, so a piece
    // of rows owns one contiguous range.
    let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![0.0f32; w.rows * m]).collect();
    let pieces_wanted = 4 * rayon::current_num_threads();
    // (matrix, first row, rows)
    let mut pieces = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        let n = w.rows;
        let per_piece = n
            .div_ceil(pieces_wanted)
            .max(MIN_PIECE_BYTES / w.row_bytes.max(1))
            .max(1)
            .next_multiple_of(rows_per_pass(w.kind));
        pieces.extend(
            (0..n)
                .step_by(per_piece)
                .map(|first| (i, first, per_piece.min(n - first))),
        );
    }
    let shared: Vec<SharedOut> = outs.iter_mut().map(|o| SharedOut(o.as_mut_ptr())).collect();
    crate::cpu::spin::run(pieces.len(), &|piece| {
        let (i, first, count) = pieces[piece];
        // SAFETY: piece `piece` alone writes `outs[i][first·m .. (first +
        // count)·m]`, inside `outs[i]` (first + count ≤ rows_i), which
        // outlives `run`; pieces never overlap.
        let out =
            unsafe { std::slice::from_raw_parts_mut(shared[i].get().add(first * m), count * m) };
        rows_chunk(isa, &ws[i], first, count, x, out);
    });
    outs.into_iter()
        .zip(ws)
        .map(|(by_row, w)| {
            if m == 1 {
                by_row
            } else {
                columns_to_rows(by_row, m, w.rows)
            }
        })
        .collect()
}

/// Weight rows one pass of the kernel produces (pieces of rows are
/// multiples of it).
fn rows_per_pass(kind: Kind) -> usize {
    if X8::of(kind).is_some() {
        GROUP_ROWS
    } else {
        1
    }
}

/// One weight row and its Int scales and minimums.
#[derive(Clone, Copy)]
pub(crate) struct WRow<'a> {
    bytes: &'a [u8],
    scales: &'a [f32],
    mins: &'a [f32],
    group_blocks: usize,
}

impl<'a> WeightView<'a> {
    fn row(&self, r: usize) -> WRow<'a> {
        let groups = self.groups;
        WRow {
            bytes: &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes],
            scales: self.scales.get(r * groups..(r + 1) * groups).unwrap_or(&[]),
            mins: self.mins.get(r * groups..(r + 1) * groups).unwrap_or(&[]),
            group_blocks: self.group_blocks,
        }
    }
}

/// Outputs of weight rows `first..first + count` for every activation row,
/// into `out` as (count, m).
fn rows_chunk(
    isa: KernelIsa,
    w: &WeightView<'_>,
    first: usize,
    count: usize,
    x: &QuantActs,
    out: &mut [f32],
) {
    let m = x.m;
    let units = w.cols / w.kind.unit_elems();
    assert!(
        w.row_bytes == units * w.kind.unit_bytes()
            && w.bytes.len() >= (first + count) * w.row_bytes
            && out.len() == count * m
            && x.nb * 32 == w.cols,
        "quantized kernel called with inconsistent sizes"
    );
    if let Some(format) = X8::of(w.kind) {
        assert!(
            first.is_multiple_of(GROUP_ROWS) && count.is_multiple_of(GROUP_ROWS),
            "interleaved rows called off a group boundary"
        );
        let bytes = &w.bytes[first * w.row_bytes..(first + count) * w.row_bytes];
        // Several activation rows (prefill, batches): the tiled kernels,
        // which unpack each block column once for four rows. Their outputs
        // are the one-row kernel's, bit for bit.
        #[cfg(target_arch = "x86_64")]
        if m > 1 {
            match isa {
                KernelIsa::Avx2 => {
                    // SAFETY: `matmul_t_on` checked that this CPU supports
                    // `isa`; the sizes were checked above, so weight row r
                    // and activation row i write `out[r·m + i]`, inside
                    // `out`, which this call borrows mutably.
                    unsafe { x86::x8_gemm_avx2(format, bytes, x, out.as_mut_ptr(), (m, 1)) };
                    return;
                }
                KernelIsa::Avx512Vnni => {
                    // SAFETY: as above, with AVX-512F/VL/VNNI.
                    unsafe { x86::x8_gemm_vnni(format, bytes, x, out.as_mut_ptr(), (m, 1)) };
                    return;
                }
                _ => {}
            }
        }
        for i in 0..m {
            x8_rows(isa, format, bytes, x.row(i), m, i, out);
        }
        return;
    }
    if matches!(w.kind, Kind::Int4 | Kind::Int8) {
        for r in first..first + count {
            let wrow = w.row(r);
            assert!(wrow.group_blocks > 0 && wrow.scales.len() == x.nb.div_ceil(wrow.group_blocks));
        }
    }
    // One activation row (decoding): the whole chunk in one kernel call.
    #[cfg(target_arch = "x86_64")]
    if m == 1 {
        match isa {
            KernelIsa::Avx2 => {
                // SAFETY: `matmul_t_on` checked that this CPU supports
                // `isa`; the sizes and Int scales were checked above.
                unsafe { x86::rows_avx2(w.kind, w, first, x.row(0), out) };
                return;
            }
            KernelIsa::Avx512Vnni => {
                // SAFETY: as above, with AVX-512F/VL/VNNI.
                unsafe { x86::rows_vnni(w.kind, w, first, x.row(0), out) };
                return;
            }
            _ => {}
        }
    }
    // Q4_K and Q5_K with several activation rows: each super-block
    // unpacked once for four rows (each output the one-row kernel's bits).
    #[cfg(target_arch = "x86_64")]
    if m > 1 && matches!(w.kind, Kind::Q4K | Kind::Q5K) {
        match isa {
            KernelIsa::Avx2 => {
                // SAFETY: `matmul_t_on` checked that this CPU supports
                // `isa`; the sizes were checked above.
                unsafe { x86::k4_rows_avx2(w, first, x, out) };
                return;
            }
            KernelIsa::Avx512Vnni => {
                // SAFETY: as above, with AVX-512F/VL/VNNI.
                unsafe { x86::k4_rows_vnni(w, first, x, out) };
                return;
            }
            _ => {}
        }
    }
    for (r, dst) in (first..first + count).zip(out.chunks_exact_mut(m)) {
        let wrow = w.row(r);
        for (i, d) in dst.iter_mut().enumerate() {
            *d = row_dot(isa, w.kind, wrow, x.row(i));
        }
    }
}

/// One output: weight row · activation row.
#[inline]
fn row_dot(isa: KernelIsa, kind: Kind, w: WRow<'_>, x: XRow<'_>) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        KernelIsa::Avx2 => {
            // SAFETY: `matmul_t_on` checked that this CPU supports `isa`
            // (AVX2 and F16C), and `rows_chunk` checked the sizes.
            unsafe { x86::row_avx2(kind, w, x) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelIsa::Avx512Vnni => {
            // SAFETY: as above, with AVX-512F/VL/VNNI.
            unsafe { x86::row_vnni(kind, w, x) }
        }
        _ => portable::row(kind, w, x),
    }
}

/// Whole interleaved groups (`bytes`) of `format` against one activation
/// row: weight row `r`'s output goes to `out[r·m + i]`.
#[inline]
fn x8_rows(
    isa: KernelIsa,
    format: X8,
    bytes: &[u8],
    x: XRow<'_>,
    m: usize,
    i: usize,
    out: &mut [f32],
) {
    let group_bytes = format.block_bytes() * x.dx.len();
    assert!(
        group_bytes > 0
            && bytes.len().is_multiple_of(group_bytes)
            && x.q.len() == 32 * x.dx.len()
            && x.xsum.len() == x.dx.len()
            && i < m
            && out.len() == bytes.len() / group_bytes * GROUP_ROWS * m,
        "interleaved kernel called with inconsistent sizes"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        KernelIsa::Avx2 => {
            // SAFETY: `matmul_t_on` checked that this CPU supports `isa`
            // (AVX2 and F16C); the sizes were checked above.
            unsafe { x86::x8_rows_avx2(format, bytes, x, m, i, out) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelIsa::Avx512Vnni => {
            // SAFETY: as above, with AVX-512F/VL/VNNI.
            unsafe { x86::x8_rows_vnni(format, bytes, x, m, i, out) }
        }
        _ => {
            for (g, group) in bytes.chunks_exact(group_bytes).enumerate() {
                for (r, y) in portable::x8(format, group, x).into_iter().enumerate() {
                    out[(GROUP_ROWS * g + r) * m + i] = y;
                }
            }
        }
    }
}

/// The f16 at byte `i` of `b`, widened exactly.
#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The lane fold every kernel ends with.
#[inline(always)]
fn fold8(l: [f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// The portable kernels: the formulas of the module docs, one block at a
/// time. The x86 kernels run these for the blocks after the last whole
/// group of eight.
mod portable {
    use super::{Kind, WRow, X8, XRow, codes_q5, f16_at, fold8, scales_mins_k4};

    pub(super) fn row(kind: Kind, w: WRow<'_>, x: XRow<'_>) -> f32 {
        let mut lanes = [0.0f32; 8];
        let nb = x.dx.len();
        match kind {
            Kind::Q4K | Kind::Q5K => k4(kind == Kind::Q5K, w.bytes, x, &mut lanes),
            Kind::Q6K => q6_k(w.bytes, x, &mut lanes),
            _ => blocks32(kind, w, x, &mut lanes, 0..nb),
        }
        fold8(lanes)
    }

    #[inline(always)]
    fn dot_nibbles(qs: &[u8], q: &[i8]) -> i32 {
        let mut s = 0i32;
        for k in 0..16 {
            s += i32::from(qs[k] & 0x0F) * i32::from(q[k]);
            s += i32::from(qs[k] >> 4) * i32::from(q[k + 16]);
        }
        s
    }

    #[inline(always)]
    fn dot_codes(codes: &[u8; 32], q: &[i8]) -> i32 {
        codes
            .iter()
            .zip(q)
            .map(|(&c, &q)| i32::from(c) * i32::from(q))
            .sum()
    }

    /// Blocks `range` of a row of a 32-element-block kind into `lanes`.
    pub(super) fn blocks32(
        kind: Kind,
        w: WRow<'_>,
        x: XRow<'_>,
        lanes: &mut [f32; 8],
        range: std::ops::Range<usize>,
    ) {
        for b in range {
            let q = &x.q[32 * b..32 * b + 32];
            let (dx, l) = (x.dx[b], &mut lanes[b % 8]);
            match kind {
                Kind::Q8_0 => {
                    let blk = &w.bytes[34 * b..34 * b + 34];
                    let isum: i32 = blk[2..]
                        .iter()
                        .zip(q)
                        .map(|(&v, &q)| i32::from(v as i8) * i32::from(q))
                        .sum();
                    *l += (f16_at(blk, 0) * dx) * isum as f32;
                }
                Kind::Q4_0 => {
                    let blk = &w.bytes[18 * b..18 * b + 18];
                    let isum = dot_nibbles(&blk[2..], q) - 8 * x.xsum[b];
                    *l += (f16_at(blk, 0) * dx) * isum as f32;
                }
                Kind::Q4_1 => {
                    let blk = &w.bytes[20 * b..20 * b + 20];
                    let isum = dot_nibbles(&blk[4..], q);
                    *l += (f16_at(blk, 0) * dx) * isum as f32 + f16_at(blk, 2) * x.dxs[b];
                }
                Kind::Q5_0 => {
                    let blk = &w.bytes[22 * b..22 * b + 22];
                    let codes = codes_q5([blk[2], blk[3], blk[4], blk[5]], &blk[6..]);
                    let isum = dot_codes(&codes, q) - 16 * x.xsum[b];
                    *l += (f16_at(blk, 0) * dx) * isum as f32;
                }
                Kind::Q5_1 => {
                    let blk = &w.bytes[24 * b..24 * b + 24];
                    let codes = codes_q5([blk[4], blk[5], blk[6], blk[7]], &blk[8..]);
                    let isum = dot_codes(&codes, q);
                    *l += (f16_at(blk, 0) * dx) * isum as f32 + f16_at(blk, 2) * x.dxs[b];
                }
                Kind::Int4 | Kind::Int8 => {
                    let isum = if kind == Kind::Int4 {
                        dot_nibbles(&w.bytes[16 * b..16 * b + 16], q)
                    } else {
                        w.bytes[32 * b..32 * b + 32]
                            .iter()
                            .zip(q)
                            .map(|(&v, &q)| i32::from(v) * i32::from(q))
                            .sum()
                    };
                    let g = b / w.group_blocks;
                    *l += (w.scales[g] * dx) * isum as f32 + w.mins[g] * x.dxs[b];
                }
                // Run whole groups by `x8`; the K formats by their own.
                Kind::Q4_0x8
                | Kind::Q5_0x8
                | Kind::Q8_0x8
                | Kind::Q4_1x8
                | Kind::Q4K
                | Kind::Q5K
                | Kind::Q6K => {}
            }
        }
    }

    /// Eight rows of an interleaved group of `format` (see
    /// `super::order`): the formula of the module docs per row, lane
    /// `b mod 8` of row `r` taking block `b`, as [`blocks32`] does for a
    /// row in GGUF order.
    pub(super) fn x8(format: X8, group: &[u8], x: XRow<'_>) -> [f32; 8] {
        let mut lanes = [[0.0f32; 8]; 8];
        for (b, blk) in group.chunks_exact(format.block_bytes()).enumerate() {
            let q = &x.q[32 * b..32 * b + 32];
            for (r, lanes) in lanes.iter_mut().enumerate() {
                let isum = match format {
                    // Piece k (four codes + 128) of row r at 16 + 32k + 4r.
                    X8::Q8_0 => (0..32)
                        .map(|e| {
                            let stored = blk[16 + 32 * (e / 4) + 4 * r + e % 4];
                            (i32::from(stored) - 128) * i32::from(q[e])
                        })
                        .sum(),
                    X8::Q4_0 | X8::Q5_0 | X8::Q4_1 => {
                        let five = format == X8::Q5_0;
                        let (qs, offset) = match format {
                            X8::Q5_0 => (48, 16),
                            X8::Q4_1 => (32, 0),
                            _ => (16, 8),
                        };
                        let high = if five {
                            u32::from_le_bytes([
                                blk[16 + 4 * r],
                                blk[17 + 4 * r],
                                blk[18 + 4 * r],
                                blk[19 + 4 * r],
                            ])
                        } else {
                            0
                        };
                        let fifth = |e: usize| i32::from(((high >> e) & 1) as u8) << 4;
                        let mut isum = 0i32;
                        for k in 0..4 {
                            for j in 0..4 {
                                let v = blk[qs + 32 * k + 4 * r + j];
                                let (e_lo, e_hi) = (4 * k + j, 16 + 4 * k + j);
                                isum += (i32::from(v & 0x0F) | fifth(e_lo)) * i32::from(q[e_lo]);
                                isum += (i32::from(v >> 4) | fifth(e_hi)) * i32::from(q[e_hi]);
                            }
                        }
                        isum - offset * x.xsum[b]
                    }
                };
                let t = (f16_at(blk, 2 * r) * x.dx[b]) * isum as f32;
                lanes[b % 8] += if format == X8::Q4_1 {
                    t + f16_at(blk, 16 + 2 * r) * x.dxs[b]
                } else {
                    t
                };
            }
        }
        lanes.map(fold8)
    }

    /// Q4_K (`five == false`) and Q5_K.
    fn k4(five: bool, bytes: &[u8], x: XRow<'_>, lanes: &mut [f32; 8]) {
        let size = if five { 176 } else { 144 };
        for (s, blk) in bytes.chunks_exact(size).enumerate() {
            let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
            let (sc, mn) = scales_mins_k4(&blk[4..16]);
            let (qh, qs) = if five {
                (&blk[16..48], &blk[48..176])
            } else {
                (&blk[0..0], &blk[16..144])
            };
            for j in 0..8 {
                let b = 8 * s + j;
                let q = &x.q[32 * b..32 * b + 32];
                let shift = 4 * (j % 2);
                let mut isum = 0i32;
                for l in 0..32 {
                    let mut v = (qs[32 * (j / 2) + l] >> shift) & 0x0F;
                    if five {
                        v |= ((qh[l] >> j) & 1) << 4;
                    }
                    isum += i32::from(v) * i32::from(q[l]);
                }
                let t = (d * x.dx[b]) * (i32::from(sc[j]) * isum) as f32;
                let u = (dmin * f32::from(mn[j])) * x.dxs[b];
                lanes[j] = (lanes[j] + t) - u;
            }
        }
    }

    fn q6_k(bytes: &[u8], x: XRow<'_>, lanes: &mut [f32; 8]) {
        for (s, blk) in bytes.chunks_exact(210).enumerate() {
            let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
            let d = f16_at(blk, 208);
            for j in 0..8 {
                let b = 8 * s + j;
                let q = &x.q[32 * b..32 * b + 32];
                let h = j / 4;
                let mut isum = 0i32;
                for half in 0..2 {
                    let mut part = 0i32;
                    for l in 16 * half..16 * half + 16 {
                        let low = (ql[64 * h + 32 * (j % 2) + l] >> (4 * ((j % 4) / 2))) & 0x0F;
                        let high = (qh[32 * h + l] >> (2 * (j % 4))) & 0x03;
                        let v = i32::from(low | (high << 4)) - 32;
                        part += v * i32::from(q[l]);
                    }
                    isum += i32::from(sc[2 * j + half] as i8) * part;
                }
                lanes[j] += (d * x.dx[b]) * isum as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_quantization_rounds_ties_to_even_and_handles_zero_and_nan() {
        let mut q = [0i8; 32];
        let mut x = [0.0f32; 32];
        assert_eq!(quantize_block(&x, &mut q), (0.0, 0));
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = 1.5;
        x[3] = -2.5;
        let (dx, s) = quantize_block(&x, &mut q);
        assert_eq!((dx, &q[..4]), (1.0, &[127i8, 0, 2, -2][..]));
        assert_eq!(s, 127);
        x[5] = f32::NAN;
        assert!(quantize_block(&x, &mut q).0.is_nan());
    }

    #[test]
    fn small_rounding_equals_round_ties_even_on_every_half_and_its_neighbours() {
        // Every half-integer and the floats either side of it up to ±200.
        for k in -400i32..=400 {
            let half = k as f32 / 2.0;
            for y in [half.next_down(), half, half.next_up()] {
                // f32 equality: the same value, with +0.0 == −0.0.
                assert_eq!(round_ties_even_small(y), y.round_ties_even(), "{y}");
            }
        }
        assert!(round_ties_even_small(f32::NAN).is_nan());
    }

    proptest::proptest! {
        /// The vector path of `quantize_row` gives `quantize_block`'s bits
        /// (codes, dx, sums), including blocks with zeros, ±0, extremes and
        /// non-finite values.
        #[test]
        fn row_quantization_equals_the_block_reference(
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => -3.0f32..3.0,
                    1 => proptest::num::f32::ANY,
                    1 => proptest::sample::select(vec![
                        0.0f32, -0.0, 0.5, -0.5, 127.0, -127.0, 1e-40, f32::MAX, f32::MIN,
                        f32::INFINITY, f32::NAN,
                    ]),
                ],
                32..=160,
            ),
            scale in proptest::prop_oneof![proptest::strategy::Just(1.0f32), proptest::strategy::Just(1e-38), proptest::strategy::Just(1e30)],
        ) {
            let blocks = values.len() / 32;
            let row: Vec<f32> = values[..32 * blocks].iter().map(|v| v * scale).collect();
            let (mut q, mut dx, mut xsum, mut dxs) =
                (vec![0i8; row.len()], vec![0f32; blocks], vec![0i32; blocks], vec![0f32; blocks]);
            quantize_row(&row, &mut q, &mut dx, &mut xsum, &mut dxs);
            for b in 0..blocks {
                let mut want = [0i8; 32];
                let (d, s) = quantize_block(&row[32 * b..32 * b + 32], &mut want);
                proptest::prop_assert_eq!(&q[32 * b..32 * b + 32], &want[..], "block {}", b);
                proptest::prop_assert_eq!(dx[b].to_bits(), d.to_bits());
                proptest::prop_assert_eq!(xsum[b], s);
                proptest::prop_assert_eq!(dxs[b].to_bits(), (d * s as f32).to_bits());
            }
        }

        /// The fast rounding agrees with `round_ties_even` (up to the sign
        /// of zero, which `as i8` does not see) wherever it is used.
        #[test]
        fn small_rounding_agrees_with_the_reference(y in -4.0e6f32..4.0e6f32) {
            proptest::prop_assert_eq!(
                round_ties_even_small(y) as i32,
                y.round_ties_even() as i32
            );
        }
    }
}
