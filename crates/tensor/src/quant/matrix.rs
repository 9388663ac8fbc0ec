//! [`QMatrix`]: a quantized weight matrix W of shape (rows = out, cols = in),
//! the way `nn.Linear` keeps its weight, multiplied as `y = x·Wᵀ` by the
//! fused kernels of [`super::kernels`] without ever being dequantized whole.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

use super::blocks::{BlockType, dequantize_blocks};
use super::kernels::{self, Kind, WeightView};
use super::order::{self, BlockOrder};
use crate::tensor::{FloatValues, FloatVec};
use crate::{DType, Result, Tensor, TensorError};

/// How the elements of a [`QMatrix`] are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// ggml blocks, stored exactly in GGUF layout, row after row (a row is
    /// `cols / block_size` blocks).
    Block(BlockType),
    /// Group-wise integers (GPTQ / RTN): per (row, group) an f32 scale `s`
    /// and f32 minimum `m`; `w = s·q + m`, `q` unsigned in `0..2^bits`.
    /// `bits` is 4 or 8; `group` is a multiple of 32 (`group == cols` is
    /// per-channel); when it does not divide `cols` (a multiple of 32) the
    /// last group is shorter, as in GPTQ's reference and HF checkpoints.
    Int {
        /// Bits per code: 4 or 8.
        bits: u8,
        /// Columns per group.
        group: usize,
    },
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantFormat::Block(ty) => write!(f, "{ty}"),
            QuantFormat::Int { bits, group } => write!(f, "int{bits} group {group}"),
        }
    }
}

/// The bytes of a quantized matrix: owned, or read in place from a
/// memory-mapped file (a GGUF tensor's data).
#[derive(Clone)]
pub enum QBytes {
    /// Bytes owned by this process.
    Owned(Vec<u8>),
    /// `range` of the mapped file `map`.
    Mapped {
        /// The mapped file.
        map: Arc<Mmap>,
        /// The byte range holding the matrix.
        range: Range<usize>,
    },
}

impl QBytes {
    /// The bytes (empty when a mapped range lies outside its map, which the
    /// constructors of [`QMatrix`] refuse).
    pub fn as_slice(&self) -> &[u8] {
        match self {
            QBytes::Owned(v) => v,
            QBytes::Mapped { map, range } => map.get(range.clone()).unwrap_or(&[]),
        }
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        match self {
            QBytes::Owned(v) => v.len(),
            QBytes::Mapped { range, .. } => range.end.saturating_sub(range.start),
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for QBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QBytes::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            QBytes::Mapped { range, .. } => write!(f, "Mapped({range:?})"),
        }
    }
}

struct Inner {
    format: QuantFormat,
    kind: Kind,
    /// Block formats: how the blocks are ordered (`Rows` for `Int`).
    order: BlockOrder,
    rows: usize,
    cols: usize,
    /// GGUF blocks, or the packed codes of an `Int` matrix (see
    /// [`QMatrix::from_int`]).
    codes: QBytes,
    row_bytes: usize,
    /// `Int` only: rows × groups.
    scales: Vec<f32>,
    mins: Vec<f32>,
    permutation: Option<Vec<u32>>,
}

/// A quantized weight matrix W of shape (rows = out features, cols = in
/// features), multiplied as `y = x·Wᵀ` by [`QMatrix::matmul_t`].
///
/// Cloning is cheap (the data is shared).
///
/// ```
/// use kaiyuan_tensor::Tensor;
/// use kaiyuan_tensor::quant::{QMatrix, QuantFormat};
/// # fn main() -> kaiyuan_tensor::Result<()> {
/// // 2 × 32 int4 weights, one group per row: w = 0.5·q − 1.
/// let codes: Vec<u8> = (0..64).map(|i| (i % 16) as u8).collect();
/// let w = QMatrix::from_int(4, 32, 2, 32, &codes, vec![0.5; 2], vec![-1.0; 2], None)?;
/// assert_eq!(w.format(), QuantFormat::Int { bits: 4, group: 32 });
/// let x = Tensor::full(1.0, &[3, 32], kaiyuan_tensor::DType::F32)?; // (T, cols)
/// let y = w.matmul_t(&x)?;                                           // (T, rows)
/// assert_eq!(y.shape(), &[3, 2]);
/// // Σ_j (0.5·(j mod 16) − 1) = 0.5·2·120 − 32 = 88, exact here.
/// assert_eq!(y.to_vec::<f32>()?[0], 88.0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct QMatrix {
    inner: Arc<Inner>,
}

