//! Products with quantized weights, `y = x·Wᵀ`: `kernels/quant.cu`.
//!
//! W is (rows = n output features, cols = k input features), stored
//! quantized row after row, the way `nn.Linear` keeps its weight; x is
//! (m, k) f32 and y is (m, n) f32. Two weight layouts:
//! - [`BlockWeight`]: GGUF blocks (Q8_0, Q4_0, Q4_K) exactly as in the file
//!   (and as `kaiyuan_tensor::quant::QMatrix::from_blocks` holds them);
//! - [`IntWeight`]: group-wise integers (GPTQ / RTN, 4 or 8 bits) in the
//!   layout of `QMatrix::from_int`, the one the CPU inference path runs
//!   (HF GPTQ checkpoints are converted to it on loading).
//!
//! The `gemv_*` launchers take one row of x (m = 1); the `gemm_*` ones any
//! number of rows (small batches: the weight is read once per 8 rows of x;
//! for m = 1 they run the one-row kernels). Both write every element of
//! their output buffer `y`.

use crate::device::{Arg, Launch, check_len};
use crate::kernels::QUANT;
use crate::{CudaError, GpuBuffer, GpuDevice, Result};

/// Weight rows (warps) per block of the product kernels.
const ROWS_PER_BLOCK: usize = 4;
/// Threads per block of the product kernels: one warp per weight row.
const THREADS: u32 = 32 * ROWS_PER_BLOCK as u32;
/// Threads per block of the column gather.
const GATHER_THREADS: u32 = 256;

/// The GGUF block types the kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgufType {
    /// 32 elements in 34 bytes: `d` (f16), 32 × i8; `w = d·q`.
    Q8_0,
    /// 32 elements in 18 bytes: `d` (f16), 16 bytes whose byte `j` holds
    /// element `j` (low nibble) and `j + 16` (high nibble); `w = d·(q − 8)`.
    Q4_0,
    /// 256 elements in 144 bytes: `d`, `dmin` (f16), 12 bytes of 6-bit
    /// sub-block scales and minimums, 128 bytes of nibbles (ggml's
    /// `block_q4_K`); `w = (d·sc)·q − dmin·mn`.
    Q4_K,
}

impl GgufType {
    /// Elements per block: 32, or 256 for Q4_K.
    pub const fn block_size(self) -> usize {
        match self {
            GgufType::Q8_0 | GgufType::Q4_0 => 32,
            GgufType::Q4_K => 256,
        }
    }

    /// Bytes per block: 34, 18 or 144.
    pub const fn type_size(self) -> usize {
        match self {
            GgufType::Q8_0 => 34,
            GgufType::Q4_0 => 18,
            GgufType::Q4_K => 144,
        }
    }

    /// The type's part of the kernel names (`q4_k` in `gemv_q4_k_f32`).
    pub const fn kernel_name(self) -> &'static str {
        match self {
            GgufType::Q8_0 => "q8_0",
            GgufType::Q4_0 => "q4_0",
            GgufType::Q4_K => "q4_k",
        }
    }
}

/// A weight W of GGUF blocks on the device: `rows` rows of
/// `cols / ty.block_size()` blocks each, row after row (GGUF layout).
#[derive(Debug, Clone, Copy)]
pub struct BlockWeight<'a> {
    /// The block type.
    pub ty: GgufType,
    /// Output features n.
    pub rows: usize,
    /// Input features k, a positive multiple of the block size.
    pub cols: usize,
    /// `bytes`: (rows · cols / block_size · type_size) u8.
    pub bytes: &'a GpuBuffer<u8>,
}

