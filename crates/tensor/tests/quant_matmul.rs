//! `QMatrix::matmul_t` against a naive reference (dequantize, then an f64
//! dot product), every instruction set against the portable kernels (bit
//! for bit), thread counts, memory-mapped bytes, and the errors.
//!
//! Weights are random valid encodings made here (random code bytes, f16
//! scales of magnitude 1e-3..1e-1), independent of any encoder.
//!
//! Tolerances. Let x̂ be x after the kernels' activation quantization (32
//! values per block, `dx = amax/127`, replicated below), `W` the
//! dequantized weights, `off` a bound on the per-block offset terms (Q4_1
//! `m`, Q4_K/Q5_K `dmin·mn`, Int `mn`), and
//! `mag = Σ_j (|W_j| + 2·off)·|x̂_j|`. Then
//! - tight: `|y − Σ_j W_j·x̂_j| ≤ 2e-6·(blocks + 4)·mag` (f32 rounding of a
//!   fixed formula whose integer parts are exact), and
//! - loose, against the unquantized x: `|y − Σ_j W_j·x_j| ≤
//!   1.001·Σ_b (dx_b/2)·Σ_{j∈b} |W_j| + 2e-6·(blocks + 4)·mag'` with
//!   `mag'` using `max(|x_j|, |x̂_j|)`;
//!
//! both plus the rounding of the output to x's dtype (2^-8 relative for
//! bf16, 2^-11 for f16). When `QMatrix::runs_dense` (from
//! `QMatrix::DENSE_MIN_ROWS` rows, not for Q4_0 and Q5_0) the product runs
//! the dense GEMM on the unquantized x: then the loose check applies
//! without its quantization term.

use std::io::Write;
use std::sync::Arc;

use half::{bf16, f16};
use kaiyuan_tensor::quant::{
    BlockOrder, BlockType, KernelIsa, QBytes, QMatrix, QuantFormat, reorder_blocks,
};
use kaiyuan_tensor::{DType, Tensor, TensorError};
use proptest::prelude::*;

/// xorshift bytes from a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// ±[1e-3, 1e-1] (log-uniform magnitude).
    fn scale(&mut self) -> f32 {
        let mag = 1e-3f32 * 100f32.powf(self.unit());
        if self.byte() & 1 == 0 { mag } else { -mag }
    }
    fn f16_scale(&mut self, out: &mut Vec<u8>) {
        out.extend(f16::from_f32(self.scale()).to_le_bytes());
    }
}

/// A format under test and the bound `off` on its offset terms.
#[derive(Clone, Copy, Debug)]
enum Fmt {
    Block(BlockType),
    Int {
        bits: u8,
        group: usize,
        permuted: bool,
        /// 32 columns short of whole groups: the last group is shorter.
        ragged: bool,
    },
}

impl Fmt {
    /// Columns for a row of `blocks` units. Rows of 32-element blocks get
    /// 4–16 blocks, so the x86 kernels' whole groups of eight and every
    /// kind of shorter last group are both exercised.
    fn cols(self, blocks: usize) -> usize {
        match self {
            Fmt::Block(ty) if ty.block_size() == 32 => 32 * (3 * blocks + 1),
            Fmt::Block(ty) => ty.block_size() * blocks,
            Fmt::Int { group: 0, .. } => 64 * blocks,
            Fmt::Int {
                group,
                ragged: true,
                ..
            } if group > 32 => group * blocks - 32,
            Fmt::Int { group, .. } => group * blocks,
        }
    }

    fn offset_bound(self) -> f64 {
        match self {
            Fmt::Block(BlockType::Q4_1 | BlockType::Q5_1) => 0.1,
            Fmt::Block(BlockType::Q4_K | BlockType::Q5_K) => 0.1 * 63.0,
            Fmt::Int { .. } => 0.5,
            _ => 0.0,
        }
    }
}

