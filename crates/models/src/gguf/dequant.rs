//! Dequantizing ggml blocks to `f32`.
//!
//! Each kernel follows ggml's `dequantize_row_*` (ggml-quants.c) with the
//! operations in the order the `gguf` Python package's `gguf.quants` does
//! them, in `f32` and without fused multiply-adds, so the results are bit
//! for bit those of `gguf.quants.dequantize` (checked by `tests/gguf.rs`
//! against `fixtures/gguf/`). Work is cut into fixed chunks of blocks and run
//! with rayon; every element is computed on its own, so the result does not
//! depend on the thread count.

use half::{bf16, f16};
use rayon::prelude::*;

use super::types::GgmlType;
use crate::{ModelError, Result};

/// Elements per parallel task (a whole number of blocks for every type).
const CHUNK_ELEMS: usize = 1 << 14;

/// Whether [`dequantize`] handles `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
    )
}

/// Dequantizes `data`, a whole number of `ty` blocks, to `f32`.
///
/// Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K; other
/// types give [`ModelError::Unsupported`] naming the type, and a length that
/// is not a whole number of blocks gives [`ModelError::InvalidArgument`].
///
/// ```
/// use kaiyuan_models::gguf::{dequantize, GgmlType};
/// // One Q8_0 block: f16 scale 0.5, then 32 signed bytes.
/// let mut block = vec![0x00, 0x38];
/// block.extend((0..32).map(|i| (i as i8 - 16) as u8));
/// let values = dequantize(GgmlType::Q8_0, &block).unwrap();
/// assert_eq!(values[0], -8.0);
/// assert_eq!(values[31], 7.5);
/// ```
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Result<Vec<f32>> {
    let blocks = check(ty, data)?;
    let mut out = vec![0f32; blocks * ty.block_size()];
    dequantize_into(ty, data, &mut out)?;
    Ok(out)
}

/// Like [`dequantize`], writing into `out`, which must hold exactly the
/// elements of `data`.
pub fn dequantize_into(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let blocks = check(ty, data)?;
    let block = ty.block_size();
    if out.len() != blocks * block {
        return Err(ModelError::invalid(
            "out",
            format!(
                "holds {} values, but {} bytes of {ty} hold {}",
                out.len(),
                data.len(),
                blocks * block
            ),
        ));
    }
    let chunk_blocks = (CHUNK_ELEMS / block).max(1);
    let chunk_bytes = chunk_blocks * ty.type_size();
    out.par_chunks_mut(chunk_blocks * block)
        .zip(data.par_chunks(chunk_bytes))
        .for_each(|(o, d)| dequantize_serial(ty, d, o));
    Ok(())
}

fn check(ty: GgmlType, data: &[u8]) -> Result<usize> {
    if !can_dequantize(ty) {
        return Err(ModelError::Unsupported {
            origin: "GGUF dequantization".into(),
            what: format!(
                "ggml type {ty} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)"
            ),
        });
    }
    let size = ty.type_size();
    if data.len() % size != 0 {
        return Err(ModelError::invalid(
            "data",
            format!(
                "{} bytes is not a whole number of {size}-byte {ty} blocks",
                data.len()
            ),
        ));
    }
    Ok(data.len() / size)
}

/// One chunk on the current thread; `out` has the elements of `data`.
fn dequantize_serial(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes(to_array(b));
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_le_bytes(to_array(b)).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16::from_le_bytes(to_array(b)).to_f32();
            }
        }
        GgmlType::Q8_0 => blocks(data, out, q8_0),
        GgmlType::Q4_0 => blocks(data, out, q4_0),
        GgmlType::Q4_1 => blocks(data, out, q4_1),
        GgmlType::Q4_K => blocks(data, out, q4_k),
        GgmlType::Q5_K => blocks(data, out, q5_k),
        GgmlType::Q6_K => blocks(data, out, q6_k),
        // `check` refuses every other type before any work is cut.
        _ => out.fill(f32::NAN),
    }
}

