//! Axis reductions, argmax, softmax and log-softmax: `kernels/reduce.cu`.

use super::{THREADS, dim, row_threads, vector_row_threads};
use crate::device::{Arg, Launch, check_len};
use crate::kernels::REDUCE;
use crate::{CudaError, GpuBuffer, GpuDevice, GpuFloat, Result};

/// What [`reduce`] computes along its axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Σ.
    Sum,
    /// Maximum (NaN propagates as in `fmaxf`: ignored unless all are NaN).
    Max,
    /// Σ / len.
    Mean,
}

impl Reduction {
    fn code(self) -> i32 {
        match self {
            Reduction::Sum => 0,
            Reduction::Max => 1,
            Reduction::Mean => 2,
        }
    }
}

/// Reduces `x`, seen as (outer, len, inner), along its middle axis into `y`:
/// (outer, inner). For the last axis pass `inner = 1`.
pub fn reduce<T: GpuFloat>(
    device: &GpuDevice,
    how: Reduction,
    x: &GpuBuffer<T>,
    (outer, len, inner): (usize, usize, usize),
    y: &mut GpuBuffer<T>,
) -> Result<()> {
    const OP: &str = "reduce";
    if len == 0 {
        return Err(CudaError::shape(OP, "cannot reduce an axis of length 0"));
    }
    check_len(OP, "x", x, outer * len * inner)?;
    check_len(OP, "y", y, outer * inner)?;
    let len_i32 = dim(OP, "axis length", len)?;
    if inner == 1 {
        device.launch(
            &REDUCE,
            &format!("reduce_rows_{}", T::SUFFIX),
            Launch::rows(outer, row_threads(len)),
            &mut [
                Arg::I32(dim(OP, "rows", outer)?),
                Arg::I32(len_i32),
                Arg::I32(how.code()),
                x.arg(),
                y.arg_mut(),
            ],
        )
    } else {
        device.launch(
            &REDUCE,
            &format!("reduce_axis_{}", T::SUFFIX),
            Launch::linear(outer * inner, THREADS),
            &mut [
                Arg::U64(outer as u64),
                Arg::I32(len_i32),
                Arg::U64(inner as u64),
                Arg::I32(how.code()),
                x.arg(),
                y.arg_mut(),
            ],
        )
    }
}

/// Index of the first maximum of each row. `x`: (rows, cols), `y`: (rows) u32.
pub fn argmax_rows<T: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    (rows, cols): (usize, usize),
    y: &mut GpuBuffer<u32>,
) -> Result<()> {
    const OP: &str = "argmax";
    if cols == 0 {
        return Err(CudaError::shape(OP, "rows of length 0 have no maximum"));
    }
    check_len(OP, "x", x, rows * cols)?;
    check_len(OP, "y", y, rows)?;
    device.launch(
        &REDUCE,
        &format!("argmax_rows_{}", T::SUFFIX),
        Launch::rows(rows, row_threads(cols)),
        &mut [
            Arg::I32(dim(OP, "rows", rows)?),
            Arg::I32(dim(OP, "cols", cols)?),
            x.arg(),
            y.arg_mut(),
        ],
    )
}

/// Softmax (or, with `log`, log-softmax) of each row. `x`, `y`: (rows, cols).
pub fn softmax<T: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    (rows, cols): (usize, usize),
    log: bool,
    y: &mut GpuBuffer<T>,
) -> Result<()> {
    const OP: &str = "softmax";
    check_len(OP, "x", x, rows * cols)?;
    check_len(OP, "y", y, rows * cols)?;
    device.launch(
        &REDUCE,
        &format!("softmax_{}", T::SUFFIX),
        Launch::rows(rows, vector_row_threads(cols, size_of::<T>())),
        &mut [
            Arg::I32(dim(OP, "rows", rows)?),
            Arg::I32(dim(OP, "cols", cols)?),
            Arg::I32(log as i32),
            x.arg(),
            y.arg_mut(),
        ],
    )
}

/// The gradient of [`softmax`] from its output `y` and upstream `dy`.
/// `y`, `dy`, `dx`: (rows, cols).
pub fn softmax_backward<T: GpuFloat>(
    device: &GpuDevice,
    y: &GpuBuffer<T>,
    dy: &GpuBuffer<T>,
    (rows, cols): (usize, usize),
    log: bool,
    dx: &mut GpuBuffer<T>,
) -> Result<()> {
    const OP: &str = "softmax backward";
    for (name, buffer) in [("y", y), ("dy", dy)] {
        check_len(OP, name, buffer, rows * cols)?;
    }
    check_len(OP, "dx", dx, rows * cols)?;
    device.launch(
        &REDUCE,
        &format!("softmax_backward_{}", T::SUFFIX),
        Launch::rows(rows, vector_row_threads(cols, size_of::<T>())),
        &mut [
            Arg::I32(dim(OP, "rows", rows)?),
            Arg::I32(dim(OP, "cols", cols)?),
            Arg::I32(log as i32),
            y.arg(),
            dy.arg(),
            dx.arg_mut(),
        ],
    )
}