/// A random valid `rows × cols` matrix of `fmt`.
fn random_matrix(fmt: Fmt, rows: usize, cols: usize, seed: u64) -> QMatrix {
    let mut rng = Rng::new(seed);
    match fmt {
        Fmt::Block(ty) => {
            let blocks = rows * cols / ty.block_size();
            let mut bytes = Vec::with_capacity(blocks * ty.type_size());
            for _ in 0..blocks {
                match ty {
                    BlockType::Q8_0 | BlockType::Q4_0 => {
                        rng.f16_scale(&mut bytes);
                        let n = if ty == BlockType::Q8_0 { 32 } else { 16 };
                        bytes.extend((0..n).map(|_| rng.byte()));
                    }
                    BlockType::Q4_1 => {
                        rng.f16_scale(&mut bytes);
                        rng.f16_scale(&mut bytes);
                        bytes.extend((0..16).map(|_| rng.byte()));
                    }
                    BlockType::Q5_0 | BlockType::Q5_1 => {
                        rng.f16_scale(&mut bytes);
                        if ty == BlockType::Q5_1 {
                            rng.f16_scale(&mut bytes);
                        }
                        bytes.extend((0..20).map(|_| rng.byte()));
                    }
                    BlockType::Q4_K | BlockType::Q5_K => {
                        rng.f16_scale(&mut bytes);
                        let dmin = rng.scale().abs();
                        bytes.extend(f16::from_f32(dmin).to_le_bytes());
                        let rest = if ty == BlockType::Q4_K { 140 } else { 172 };
                        bytes.extend((0..rest).map(|_| rng.byte()));
                    }
                    BlockType::Q6_K => {
                        bytes.extend((0..208).map(|_| rng.byte()));
                        rng.f16_scale(&mut bytes);
                    }
                }
            }
            QMatrix::from_blocks(ty, rows, cols, QBytes::Owned(bytes)).expect("valid blocks")
        }
        Fmt::Int {
            bits,
            group,
            permuted,
            ..
        } => {
            let group = if group == 0 { cols } else { group };
            let codes: Vec<u8> = (0..rows * cols).map(|_| rng.byte() >> (8 - bits)).collect();
            let groups = rows * cols.div_ceil(group);
            let scales = (0..groups).map(|_| rng.scale()).collect();
            let mins = (0..groups).map(|_| rng.unit() - 0.5).collect();
            let perm = permuted.then(|| {
                let mut p: Vec<u32> = (0..cols as u32).collect();
                for i in (1..cols).rev() {
                    p.swap(i, rng.next() as usize % (i + 1));
                }
                p
            });
            QMatrix::from_int(bits, group, rows, cols, &codes, scales, mins, perm)
                .expect("valid int matrix")
        }
    }
}

/// The kernels' activation quantization of one row (stored column order):
/// x̂ and each block's `dx`.
fn quantized_row(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut xhat = Vec::with_capacity(x.len());
    let mut dxs = Vec::new();
    for block in x.chunks_exact(32) {
        let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let dx = amax / 127.0;
        let id = if dx >= f32::MIN_POSITIVE {
            1.0 / dx
        } else {
            0.0
        };
        xhat.extend(block.iter().map(|&v| (v * id).round_ties_even() * dx));
        dxs.push(dx);
    }
    (xhat, dxs)
}

fn out_rounding(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 1.0 / 256.0,
        DType::F16 => 1.0 / 2048.0,
        _ => 0.0,
    }
}

