//! The byte order of a block matrix: GGUF's rows, or Q4_0/Q4_1/Q5_0/Q8_0 rows
//! interleaved eight at a time so that one pass of a kernel produces eight
//! outputs.
//!
//! The layout is documented on [`BlockOrder::Interleaved8`].

use super::blocks::BlockType;
use crate::{Result, TensorError};

/// How the blocks of a [`super::QMatrix`] are ordered in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockOrder {
    /// GGUF's order: row after row, each row's blocks in column order.
    Rows,
    /// Q4_0, Q4_1, Q5_0 and Q8_0, `rows` a multiple of 8: groups of eight rows
    /// interleaved block by block, the order the decoding kernels read
    /// fastest. (Q5_0 interleaves the same way, with its 4-byte `qh` of each
    /// row after the scales: `16 + 4r`, and the nibble pieces from byte 48.)
    ///
    /// A Q4_0 matrix of `rows = 8·G` rows and
    /// `nb = cols / 32` blocks per row is stored as G groups of eight rows, each
    /// `8 · 18 · nb` bytes (the same size as the eight rows in GGUF order).
    /// Inside a group, block column `b` takes 144 bytes at `144·b`:
    ///
    /// | bytes | holds |
    /// |---|---|
    /// | `2r..2r+2` (r < 8) | row r's f16 scale `d` |
    /// | `16 + 32k + 4r .. +4` (k < 4, r < 8) | row r's nibble bytes `4k..4k+4` |
    ///
    /// A 32-byte load of piece `k` thus holds four nibble bytes of each of the
    /// eight rows, one row per 32-bit lane: its low nibbles are columns
    /// `4k..4k+4` of the block and its high nibbles columns `16+4k..16+4k+4`,
    /// against which one broadcast 4-byte piece of the activations is dotted
    /// for all eight rows at once.
    ///
    /// Q8_0 interleaves the same way with eight pieces of four codes
    /// (272 bytes per block column: the scales, then piece `k < 8` of row
    /// `r` at `16 + 32k + 4r`), each code stored plus 128 (its byte XOR
    /// 0x80): an unsigned byte, which `vpdpbusd` multiplies with the signed
    /// activations directly; the kernels subtract 128 × the block's
    /// activation sum.
    ///
    /// Q4_1 puts the eight rows' f16 minimums `m` after their scales
    /// (bytes `16 + 2r`) and its nibble pieces from byte 32 (160 bytes per
    /// block column).
    Interleaved8,
}

/// Rows per interleaved group.
pub(crate) const GROUP_ROWS: usize = 8;
/// The pieces of a block that [`BlockOrder::Interleaved8`] lays out row
/// by row: (offset in the block, bytes). Piece `i` of the eight rows takes
/// `8 · bytes` consecutive bytes, row `r` at `r · bytes`, after the pieces
/// before it.
fn pieces(ty: BlockType) -> &'static [(usize, usize)] {
    match ty {
        // d, qh, then the nibbles four bytes at a time.
        BlockType::Q5_0 => &[(0, 2), (2, 4), (6, 4), (10, 4), (14, 4), (18, 4)],
        // d, then the codes four bytes at a time.
        BlockType::Q8_0 => &[
            (0, 2),
            (2, 4),
            (6, 4),
            (10, 4),
            (14, 4),
            (18, 4),
            (22, 4),
            (26, 4),
            (30, 4),
        ],
        // d, m, then the nibbles four bytes at a time.
        BlockType::Q4_1 => &[(0, 2), (2, 2), (4, 4), (8, 4), (12, 4), (16, 4)],
        // Q4_0: d, then the nibbles four bytes at a time.
        _ => &[(0, 2), (2, 4), (6, 4), (10, 4), (14, 4)],
    }
}

/// Interleaved Q8_0 stores each code + 128 (an unsigned byte, what
/// `vpdpbusd` multiplies) from this byte of a block column on; the same
/// XOR with 0x80 maps it back.
const Q8_0_CODES_FROM: usize = 16;