/// A group-wise integer weight W (GPTQ / RTN) on the device, in the layout of
/// `kaiyuan_tensor::quant::QMatrix::from_int`: `w = s·q + mn` with one f32
/// scale `s` and minimum `mn` per (row, group) (a GPTQ zero point `z` is
/// `mn = −s·z`), columns stored sorted by group.
#[derive(Debug, Clone, Copy)]
pub struct IntWeight<'a> {
    /// Bits per code: 4 or 8.
    pub bits: u8,
    /// Columns per group, a positive multiple of 32 (`cols` or more for one
    /// group per row); when it does not divide `cols` the last group is
    /// shorter.
    pub group: usize,
    /// Output features n.
    pub rows: usize,
    /// Input features k, a positive multiple of 32.
    pub cols: usize,
    /// `codes`: (rows · cols · bits / 8) u8, row after row in stored column
    /// order; int8 one byte per code; int4 per 32 codes 16 bytes whose byte
    /// `j` holds code `j` (low nibble) and `j + 16` (high nibble).
    pub codes: &'a GpuBuffer<u8>,
    /// `scales`: (rows, ⌈cols / group⌉) f32.
    pub scales: &'a GpuBuffer<f32>,
    /// `mins`: (rows, ⌈cols / group⌉) f32.
    pub mins: &'a GpuBuffer<f32>,
    /// `permutation`: (cols) u32, optional (GPTQ act-order): stored column
    /// `j` multiplies input feature `permutation[j]`. An entry ≥ `cols`
    /// makes the outputs NaN (it is never read out of bounds).
    pub permutation: Option<&'a GpuBuffer<u32>>,
}

/// A dimension as the kernels' `int`.
fn dim(op: &'static str, what: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        CudaError::shape(
            op,
            format!("{what} = {value} exceeds the kernels' i32 range"),
        )
    })
}

/// `a · b`, or a shape error when it overflows.
fn product(op: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| CudaError::shape(op, format!("{a} × {b} overflows")))
}