/// Checks `y` (m × rows) against the naive references; `x` is m × cols in
/// original order as f32, `perm` maps stored columns to input features.
fn check_against_reference(
    w: &QMatrix,
    fmt: Fmt,
    x: &[f32],
    y: &[f32],
    perm: &[usize],
    dtype: DType,
) -> Result<(), String> {
    let (rows, cols) = (w.rows(), w.cols());
    let dense = w.runs_dense(x.len() / cols);
    let deq = w.dequantize();
    let off = fmt.offset_bound();
    let blocks = (cols / 32) as f64;
    for (i, (xrow, yrow)) in x
        .chunks_exact(cols)
        .zip(y.chunks_exact(rows.max(1)))
        .enumerate()
    {
        let stored: Vec<f32> = perm.iter().map(|&p| xrow[p]).collect();
        let (xhat, dxs) = quantized_row(&stored);
        for (r, &got) in yrow.iter().enumerate() {
            let wrow: Vec<f64> = perm.iter().map(|&p| f64::from(deq[r * cols + p])).collect();
            let (mut tight_ref, mut loose_ref, mut mag, mut mag2, mut quant_err) =
                (0.0, 0.0, 0.0, 0.0, 0.0);
            for j in 0..cols {
                let (xv, xh) = (f64::from(stored[j]), f64::from(xhat[j]));
                tight_ref += wrow[j] * xh;
                loose_ref += wrow[j] * xv;
                mag += (wrow[j].abs() + 2.0 * off) * xh.abs();
                mag2 += (wrow[j].abs() + 2.0 * off) * xv.abs().max(xh.abs());
                quant_err += wrow[j].abs() * f64::from(dxs[j / 32]) / 2.0;
            }
            let got = f64::from(got);
            let round = out_rounding(dtype) * got.abs();
            let tight_tol = 2e-6 * (blocks + 4.0) * mag + round;
            if dense {
                // The dense GEMM sees the unquantized x.
                let tol = 2e-6 * (blocks + 4.0) * mag2 + round;
                if (got - loose_ref).abs() > tol {
                    return Err(format!(
                        "{fmt:?} dense row {i} out {r}: {got} vs f64 reference {loose_ref} (tol {tol})"
                    ));
                }
                continue;
            }
            if (got - tight_ref).abs() > tight_tol {
                return Err(format!(
                    "{fmt:?} row {i} out {r}: {got} vs quantized-x reference {tight_ref} (tol {tight_tol})"
                ));
            }
            let loose_tol = 1.001 * quant_err + 2e-6 * (blocks + 4.0) * mag2 + round;
            if (got - loose_ref).abs() > loose_tol {
                return Err(format!(
                    "{fmt:?} row {i} out {r}: {got} vs f64 reference {loose_ref} (tol {loose_tol})"
                ));
            }
        }
    }
    Ok(())
}

fn fmt_strategy() -> impl Strategy<Value = Fmt> {
    prop_oneof![
        Just(Fmt::Block(BlockType::Q8_0)),
        Just(Fmt::Block(BlockType::Q4_0)),
        Just(Fmt::Block(BlockType::Q4_1)),
        Just(Fmt::Block(BlockType::Q5_0)),
        Just(Fmt::Block(BlockType::Q5_1)),
        Just(Fmt::Block(BlockType::Q4_K)),
        Just(Fmt::Block(BlockType::Q5_K)),
        Just(Fmt::Block(BlockType::Q6_K)),
        (
            prop_oneof![Just(4u8), Just(8u8)],
            prop_oneof![Just(32usize), Just(64), Just(128), Just(0)],
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(bits, group, permuted, ragged)| Fmt::Int {
                bits,
                group,
                permuted,
                ragged
            }),
    ]
}

/// x as a tensor of `dtype` in one of three layouts, and its values as f32
/// in row-major order.
fn make_x(m: usize, cols: usize, dtype: DType, view: u8, seed: u64) -> (Tensor, Vec<f32>) {
    let mut rng = Rng::new(seed ^ 0x5EED);
    let raw: Vec<f32> = (0..m * cols)
        .map(|k| {
            let v = rng.unit() * 4.0 - 2.0;
            // Some all-zero blocks and some outliers.
            if (k / 32) % 7 == 3 {
                0.0
            } else if k % 97 == 5 {
                v * 30.0
            } else {
                v
            }
        })
        .collect();
    let rounded: Vec<f32> = raw
        .iter()
        .map(|&v| match dtype {
            DType::F16 => f16::from_f32(v).to_f32(),
            DType::BF16 => bf16::from_f32(v).to_f32(),
            _ => v,
        })
        .collect();
    let dense = Tensor::from_vec(rounded.clone(), &[m, cols]).unwrap();
    let x = match view {
        0 => dense,
        1 => {
            // (cols, m) transposed: a strided view.
            let mut t = vec![0.0f32; m * cols];
            for i in 0..m {
                for j in 0..cols {
                    t[j * m + i] = rounded[i * cols + j];
                }
            }
            Tensor::from_vec(t, &[cols, m]).unwrap().t().unwrap()
        }
        _ => {
            // Rows 1..=m of a taller tensor: a non-zero offset.
            let mut t = vec![9.0f32; cols];
            t.extend(&rounded);
            Tensor::from_vec(t, &[m + 1, cols])
                .unwrap()
                .narrow(0, 1, m)
                .unwrap()
        }
    };
    (x.cast(dtype).unwrap(), rounded)
}

