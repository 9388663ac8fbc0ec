//! RMSNorm and LayerNorm, forward and backward: `kernels/norm.cu`.

use super::{dim, vector_row_threads};
use crate::device::{Arg, Launch, check_len};
use crate::kernels::NORM;
use crate::{GpuBuffer, GpuDevice, GpuFloat, Result};

/// RMSNorm of each row: `y = x / √(mean(x²) + eps) · w`.
/// `x`, `y`: (rows, cols); `w`: (cols); `rstd`: (rows) f32, written for
/// [`rms_norm_backward`].
#[allow(clippy::too_many_arguments)]
pub fn rms_norm<T: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    w: &GpuBuffer<T>,
    (rows, cols): (usize, usize),
    eps: f32,
    y: &mut GpuBuffer<T>,
    rstd: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "rms_norm";
    check_len(OP, "x", x, rows * cols)?;
    check_len(OP, "weight", w, cols)?;
    check_len(OP, "y", y, rows * cols)?;
    check_len(OP, "rstd", rstd, rows)?;
    device.launch(
        &NORM,
        &format!("rms_norm_{}", T::SUFFIX),
        Launch::rows(rows, vector_row_threads(cols, size_of::<T>())),
        &mut [
            Arg::I32(dim(OP, "rows", rows)?),
            Arg::I32(dim(OP, "cols", cols)?),
            Arg::F32(eps),
            x.arg(),
            w.arg(),
            y.arg_mut(),
            rstd.arg_mut(),
        ],
    )
}

/// Most blocks of a backward launch (`kernels/norm.cu`): each block loops
/// over rows `b, b + blocks, …` and, in the register fast path, sums the
/// weight (and bias) gradient of its columns over those rows before adding
/// it to `dw` (`db`) once, so the atomics per column are at most this many
/// rather than one per row. 512 keeps a few blocks per SM on current GPUs
/// (the SM count is not probed).
const BACKWARD_BLOCKS: usize = 512;

/// Most threads per block of a backward launch: the kernels'
/// `__launch_bounds__(512)`, which leaves 128 registers per thread for the
/// packed row and the gradient sums. Rows wider than this many threads hold
/// in registers take the scalar loop.
const BACKWARD_THREADS: u32 = 512;

/// The launch of a backward kernel over `rows` rows of `cols` elements of
/// `elem_bytes` bytes.
fn backward_launch(rows: usize, cols: usize, elem_bytes: usize) -> Launch {
    Launch::rows(
        rows.min(BACKWARD_BLOCKS),
        vector_row_threads(cols, elem_bytes).min(BACKWARD_THREADS),
    )
}

/// Gradients of [`rms_norm`]: `dx` (rows, cols) and `dw` (cols) f32 (zeroed
/// here, then accumulated over rows: summed per block, then added
/// atomically, so its rounding may vary from run to run).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_backward<T: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    w: &GpuBuffer<T>,
    rstd: &GpuBuffer<f32>,
    dy: &GpuBuffer<T>,
    (rows, cols): (usize, usize),
    dx: &mut GpuBuffer<T>,
    dw: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "rms_norm backward";
    check_len(OP, "x", x, rows * cols)?;
    check_len(OP, "weight", w, cols)?;
    check_len(OP, "rstd", rstd, rows)?;
    check_len(OP, "dy", dy, rows * cols)?;
    check_len(OP, "dx", dx, rows * cols)?;
    check_len(OP, "dw", dw, cols)?;
    device.fill_zeros(dw)?;
    device.launch(
        &NORM,
        &format!("rms_norm_backward_{}", T::SUFFIX),
        backward_launch(rows, cols, size_of::<T>()),
        &mut [
            Arg::I32(dim(OP, "rows", rows)?),
            Arg::I32(dim(OP, "cols", cols)?),
            x.arg(),
            w.arg(),
            rstd.arg(),
            dy.arg(),
            dx.arg_mut(),
            dw.arg_mut(),
        ],
    )
}

/// The saved statistics of a LayerNorm forward: (rows) f32 each.
#[derive(Debug)]
pub struct LayerNormStats {
    /// Mean of each row.
    pub mean: GpuBuffer<f32>,
    /// 1/√(variance + eps) of each row.
    pub rstd: GpuBuffer<f32>,
}

/// LayerNorm of each row: `y = (x − mean)/√(var + eps) · w + b` (biased
/// variance; `w`, `b` optional). `x`, `y`: (rows, cols); `w`, `b`: (cols).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm<T: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    w: Option<&GpuBuffer<T>>,
    b: Option<&GpuBuffer<T>>,
    (rows, cols): (usize, usize),
    eps: f32,
    y: &mut GpuBuffer<T>,
    stats: &mut LayerNormStats,
) -> Result<()> {
    const OP: &str = "layer_norm";
    check_len(OP, "x", x, rows * cols)?;
    for (name, buffer) in [("weight", w), ("bias", b)] {
        if let Some(buffer) = buffer {
            check_len(OP, name, buffer, cols)?;
        }
    }
    check_len(OP, "y", y, rows * cols)?;
    check_len(OP, "mean", &stats.mean, rows)?;
    check_len(OP, "rstd", &stats.rstd, rows)?;
    // An absent weight or bias is never read (its flag is 0); `x` stands in
    // as a valid pointer.
    device.launch(
        &NORM,
        &format!("layer_norm_{}", T::SUFFIX),
        Launch::rows(rows, vector_row_threads(cols, size_of::<T>())),
        &mut [
            Arg::I32(dim(OP, "rows", rows)?),
            Arg::I32(dim(OP, "cols", cols)?),
            Arg::F32(eps),
            Arg::I32(w.is_some() as i32),
            Arg::I32(b.is_some() as i32),
            x.arg(),
            w.unwrap_or(x).arg(),
            b.unwrap_or(x).arg(),
            y.arg_mut(),
            stats.mean.arg_mut(),
            stats.rstd.arg_mut(),
        ],
    )
}

/// Gradients of [`layer_norm`]: `dx` (rows, cols); `dw` and `db` (cols) f32,
/// zeroed here then accumulated over rows as in [`rms_norm_backward`]
/// (written whether or not the forward had a weight or bias).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward<T: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    w: Option<&GpuBuffer<T>>,
    stats: &LayerNormStats,
    dy: &GpuBuffer<T>,
    (rows, cols): (usize, usize),
    dx: &mut GpuBuffer<T>,
    dw: &mut GpuBuffer<f32>,
    db: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "layer_norm backward";
    check_len(OP, "x", x, rows * cols)?;
    if let Some(w) = w {
        check_len(OP, "weight", w, cols)?;
    }
    check_len(OP, "mean", &stats.mean, rows)?;
    check_len(OP, "rstd", &stats.rstd, rows)?;
    check_len(OP, "dy", dy, rows * cols)?;
    check_len(OP, "dx", dx, rows * cols)?;
    check_len(OP, "dw", dw, cols)?;
    check_len(OP, "db", db, cols)?;
    device.fill_zeros(dw)?;
    device.fill_zeros(db)?;
    device.launch(
        &NORM,
        &format!("layer_norm_backward_{}", T::SUFFIX),
        backward_launch(rows, cols, size_of::<T>()),
        &mut [
            Arg::I32(dim(OP, "rows", rows)?),
            Arg::I32(dim(OP, "cols", cols)?),
            Arg::I32(w.is_some() as i32),
            x.arg(),
            w.unwrap_or(x).arg(),
            stats.mean.arg(),
            stats.rstd.arg(),
            dy.arg(),
            dx.arg_mut(),
            dw.arg_mut(),
            db.arg_mut(),
        ],
    )
}