impl fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        f.debug_struct("QMatrix")
            .field("format", &i.format)
            .field("rows", &i.rows)
            .field("cols", &i.cols)
            .field("codes", &i.codes)
            .field("permuted", &i.permutation.is_some())
            .finish()
    }
}

/// The operation named by block-matrix constructors' errors.
const OP_BLOCKS: &str = "QMatrix::from_blocks";

fn invalid(op: &'static str, reason: String) -> TensorError {
    TensorError::InvalidArgument { op, reason }
}

impl QMatrix {
    /// A matrix of ggml blocks in GGUF layout: `rows` rows of
    /// `cols / ty.block_size()` blocks each. Owned bytes are re-ordered in
    /// place to [`BlockOrder::preferred`] (Q4_0 with a multiple of 8 rows
    /// is interleaved); mapped bytes are read in place as they are. Fails
    /// when `cols` is zero or not a multiple of the block size, or when
    /// `bytes` does not hold exactly `rows × cols` elements (or a mapped
    /// range lies outside its map).
    ///
    /// ```
    /// use kaiyuan_tensor::quant::{BlockType, QBytes, QMatrix};
    /// // One Q8_0 row: f16 scale 0.5, then 32 signed bytes.
    /// let mut block = vec![0x00, 0x38];
    /// block.extend((0..32).map(|i| (i as i8 - 16) as u8));
    /// let w = QMatrix::from_blocks(BlockType::Q8_0, 1, 32, QBytes::Owned(block.clone())).unwrap();
    /// assert_eq!(w.dequantize()[0], -8.0);
    /// assert!(QMatrix::from_blocks(BlockType::Q8_0, 2, 32, QBytes::Owned(block)).is_err());
    /// ```
    pub fn from_blocks(ty: BlockType, rows: usize, cols: usize, bytes: QBytes) -> Result<Self> {
        match bytes {
            QBytes::Owned(mut v) => {
                let order = BlockOrder::preferred(ty, rows);
                if order == BlockOrder::Interleaved8 {
                    let row_bytes = order::checked_row_bytes(OP_BLOCKS, ty, rows, cols, order)?;
                    if rows.checked_mul(row_bytes) == Some(v.len()) {
                        order::interleave_in_place(ty, &mut v, row_bytes);
                    }
                }
                Self::from_ordered_blocks(ty, rows, cols, QBytes::Owned(v), order)
            }
            mapped => Self::from_ordered_blocks(ty, rows, cols, mapped, BlockOrder::Rows),
        }
    }

    /// A matrix of ggml blocks whose bytes are already in `order` (written
    /// by [`super::reorder_blocks`]), e.g. copied once at load into memory
    /// of the caller's choosing. Fails as [`QMatrix::from_blocks`] does, and
    /// when `order` does not allow the matrix.
    pub fn from_ordered_blocks(
        ty: BlockType,
        rows: usize,
        cols: usize,
        bytes: QBytes,
        order: BlockOrder,
    ) -> Result<Self> {
        let row_bytes = order::checked_row_bytes(OP_BLOCKS, ty, rows, cols, order)?;
        if let QBytes::Mapped { map, range } = &bytes
            && (range.start > range.end || range.end > map.len())
        {
            return Err(invalid(
                OP_BLOCKS,
                format!(
                    "byte range {range:?} lies outside the {}-byte map",
                    map.len()
                ),
            ));
        }
        let want = rows.checked_mul(row_bytes);
        if want != Some(bytes.len()) {
            return Err(invalid(
                OP_BLOCKS,
                format!(
                    "{} bytes cannot hold a {rows} × {cols} {ty} matrix ({row_bytes} bytes per row)",
                    bytes.len()
                ),
            ));
        }
        Ok(Self::new(Inner {
            format: QuantFormat::Block(ty),
            kind: match order {
                BlockOrder::Rows => Kind::of_block(ty),
                BlockOrder::Interleaved8 if ty == BlockType::Q5_0 => Kind::Q5_0x8,
                BlockOrder::Interleaved8 if ty == BlockType::Q8_0 => Kind::Q8_0x8,
                BlockOrder::Interleaved8 if ty == BlockType::Q4_1 => Kind::Q4_1x8,
                BlockOrder::Interleaved8 => Kind::Q4_0x8,
            },
            order,
            rows,
            cols,
            codes: bytes,
            row_bytes,
            scales: Vec::new(),
            mins: Vec::new(),
            permutation: None,
        }))
    }

