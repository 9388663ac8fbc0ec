//! Embedding lookup and its gradient: `kernels/embedding.cu`.

use super::{THREADS, dim};
use crate::device::{Arg, Launch, check_len};
use crate::kernels::EMBEDDING;
use crate::{CudaError, GpuBuffer, GpuDevice, GpuFloat, Result};

/// Whether a launcher reads back the kernel's report of ids (or targets)
/// outside the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdCheck {
    /// Read the report (this waits for the stream) and name the first bad
    /// id in a [`CudaError::BadInput`].
    ReadBack,
    /// The caller checked every id on the host already: nothing is read
    /// back and the stream keeps running (a bad id would give zero rows).
    DoneByCaller,
}

/// Where a kernel reports the first bad position: 1 + position, or
/// `u32::MAX` when all were good.
pub(crate) fn bad_flag(device: &GpuDevice) -> Result<GpuBuffer<u32>> {
    device.upload(&[u32::MAX])
}

/// Reads a bad-position flag back (waits for the stream).
pub(crate) fn first_bad(device: &GpuDevice, flag: &GpuBuffer<u32>) -> Result<Option<usize>> {
    let value = device.download(flag)?.first().copied().unwrap_or(u32::MAX);
    Ok((value != u32::MAX).then(|| value as usize - 1))
}

/// Gathers rows of `table` (vocab, dim) for `ids` (n) into `out` (n, dim).
///
/// # Errors
/// With [`IdCheck::ReadBack`], [`CudaError::BadInput`] naming the first id ≥
/// vocab (its rows are zeros); this waits for the kernel, to read its
/// report.
pub fn embedding<T: GpuFloat>(
    device: &GpuDevice,
    ids: &GpuBuffer<u32>,
    table: &GpuBuffer<T>,
    (vocab, width): (usize, usize),
    out: &mut GpuBuffer<T>,
    check: IdCheck,
) -> Result<()> {
    const OP: &str = "embedding";
    let n = ids.len();
    check_len(OP, "table", table, vocab * width)?;
    check_len(OP, "out", out, n * width)?;
    let mut bad = bad_flag(device)?;
    device.launch(
        &EMBEDDING,
        &format!("embedding_{}", T::SUFFIX),
        Launch::linear(n * width, THREADS),
        &mut [
            Arg::U64(n as u64),
            Arg::I32(dim(OP, "dim", width)?),
            Arg::I32(dim(OP, "vocab", vocab)?),
            ids.arg(),
            table.arg(),
            out.arg_mut(),
            bad.arg_mut(),
        ],
    )?;
    if check == IdCheck::DoneByCaller {
        return Ok(());
    }
    if let Some(position) = first_bad(device, &bad)? {
        let id = device.download(ids)?.get(position).copied().unwrap_or(0);
        return Err(CudaError::BadInput {
            op: OP,
            detail: format!("id {id} at position {position} is outside the vocabulary of {vocab}"),
        });
    }
    Ok(())
}

/// The gradient of [`embedding`]: `dtable` (vocab, dim) f32, zeroed here,
/// then `dy` (n, dim) added into the rows of `ids` (repeated ids add up).
pub fn embedding_backward<T: GpuFloat>(
    device: &GpuDevice,
    ids: &GpuBuffer<u32>,
    dy: &GpuBuffer<T>,
    (vocab, width): (usize, usize),
    dtable: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "embedding backward";
    let n = ids.len();
    check_len(OP, "dy", dy, n * width)?;
    check_len(OP, "dtable", dtable, vocab * width)?;
    device.fill_zeros(dtable)?;
    device.launch(
        &EMBEDDING,
        &format!("embedding_backward_{}", T::SUFFIX),
        Launch::linear(n * width, THREADS),
        &mut [
            Arg::U64(n as u64),
            Arg::I32(dim(OP, "dim", width)?),
            Arg::I32(dim(OP, "vocab", vocab)?),
            ids.arg(),
            dy.arg(),
            dtable.arg_mut(),
        ],
    )
}
