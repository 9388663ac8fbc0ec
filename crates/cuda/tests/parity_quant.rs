//! GPU-vs-CPU parity of `kernels/quant.cu` (skips without a GPU): `y = x·Wᵀ`
//! with GGUF Q8_0 / Q4_0 / Q4_K weights and group-wise int4 / int8 (GPTQ)
//! weights. The reference is kaiyuan-tensor's own CPU decoding
//! (`QMatrix::dequantize`, bit-exact with ggml for the GGUF blocks) and an
//! f64 dot product.
//!
//! Tolerance: every output is an f32 sum of `k` products, so each is checked
//! against `|got − want| ≤ 2·10⁻⁵·Σ_j |w_j·x_j|` (a few hundred times the
//! f32 rounding of such a sum; one wrong element of the largest `k` here is
//! still ten times more).

// Built with the `cuda` feature (CI runs it so, skipping visibly without a
// GPU) or the `emulator` feature (CI runs the kernels on the CPU); without
// either no device can exist.
#![cfg(any(feature = "cuda", feature = "emulator"))]

mod common;

use common::*;
use half::f16;
use kaiyuan_cuda::GpuDevice;
use kaiyuan_cuda::ops::quant::{self, BlockWeight, GgufType, IntWeight};
use kaiyuan_tensor::quant::{BlockType, QBytes, QMatrix};

/// (rows n, cols k) for the 32-element block types: n not a multiple of the
/// 4 rows of a thread block, k not a multiple of the 256 elements a warp
/// covers per step.
const SHAPES_32: &[(usize, usize)] = &[(1, 32), (5, 96), (7, 288), (33, 1056), (130, 4128)];
/// (rows, cols) for Q4_K: odd numbers of super-blocks (a warp covers 2 per
/// step).
const SHAPES_256: &[(usize, usize)] = &[(1, 256), (5, 768), (7, 1280), (33, 2304), (130, 4352)];
/// Rows of x for the batched kernels (tiles of 8).
const BATCHES: &[usize] = &[1, 2, 5, 8, 9, 17];

/// Relative tolerance against Σ|w·x| (see the module docs).
const REL: f64 = 2e-5;

fn block_type(ty: GgufType) -> BlockType {
    match ty {
        GgufType::Q8_0 => BlockType::Q8_0,
        GgufType::Q4_0 => BlockType::Q4_0,
        GgufType::Q4_K => BlockType::Q4_K,
    }
}

