//! Cross-entropy, forward and backward: `kernels/loss.cu`.

use super::embedding::{IdCheck, bad_flag, first_bad};
use super::{dim, row_threads};
use crate::device::{Arg, Launch, check_len};
use crate::kernels::LOSS;
use crate::{CudaError, GpuBuffer, GpuDevice, GpuFloat, Result};

/// The class id that marks a row to skip (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

/// What the forward keeps for the backward.
#[derive(Debug)]
pub struct CrossEntropy {
    /// `[mean loss, kept rows]` (f32; the mean is NaN when every row is
    /// ignored, as in PyTorch).
    pub mean: GpuBuffer<f32>,
    /// Per-row loss (rows) f32, 0 for ignored rows.
    pub row_loss: GpuBuffer<f32>,
    /// Per-row log-sum-exp of the logits (rows) f32.
    pub lse: GpuBuffer<f32>,
}

/// Mean cross-entropy of `logits` (rows, vocab) against `targets` (rows)
/// i32 class ids ([`IGNORE_INDEX`] skips a row), as PyTorch's
/// `F.cross_entropy`.
///
/// # Errors
/// With [`IdCheck::ReadBack`], [`CudaError::BadInput`] naming the first
/// target outside the vocabulary (this waits for the kernel, to read its
/// report).
pub fn cross_entropy<T: GpuFloat>(
    device: &GpuDevice,
    logits: &GpuBuffer<T>,
    targets: &GpuBuffer<i32>,
    (rows, vocab): (usize, usize),
    check: IdCheck,
) -> Result<CrossEntropy> {
    const OP: &str = "cross_entropy";
    check_len(OP, "logits", logits, rows * vocab)?;
    check_len(OP, "targets", targets, rows)?;
    let rows_i32 = dim(OP, "rows", rows)?;
    let mut out = CrossEntropy {
        mean: device.zeros(2)?,
        row_loss: device.zeros(rows)?,
        lse: device.zeros(rows)?,
    };
    let mut bad = bad_flag(device)?;
    device.launch(
        &LOSS,
        &format!("cross_entropy_rows_{}", T::SUFFIX),
        Launch::rows(rows, row_threads(vocab)),
        &mut [
            Arg::I32(rows_i32),
            Arg::I32(dim(OP, "vocab", vocab)?),
            logits.arg(),
            targets.arg(),
            out.row_loss.arg_mut(),
            out.lse.arg_mut(),
            bad.arg_mut(),
        ],
    )?;
    device.launch(
        &LOSS,
        "cross_entropy_mean",
        Launch::rows(1, 1024),
        &mut [
            Arg::I32(rows_i32),
            out.row_loss.arg(),
            targets.arg(),
            out.mean.arg_mut(),
        ],
    )?;
    if check == IdCheck::DoneByCaller {
        return Ok(out);
    }
    if let Some(row) = first_bad(device, &bad)? {
        let target = device.download(targets)?.get(row).copied().unwrap_or(0);
        return Err(CudaError::BadInput {
            op: OP,
            detail: format!(
                "target {target} of row {row} is outside the vocabulary of {vocab} (and is not {IGNORE_INDEX})"
            ),
        });
    }
    Ok(out)
}

/// The gradient of [`cross_entropy`] scaled by `upstream` (1) f32, the
/// gradient of the mean loss, read on the device (so nothing waits for the
/// stream): `dlogits` (rows, vocab), zero rows for ignored targets.
pub fn cross_entropy_backward<T: GpuFloat>(
    device: &GpuDevice,
    logits: &GpuBuffer<T>,
    targets: &GpuBuffer<i32>,
    forward: &CrossEntropy,
    (rows, vocab): (usize, usize),
    upstream: &GpuBuffer<f32>,
    dlogits: &mut GpuBuffer<T>,
) -> Result<()> {
    const OP: &str = "cross_entropy backward";
    check_len(OP, "logits", logits, rows * vocab)?;
    check_len(OP, "targets", targets, rows)?;
    check_len(OP, "lse", &forward.lse, rows)?;
    check_len(OP, "mean", &forward.mean, 2)?;
    check_len(OP, "upstream", upstream, 1)?;
    check_len(OP, "dlogits", dlogits, rows * vocab)?;
    device.launch(
        &LOSS,
        &format!("cross_entropy_backward_{}", T::SUFFIX),
        Launch::rows(rows, row_threads(vocab)),
        &mut [
            Arg::I32(dim(OP, "rows", rows)?),
            Arg::I32(dim(OP, "vocab", vocab)?),
            logits.arg(),
            targets.arg(),
            forward.lse.arg(),
            forward.mean.arg(),
            upstream.arg(),
            dlogits.arg_mut(),
        ],
    )
}