fn as_f32(t: &Tensor) -> Vec<f32> {
    t.cast(DType::F32).unwrap().to_vec::<f32>().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

/// The permutation a matrix was built with, recovered by dequantizing it
/// next to its unpermuted twin (same codes and scales).
fn permutation_of(w: &QMatrix, fmt: Fmt, seed: u64) -> Vec<usize> {
    match fmt {
        Fmt::Int {
            bits,
            group,
            permuted: true,
            ..
        } => {
            // Rebuild the permutation exactly as `random_matrix` draws it.
            let (rows, cols) = (w.rows(), w.cols());
            let group = if group == 0 { cols } else { group };
            let mut rng = Rng::new(seed);
            for _ in 0..rows * cols {
                rng.byte();
            }
            for _ in 0..rows * cols.div_ceil(group) {
                rng.scale();
            }
            for _ in 0..rows * cols.div_ceil(group) {
                rng.unit();
            }
            let _ = bits;
            let mut p: Vec<usize> = (0..cols).collect();
            for i in (1..cols).rev() {
                p.swap(i, rng.next() as usize % (i + 1));
            }
            p
        }
        _ => (0..w.cols()).collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every instruction set equals the portable kernels bit for bit, and
    /// the portable kernels meet both reference bounds.
    #[test]
    fn fast_equals_portable_and_reference(
        fmt in fmt_strategy(),
        rows in 1usize..40,
        blocks in 1usize..6,
        m in prop_oneof![Just(1usize), Just(2), Just(3), Just(5), Just(9), Just(17)],
        dtype in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)],
        view in 0u8..3,
        seed in any::<u64>(),
    ) {
        let cols = fmt.cols(blocks);
        let w = random_matrix(fmt, rows, cols, seed);
        let perm = permutation_of(&w, fmt, seed);
        let (x, xv) = make_x(m, cols, dtype, view, seed);
        let portable = w.matmul_t_on(&x, KernelIsa::Portable).unwrap();
        prop_assert_eq!(portable.shape(), &[m, rows][..]);
        prop_assert_eq!(portable.dtype(), dtype);
        let portable = as_f32(&portable);
        for isa in KernelIsa::supported() {
            let fast = as_f32(&w.matmul_t_on(&x, isa).unwrap());
            prop_assert_eq!(bits(&fast), bits(&portable), "{:?} {:?}", isa, fmt);
        }
        prop_assert_eq!(bits(&as_f32(&w.matmul_t(&x).unwrap())), bits(&portable));
        if let Err(e) = check_against_reference(&w, fmt, &xv, &portable, &perm, dtype) {
            prop_assert!(false, "{}", e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Q4_0 and Q5_0 kept interleaved, eight rows per group (the order
    /// `from_blocks` picks for owned bytes), give the bits of the same
    /// blocks in GGUF row order on the portable kernels, on every
    /// instruction set and on the decode, small-batch and dense paths; they
    /// dequantize to the same values and give their GGUF bytes back.
    #[test]
    fn interleaved_blocks_equal_row_order(
        ty in prop_oneof![
            Just(BlockType::Q4_0),
            Just(BlockType::Q4_1),
            Just(BlockType::Q5_0),
            Just(BlockType::Q8_0),
        ],
        groups in 1usize..6,
        blocks in 1usize..20,
        m in prop_oneof![Just(1usize), Just(2), Just(3), Just(4), Just(7), Just(16), Just(37)],
        seed in any::<u64>(),
    ) {
        let (rows, cols) = (8 * groups, 32 * blocks);
        let w = random_matrix(Fmt::Block(ty), rows, cols, seed);
        prop_assert_eq!(w.block_order(), BlockOrder::Interleaved8);
        let gguf = w.packed_codes().into_owned();
        let by_rows = QMatrix::from_ordered_blocks(
            ty, rows, cols, QBytes::Owned(gguf.clone()), BlockOrder::Rows,
        ).unwrap();
        prop_assert_eq!(by_rows.block_order(), BlockOrder::Rows);
        prop_assert_eq!(&*by_rows.packed_codes(), &gguf[..]);
        let mut ordered = vec![0u8; gguf.len()];
        reorder_blocks(ty, rows, cols, &gguf, BlockOrder::Interleaved8, &mut ordered)
            .unwrap();
        let rebuilt = QMatrix::from_ordered_blocks(
            ty, rows, cols, QBytes::Owned(ordered), BlockOrder::Interleaved8,
        ).unwrap();
        prop_assert_eq!(&*rebuilt.packed_codes(), &gguf[..]);
        prop_assert_eq!(bits(&w.dequantize()), bits(&by_rows.dequantize()));
        let (x, _) = make_x(m, cols, DType::F32, 0, seed);
        let want = bits(&as_f32(&by_rows.matmul_t_on(&x, KernelIsa::Portable).unwrap()));
        for isa in KernelIsa::supported() {
            let got = bits(&as_f32(&w.matmul_t_on(&x, isa).unwrap()));
            prop_assert_eq!(&got, &want, "{:?}", isa);
            // The tiled kernels (several rows of x per pass) give each row
            // the bits of that row alone (the one-row decode kernel).
            for i in 0..m {
                let alone = w.matmul_t_on(&x.narrow(0, i, 1).unwrap(), isa).unwrap();
                prop_assert_eq!(
                    bits(&as_f32(&alone)), got[i * rows..(i + 1) * rows].to_vec(),
                    "{:?} row {} of {}", isa, i, m
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Several matrices on the same x (shared quantization and, when
    /// decoding, one job) give each matrix's own product bit for bit, in
    /// every mix of formats and with the input permutation that forces the
    /// one-by-one path.
    #[test]
    fn products_on_a_shared_input_equal_each_product(
        fmts in prop::collection::vec(fmt_strategy(), 1..4),
        rows in prop::collection::vec(1usize..70, 3),
        m in prop_oneof![Just(0usize), Just(1), Just(2), Just(4), Just(5), Just(16)],
        seed in any::<u64>(),
    ) {
        // Whole K-quant blocks and whole Int groups at 512 columns.
        let cols = 512;
        let ws: Vec<QMatrix> = fmts
            .iter()
            .zip(&rows)
            .enumerate()
            .map(|(i, (&fmt, &r))| {
                let fmt = match fmt {
                    Fmt::Int { bits, group, permuted, .. } => {
                        Fmt::Int { bits, group, permuted, ragged: false }
                    }
                    other => other,
                };
                random_matrix(fmt, r, cols, seed ^ i as u64)
            })
            .collect();
        let refs: Vec<&QMatrix> = ws.iter().collect();
        let (x, _) = make_x(m, cols, DType::F32, 0, seed);
        let together = QMatrix::matmul_t_many(&refs, &x).unwrap();
        prop_assert_eq!(together.len(), ws.len());
        for (w, y) in ws.iter().zip(&together) {
            let alone = w.matmul_t(&x).unwrap();
            prop_assert_eq!(y.shape(), alone.shape());
            prop_assert_eq!(bits(&as_f32(y)), bits(&as_f32(&alone)), "{:?}", w.format());
        }
    }
}

/// Re-ordering refuses what it cannot hold, naming the reason.
#[test]
fn reorder_errors() {
    let mut dst = vec![0u8; 144];
    let err = reorder_blocks(
        BlockType::Q4_0,
        8,
        32,
        &[0; 143],
        BlockOrder::Interleaved8,
        &mut dst,
    );
    says(err.unwrap_err(), &["reorder_blocks", "143"]);
    let err = reorder_blocks(
        BlockType::Q5_1,
        8,
        32,
        &[0; 192],
        BlockOrder::Interleaved8,
        &mut [0; 192],
    );
    says(err.unwrap_err(), &["multiple of 8 rows", "Q5_1"]);
    let err = reorder_blocks(
        BlockType::Q4_0,
        4,
        32,
        &[0; 72],
        BlockOrder::Interleaved8,
        &mut [0; 72],
    );
    says(err.unwrap_err(), &["multiple of 8 rows", "4 rows"]);
    let err = reorder_blocks(
        BlockType::Q4_0,
        8,
        48,
        &[0; 216],
        BlockOrder::Rows,
        &mut [0; 216],
    );
    says(err.unwrap_err(), &["cols = 48"]);
    let err = QMatrix::from_ordered_blocks(
        BlockType::Q4_0,
        12,
        32,
        QBytes::Owned(vec![0; 216]),
        BlockOrder::Interleaved8,
    );
    says(err.unwrap_err(), &["QMatrix::from_blocks", "12 rows"]);
    // Rows order is a copy.
    let src: Vec<u8> = (0..72).collect();
    let mut out = vec![0u8; 72];
    reorder_blocks(BlockType::Q4_0, 4, 32, &src, BlockOrder::Rows, &mut out).unwrap();
    assert_eq!(out, src);
}

/// Dedicated pools of 1, 2 and 3 threads give the same bits, on the decode
/// (spinning pool) and prefill (rayon) paths.
#[test]
fn thread_count_does_not_change_results() {
    for (fmt, rows, cols) in [
        (Fmt::Block(BlockType::Q4_K), 300, 512),
        (Fmt::Block(BlockType::Q8_0), 257, 96),
        (Fmt::Block(BlockType::Q4_0), 264, 320),
        (
            Fmt::Int {
                bits: 4,
                group: 64,
                permuted: true,
                ragged: false,
            },
            130,
            256,
        ),
    ] {
        let w = random_matrix(fmt, rows, cols, 11);
        for m in [1usize, 3, 7, 33] {
            let (x, _) = make_x(m, cols, DType::F32, 0, 5);
            let runs: Vec<Vec<u32>> = [1usize, 2, 3]
                .iter()
                .map(|&n| {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(n)
                        .build()
                        .unwrap();
                    bits(&as_f32(&pool.install(|| w.matmul_t(&x)).unwrap()))
                })
                .collect();
            assert_eq!(runs[0], runs[1], "{fmt:?} m={m}: 1 vs 2 threads");
            assert_eq!(runs[0], runs[2], "{fmt:?} m={m}: 1 vs 3 threads");
            let portable = w.matmul_t_on(&x, KernelIsa::Portable).unwrap();
            assert_eq!(runs[0], bits(&as_f32(&portable)));
        }
    }
}

/// Outputs keep x's leading axes; a zero-row matrix gives an empty last axis.
#[test]
fn leading_axes_and_empty_shapes() {
    let w = random_matrix(Fmt::Block(BlockType::Q4_0), 5, 64, 3);
    let x = Tensor::rand_uniform(&[2, 3, 64], -1.0, 1.0, 1).unwrap();
    let y = w.matmul_t(&x).unwrap();
    assert_eq!(y.shape(), &[2, 3, 5]);
    let flat = w.matmul_t(&x.reshape(&[6, 64]).unwrap()).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), flat.to_vec::<f32>().unwrap());
    let empty = QMatrix::from_blocks(BlockType::Q8_0, 0, 32, QBytes::Owned(vec![])).unwrap();
    let y = empty
        .matmul_t(&Tensor::zeros(&[4, 32], DType::F32).unwrap())
        .unwrap();
    assert_eq!(y.shape(), &[4, 0]);
    let x0 = Tensor::zeros(&[0, 64], DType::F32).unwrap();
    assert_eq!(w.matmul_t(&x0).unwrap().shape(), &[0, 5]);
}

/// A row of x holding NaN or infinity gives NaN outputs in that row only.
#[test]
fn non_finite_activations_give_nan() {
    let w = random_matrix(Fmt::Block(BlockType::Q6_K), 4, 256, 8);
    let mut v = vec![0.5f32; 2 * 256];
    v[3] = f32::INFINITY;
    let y = w
        .matmul_t(&Tensor::from_vec(v, &[2, 256]).unwrap())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert!(y[..4].iter().all(|v| v.is_nan()));
    assert!(y[4..].iter().all(|v| v.is_finite()));
}

/// Blocks read in place from a memory map give the results of owned ones.
#[test]
fn mapped_blocks_match_owned() {
    let ty = BlockType::Q4_K;
    let owned = random_matrix(Fmt::Block(ty), 6, 512, 21);
    let mut bytes = vec![0u8; 7]; // a misaligned start is fine for blocks
    let mut data = Vec::new();
    // The owned bytes, re-made from the same seed.
    let mut rng = Rng::new(21);
    for _ in 0..12 {
        rng.f16_scale(&mut data);
        let dmin = rng.scale().abs();
        data.extend(f16::from_f32(dmin).to_le_bytes());
        data.extend((0..140).map(|_| rng.byte()));
    }
    bytes.extend(&data);
    let path = std::env::temp_dir().join(format!("kaiyuan-qmatrix-{}.bin", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&bytes))
        .unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: the file is private to this test and not modified while mapped.
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.unwrap());
    let _ = std::fs::remove_file(&path);
    let mapped = QMatrix::from_blocks(
        ty,
        6,
        512,
        QBytes::Mapped {
            map: Arc::clone(&map),
            range: 7..7 + data.len(),
        },
    )
    .unwrap();
    assert!(mapped.is_memory_mapped() && !owned.is_memory_mapped());
    assert_eq!(mapped.byte_size(), data.len());
    assert_eq!(mapped.format(), QuantFormat::Block(ty));
    let x = Tensor::rand_uniform(&[3, 512], -1.0, 1.0, 2).unwrap();
    assert_eq!(
        mapped.matmul_t(&x).unwrap().to_vec::<f32>().unwrap(),
        owned.matmul_t(&x).unwrap().to_vec::<f32>().unwrap()
    );
    let bad = QMatrix::from_blocks(
        ty,
        6,
        512,
        QBytes::Mapped {
            map,
            range: 8..8 + data.len(),
        },
    );
    says(bad.unwrap_err(), &["QMatrix::from_blocks", "outside"]);
}

/// The error's message mentions every needle.
fn says(err: TensorError, needles: &[&str]) {
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

#[test]
fn constructor_errors() {
    const B: &str = "QMatrix::from_blocks";
    says(
        QMatrix::from_blocks(BlockType::Q4_0, 1, 48, QBytes::Owned(vec![0; 27])).unwrap_err(),
        &[B, "48", "block size 32"],
    );
    says(
        QMatrix::from_blocks(BlockType::Q4_K, 1, 128, QBytes::Owned(vec![0; 72])).unwrap_err(),
        &[B, "128", "256"],
    );
    says(
        QMatrix::from_blocks(BlockType::Q8_0, 2, 64, QBytes::Owned(vec![0; 135])).unwrap_err(),
        &[B, "135 bytes", "2 × 64"],
    );
    says(
        QMatrix::from_blocks(BlockType::Q8_0, 1, 0, QBytes::Owned(vec![])).unwrap_err(),
        &[B, "cols = 0"],
    );

    const I: &str = "QMatrix::from_int";
    let int = |bits, group, cols: usize, codes: &[u8], s: Vec<f32>, m: Vec<f32>, p| {
        QMatrix::from_int(bits, group, 1, cols, codes, s, m, p).unwrap_err()
    };
    let z = [0u8; 64];
    says(
        int(3, 32, 32, &z[..32], vec![1.0], vec![0.0], None),
        &[I, "bits = 3"],
    );
    says(
        int(4, 32, 48, &z[..48], vec![1.0], vec![0.0], None),
        &[I, "group = 32", "cols = 48"],
    );
    says(
        int(4, 48, 96, &z[..48], vec![1.0], vec![0.0], None),
        &[I, "group = 48"],
    );
    // Group 64 of 96 columns: two groups, the last one of 32 columns.
    says(
        int(4, 64, 96, &[0u8; 96], vec![1.0], vec![0.0], None),
        &[I, "1 scales", "expected 2"],
    );
    says(
        int(4, 32, 32, &z[..31], vec![1.0], vec![0.0], None),
        &[I, "31 codes"],
    );
    let mut big = [0u8; 32];
    big[5] = 16;
    says(
        int(4, 32, 32, &big, vec![1.0], vec![0.0], None),
        &[I, "code 16", "position 5", "4 bits"],
    );
    says(
        int(8, 32, 64, &z, vec![1.0], vec![0.0; 2], None),
        &[I, "1 scales", "expected 2"],
    );
    says(
        int(8, 32, 64, &z, vec![1.0; 2], vec![0.0; 3], None),
        &[I, "3 mins", "expected 2"],
    );
    says(
        int(8, 32, 32, &z[..32], vec![f32::NAN], vec![0.0], None),
        &[I, "scales[0]", "not finite"],
    );
    says(
        int(8, 32, 32, &z[..32], vec![1.0], vec![f32::INFINITY], None),
        &[I, "mins[0]", "not finite"],
    );
    let mut dup: Vec<u32> = (0..32).collect();
    dup[3] = 4;
    says(
        int(8, 32, 32, &z[..32], vec![1.0], vec![0.0], Some(dup)),
        &[I, "not a permutation", "entry 4"],
    );
    says(
        int(
            8,
            32,
            32,
            &z[..32],
            vec![1.0],
            vec![0.0],
            Some((0..31).collect()),
        ),
        &[I, "31 entries", "32 columns"],
    );
    let mut far: Vec<u32> = (0..32).collect();
    far[0] = 32;
    says(
        int(8, 32, 32, &z[..32], vec![1.0], vec![0.0], Some(far)),
        &[I, "not a permutation", "entry 0 is 32"],
    );
}

#[test]
fn matmul_and_dequantize_errors() {
    const OP: &str = "QMatrix::matmul_t";
    let w = random_matrix(Fmt::Block(BlockType::Q8_0), 3, 64, 1);
    says(
        w.matmul_t(&Tensor::zeros(&[2, 63], DType::F32).unwrap())
            .unwrap_err(),
        &[OP, "[2, 63]", "cols = 64"],
    );
    says(
        w.matmul_t(&Tensor::zeros(&[2, 64], DType::U32).unwrap())
            .unwrap_err(),
        &[OP, "u32"],
    );
    says(
        w.matmul_t(&Tensor::zeros(&[2, 64], DType::I64).unwrap())
            .unwrap_err(),
        &[OP, "i64"],
    );
    const D: &str = "QMatrix::dequantize_rows";
    let mut out = vec![0.0f32; 64];
    says(
        w.dequantize_rows(3..4, &mut out).unwrap_err(),
        &[D, "3..4", "3 rows"],
    );
    says(
        w.dequantize_rows(0..2, &mut out).unwrap_err(),
        &[D, "64 values"],
    );
}

/// `dequantize` of an `Int` matrix puts stored column j at input feature
/// perm[j], and `matmul_t` multiplies it by that feature.
#[test]
fn int_permutation_and_byte_size() {
    let cols = 64;
    let codes: Vec<u8> = (0..cols as u8).map(|j| j % 16).collect();
    let perm: Vec<u32> = (0..cols as u32).rev().collect();
    let w = QMatrix::from_int(
        4,
        32,
        1,
        cols,
        &codes,
        vec![1.0, 2.0],
        vec![0.0, 0.5],
        Some(perm),
    )
    .unwrap();
    assert_eq!(w.byte_size(), 32 + 8 + 8 + 4 * 64);
    assert_eq!(w.format(), QuantFormat::Int { bits: 4, group: 32 });
    let deq = w.dequantize();
    assert_eq!(deq[63], 0.0); // stored column 0: 1·0 + 0
    assert_eq!(deq[0], 2.0 * 15.0 + 0.5); // stored column 63
    let mut onehot = vec![0.0f32; cols];
    onehot[0] = 1.0;
    let y = w
        .matmul_t(&Tensor::from_vec(onehot, &[1, cols]).unwrap())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(y, vec![30.5]);
    let debug = format!("{w:?}");
    assert!(debug.contains("permuted: true"), "{debug}");
}