/// `rows × cols` elements of random `ty` blocks: every code, 6-bit scale and
/// minimum pattern occurs; the f16 `d` (and Q4_K's `dmin`) are finite,
/// non-zero, of either sign.
fn random_blocks(rng: &mut Rng, ty: GgufType, rows: usize, cols: usize) -> Vec<u8> {
    let blocks = rows * cols / ty.block_size();
    let halves = if ty == GgufType::Q4_K { 2 } else { 1 };
    let mut bytes = Vec::with_capacity(blocks * ty.type_size());
    for _ in 0..blocks {
        let start = bytes.len();
        bytes.extend((0..ty.type_size()).map(|_| rng.next_u64() as u8));
        for h in 0..halves {
            let sign = if rng.below(4) == 0 { -1.0 } else { 1.0 };
            let v = f16::from_f32(sign * rng.uniform(0.002, 0.02));
            bytes[start + 2 * h..start + 2 * h + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    bytes
}

/// `want[i][r] = Σ_c w[r][c]·x[i][c]` in f64 and the bound of each.
fn reference(w: &[f32], x: &[f32], m: usize, rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut want = Vec::with_capacity(m * rows);
    let mut bound = Vec::with_capacity(m * rows);
    for xi in x.chunks_exact(cols).take(m) {
        for wr in w.chunks_exact(cols).take(rows) {
            let (mut sum, mut magnitude) = (0f64, 0f64);
            for (&a, &b) in wr.iter().zip(xi) {
                let p = f64::from(a) * f64::from(b);
                sum += p;
                magnitude += p.abs();
            }
            want.push(sum);
            bound.push(REL * magnitude + 1e-6);
        }
    }
    (want, bound)
}

/// Asserts `|got − want| ≤ bound` elementwise (NaN always fails), printing
/// the first mismatches as (x row, weight row).
fn assert_dots(what: &str, got: &[f32], want: &[f64], bound: &[f64], rows: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    // NaN is never within the bound.
    let within = |i: usize| (f64::from(got[i]) - want[i]).abs() <= bound[i];
    let bad: Vec<usize> = (0..got.len()).filter(|&i| !within(i)).collect();
    if !bad.is_empty() {
        let shown: Vec<String> = bad
            .iter()
            .take(8)
            .map(|&i| {
                format!(
                    "[{}, {}] got {} want {} (bound {:.3e})",
                    i / rows,
                    i % rows,
                    got[i],
                    want[i],
                    bound[i]
                )
            })
            .collect();
        panic!(
            "{what}: {} of {} outputs outside the bound: {}",
            bad.len(),
            got.len(),
            shown.join(", ")
        );
    }
}

/// One GGUF product on the device: `gemv` (m = 1) or `gemm`.
fn run_gguf(
    device: &GpuDevice,
    ty: GgufType,
    rows: usize,
    cols: usize,
    m: usize,
    batched: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let bytes = random_blocks(&mut rng, ty, rows, cols);
    let x = rng.vec(m * cols, -1.0, 1.0);
    let w = QMatrix::from_blocks(block_type(ty), rows, cols, QBytes::Owned(bytes.clone()))
        .expect("QMatrix::from_blocks")
        .dequantize();
    let (want, bound) = reference(&w, &x, m, rows, cols);

    let w_gpu = device.upload(&bytes).expect("upload w");
    let x_gpu = device.upload(&x).expect("upload x");
    let mut y = poisoned::<f32>(device, m * rows);
    let weight = BlockWeight {
        ty,
        rows,
        cols,
        bytes: &w_gpu,
    };
    let kind = if batched {
        quant::gemm_gguf(device, &weight, &x_gpu, m, &mut y).expect("gemm_gguf");
        "gemm"
    } else {
        quant::gemv_gguf(device, &weight, &x_gpu, &mut y).expect("gemv_gguf");
        "gemv"
    };
    let got = fetch(device, &y);
    let what = format!("{kind}_{} n={rows} k={cols} m={m}", ty.kernel_name());
    assert_dots(&what, &got, &want, &bound, rows);
}

fn gemv_matches(ty: GgufType) {
    let Some(device) = gpu(&format!("gemv_{}", ty.kernel_name())) else {
        return;
    };
    let shapes = if ty == GgufType::Q4_K {
        SHAPES_256
    } else {
        SHAPES_32
    };
    for (s, &(rows, cols)) in shapes.iter().enumerate() {
        run_gguf(&device, ty, rows, cols, 1, false, 100 + s as u64);
    }
}

fn gemm_matches(ty: GgufType) {
    let Some(device) = gpu(&format!("gemm_{}", ty.kernel_name())) else {
        return;
    };
    let shapes = if ty == GgufType::Q4_K {
        SHAPES_256
    } else {
        SHAPES_32
    };
    for (s, &(rows, cols)) in shapes.iter().enumerate() {
        for &m in BATCHES {
            run_gguf(
                &device,
                ty,
                rows,
                cols,
                m,
                true,
                200 + 10 * s as u64 + m as u64,
            );
        }
    }
}

#[test]
fn gemv_q8_0() {
    gemv_matches(GgufType::Q8_0);
}

#[test]
fn gemv_q4_0() {
    gemv_matches(GgufType::Q4_0);
}

#[test]
fn gemv_q4_k() {
    gemv_matches(GgufType::Q4_K);
}

#[test]
fn gemm_q8_0() {
    gemm_matches(GgufType::Q8_0);
}

#[test]
fn gemm_q4_0() {
    gemm_matches(GgufType::Q4_0);
}

#[test]
fn gemm_q4_k() {
    gemm_matches(GgufType::Q4_K);
}

// ---------------------------------------------------------------------------
// Group-wise integers (GPTQ / RTN) in QMatrix::from_int's layout.
// ---------------------------------------------------------------------------

/// (rows, cols, group): groups that do not divide cols (a shorter last
/// group), per-channel (group = cols) and a group wider than the row.
const INT_SHAPES: &[(usize, usize, usize)] = &[
    (1, 32, 32),
    (5, 160, 64),
    (7, 1056, 128),
    (33, 4128, 128),
    (130, 800, 800),
    (6, 96, 256),
];

/// A random permutation of `0..n` (Fisher–Yates).
fn permutation(rng: &mut Rng, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u32 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// A random int weight: codes (stored order), f16-exact scales, and
/// minimums `−s·z` with integer zero points (the GPTQ form), plus an
/// optional act-order permutation.
struct IntCase {
    codes: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
    perm: Option<Vec<u32>>,
}

fn random_int(
    rng: &mut Rng,
    bits: u8,
    rows: usize,
    cols: usize,
    group: usize,
    permuted: bool,
) -> IntCase {
    let levels = 1u32 << bits;
    let groups = rows * cols.div_ceil(group);
    let codes = (0..rows * cols).map(|_| rng.below(levels) as u8).collect();
    let scales: Vec<f32> = (0..groups)
        .map(|_| f16::from_f32(rng.uniform(0.001, 0.02)).to_f32())
        .collect();
    let mins = scales
        .iter()
        .map(|&s| -s * rng.below(levels) as f32)
        .collect();
    let perm = permuted.then(|| permutation(rng, cols));
    IntCase {
        codes,
        scales,
        mins,
        perm,
    }
}

#[allow(clippy::too_many_arguments)]
fn run_int(
    device: &GpuDevice,
    bits: u8,
    rows: usize,
    cols: usize,
    group: usize,
    m: usize,
    permuted: bool,
    batched: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let case = random_int(&mut rng, bits, rows, cols, group, permuted);
    let x = rng.vec(m * cols, -1.0, 1.0);
    let matrix = QMatrix::from_int(
        bits,
        group,
        rows,
        cols,
        &case.codes,
        case.scales.clone(),
        case.mins.clone(),
        case.perm.clone(),
    )
    .expect("QMatrix::from_int");
    let w = matrix.dequantize();
    let (want, bound) = reference(&w, &x, m, rows, cols);

    // The CPU matrix's own packed codes, scales and minimums go to the device.
    assert_eq!(matrix.scales(), &case.scales[..]);
    assert_eq!(matrix.mins(), &case.mins[..]);
    let codes = device.upload(&matrix.packed_codes()).expect("upload codes");
    let scales = device.upload(&case.scales).expect("upload scales");
    let mins = device.upload(&case.mins).expect("upload mins");
    let perm = case
        .perm
        .as_ref()
        .map(|p| device.upload(p).expect("upload permutation"));
    let x_gpu = device.upload(&x).expect("upload x");
    let mut y = poisoned::<f32>(device, m * rows);
    let weight = IntWeight {
        bits,
        group,
        rows,
        cols,
        codes: &codes,
        scales: &scales,
        mins: &mins,
        permutation: perm.as_ref(),
    };
    let kind = if batched {
        quant::gptq_gemm(device, &weight, &x_gpu, m, &mut y).expect("gptq_gemm");
        "gptq_gemm"
    } else {
        quant::gptq_gemv(device, &weight, &x_gpu, &mut y).expect("gptq_gemv");
        "gptq_gemv"
    };
    let got = fetch(device, &y);
    let what =
        format!("{kind}_int{bits} n={rows} k={cols} group={group} m={m} permuted={permuted}");
    assert_dots(&what, &got, &want, &bound, rows);
}

fn int_gemv_matches(bits: u8) {
    let Some(device) = gpu(&format!("gptq_gemv_int{bits}")) else {
        return;
    };
    for (s, &(rows, cols, group)) in INT_SHAPES.iter().enumerate() {
        for permuted in [false, true] {
            run_int(
                &device,
                bits,
                rows,
                cols,
                group,
                1,
                permuted,
                false,
                300 + 2 * s as u64 + u64::from(permuted),
            );
        }
    }
}

fn int_gemm_matches(bits: u8) {
    let Some(device) = gpu(&format!("gptq_gemm_int{bits}")) else {
        return;
    };
    for (s, &(rows, cols, group)) in INT_SHAPES.iter().enumerate() {
        for &m in BATCHES {
            let permuted = m % 2 == 1;
            run_int(
                &device,
                bits,
                rows,
                cols,
                group,
                m,
                permuted,
                true,
                400 + 20 * s as u64 + m as u64,
            );
        }
    }
}

#[test]
fn gptq_gemv_int4() {
    int_gemv_matches(4);
}

#[test]
fn gptq_gemv_int8() {
    int_gemv_matches(8);
}

#[test]
fn gptq_gemm_int4() {
    int_gemm_matches(4);
}

#[test]
fn gptq_gemm_int8() {
    int_gemm_matches(8);
}

/// A permutation entry past the columns is never read: the outputs are NaN.
#[test]
fn gptq_bad_permutation_gives_nan() {
    let Some(device) = gpu("gptq_bad_permutation_gives_nan") else {
        return;
    };
    let (rows, cols, group) = (5, 64, 32);
    let mut rng = Rng::new(7);
    let case = random_int(&mut rng, 8, rows, cols, group, true);
    let mut perm = case.perm.clone().expect("permuted");
    perm[17] = cols as u32;
    let codes = device.upload(&case.codes).expect("upload codes");
    let scales = device.upload(&case.scales).expect("upload scales");
    let mins = device.upload(&case.mins).expect("upload mins");
    let perm = device.upload(&perm).expect("upload permutation");
    let x = device.upload(&rng.vec(cols, -1.0, 1.0)).expect("upload x");
    let mut y = poisoned::<f32>(&device, rows);
    let weight = IntWeight {
        bits: 8,
        group,
        rows,
        cols,
        codes: &codes,
        scales: &scales,
        mins: &mins,
        permutation: Some(&perm),
    };
    quant::gptq_gemv(&device, &weight, &x, &mut y).expect("gptq_gemv");
    device.synchronize().expect("synchronize");
    assert!(fetch(&device, &y).iter().all(|v| v.is_nan()));
}

/// Operands that do not fit the shapes are refused before any launch.
#[test]
fn quant_shape_errors() {
    let Some(device) = gpu("quant_shape_errors") else {
        return;
    };
    let is_shape =
        |r: kaiyuan_cuda::Result<()>| matches!(r, Err(kaiyuan_cuda::CudaError::Shape { .. }));
    let bytes = device.upload(&[0u8; 2 * 34]).expect("upload");
    let x = device.upload(&[1.0f32; 32]).expect("upload");
    let mut y = poisoned::<f32>(&device, 2);
    let mut short = poisoned::<f32>(&device, 1);
    let good = BlockWeight {
        ty: GgufType::Q8_0,
        rows: 2,
        cols: 32,
        bytes: &bytes,
    };
    assert!(quant::gemv_gguf(&device, &good, &x, &mut y).is_ok());
    assert!(is_shape(quant::gemv_gguf(&device, &good, &x, &mut short)));
    let wrong_cols = BlockWeight { cols: 48, ..good };
    assert!(is_shape(quant::gemv_gguf(&device, &wrong_cols, &x, &mut y)));
    let wrong_type = BlockWeight {
        ty: GgufType::Q4_0,
        ..good
    };
    assert!(is_shape(quant::gemv_gguf(&device, &wrong_type, &x, &mut y)));
    assert!(is_shape(quant::gemm_gguf(&device, &good, &x, 2, &mut y)));

    let codes = device.upload(&[0u8; 2 * 16]).expect("upload");
    let params = device.upload(&[1.0f32, 1.0]).expect("upload");
    let int = IntWeight {
        bits: 4,
        group: 32,
        rows: 2,
        cols: 32,
        codes: &codes,
        scales: &params,
        mins: &params,
        permutation: None,
    };
    assert!(quant::gptq_gemv(&device, &int, &x, &mut y).is_ok());
    assert!(is_shape(quant::gptq_gemv(
        &device,
        &IntWeight { bits: 8, ..int },
        &x,
        &mut y
    )));
    assert!(is_shape(quant::gptq_gemv(
        &device,
        &IntWeight { bits: 3, ..int },
        &x,
        &mut y
    )));
    assert!(is_shape(quant::gptq_gemv(
        &device,
        &IntWeight { group: 16, ..int },
        &x,
        &mut y
    )));
    let perm = device.upload(&[0u32; 31]).expect("upload");
    let with_perm = IntWeight {
        permutation: Some(&perm),
        ..int
    };
    assert!(is_shape(quant::gptq_gemv(&device, &with_perm, &x, &mut y)));
    device.synchronize().expect("synchronize");
}