/// The launch of the product kernels: one warp per weight row.
fn rows_launch(rows: usize) -> Launch {
    Launch {
        grid: (rows.div_ceil(ROWS_PER_BLOCK).max(1) as u32, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
}

/// `y = x·Wᵀ` for one row of x: `x`: (cols) f32, `y`: (rows) f32, written
/// whole.
pub fn gemv_gguf(
    device: &GpuDevice,
    w: &BlockWeight<'_>,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    gguf_product(device, "gemv_gguf", w, x, 1, y)
}

/// `y = x·Wᵀ` for `m` rows of x: `x`: (m, cols) f32, `y`: (m, rows) f32,
/// written whole (nothing to do when `m` is 0).
pub fn gemm_gguf(
    device: &GpuDevice,
    w: &BlockWeight<'_>,
    x: &GpuBuffer<f32>,
    m: usize,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    gguf_product(device, "gemm_gguf", w, x, m, y)
}

/// The kernel family for `m` rows of x: the one-row kernels for m = 1, the
/// tiled ones (8 rows of x per pass over the weight) otherwise.
fn family(m: usize) -> &'static str {
    if m == 1 { "gemv" } else { "gemm" }
}

fn gguf_product(
    device: &GpuDevice,
    op: &'static str,
    w: &BlockWeight<'_>,
    x: &GpuBuffer<f32>,
    m: usize,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let (rows, cols) = (w.rows, w.cols);
    let block = w.ty.block_size();
    if cols == 0 || cols % block != 0 {
        return Err(CudaError::shape(
            op,
            format!(
                "cols = {cols} is not a positive multiple of the {:?} block size {block}",
                w.ty
            ),
        ));
    }
    let n = dim(op, "rows", rows)?;
    let k = dim(op, "cols", cols)?;
    let m_i32 = dim(op, "m", m)?;
    let row_bytes = cols / block * w.ty.type_size();
    check_len(
        op,
        "the weight bytes",
        w.bytes,
        product(op, rows, row_bytes)?,
    )?;
    check_len(op, "x", x, product(op, m, cols)?)?;
    check_len(op, "y", y, product(op, m, rows)?)?;
    if rows == 0 || m == 0 {
        return Ok(());
    }
    device.launch(
        &QUANT,
        &format!("{}_{}_f32", family(m), w.ty.kernel_name()),
        rows_launch(rows),
        &mut [
            w.bytes.arg(),
            x.arg(),
            y.arg_mut(),
            Arg::I32(n),
            Arg::I32(k),
            Arg::I32(m_i32),
        ],
    )
}

/// `y = x·Wᵀ` for one row of x (in the original input order; an act-order
/// permutation is applied on the device): `x`: (cols) f32, `y`: (rows) f32,
/// written whole.
pub fn gptq_gemv(
    device: &GpuDevice,
    w: &IntWeight<'_>,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    int_product(device, "gptq_gemv", w, x, 1, y)
}

/// `y = x·Wᵀ` for `m` rows of x (original input order): `x`: (m, cols) f32,
/// `y`: (m, rows) f32, written whole (nothing to do when `m` is 0).
pub fn gptq_gemm(
    device: &GpuDevice,
    w: &IntWeight<'_>,
    x: &GpuBuffer<f32>,
    m: usize,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    int_product(device, "gptq_gemm", w, x, m, y)
}

fn int_product(
    device: &GpuDevice,
    op: &'static str,
    w: &IntWeight<'_>,
    x: &GpuBuffer<f32>,
    m: usize,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let (rows, cols, group) = (w.rows, w.cols, w.group);
    if w.bits != 4 && w.bits != 8 {
        return Err(CudaError::shape(
            op,
            format!("bits = {}; only 4 and 8 are supported", w.bits),
        ));
    }
    if cols == 0 || cols % 32 != 0 || group == 0 || group % 32 != 0 {
        return Err(CudaError::shape(
            op,
            format!("group = {group} and cols = {cols} must be positive multiples of 32"),
        ));
    }
    let n = dim(op, "rows", rows)?;
    let k = dim(op, "cols", cols)?;
    let g = dim(op, "group", group)?;
    let m_i32 = dim(op, "m", m)?;
    let groups = product(op, rows, cols.div_ceil(group))?;
    let row_bytes = cols * usize::from(w.bits) / 8;
    check_len(op, "codes", w.codes, product(op, rows, row_bytes)?)?;
    check_len(op, "scales", w.scales, groups)?;
    check_len(op, "mins", w.mins, groups)?;
    check_len(op, "x", x, product(op, m, cols)?)?;
    check_len(op, "y", y, product(op, m, rows)?)?;
    if let Some(permutation) = w.permutation {
        check_len(op, "the permutation", permutation, cols)?;
    }
    if rows == 0 || m == 0 {
        return Ok(());
    }
    let gathered = match w.permutation {
        Some(permutation) => Some(gather_cols(device, x, permutation, m, cols)?),
        None => None,
    };
    let input = gathered.as_ref().unwrap_or(x);
    device.launch(
        &QUANT,
        &format!("gptq_{}_int{}_f32", family(m), w.bits),
        rows_launch(rows),
        &mut [
            w.codes.arg(),
            w.scales.arg(),
            w.mins.arg(),
            input.arg(),
            y.arg_mut(),
            Arg::I32(n),
            Arg::I32(k),
            Arg::I32(m_i32),
            Arg::I32(g),
        ],
    )
}

/// Columns of `x` in the order `permutation` gives: `out[r][j] =
/// x[r][permutation[j]]` (NaN where an entry is ≥ `cols`). `x`: (rows,
/// cols) f32, `permutation`: (cols) u32; returns (rows, cols) f32, every
/// element written (callers pass `rows · cols > 0`).
fn gather_cols(
    device: &GpuDevice,
    x: &GpuBuffer<f32>,
    permutation: &GpuBuffer<u32>,
    rows: usize,
    cols: usize,
) -> Result<GpuBuffer<f32>> {
    const OP: &str = "gather_cols";
    let k = dim(OP, "cols", cols)?;
    let total = product(OP, rows, cols)?;
    check_len(OP, "x", x, total)?;
    check_len(OP, "the permutation", permutation, cols)?;
    let mut out = device.zeros::<f32>(total)?;
    check_len(OP, "out", &out, total)?;
    device.launch(
        &QUANT,
        "gather_cols_f32",
        Launch::linear(total, GATHER_THREADS),
        &mut [
            Arg::U64(total as u64),
            Arg::I32(k),
            x.arg(),
            permutation.arg(),
            out.arg_mut(),
        ],
    )?;
    Ok(out)
}