    /// A group-wise integer matrix (GPTQ / RTN): `w = s·q + m` with one
    /// f32 scale `s` and minimum `m` per (row, group).
    ///
    /// - `codes`: one code per element, row-major (rows × cols) in *stored*
    ///   column order, each `< 2^bits`; 4-bit codes are packed two per byte
    ///   internally.
    /// - `scales`, `mins`: rows × ⌈cols / group⌉, finite (the last group is
    ///   shorter when `group` does not divide `cols`).
    /// - `input_permutation`: optional, length `cols`, a permutation of
    ///   `0..cols`: stored column `j` multiplies input feature `perm[j]`
    ///   (GPTQ's act-order `g_idx`, with the columns sorted so that groups
    ///   are contiguous).
    ///
    /// Fails when `bits` is not 4 or 8, `group` or `cols` is not a positive
    /// multiple of 32, or any argument has the wrong length or value.
    ///
    /// ```
    /// use kaiyuan_tensor::quant::QMatrix;
    /// // Per-channel int8, the two columns of each group swapped back.
    /// let codes: Vec<u8> = (0..32).collect();
    /// let mut perm: Vec<u32> = (0..32).collect();
    /// perm.swap(0, 1);
    /// let w = QMatrix::from_int(8, 32, 1, 32, &codes, vec![1.0], vec![0.0], Some(perm)).unwrap();
    /// assert_eq!(&w.dequantize()[..3], &[1.0, 0.0, 2.0]);
    /// assert!(QMatrix::from_int(4, 32, 1, 32, &codes, vec![1.0], vec![0.0], None).is_err()); // codes ≥ 16
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn from_int(
        bits: u8,
        group: usize,
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: Vec<f32>,
        mins: Vec<f32>,
        input_permutation: Option<Vec<u32>>,
    ) -> Result<Self> {
        const OP: &str = "QMatrix::from_int";
        if bits != 4 && bits != 8 {
            return Err(invalid(
                OP,
                format!("bits = {bits}; only 4 and 8 are supported"),
            ));
        }
        if cols == 0 || group == 0 || !group.is_multiple_of(32) || !cols.is_multiple_of(32) {
            return Err(invalid(
                OP,
                format!("group = {group} and cols = {cols} must be positive multiples of 32"),
            ));
        }
        let elements = rows.checked_mul(cols);
        if elements != Some(codes.len()) {
            return Err(invalid(
                OP,
                format!("{} codes cannot fill a {rows} × {cols} matrix", codes.len()),
            ));
        }
        let limit = 1u16 << bits;
        if let Some(pos) = codes.iter().position(|&c| u16::from(c) >= limit) {
            return Err(invalid(
                OP,
                format!(
                    "code {} at position {pos} does not fit in {bits} bits",
                    codes[pos]
                ),
            ));
        }
        let groups = rows * cols.div_ceil(group);
        for (name, v) in [("scales", &scales), ("mins", &mins)] {
            if v.len() != groups {
                return Err(invalid(
                    OP,
                    format!(
                        "{} {name} for {rows} rows × {} groups (expected {groups})",
                        v.len(),
                        cols.div_ceil(group)
                    ),
                ));
            }
            if let Some(pos) = v.iter().position(|s| !s.is_finite()) {
                return Err(invalid(
                    OP,
                    format!("{name}[{pos}] = {} is not finite", v[pos]),
                ));
            }
        }
        if let Some(perm) = &input_permutation {
            if perm.len() != cols {
                return Err(invalid(
                    OP,
                    format!(
                        "input permutation has {} entries for {cols} columns",
                        perm.len()
                    ),
                ));
            }
            let mut seen = vec![false; cols];
            for (j, &p) in perm.iter().enumerate() {
                match seen.get_mut(p as usize) {
                    Some(s) if !*s => *s = true,
                    _ => {
                        return Err(invalid(
                            OP,
                            format!(
                                "input permutation is not a permutation of 0..{cols}: entry {j} is {p}"
                            ),
                        ));
                    }
                }
            }
        }
        let packed = if bits == 8 {
            codes.to_vec()
        } else {
            pack_int4(codes)
        };
        let row_bytes = cols * usize::from(bits) / 8;
        Ok(Self::new(Inner {
            format: QuantFormat::Int { bits, group },
            kind: if bits == 4 { Kind::Int4 } else { Kind::Int8 },
            order: BlockOrder::Rows,
            rows,
            cols,
            codes: QBytes::Owned(packed),
            row_bytes,
            scales,
            mins,
            permutation: input_permutation,
        }))
    }