/// Runs `kernel` over each `B`-byte block of `data` and its `E` outputs.
fn blocks<const B: usize, const E: usize>(
    data: &[u8],
    out: &mut [f32],
    kernel: fn(&[u8; B], &mut [f32; E]),
) {
    for (b, o) in data.chunks_exact(B).zip(out.chunks_exact_mut(E)) {
        if let (Ok(b), Ok(o)) = (<&[u8; B]>::try_from(b), <&mut [f32; E]>::try_from(o)) {
            kernel(b, o);
        }
    }
}

fn to_array<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap_or([0; N])
}

/// The little-endian f16 at byte `i` of a block, as f32 (exact).
fn half_at<const B: usize>(b: &[u8; B], i: usize) -> f32 {
    match b.get(i..i + 2) {
        Some(&[lo, hi]) => f16::from_le_bytes([lo, hi]).to_f32(),
        _ => f32::NAN,
    }
}

/// Q8_0: `d` (f16), 32 × i8; `y = q·d`.
fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    for (j, y) in y.iter_mut().enumerate() {
        *y = f32::from(b[2 + j] as i8) * d;
    }
}

/// Q4_0: `d` (f16), 16 bytes of nibbles (low nibbles are elements 0–15,
/// high nibbles 16–31); `y = (q − 8)·d`.
fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * f32::from((q & 0x0F) as i8 - 8);
        y[j + 16] = d * f32::from((q >> 4) as i8 - 8);
    }
}

/// Q4_1: `d`, `m` (f16), 16 bytes of nibbles; `y = d·q + m`.
fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = d * f32::from(q & 0x0F) + m;
        y[j + 16] = d * f32::from(q >> 4) + m;
    }
}

/// The 6-bit scales and minimums of the 8 sub-blocks of a Q4_K/Q5_K block,
/// packed in 12 bytes (ggml's `get_scale_min_k4`).
fn scales_mins_k4(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

fn sub<const N: usize>(b: &[u8], start: usize) -> [u8; N] {
    b.get(start..start + N)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

/// Q4_K: `d`, `dmin` (f16), 12 bytes of 6-bit scales/minimums, 128 bytes of
/// nibbles. Sub-block `j` (32 elements) reads the low (`j` even) or high
/// nibbles of bytes `32·(j/2)…`; `y = (d·sc_j)·q − dmin·m_j`.
fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let (sc, mn) = scales_mins_k4(&sub(b, 4));
    let qs: [u8; 128] = sub(b, 16);
    for j in 0..8 {
        let dl = d * f32::from(sc[j]);
        let ml = dmin * f32::from(mn[j]);
        let shift = 4 * (j % 2);
        for l in 0..32 {
            let q = (qs[32 * (j / 2) + l] >> shift) & 0x0F;
            y[32 * j + l] = dl * f32::from(q) - ml;
        }
    }
}

/// Q5_K: as Q4_K with a fifth bit per element: bit `j` of byte `l` of the
/// 32-byte `qh` plane is the high bit of element `l` of sub-block `j`.
fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let (sc, mn) = scales_mins_k4(&sub(b, 4));
    let qh: [u8; 32] = sub(b, 16);
    let qs: [u8; 128] = sub(b, 48);
    for j in 0..8 {
        let dl = d * f32::from(sc[j]);
        let ml = dmin * f32::from(mn[j]);
        let shift = 4 * (j % 2);
        for l in 0..32 {
            let low = (qs[32 * (j / 2) + l] >> shift) & 0x0F;
            let high = (qh[l] >> j) & 1;
            y[32 * j + l] = dl * f32::from(low | (high << 4)) - ml;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 i8
/// scales (one per 16 elements), `d` (f16); `y = (d·sc)·(q − 32)`.
/// Element `e` = 128·h + r takes its low four bits from nibble `r / 64` of
/// `ql[64·h + r % 64]` and its high two from pair `r / 32` of
/// `qh[32·h + r % 32]`.
fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let ql: [u8; 128] = sub(b, 0);
    let qh: [u8; 64] = sub(b, 128);
    let scales: [u8; 16] = sub(b, 192);
    let d = half_at(b, 208);
    for (e, y) in y.iter_mut().enumerate() {
        let (h, r) = (e / 128, e % 128);
        let low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | (high << 4)) as i8 - 32;
        let dl = d * f32::from(scales[e / 16] as i8);
        *y = dl * f32::from(q);
    }
}
