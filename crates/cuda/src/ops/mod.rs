//! Op launchers: each checks its operands against the shapes it is given,
//! allocates its outputs and launches its kernel. Written once for both
//! builds (without the `cuda` feature a [`crate::GpuDevice`] cannot exist).
//!
//! Conventions (every launcher follows them, and the `// SAFETY:` of
//! [`GpuDevice::launch`](crate::GpuDevice::launch) relies on them):
//! - the argument list mirrors the kernel's `extern "C"` signature exactly:
//!   buffers as [`GpuBuffer::arg`](crate::GpuBuffer::arg) /
//!   [`arg_mut`](crate::GpuBuffer::arg_mut), `u64` counts as
//!   [`Arg::U64`](crate::device::Arg::U64), `int` as `Arg::I32`, `float` as
//!   `Arg::F32`;
//! - every buffer's length is checked against the shapes first, so a kernel
//!   never reads or writes out of bounds;
//! - shapes are written in the doc comment: `x`: (rows, cols).

pub mod adamw;
pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod loss;
pub mod norm;
pub mod quant;
pub mod reduce;
pub mod rope;

use crate::{CudaError, Result};

/// A size the kernels take as `int`, checked to fit.
pub(crate) fn dim(op: &'static str, what: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        CudaError::shape(
            op,
            format!(
                "{what} = {value} exceeds the kernels' limit of {}",
                i32::MAX
            ),
        )
    })
}

/// Threads per block for a one-block-per-row kernel over `cols` columns: a
/// multiple of 32 (the block reductions need whole warps), 32 to 1024.
pub(crate) fn row_threads(cols: usize) -> u32 {
    (cols.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// Threads per block for a row kernel with a fast path that keeps the row in
/// registers as 16-byte vectors (`kernels/common.cuh`, "Rows in registers"):
/// when `cols` is a multiple of the vector width (16 / `elem_bytes`
/// elements), enough whole warps that each thread holds about 4 vectors,
/// 32 to 1024 (every thread then holds at most 4 vectors whenever 1024
/// threads allow it); otherwise [`row_threads`], for the scalar loop.
pub(crate) fn vector_row_threads(cols: usize, elem_bytes: usize) -> u32 {
    let width = 16 / elem_bytes;
    if !cols.is_multiple_of(width) {
        return row_threads(cols);
    }
    ((cols / width).div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// Threads per block of the grid-stride elementwise kernels.
pub(crate) const THREADS: u32 = 256;