/// The types [`BlockOrder::Interleaved8`] holds.
fn interleaves(ty: BlockType) -> bool {
    matches!(
        ty,
        BlockType::Q4_0 | BlockType::Q4_1 | BlockType::Q5_0 | BlockType::Q8_0
    )
}

impl BlockOrder {
    /// The order [`super::QMatrix`]'s kernels run fastest on for a matrix
    /// of `ty` with `rows` rows: [`BlockOrder::Interleaved8`] for Q4_0,
    /// Q4_1, Q5_0 and Q8_0 with a positive multiple of 8 rows, else
    /// [`BlockOrder::Rows`]. The choice
    /// depends on nothing else (not the CPU), and both orders give
    /// bit-identical products.
    ///
    /// ```
    /// use kaiyuan_tensor::quant::{BlockOrder, BlockType};
    /// assert_eq!(BlockOrder::preferred(BlockType::Q4_0, 576), BlockOrder::Interleaved8);
    /// assert_eq!(BlockOrder::preferred(BlockType::Q5_0, 1536), BlockOrder::Interleaved8);
    /// assert_eq!(BlockOrder::preferred(BlockType::Q4_0, 20), BlockOrder::Rows);
    /// assert_eq!(BlockOrder::preferred(BlockType::Q8_0, 576), BlockOrder::Interleaved8);
    /// assert_eq!(BlockOrder::preferred(BlockType::Q4_K, 576), BlockOrder::Rows);
    /// ```
    pub fn preferred(ty: BlockType, rows: usize) -> BlockOrder {
        if interleaves(ty) && rows > 0 && rows.is_multiple_of(GROUP_ROWS) {
            BlockOrder::Interleaved8
        } else {
            BlockOrder::Rows
        }
    }

    /// Whether a `ty` matrix with `rows` rows can be stored in this order.
    pub(crate) fn allows(self, ty: BlockType, rows: usize) -> bool {
        match self {
            BlockOrder::Rows => true,
            BlockOrder::Interleaved8 => interleaves(ty) && rows.is_multiple_of(GROUP_ROWS),
        }
    }
}

/// Copies a `ty` matrix of `rows` rows × `cols` columns from GGUF order in
/// `src` to `order` in `dst` (a plain copy for [`BlockOrder::Rows`]). Fails
/// when the order does not allow the matrix, `cols` is not a multiple of
/// the block size, or either buffer does not hold exactly the matrix.
///
/// ```
/// use kaiyuan_tensor::quant::{BlockOrder, BlockType, QBytes, QMatrix, reorder_blocks};
/// // 8 rows of one Q4_0 block: scale 1.0 (f16 0x3C00), nibbles = row index.
/// let gguf: Vec<u8> = (0..8u8)
///     .flat_map(|r| [[0x00, 0x3C].as_slice(), &[r * 0x11; 16]].concat())
///     .collect();
/// let mut ordered = vec![0; gguf.len()];
/// reorder_blocks(BlockType::Q4_0, 8, 32, &gguf, BlockOrder::Interleaved8, &mut ordered).unwrap();
/// let w = QMatrix::from_ordered_blocks(
///     BlockType::Q4_0, 8, 32, QBytes::Owned(ordered), BlockOrder::Interleaved8,
/// ).unwrap();
/// assert_eq!(&*w.packed_codes(), &gguf[..]); // GGUF order again
/// assert_eq!(w.dequantize()[3 * 32], 3.0 - 8.0);
/// ```
pub fn reorder_blocks(
    ty: BlockType,
    rows: usize,
    cols: usize,
    src: &[u8],
    order: BlockOrder,
    dst: &mut [u8],
) -> Result<()> {
    const OP: &str = "reorder_blocks";
    let row_bytes = checked_row_bytes(OP, ty, rows, cols, order)?;
    let want = rows.checked_mul(row_bytes);
    if want != Some(src.len()) || src.len() != dst.len() {
        return Err(TensorError::invalid(
            OP,
            format!(
                "a {rows} × {cols} {ty} matrix is {want:?} bytes; source has {}, destination {}",
                src.len(),
                dst.len()
            ),
        ));
    }
    match order {
        BlockOrder::Rows => dst.copy_from_slice(src),
        BlockOrder::Interleaved8 => {
            let group = GROUP_ROWS * row_bytes;
            for (s, d) in src.chunks_exact(group).zip(dst.chunks_exact_mut(group)) {
                interleave_group(ty, s, row_bytes, d);
            }
        }
    }
    Ok(())
}