    fn new(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The encoding.
    pub fn format(&self) -> QuantFormat {
        self.inner.format
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.inner.rows
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        self.inner.cols
    }

    /// The codes row after row: GGUF blocks (in GGUF order, copied back
    /// out of the interleaved order when the matrix is stored so), or the
    /// packed codes of an `Int` matrix (int8: one byte per code; int4: each
    /// 32 codes in 16 bytes, byte `j` holding code `j` in its low nibble and
    /// `j + 16` in its high nibble), in stored column order. For copying to
    /// a device or a file.
    ///
    /// ```
    /// use kaiyuan_tensor::quant::QMatrix;
    /// let codes: Vec<u8> = (0..32).map(|i| (i % 16) as u8).collect();
    /// let w = QMatrix::from_int(4, 32, 1, 32, &codes, vec![1.0], vec![0.0], None).unwrap();
    /// assert_eq!(w.packed_codes()[0], 0x00); // codes 0 (low) and 16 → 0 (high)
    /// assert_eq!(w.packed_codes()[1], 0x11); // codes 1 and 17 → 1
    /// assert_eq!(w.packed_codes().len(), 16);
    /// ```
    pub fn packed_codes(&self) -> Cow<'_, [u8]> {
        let i = &*self.inner;
        match (i.order, i.format) {
            (BlockOrder::Interleaved8, QuantFormat::Block(ty)) => {
                let mut out = vec![0u8; i.codes.len()];
                for (r, row) in out.chunks_exact_mut(i.row_bytes).enumerate() {
                    order::gguf_row(ty, i.codes.as_slice(), i.row_bytes, r, row);
                }
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(i.codes.as_slice()),
        }
    }

    /// How the blocks are ordered in memory ([`BlockOrder::Rows`] for `Int`
    /// matrices).
    ///
    /// ```
    /// use kaiyuan_tensor::quant::{BlockOrder, BlockType, QBytes, QMatrix};
    /// let w = QMatrix::from_blocks(BlockType::Q4_0, 8, 32, QBytes::Owned(vec![0; 144])).unwrap();
    /// assert_eq!(w.block_order(), BlockOrder::Interleaved8);
    /// ```
    pub fn block_order(&self) -> BlockOrder {
        self.inner.order
    }

    /// `Int` matrices: the scale of each (row, group), rows × groups; empty
    /// for block formats.
    pub fn scales(&self) -> &[f32] {
        &self.inner.scales
    }

    /// `Int` matrices: the minimum of each (row, group), rows × groups; empty
    /// for block formats.
    pub fn mins(&self) -> &[f32] {
        &self.inner.mins
    }

    /// `Int` matrices with act-order: stored column `j` multiplies input
    /// feature `permutation[j]`.
    pub fn input_permutation(&self) -> Option<&[u32]> {
        self.inner.permutation.as_deref()
    }

    /// Whether the codes are read in place from a memory map.
    pub fn is_memory_mapped(&self) -> bool {
        matches!(self.inner.codes, QBytes::Mapped { .. })
    }

    /// Bytes of codes, scales and minimums (and the input permutation).
    ///
    /// ```
    /// use kaiyuan_tensor::quant::QMatrix;
    /// let w = QMatrix::from_int(4, 32, 2, 64, &[0; 128], vec![1.0; 4], vec![0.0; 4], None).unwrap();
    /// assert_eq!(w.byte_size(), 64 + 2 * 4 * 4);
    /// ```
    pub fn byte_size(&self) -> usize {
        let i = &*self.inner;
        i.codes.len()
            + 4 * (i.scales.len() + i.mins.len())
            + 4 * i.permutation.as_ref().map_or(0, Vec::len)
    }

    /// The whole matrix as f32, rows × cols in the *original* input order
    /// (for references and export; [`QMatrix::matmul_t`] never does this).
    ///
    /// ```
    /// use kaiyuan_tensor::quant::QMatrix;
    /// let w = QMatrix::from_int(8, 32, 1, 32, &[2; 32], vec![0.25], vec![1.0], None).unwrap();
    /// assert_eq!(w.dequantize(), vec![1.5; 32]);
    /// ```
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows() * self.cols()];
        // Cannot fail: the range and the buffer fit by construction.
        let _ = self.dequantize_rows(0..self.rows(), &mut out);
        out
    }

    /// Rows `rows` as f32 into `out` (`rows.len() × cols` values, original
    /// input order). Block formats decode bit for bit as `gguf-py`; `Int`
    /// elements are `s·q + m` rounded once in f32. Fails when the range
    /// runs past the matrix or `out` has the wrong length.
    ///
    /// ```
    /// use kaiyuan_tensor::quant::QMatrix;
    /// let codes: Vec<u8> = (0..64).map(|i| (i / 32) as u8).collect();
    /// let w = QMatrix::from_int(8, 32, 2, 32, &codes, vec![1.0; 2], vec![0.0; 2], None).unwrap();
    /// let mut row = [0f32; 32];
    /// w.dequantize_rows(1..2, &mut row).unwrap();
    /// assert_eq!(row, [1.0; 32]);
    /// assert!(w.dequantize_rows(1..3, &mut row).is_err());
    /// ```
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "QMatrix::dequantize_rows";
        let i = &*self.inner;
        if rows.start > rows.end || rows.end > i.rows {
            return Err(invalid(
                OP,
                format!("rows {rows:?} out of range for {} rows", i.rows),
            ));
        }
        let count = rows.end - rows.start;
        if out.len() != count * i.cols {
            return Err(invalid(
                OP,
                format!(
                    "output holds {} values, {count} rows × {} cols need {}",
                    out.len(),
                    i.cols,
                    count * i.cols
                ),
            ));
        }
        let bytes = i
            .codes
            .as_slice()
            .get(rows.start * i.row_bytes..rows.end * i.row_bytes)
            .unwrap_or(&[]);
        match i.format {
            QuantFormat::Block(ty) if i.order == BlockOrder::Interleaved8 => {
                let mut row = vec![0u8; i.row_bytes];
                for (r, dst) in rows.zip(out.chunks_exact_mut(i.cols)) {
                    order::gguf_row(ty, i.codes.as_slice(), i.row_bytes, r, &mut row);
                    dequantize_blocks(ty, &row, dst)?;
                }
            }
            QuantFormat::Block(ty) => dequantize_blocks(ty, bytes, out)?,
            QuantFormat::Int { bits, group } => {
                let groups = i.cols.div_ceil(group);
                let mut stored = vec![0.0f32; if i.permutation.is_some() { i.cols } else { 0 }];
                for (r, (dst, codes)) in out
                    .chunks_exact_mut(i.cols)
                    .zip(bytes.chunks_exact(i.row_bytes))
                    .enumerate()
                {
                    let g0 = (rows.start + r) * groups;
                    let target: &mut [f32] = if i.permutation.is_some() {
                        &mut stored
                    } else {
                        dst
                    };
                    let params = i.scales[g0..g0 + groups]
                        .iter()
                        .zip(&i.mins[g0..g0 + groups]);
                    for (g, (&s, &m)) in params.enumerate() {
                        let end = ((g + 1) * group).min(i.cols);
                        let seg = &mut target[g * group..end];
                        if bits == 8 {
                            for (v, &q) in seg.iter_mut().zip(&codes[g * group..]) {
                                *v = s * f32::from(q) + m;
                            }
                        } else {
                            let packed = &codes[g * group / 2..end / 2];
                            for (blk, qs) in seg.chunks_exact_mut(32).zip(packed.chunks_exact(16)) {
                                for k in 0..16 {
                                    blk[k] = s * f32::from(qs[k] & 0x0F) + m;
                                    blk[k + 16] = s * f32::from(qs[k] >> 4) + m;
                                }
                            }
                        }
                    }
                    if let Some(perm) = &i.permutation {
                        for (&p, &v) in perm.iter().zip(&stored) {
                            dst[p as usize] = v;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `y = x·Wᵀ`: x is (…, cols) of f32, f16, bf16 or f64 (any layout);
    /// the result is (…, rows) in x's dtype. Runs the fused kernels at the
    /// best instruction set of this CPU (see [`KernelIsa`]); every
    /// instruction set gives bit-identical results, for any thread count.
    ///
    /// On the fused kernels (fewer than [`QMatrix::DENSE_MIN_ROWS`] rows,
    /// and any number for Q4_0, Q4_1, Q5_0 and Q8_0: see [`QMatrix::runs_dense`]),
    /// each 32-element block of each row of x is quantized to i8 with scale
    /// `dx_b = amax / 127` (see the `kernels` module for the exact float
    /// formulas), so the result differs from the f32 product by at most
    /// `Σ_j |w_j|·dx_b/2` plus rounding, and each row's result does not
    /// depend on the other rows; the other products run the dense GEMM on
    /// dequantized tiles. On the fused path, a non-finite value in x makes
    /// the outputs of its row NaN. No gradient is recorded.
    ///
    /// ```
    /// use kaiyuan_tensor::{DType, Tensor};
    /// use kaiyuan_tensor::quant::QMatrix;
    /// # fn main() -> kaiyuan_tensor::Result<()> {
    /// let w = QMatrix::from_int(8, 64, 3, 64, &[1; 192], vec![0.5; 3], vec![0.0; 3], None)?;
    /// let x = Tensor::full(2.0, &[2, 1, 64], DType::BF16)?;
    /// let y = w.matmul_t(&x)?;
    /// assert_eq!((y.shape(), y.dtype()), (&[2, 1, 3][..], DType::BF16));
    /// assert_eq!(y.cast(DType::F32)?.to_vec::<f32>()?, vec![64.0; 6]);
    /// assert!(w.matmul_t(&Tensor::zeros(&[2, 63], DType::F32)?).is_err());
    /// # Ok(()) }
    /// ```
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        self.matmul_t_on(x, KernelIsa::detected())
    }

    /// [`QMatrix::matmul_t`] on the kernels of instruction set `isa`, for
    /// tests and benchmarks. Fails when this CPU lacks `isa`.
    ///
    /// ```
    /// use kaiyuan_tensor::{DType, Tensor};
    /// use kaiyuan_tensor::quant::{KernelIsa, QMatrix};
    /// let w = QMatrix::from_int(4, 32, 1, 32, &[3; 32], vec![0.1], vec![-0.2], None).unwrap();
    /// let x = Tensor::rand_uniform(&[4, 32], -1.0, 1.0, 3).unwrap();
    /// let fast = w.matmul_t(&x).unwrap().to_vec::<f32>().unwrap();
    /// let portable = w.matmul_t_on(&x, KernelIsa::Portable).unwrap().to_vec::<f32>().unwrap();
    /// assert_eq!(fast, portable);
    /// ```
    pub fn matmul_t_on(&self, x: &Tensor, isa: KernelIsa) -> Result<Tensor> {
        let (m, out_shape) = self.check_input(x, isa)?;
        let values = f32_values(x)?;
        let y = if self.runs_dense(m) {
            self.matmul_t_dense(&values, m)
        } else {
            let i = &*self.inner;
            let xq = kernels::quantize_activations(&values, m, i.cols, i.permutation.as_deref());
            kernels::matmul_t(&self.view(), &xq, isa)
        };
        Ok(output(y, &out_shape, x.dtype()))
    }

    /// `x·Wᵢᵀ` for several matrices that take the same x (a layer's query,
    /// key and value projections, say): bit for bit what
    /// [`QMatrix::matmul_t`] gives for each, but when they have the same
    /// columns and no input permutation, x is quantized once, and when
    /// decoding (x with at most 4 rows) all the products run as one
    /// parallel job instead of one each.
    ///
    /// ```
    /// use kaiyuan_tensor::Tensor;
    /// use kaiyuan_tensor::quant::QMatrix;
    /// let a = QMatrix::from_int(8, 32, 3, 32, &[5; 96], vec![0.5; 3], vec![0.0; 3], None).unwrap();
    /// let b = QMatrix::from_int(4, 32, 2, 32, &[3; 64], vec![0.1; 2], vec![-0.2; 2], None).unwrap();
    /// let x = Tensor::rand_uniform(&[1, 32], -1.0, 1.0, 3).unwrap();
    /// let ys = QMatrix::matmul_t_many(&[&a, &b], &x).unwrap();
    /// assert_eq!(ys[0].to_vec::<f32>().unwrap(), a.matmul_t(&x).unwrap().to_vec::<f32>().unwrap());
    /// assert_eq!(ys[1].shape(), &[1, 2]);
    /// ```
    pub fn matmul_t_many(ws: &[&QMatrix], x: &Tensor) -> Result<Vec<Tensor>> {
        let isa = KernelIsa::detected();
        let Some(first) = ws.first() else {
            return Ok(Vec::new());
        };
        let shared = ws
            .iter()
            .all(|w| w.cols() == first.cols() && w.inner.permutation.is_none());
        let m = x
            .shape()
            .split_last()
            .map_or(0, |(_, lead)| lead.iter().product());
        if !shared || ws.iter().any(|w| w.runs_dense(m)) {
            return ws.iter().map(|w| w.matmul_t_on(x, isa)).collect();
        }
        let shapes = ws
            .iter()
            .map(|w| Ok(w.check_input(x, isa)?.1))
            .collect::<Result<Vec<_>>>()?;
        let values = f32_values(x)?;
        let xq = kernels::quantize_activations(&values, m, first.cols(), None);
        let views: Vec<WeightView<'_>> = ws.iter().map(|w| w.view()).collect();
        Ok(kernels::matmul_t_many(&views, &xq, isa)
            .into_iter()
            .zip(&shapes)
            .map(|(y, shape)| output(y, shape, x.dtype()))
            .collect())
    }

    /// Checks x (…, cols) for a product on `isa`: its row count and the
    /// output's shape (…, rows).
    fn check_input(&self, x: &Tensor, isa: KernelIsa) -> Result<(usize, Vec<usize>)> {
        let i = &*self.inner;
        if !isa.is_supported() {
            return Err(invalid(
                OP,
                format!("this CPU lacks the {isa:?} instruction set"),
            ));
        }
        let Some((&k, lead)) = x.shape().split_last() else {
            return Err(TensorError::Rank {
                op: OP,
                expected: "rank ≥ 1 (…, cols)",
                shape: x.shape().to_vec(),
            });
        };
        if k != i.cols {
            return Err(TensorError::shapes(
                OP,
                x.shape(),
                &[i.rows, i.cols],
                format!("x's last dim must equal W's cols = {}", i.cols),
            ));
        }
        let m = lead.iter().product::<usize>();
        let mut out_shape = lead.to_vec();
        out_shape.push(i.rows);
        Ok((m, out_shape))
    }

    /// The kernels' view of the weights.
    fn view(&self) -> WeightView<'_> {
        let i = &*self.inner;
        WeightView {
            kind: i.kind,
            rows: i.rows,
            cols: i.cols,
            bytes: i.codes.as_slice(),
            row_bytes: i.row_bytes,
            scales: &i.scales,
            mins: &i.mins,
            group_blocks: match i.format {
                QuantFormat::Int { group, .. } => group / 32,
                QuantFormat::Block(_) => 0,
            },
            groups: match i.format {
                QuantFormat::Int { group, .. } => i.cols.div_ceil(group),
                QuantFormat::Block(_) => 0,
            },
        }
    }
}

/// The op's name in errors.
const OP: &str = "QMatrix::matmul_t";

/// x's values as f32 (borrowed when x is contiguous f32).
fn f32_values(x: &Tensor) -> Result<std::borrow::Cow<'_, [f32]>> {
    Ok(match x.float_values(OP)? {
        FloatValues::F32(v) => v,
        FloatValues::F64(v) => v.iter().map(|&v| v as f32).collect(),
    })
}

/// A product's f32 values as a tensor of `shape` in x's dtype.
fn output(y: Vec<f32>, shape: &[usize], dtype: DType) -> Tensor {
    let out = match dtype {
        DType::F64 => FloatVec::F64(y.iter().map(|&v| f64::from(v)).collect()),
        _ => FloatVec::F32(y),
    };
    Tensor::from_float_vec(out, shape, dtype)
}

impl QMatrix {
    /// From this many rows of x on (prefill), [`QMatrix::matmul_t`]
    /// dequantizes W in tiles of weight rows and runs the dense f32 GEMM
    /// ([`crate::gemm::sgemm`]) on the unquantized x instead of the fused
    /// kernels: measured 3–5× faster at 128 rows. Such products are more
    /// accurate (x is not quantized) and bit-identical for every
    /// [`KernelIsa`] and thread count, but can differ in the last bits from
    /// the same row computed with fewer rows.
    /// Q4_0, Q4_1, Q5_0 and Q8_0 are the exception: interleaved
    /// ([`BlockOrder::Interleaved8`]), their fused kernels take four rows of
    /// x per pass and beat the dense path, so they run fused at any row
    /// count, and in row order too, so that both orders keep giving the
    /// same bits (see [`QMatrix::runs_dense`]).
    pub const DENSE_MIN_ROWS: usize = 16;

    /// Whether a product with `m` rows of x runs the dense GEMM on
    /// dequantized tiles (the unquantized x) rather than the fused kernels
    /// (x quantized per block): from [`QMatrix::DENSE_MIN_ROWS`] rows on,
    /// except for Q4_0, Q4_1, Q5_0 and Q8_0, which always run fused.
    ///
    /// ```
    /// use kaiyuan_tensor::quant::{BlockType, QBytes, QMatrix};
    /// # fn main() -> kaiyuan_tensor::Result<()> {
    /// let q6 = QMatrix::from_blocks(BlockType::Q6_K, 8, 256, QBytes::Owned(vec![0; 8 * 210]))?;
    /// assert!(!q6.runs_dense(15) && q6.runs_dense(128));
    /// let q8 = QMatrix::from_blocks(BlockType::Q8_0, 8, 32, QBytes::Owned(vec![0; 8 * 34]))?;
    /// assert!(!q8.runs_dense(128));
    /// # Ok(()) }
    /// ```
    pub fn runs_dense(&self, m: usize) -> bool {
        let fused_always = matches!(
            self.inner.format,
            QuantFormat::Block(
                BlockType::Q4_0 | BlockType::Q4_1 | BlockType::Q5_0 | BlockType::Q8_0
            )
        );
        m >= Self::DENSE_MIN_ROWS && !fused_always
    }

    /// (m, rows) f32 through dequantized tiles of [`DENSE_TILE_ROWS`] rows.
    fn matmul_t_dense(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (rows, cols) = (self.rows(), self.cols());
        let mut out = vec![0.0f32; m * rows];
        let tile = DENSE_TILE_ROWS.min(rows);
        if tile == 0 || m == 0 {
            return out;
        }
        let mut scratch = vec![0.0f32; tile * cols];
        for r0 in (0..rows).step_by(tile) {
            let n = tile.min(rows - r0);
            let w = &mut scratch[..n * cols];
            w.par_chunks_mut(DEQUANT_TASK_ROWS * cols)
                .enumerate()
                .for_each(|(task, chunk)| {
                    let first = r0 + task * DEQUANT_TASK_ROWS;
                    // Cannot fail: the rows and the chunk fit by construction.
                    let _ = self.dequantize_rows(first..first + chunk.len() / cols, chunk);
                });
            // B(p, j) = W[r0 + j][p]: the tile, transposed by its strides;
            // C(i, j) = y[i][r0 + j] in place, row stride `rows`.
            crate::gemm::sgemm(
                m,
                n,
                cols,
                x,
                cols,
                1,
                w,
                1,
                cols,
                &mut out[r0..],
                rows,
                false,
            );
        }
        out
    }
}

/// Weight rows dequantized per dense GEMM call (≤ 4 MiB of f32 scratch at
/// 4096 columns).
const DENSE_TILE_ROWS: usize = 256;
/// Weight rows per rayon task when dequantizing a tile.
const DEQUANT_TASK_ROWS: usize = 16;

/// The instruction sets of the quantized kernels. Every one computes the
/// same integer dot products and the same float operations in the same
/// order, so results are bit-identical across them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelIsa {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 AVX2 (+F16C): `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// x86-64 AVX-512 VNNI (256-bit, with AVX-512VL): `vpdpbusd`.
    Avx512Vnni,
}

