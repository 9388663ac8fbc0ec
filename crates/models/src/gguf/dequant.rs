//! Dequantizing ggml tensors to `f32`. The block decoders live in the
//! tensor crate (`kaiyuan_tensor::quant`), bit for bit those of
//! `gguf.quants.dequantize` (checked by `tests/gguf.rs` against
//! `fixtures/gguf/`). Work is cut into fixed chunks of blocks and run
//! with rayon; every element is computed on its own, so the result does not
//! depend on the thread count.

use half::{bf16, f16};
use rayon::prelude::*;

use kaiyuan_tensor::quant::{BlockType, dequantize_blocks};

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
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
    )
}

/// Dequantizes `data`, a whole number of `ty` blocks, to `f32`.
///
/// Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K; other
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
                "ggml type {ty} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"
            ),
        });
    }
    let size = ty.type_size();
    if !data.len().is_multiple_of(size) {
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
        ty => match block_type(ty) {
            // `check` made `data` whole blocks filling `out`.
            Some(block) => {
                if dequantize_blocks(block, data, out).is_err() {
                    out.fill(f32::NAN);
                }
            }
            // `check` refuses every other type before any work is cut.
            None => out.fill(f32::NAN),
        },
    }
}

/// The tensor crate's block type of a quantized ggml type.
pub fn block_type(ty: GgmlType) -> Option<BlockType> {
    match ty {
        GgmlType::Q8_0 => Some(BlockType::Q8_0),
        GgmlType::Q4_0 => Some(BlockType::Q4_0),
        GgmlType::Q4_1 => Some(BlockType::Q4_1),
        GgmlType::Q5_0 => Some(BlockType::Q5_0),
        GgmlType::Q5_1 => Some(BlockType::Q5_1),
        GgmlType::Q4_K => Some(BlockType::Q4_K),
        GgmlType::Q5_K => Some(BlockType::Q5_K),
        GgmlType::Q6_K => Some(BlockType::Q6_K),
        _ => None,
    }
}

fn to_array<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap_or([0; N])
}