/// Bytes per row of a `ty` matrix, after checking that `cols` is a whole
/// number of blocks and that `order` allows it.
pub(crate) fn checked_row_bytes(
    op: &'static str,
    ty: BlockType,
    rows: usize,
    cols: usize,
    order: BlockOrder,
) -> Result<usize> {
    if cols == 0 || !cols.is_multiple_of(ty.block_size()) {
        return Err(TensorError::invalid(
            op,
            format!(
                "cols = {cols} is not a positive multiple of the {ty} block size {}",
                ty.block_size()
            ),
        ));
    }
    if !order.allows(ty, rows) {
        return Err(TensorError::invalid(
            op,
            format!(
                "{order:?} order needs Q4_0, Q4_1, Q5_0 or Q8_0 and a multiple of 8 rows, not {rows} rows of {ty}"
            ),
        ));
    }
    Ok(cols / ty.block_size() * ty.type_size())
}

/// Re-orders a `ty` matrix held in `bytes` (GGUF order) to interleaved,
/// in place, one group of eight rows at a time.
pub(crate) fn interleave_in_place(ty: BlockType, bytes: &mut [u8], row_bytes: usize) {
    let group = GROUP_ROWS * row_bytes;
    let mut rows = vec![0u8; group];
    for chunk in bytes.chunks_exact_mut(group) {
        rows.copy_from_slice(chunk);
        interleave_group(ty, &rows, row_bytes, chunk);
    }
}

/// Eight rows (`src`, GGUF order) → one interleaved group (`dst`).
fn interleave_group(ty: BlockType, src: &[u8], row_bytes: usize, dst: &mut [u8]) {
    let size = ty.type_size();
    for (b, out) in dst.chunks_exact_mut(GROUP_ROWS * size).enumerate() {
        let mut base = 0;
        for &(offset, len) in pieces(ty) {
            for r in 0..GROUP_ROWS {
                let blk = &src[r * row_bytes + size * b..][..size];
                out[base + r * len..][..len].copy_from_slice(&blk[offset..offset + len]);
            }
            base += GROUP_ROWS * len;
        }
        if ty == BlockType::Q8_0 {
            out[Q8_0_CODES_FROM..].iter_mut().for_each(|c| *c ^= 0x80);
        }
    }
}

/// Row `row` of an interleaved `ty` matrix (`bytes`, `row_bytes` per row)
/// in GGUF order, into `out` (`row_bytes` long).
pub(crate) fn gguf_row(ty: BlockType, bytes: &[u8], row_bytes: usize, row: usize, out: &mut [u8]) {
    let size = ty.type_size();
    let group = &bytes[row / GROUP_ROWS * GROUP_ROWS * row_bytes..][..GROUP_ROWS * row_bytes];
    let r = row % GROUP_ROWS;
    for (src, blk) in group
        .chunks_exact(GROUP_ROWS * size)
        .zip(out.chunks_exact_mut(size))
    {
        let mut base = 0;
        for &(offset, len) in pieces(ty) {
            blk[offset..offset + len].copy_from_slice(&src[base + r * len..][..len]);
            base += GROUP_ROWS * len;
        }
        if ty == BlockType::Q8_0 {
            blk[2..].iter_mut().for_each(|c| *c ^= 0x80);
        }
    }
}