impl KernelIsa {
    /// The best instruction set of this CPU (detected once).
    pub fn detected() -> KernelIsa {
        kernels::detected()
    }

    /// Whether this CPU can run `self`.
    ///
    /// ```
    /// assert!(kaiyuan_tensor::quant::KernelIsa::Portable.is_supported());
    /// ```
    pub fn is_supported(self) -> bool {
        match self {
            KernelIsa::Portable => true,
            KernelIsa::Avx2 => kernels::detected() != KernelIsa::Portable,
            KernelIsa::Avx512Vnni => kernels::detected() == KernelIsa::Avx512Vnni,
        }
    }

    /// Every instruction set this CPU supports, portable first.
    pub fn supported() -> Vec<KernelIsa> {
        [KernelIsa::Portable, KernelIsa::Avx2, KernelIsa::Avx512Vnni]
            .into_iter()
            .filter(|i| i.is_supported())
            .collect()
    }
}

/// Packs 4-bit codes two per byte: per 32 codes, 16 bytes whose low
/// nibbles are codes 0–15 and high nibbles 16–31 (ggml's Q4_0 order).
fn pack_int4(codes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(codes.len() / 2);
    for block in codes.chunks_exact(32) {
        for k in 0..16 {
            out.push((block[k] & 0x0F) | (block[k + 16] << 4));
        }
    }
    out
}
