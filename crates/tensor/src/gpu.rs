//! Tensors on a CUDA device: [`CudaStorage`], transfers, and the CUDA arm of
//! each op, which launches a kernel of `kaiyuan-cuda`.
//!
//! Every op of the crate starts with one call here: `gpu::op(…)?` returns
//! `Some(result)` when its operands live on a CUDA device and `None` when
//! they are on the CPU (the op then runs its CPU code). Operands on two
//! devices are an error ([`TensorError::DeviceMismatch`]), and so is a form
//! of an op the kernels do not cover (an attention mask, say:
//! [`TensorError::UnsupportedOnDevice`]) — nothing is copied to the host
//! behind the caller's back.
//!
//! Kernels read whole, dense buffers: a view (a transpose, a narrow, a
//! broadcast) is first made dense by `copy_strided`, except where a kernel
//! reads the view in place (a GEMM operand transposed in its last two axes).
//! Float storage is f32, bf16 or f16; u32 holds token ids. Without
//! kaiyuan-cuda's `cuda` (or `emulator`) feature no device can be opened,
//! so no [`CudaStorage`] exists and these arms never run.
//!
//! Backward functions launch the backward kernels (norms, softmax, rotary,
//! embedding, attention, cross-entropy) with the statistics their forwards
//! saved; everything else differentiates through the ops above.

// Without kaiyuan-cuda's `cuda` or `emulator` feature `GpuBuffer` and
// `GpuDevice` are uninhabited: code after making one is unreachable there.
#![cfg_attr(
    not(any(feature = "cuda", feature = "emulator")),
    allow(unreachable_code, unused_variables)
)]

use std::sync::{Arc, Mutex, PoisonError};

use half::{bf16, f16};
pub use kaiyuan_cuda::ops::adamw::AdamWStep;
use kaiyuan_cuda::ops::elementwise::{self, Binary, CopyValue, Unary, View};
use kaiyuan_cuda::ops::{attention, embedding, gemm, loss, norm, reduce, rope};
use kaiyuan_cuda::{GpuBuffer, GpuDevice, GpuFloat};

use crate::layout::{Layout, checked_elem_count, contiguous_strides};
use crate::storage::Storage;
use crate::{DType, Device, Element, Result, Tensor, TensorError};

/// A buffer on a CUDA device and the device that holds it.
pub struct CudaStorage {
    device: Arc<GpuDevice>,
    ordinal: usize,
    values: GpuValues,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaStorage")
            .field("device", &self.device())
            .field("dtype", &self.dtype())
            .field("len", &self.len())
            .finish()
    }
}

/// One device buffer per dtype the kernels take.
pub(crate) enum GpuValues {
    F32(GpuBuffer<f32>),
    BF16(GpuBuffer<bf16>),
    F16(GpuBuffer<f16>),
    U32(GpuBuffer<u32>),
}

impl CudaStorage {
    /// The device holding the buffer.
    pub fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self.values {
            GpuValues::F32(_) => DType::F32,
            GpuValues::BF16(_) => DType::BF16,
            GpuValues::F16(_) => DType::F16,
            GpuValues::U32(_) => DType::U32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.values {
            GpuValues::F32(b) => b.len(),
            GpuValues::BF16(b) => b.len(),
            GpuValues::F16(b) => b.len(),
            GpuValues::U32(b) => b.len(),
        }
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with_values(&self, values: GpuValues) -> CudaStorage {
        CudaStorage {
            device: Arc::clone(&self.device),
            ordinal: self.ordinal,
            values,
        }
    }

    fn buffer<T: Stored>(&self, op: &'static str) -> Result<&GpuBuffer<T>> {
        T::buffer(&self.values).ok_or_else(|| {
            TensorError::invalid(
                op,
                format!(
                    "{} storage read as {} (a bug)",
                    self.dtype(),
                    T::COPY_SUFFIX
                ),
            )
        })
    }

    fn wrap<T: Stored>(&self, buffer: GpuBuffer<T>) -> CudaStorage {
        self.with_values(T::wrap(buffer))
    }

    fn zeros<T: Stored>(&self, op: &'static str, len: usize) -> Result<GpuBuffer<T>> {
        self.device.zeros::<T>(len).map_err(TensorError::cuda(op))
    }
}

/// The element types of device storage (floats and u32 ids).
pub(crate) trait Stored: CopyValue + Sized {
    fn wrap(buffer: GpuBuffer<Self>) -> GpuValues;
    fn buffer(values: &GpuValues) -> Option<&GpuBuffer<Self>>;
}

/// The element types of float storage on a device.
pub(crate) trait GpuElement: GpuFloat + Stored + Element {}

macro_rules! stored {
    ($t:ty, $variant:ident) => {
        impl Stored for $t {
            fn wrap(buffer: GpuBuffer<Self>) -> GpuValues {
                GpuValues::$variant(buffer)
            }
            fn buffer(values: &GpuValues) -> Option<&GpuBuffer<Self>> {
                match values {
                    GpuValues::$variant(b) => Some(b),
                    _ => None,
                }
            }
        }
    };
}
stored!(f32, F32);
stored!(bf16, BF16);
stored!(f16, F16);
stored!(u32, U32);
impl GpuElement for f32 {}
impl GpuElement for bf16 {}
impl GpuElement for f16 {}

/// Runs `$body` with `$t` the element type of a float storage's dtype
/// (f32, bf16 or f16); any other dtype runs `$other` with `$dtype` bound.
macro_rules! with_float_or {
    ($storage:expr, |$t:ident| $body:expr, |$dtype:ident| $other:expr) => {
        match $storage.dtype() {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::BF16 => {
                type $t = bf16;
                $body
            }
            DType::F16 => {
                type $t = f16;
                $body
            }
            $dtype => $other,
        }
    };
}

/// Runs `$body` with `$t` the element type of a storage's dtype, any of
/// the four.
macro_rules! with_stored {
    ($storage:expr, |$t:ident| $body:expr) => {
        with_float_or!($storage, |$t| $body, |_u32| {
            type $t = u32;
            $body
        })
    };
}

/// Runs `$body` with `$t` the element type of a float storage's dtype
/// (f32, bf16 or f16); u32 storage is refused.
macro_rules! with_gpu_float {
    ($op:expr, $storage:expr, |$t:ident| $body:expr) => {
        with_float_or!($storage, |$t| $body, |dtype| Err(
            TensorError::UnsupportedDType {
                op: $op,
                dtype,
                detail: ": floating-point op",
            }
        ))
    };
}

/// `Ok(None)` for a host `$x`; else `Ok(Some(y))`, `y` a new tensor of `$x`'s
/// shape, dtype and device written by `$launch`, which sees `$t` (the
/// element type), `$device`, `$xb` (the dense input buffer) and `$yb` (the
/// output buffer, zeros).
macro_rules! map_dense {
    ($op:expr, $x:expr, |$t:ident, $device:ident, $xb:ident, $yb:ident| $launch:expr) => {{
        match $x.gpu_dense($op)? {
            None => Ok(None),
            Some(dense) => {
                let storage = with_gpu_float!($op, dense, |$t| {
                    let mut $yb = dense.zeros::<$t>($op, $x.elem_count())?;
                    let $device: &GpuDevice = &dense.device;
                    let $xb = dense.buffer::<$t>($op)?;
                    $launch.map_err(TensorError::cuda($op))?;
                    Ok(dense.wrap($yb))
                })?;
                Ok(Some(Tensor::from_gpu(storage, $x.shape())))
            }
        }
    }};
}

// ----- devices --------------------------------------------------------------

/// Devices opened so far, one handle per ordinal for the whole process.
static DEVICES: Mutex<Vec<(usize, Arc<GpuDevice>)>> = Mutex::new(Vec::new());

/// The shared handle of CUDA device `ordinal`, opened on first use.
fn open(op: &'static str, ordinal: usize) -> Result<Arc<GpuDevice>> {
    let mut devices = DEVICES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, device)) = devices.iter().find(|(n, _)| *n == ordinal) {
        return Ok(Arc::clone(device));
    }
    let device = Arc::new(GpuDevice::new(ordinal).map_err(TensorError::cuda(op))?);
    devices.push((ordinal, Arc::clone(&device)));
    Ok(device)
}

/// Checks that CUDA device `ordinal` can be opened (and opens it), or says
/// why not: the message starts with "no CUDA device" on machines without
/// one, and in builds without kaiyuan-cuda's `cuda` feature.
///
/// ```
/// use kaiyuan_tensor::{Device, TensorError};
/// if let Err(error) = kaiyuan_tensor::check_device(Device::Cuda(0)) {
///     assert!(error.to_string().contains("no CUDA device"));
/// }
/// assert!(kaiyuan_tensor::check_device(Device::Cpu).is_ok());
/// ```
pub fn check_device(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(ordinal) => open("device", ordinal).map(|_| ()),
    }
}

// ----- operands -------------------------------------------------------------

/// A dense device buffer for an op: the tensor's own, or a dense copy of its
/// view.
pub(crate) enum Dense<'a> {
    Shared(&'a CudaStorage),
    Copied(CudaStorage),
}

impl std::ops::Deref for Dense<'_> {
    type Target = CudaStorage;
    fn deref(&self) -> &CudaStorage {
        match self {
            Dense::Shared(s) => s,
            Dense::Copied(s) => s,
        }
    }
}

/// Copies `layout`'s view of `from` into a new dense buffer.
fn copy_view(op: &'static str, from: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
    let shape = layout.shape();
    let strides = contiguous_strides(shape);
    let view = View {
        shape,
        strides: layout.strides(),
        offset: layout.offset(),
    };
    let dense = View {
        shape,
        strides: &strides,
        offset: 0,
    };
    with_stored!(from, |T| {
        let buffer = join::<T>(op, from, layout.elem_count(), &[(from, view, dense)])?;
        Ok(from.wrap(buffer))
    })
}

/// A new buffer of `len` zeros of `T` on `on`'s device with each
/// `(source, from, to)` copied in: view `from` of `source` into view `to`.
fn join<T: Stored>(
    op: &'static str,
    on: &CudaStorage,
    len: usize,
    pieces: &[(&CudaStorage, View<'_>, View<'_>)],
) -> Result<GpuBuffer<T>> {
    let mut y = on.device.zeros::<T>(len).map_err(TensorError::cuda(op))?;
    for (source, from, to) in pieces {
        let x = source.buffer::<T>(op)?;
        elementwise::copy_strided(&on.device, x, *from, &mut y, *to)
            .map_err(TensorError::cuda(op))?;
    }
    Ok(y)
}

impl Tensor {
    /// The device storage, when the tensor lives on a CUDA device.
    pub(crate) fn cuda_storage(&self) -> Option<&CudaStorage> {
        match self.storage() {
            Storage::Cuda(s) => Some(s),
            Storage::Cpu(_) => None,
        }
    }

    /// This tensor's elements as one dense buffer (copied when the view is
    /// not the whole buffer in row-major order); `None` on the CPU.
    pub(crate) fn gpu_dense(&self, op: &'static str) -> Result<Option<Dense<'_>>> {
        let Some(storage) = self.cuda_storage() else {
            return Ok(None);
        };
        let layout = self.layout();
        if layout.is_contiguous() && layout.offset() == 0 && storage.len() == self.elem_count() {
            return Ok(Some(Dense::Shared(storage)));
        }
        Ok(Some(Dense::Copied(copy_view(op, storage, layout)?)))
    }

    fn from_gpu(storage: CudaStorage, shape: &[usize]) -> Tensor {
        Tensor::from_storage(Storage::Cuda(storage), shape)
    }
}

/// The dense buffers of operands that must share a device: `None` when all
/// are on the CPU.
fn dense_all<'a, const N: usize>(
    op: &'static str,
    tensors: [&'a Tensor; N],
) -> Result<Option<[Dense<'a>; N]>> {
    let device = tensors[0].device();
    if let Some(other) = tensors.iter().find(|t| t.device() != device) {
        return Err(TensorError::DeviceMismatch {
            op,
            lhs: device,
            rhs: other.device(),
        });
    }
    if !device.is_cuda() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(N);
    for t in tensors {
        out.push(t.gpu_dense(op)?.ok_or_else(|| {
            TensorError::invalid(op, "a CUDA tensor without device storage (a bug)")
        })?);
    }
    match out.try_into() {
        Ok(array) => Ok(Some(array)),
        Err(_) => Err(TensorError::invalid(op, "operand count (a bug)")),
    }
}

/// The dense buffer of `x` when it lives on a device; `None` when it and
/// every tensor of `beside` (ids, targets, weights) are on the CPU. A
/// host `x` with a device tensor beside it is a device mismatch.
fn dense_beside<'a>(
    op: &'static str,
    x: &'a Tensor,
    beside: &[&Tensor],
) -> Result<Option<Dense<'a>>> {
    let dense = x.gpu_dense(op)?;
    if dense.is_none()
        && let Some(other) = beside.iter().find(|t| t.device().is_cuda())
    {
        return Err(TensorError::DeviceMismatch {
            op,
            lhs: x.device(),
            rhs: other.device(),
        });
    }
    Ok(dense)
}

// ----- transfers --------------------------------------------------------------

/// `tensor` on `device` (a copy unless it is already there; no gradient
/// flows through the copy).
pub(crate) fn to_device(tensor: &Tensor, device: Device) -> Result<Tensor> {
    const OP: &str = "to_device";
    if tensor.device() == device {
        return Ok(tensor.detach());
    }
    let host = match tensor.cuda_storage() {
        Some(_) => download(tensor)?,
        None => tensor.detach(),
    };
    let Device::Cuda(ordinal) = device else {
        return Ok(host);
    };
    let gpu = open(OP, ordinal)?;
    fn up<T: Element + CopyValue>(
        gpu: &GpuDevice,
        host: &Tensor,
        wrap: fn(GpuBuffer<T>) -> GpuValues,
    ) -> Result<GpuValues> {
        let values = host.values::<T>(OP)?;
        Ok(wrap(gpu.upload(&values).map_err(TensorError::cuda(OP))?))
    }
    let values = match host.dtype() {
        DType::F32 => up(&gpu, &host, GpuValues::F32)?,
        DType::BF16 => up(&gpu, &host, GpuValues::BF16)?,
        DType::F16 => up(&gpu, &host, GpuValues::F16)?,
        DType::U32 => up(&gpu, &host, GpuValues::U32)?,
        dtype @ (DType::F64 | DType::I64) => {
            return Err(TensorError::on_device(
                OP,
                device,
                format!("{dtype} has no CUDA storage (cast to f32, or u32 for ids, first)"),
            ));
        }
    };
    Ok(Tensor::from_gpu(
        CudaStorage {
            device: gpu,
            ordinal,
            values,
        },
        host.shape(),
    ))
}

/// A host copy of a device tensor.
pub(crate) fn download(tensor: &Tensor) -> Result<Tensor> {
    const OP: &str = "to_device";
    let Some(dense) = tensor.gpu_dense(OP)? else {
        return Ok(tensor.detach());
    };
    let device = &dense.device;
    let shape = tensor.shape();
    let get = |e: kaiyuan_cuda::CudaError| TensorError::cuda(OP)(e);
    Ok(match &dense.values {
        GpuValues::F32(b) => Tensor::from_vec_unchecked(device.download(b).map_err(get)?, shape),
        GpuValues::BF16(b) => Tensor::from_vec_unchecked(device.download(b).map_err(get)?, shape),
        GpuValues::F16(b) => Tensor::from_vec_unchecked(device.download(b).map_err(get)?, shape),
        GpuValues::U32(b) => Tensor::from_vec_unchecked(device.download(b).map_err(get)?, shape),
    })
}

/// Zeros of `shape` and `dtype` on a CUDA `device`.
pub(crate) fn zeros(
    op: &'static str,
    shape: &[usize],
    dtype: DType,
    device: Device,
) -> Result<Tensor> {
    let Device::Cuda(ordinal) = device else {
        return Tensor::zeros(shape, dtype);
    };
    let gpu = open(op, ordinal)?;
    let n = checked_elem_count(shape).ok_or_else(|| TensorError::ElementCount {
        op,
        elements: usize::MAX,
        shape: shape.to_vec(),
    })?;
    let err = TensorError::cuda(op);
    let values = match dtype {
        DType::F32 => GpuValues::F32(gpu.zeros(n).map_err(err)?),
        DType::BF16 => GpuValues::BF16(gpu.zeros(n).map_err(err)?),
        DType::F16 => GpuValues::F16(gpu.zeros(n).map_err(err)?),
        DType::U32 => GpuValues::U32(gpu.zeros(n).map_err(err)?),
        DType::F64 | DType::I64 => {
            return Err(TensorError::on_device(
                op,
                device,
                format!("{dtype} has no CUDA storage"),
            ));
        }
    };
    Ok(Tensor::from_gpu(
        CudaStorage {
            device: gpu,
            ordinal,
            values,
        },
        shape,
    ))
}

/// A dense copy of a device tensor's view; `None` on the CPU.
pub(crate) fn contiguous(tensor: &Tensor) -> Result<Option<Tensor>> {
    let Some(storage) = tensor.cuda_storage() else {
        return Ok(None);
    };
    Ok(Some(Tensor::from_gpu(
        copy_view("contiguous", storage, tensor.layout())?,
        tensor.shape(),
    )))
}

/// `tensors` joined along `axis` into `shape` on their (shared) device.
pub(crate) fn concat(tensors: &[&Tensor], axis: usize, shape: &[usize]) -> Result<Option<Tensor>> {
    const OP: &str = "concat";
    let first = tensors[0];
    let device = first.device();
    if let Some(other) = tensors.iter().find(|t| t.device() != device) {
        return Err(TensorError::DeviceMismatch {
            op: OP,
            lhs: device,
            rhs: other.device(),
        });
    }
    let Some(on) = first.cuda_storage() else {
        return Ok(None);
    };
    // Each piece is written through a view of the output.
    let out_strides = contiguous_strides(shape);
    let mut pieces = Vec::with_capacity(tensors.len());
    let mut start = 0usize;
    for t in tensors {
        let source = t.cuda_storage().ok_or_else(|| {
            TensorError::invalid(OP, "a CUDA tensor without device storage (a bug)")
        })?;
        let from = View {
            shape: t.shape(),
            strides: t.layout().strides(),
            offset: t.layout().offset(),
        };
        let to = View {
            shape: t.shape(),
            strides: &out_strides,
            offset: start * out_strides[axis],
        };
        pieces.push((source, from, to));
        start += t.shape()[axis];
    }
    let len = checked_elem_count(shape).ok_or_else(|| TensorError::ElementCount {
        op: OP,
        elements: usize::MAX,
        shape: shape.to_vec(),
    })?;
    let storage = with_stored!(on, |T| Ok::<_, TensorError>(
        on.wrap(join::<T>(OP, on, len, &pieces)?)
    ))?;
    Ok(Some(Tensor::from_gpu(storage, shape)))
}

// ----- elementwise ----------------------------------------------------------

/// `a op b` with NumPy broadcasting.
pub(crate) fn binary(
    op: &'static str,
    how: Binary,
    a: &Tensor,
    b: &Tensor,
) -> Result<Option<Tensor>> {
    let Some([x, y]) = dense_all(op, [a, b])? else {
        return Ok(None);
    };
    if a.dtype() != b.dtype() {
        return Err(TensorError::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    let shape = crate::layout::broadcast_shapes(op, a.shape(), b.shape())?;
    let n: usize = shape.iter().product();
    let storage = with_gpu_float!(op, x, |T| {
        let mut out = x.zeros::<T>(op, n)?;
        elementwise::binary(
            &x.device,
            how,
            x.buffer::<T>(op)?,
            a.shape(),
            y.buffer::<T>(op)?,
            b.shape(),
            &mut out,
        )
        .map_err(TensorError::cuda(op))?;
        Ok(x.wrap(out))
    })?;
    Ok(Some(Tensor::from_gpu(storage, &shape)))
}

/// A unary map of the kernel file.
pub(crate) fn unary(op: &'static str, how: Unary, x: &Tensor) -> Result<Option<Tensor>> {
    map_dense!(op, x, |T, device, xb, y| elementwise::unary(
        device, how, xb, &mut y
    ))
}

/// The gradient of [`unary`]: `op′(x) · g`.
pub(crate) fn unary_backward(
    op: &'static str,
    how: Unary,
    x: &Tensor,
    g: &Tensor,
) -> Result<Option<Tensor>> {
    let Some([x_dense, g_dense]) = dense_all(op, [x, g])? else {
        return Ok(None);
    };
    if x.shape() != g.shape() {
        return Err(TensorError::shapes(
            op,
            x.shape(),
            g.shape(),
            "gradient shape",
        ));
    }
    let storage = with_gpu_float!(op, x_dense, |T| {
        let mut out = x_dense.zeros::<T>(op, x.elem_count())?;
        elementwise::unary_backward(
            &x_dense.device,
            how,
            x_dense.buffer::<T>(op)?,
            g_dense.buffer::<T>(op)?,
            &mut out,
        )
        .map_err(TensorError::cuda(op))?;
        Ok(x_dense.wrap(out))
    })?;
    Ok(Some(Tensor::from_gpu(storage, x.shape())))
}

/// `x · mul + add`.
pub(crate) fn affine(x: &Tensor, mul: f64, add: f64) -> Result<Option<Tensor>> {
    map_dense!("affine", x, |T, device, xb, y| {
        elementwise::affine(device, xb, mul as f32, add as f32, &mut y)
    })
}

/// `x` converted to another float dtype (round to nearest even).
pub(crate) fn cast(x: &Tensor, dtype: DType) -> Result<Option<Tensor>> {
    const OP: &str = "cast";
    let Some(dense) = x.gpu_dense(OP)? else {
        return Ok(None);
    };
    fn to<S: GpuElement, D: GpuElement>(dense: &CudaStorage, n: usize) -> Result<CudaStorage> {
        let mut out = dense.zeros::<D>(OP, n)?;
        elementwise::cast(&dense.device, dense.buffer::<S>(OP)?, &mut out)
            .map_err(TensorError::cuda(OP))?;
        Ok(dense.wrap(out))
    }
    let n = x.elem_count();
    let storage = match (x.dtype(), dtype) {
        (DType::F32, DType::BF16) => to::<f32, bf16>(&dense, n)?,
        (DType::F32, DType::F16) => to::<f32, f16>(&dense, n)?,
        (DType::BF16, DType::F32) => to::<bf16, f32>(&dense, n)?,
        (DType::F16, DType::F32) => to::<f16, f32>(&dense, n)?,
        (DType::BF16, DType::F16) => to::<bf16, f16>(&dense, n)?,
        (DType::F16, DType::BF16) => to::<f16, bf16>(&dense, n)?,
        (from, to) => {
            return Err(TensorError::on_device(
                OP,
                x.device(),
                format!("{from} → {to} (the kernels cast between f32, bf16 and f16)"),
            ));
        }
    };
    Ok(Some(Tensor::from_gpu(storage, x.shape())))
}

// ----- matrix products ------------------------------------------------------

/// An operand of a GEMM: a dense buffer, read transposed in its last two
/// axes when `transposed`.
struct GemmOperand<'a> {
    dense: Dense<'a>,
    transposed: bool,
}

/// `t` (…, R, C) as a GEMM operand: its own buffer when it is dense in
/// row-major order, or in that order but for its last two axes swapped (a
/// view from `t()`); a dense copy otherwise.
fn gemm_operand<'a>(op: &'static str, t: &'a Tensor) -> Result<GemmOperand<'a>> {
    let storage = t
        .cuda_storage()
        .ok_or_else(|| TensorError::invalid(op, "a CUDA tensor without device storage (a bug)"))?;
    let rank = t.rank();
    let whole = t.layout().offset() == 0 && storage.len() == t.elem_count();
    if whole && rank >= 2 {
        let swapped = t.layout().transposed(rank - 2, rank - 1);
        if !t.is_contiguous() && swapped.is_contiguous() {
            return Ok(GemmOperand {
                dense: Dense::Shared(storage),
                transposed: true,
            });
        }
    }
    let dense = t
        .gpu_dense(op)?
        .ok_or_else(|| TensorError::invalid(op, "a CUDA tensor without device storage (a bug)"))?;
    Ok(GemmOperand {
        dense,
        transposed: false,
    })
}

/// (…, M, K) · (…, K, N) → (…, M, N). A rank-2 right operand is shared by
/// every batch entry (the rows of all entries form one product); other
/// batch axes must agree after broadcasting (operands are broadcast by
/// copying).
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    const OP: &str = "matmul";
    if !a.device().is_cuda() && !b.device().is_cuda() {
        return Ok(None);
    }
    if a.device() != b.device() {
        return Err(TensorError::DeviceMismatch {
            op: OP,
            lhs: a.device(),
            rhs: b.device(),
        });
    }
    if a.dtype() != b.dtype() {
        return Err(TensorError::DTypeMismatch {
            op: OP,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    if a.rank() < 2 || b.rank() < 2 {
        return Err(TensorError::on_device(
            OP,
            a.device(),
            "operands must have rank ≥ 2 (…, M, K) · (…, K, N)",
        ));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    if k != k2 {
        return Err(TensorError::shapes(
            OP,
            a.shape(),
            b.shape(),
            "inner dimensions differ",
        ));
    }
    let batch_shape =
        crate::layout::broadcast_shapes(OP, &a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
    let mut out_shape = batch_shape.clone();
    out_shape.extend([m, n]);
    let batch: usize = batch_shape.iter().product();
    // A shared rank-2 right operand: all rows of a in one product (which
    // needs a row-major a when there are several batch entries).
    let (a_full, b_full);
    let (lhs, rhs, rows, batch) = if rb == 2 {
        let lhs = gemm_operand(OP, a)?;
        let lhs = if lhs.transposed && batch > 1 {
            GemmOperand {
                dense: a
                    .gpu_dense(OP)?
                    .ok_or_else(|| TensorError::invalid(OP, "no storage"))?,
                transposed: false,
            }
        } else {
            lhs
        };
        (lhs, gemm_operand(OP, b)?, batch * m, 1)
    } else {
        a_full = a.broadcast_as(&[&batch_shape[..], &[m, k]].concat())?;
        b_full = b.broadcast_as(&[&batch_shape[..], &[k, n]].concat())?;
        (
            gemm_operand(OP, &a_full)?,
            gemm_operand(OP, &b_full)?,
            m,
            batch,
        )
    };
    let spec = gemm::Gemm::new(rows, n, k)
        .batched(batch.max(1))
        .transposed(lhs.transposed, rhs.transposed);
    let on = &*lhs.dense;
    let storage = with_gpu_float!(OP, on, |T| {
        let mut c = on.zeros::<T>(OP, rows * n * batch)?;
        if batch > 0 && rows > 0 && n > 0 {
            run_gemm::<T>(
                on,
                &spec,
                lhs.dense.buffer::<T>(OP)?,
                rhs.dense.buffer::<T>(OP)?,
                &mut c,
            )?;
        }
        Ok(on.wrap(c))
    })?;
    Ok(Some(Tensor::from_gpu(storage, &out_shape)))
}

/// Runs one GEMM: cuBLAS where the device has it (`KAIYUAN_GEMM=ours`
/// selects the hand-written kernels instead), else the hand-written
/// kernels (the emulator).
fn run_gemm<T: GpuElement>(
    on: &CudaStorage,
    spec: &gemm::Gemm,
    a: &GpuBuffer<T>,
    b: &GpuBuffer<T>,
    c: &mut GpuBuffer<T>,
) -> Result<()> {
    const OP: &str = "matmul";
    if let Some(blas) = cublas(on) {
        return gemm::gemm_cublas_into(&blas, spec, a, b, c).map_err(TensorError::cuda(OP));
    }
    gemm::gemm_into(&on.device, spec, a, b, c).map_err(TensorError::cuda(OP))
}

/// One cuBLAS handle per device, made on first use; `None` where cuBLAS
/// cannot load (the emulator, or a machine without libcublas) or when
/// `KAIYUAN_GEMM=ours`.
fn cublas(on: &CudaStorage) -> Option<Arc<gemm::Cublas>> {
    type Handles = Vec<(usize, Option<Arc<gemm::Cublas>>)>;
    static HANDLES: Mutex<Handles> = Mutex::new(Vec::new());
    let mut handles = HANDLES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, handle)) = handles.iter().find(|(n, _)| *n == on.ordinal) {
        return handle.clone();
    }
    let ours = std::env::var("KAIYUAN_GEMM").is_ok_and(|v| v == "ours");
    let handle = if ours {
        None
    } else {
        gemm::Cublas::new(&on.device).ok().map(Arc::new)
    };
    handles.push((on.ordinal, handle.clone()));
    handle
}

// ----- reductions -----------------------------------------------------------

/// Sum, mean or maximum over `axis` as (outer, len, inner); `None` on the CPU.
pub(crate) fn reduce(
    op: &'static str,
    x: &Tensor,
    axis: usize,
    how: reduce::Reduction,
    out_shape: &[usize],
) -> Result<Option<Tensor>> {
    let Some(dense) = x.gpu_dense(op)? else {
        return Ok(None);
    };
    let shape = x.shape();
    let (outer, len, inner) = (
        shape[..axis].iter().product::<usize>(),
        shape[axis],
        shape[axis + 1..].iter().product::<usize>(),
    );
    if len == 0 {
        // As on the CPU: an empty sum is 0, an empty mean NaN, an empty
        // maximum −∞.
        let value = match how {
            reduce::Reduction::Sum => 0.0,
            reduce::Reduction::Mean => f64::NAN,
            reduce::Reduction::Max => f64::NEG_INFINITY,
        };
        return Tensor::full(value, out_shape, x.dtype())?
            .to_device(x.device())
            .map(Some);
    }
    let storage = with_gpu_float!(op, dense, |T| {
        let mut out = dense.zeros::<T>(op, outer * inner)?;
        reduce::reduce(
            &dense.device,
            how,
            dense.buffer::<T>(op)?,
            (outer, len, inner),
            &mut out,
        )
        .map_err(TensorError::cuda(op))?;
        Ok(dense.wrap(out))
    })?;
    Ok(Some(Tensor::from_gpu(storage, out_shape)))
}

/// Index of the first maximum over `axis` (u32 on the device).
pub(crate) fn argmax(x: &Tensor, axis: usize, out_shape: &[usize]) -> Result<Option<Tensor>> {
    const OP: &str = "argmax";
    if !x.device().is_cuda() {
        return Ok(None);
    }
    let last = x.rank() - 1;
    let moved;
    let x = if axis == last {
        x
    } else {
        // The other axes keep their order, so rows come out in the
        // output's order.
        let order: Vec<usize> = (0..x.rank()).filter(|&i| i != axis).chain([axis]).collect();
        moved = x.permute(&order)?;
        &moved
    };
    let dense = x
        .gpu_dense(OP)?
        .ok_or_else(|| TensorError::invalid(OP, "no storage"))?;
    let cols = x.shape()[last];
    let rows = x.elem_count() / cols.max(1);
    let storage = with_gpu_float!(OP, dense, |T| {
        let mut out = dense.zeros::<u32>(OP, rows)?;
        reduce::argmax_rows(
            &dense.device,
            dense.buffer::<T>(OP)?,
            (rows, cols),
            &mut out,
        )
        .map_err(TensorError::cuda(OP))?;
        Ok(dense.wrap(out))
    })?;
    Ok(Some(Tensor::from_gpu(storage, out_shape)))
}

// ----- rows: softmax and norms ------------------------------------------------

fn rows_cols(t: &Tensor) -> (usize, usize) {
    let cols = t.shape().last().copied().unwrap_or(1);
    (t.elem_count() / cols.max(1), cols)
}

/// Softmax (or log-softmax) of the last axis.
pub(crate) fn softmax(op: &'static str, x: &Tensor, log: bool) -> Result<Option<Tensor>> {
    let shape = rows_cols(x);
    map_dense!(op, x, |T, device, xb, y| reduce::softmax(
        device, xb, shape, log, &mut y
    ))
}

/// The gradient of [`softmax`] from its output `y` and upstream `g`.
pub(crate) fn softmax_backward(
    op: &'static str,
    y: &Tensor,
    g: &Tensor,
    log: bool,
) -> Result<Option<Tensor>> {
    let Some([y_dense, g_dense]) = dense_all(op, [y, g])? else {
        return Ok(None);
    };
    let shape = rows_cols(y);
    let storage = with_gpu_float!(op, y_dense, |T| {
        let mut out = y_dense.zeros::<T>(op, y.elem_count())?;
        reduce::softmax_backward(
            &y_dense.device,
            y_dense.buffer::<T>(op)?,
            g_dense.buffer::<T>(op)?,
            shape,
            log,
            &mut out,
        )
        .map_err(TensorError::cuda(op))?;
        Ok(y_dense.wrap(out))
    })?;
    Ok(Some(Tensor::from_gpu(storage, y.shape())))
}

/// What a norm's forward keeps for its backward.
pub(crate) enum NormStats {
    Rms(GpuBuffer<f32>),
    Layer(norm::LayerNormStats),
}

/// RMSNorm (`bias` ignored, must be `None`) or LayerNorm of the last axis,
/// and the statistics the backward reads.
pub(crate) fn norm_forward(
    op: &'static str,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    layer: bool,
) -> Result<Option<(Tensor, Arc<NormStats>)>> {
    let beside: Vec<&Tensor> = weight.into_iter().chain(bias).collect();
    let Some(x_dense) = dense_beside(op, x, &beside)? else {
        return Ok(None);
    };
    fn dense_of<'t>(
        op: &'static str,
        x: &Tensor,
        t: Option<&'t Tensor>,
    ) -> Result<Option<Dense<'t>>> {
        match t {
            None => Ok(None),
            Some(t) if t.device() != x.device() => Err(TensorError::DeviceMismatch {
                op,
                lhs: x.device(),
                rhs: t.device(),
            }),
            Some(t) => t.gpu_dense(op),
        }
    }
    let (w, b) = (dense_of(op, x, weight)?, dense_of(op, x, bias)?);
    let (rows, cols) = rows_cols(x);
    let device = &x_dense.device;
    let (storage, stats) = with_gpu_float!(op, x_dense, |T| {
        let mut y = x_dense.zeros::<T>(op, x.elem_count())?;
        let w_buf = w.as_ref().map(|w| w.buffer::<T>(op)).transpose()?;
        let b_buf = b.as_ref().map(|b| b.buffer::<T>(op)).transpose()?;
        let stats = if layer {
            let mut stats = norm::LayerNormStats {
                mean: x_dense.zeros::<f32>(op, rows)?,
                rstd: x_dense.zeros::<f32>(op, rows)?,
            };
            norm::layer_norm(
                device,
                x_dense.buffer::<T>(op)?,
                w_buf,
                b_buf,
                (rows, cols),
                eps as f32,
                &mut y,
                &mut stats,
            )
            .map_err(TensorError::cuda(op))?;
            NormStats::Layer(stats)
        } else {
            let w_buf =
                w_buf.ok_or_else(|| TensorError::invalid(op, "RMSNorm without a weight"))?;
            let mut rstd = x_dense.zeros::<f32>(op, rows)?;
            norm::rms_norm(
                device,
                x_dense.buffer::<T>(op)?,
                w_buf,
                (rows, cols),
                eps as f32,
                &mut y,
                &mut rstd,
            )
            .map_err(TensorError::cuda(op))?;
            NormStats::Rms(rstd)
        };
        Ok((x_dense.wrap(y), stats))
    })?;
    Ok(Some((
        Tensor::from_gpu(storage, x.shape()),
        Arc::new(stats),
    )))
}

/// The gradients of a norm: dx, and dW (and dB for LayerNorm) in the
/// weight's dtype.
pub(crate) fn norm_backward(
    op: &'static str,
    x: &Tensor,
    weight: Option<&Tensor>,
    g: &Tensor,
    stats: &NormStats,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    let [x_dense, g_dense] =
        dense_all(op, [x, g])?.ok_or_else(|| TensorError::invalid(op, "CPU operands (a bug)"))?;
    let w = weight.map(|w| w.gpu_dense(op)).transpose()?.flatten();
    let (rows, cols) = rows_cols(x);
    let device = &x_dense.device;
    let as_param = |dw: GpuBuffer<f32>| -> Result<Tensor> {
        let t = Tensor::from_gpu(x_dense.wrap(dw), &[cols]);
        t.cast(x.dtype())
    };
    with_gpu_float!(op, x_dense, |T| {
        let mut dx = x_dense.zeros::<T>(op, x.elem_count())?;
        let mut dw = x_dense.zeros::<f32>(op, cols)?;
        let w_buf = w.as_ref().map(|w| w.buffer::<T>(op)).transpose()?;
        let (x_buf, g_buf) = (x_dense.buffer::<T>(op)?, g_dense.buffer::<T>(op)?);
        let db = match stats {
            NormStats::Rms(rstd) => {
                let w_buf =
                    w_buf.ok_or_else(|| TensorError::invalid(op, "RMSNorm without a weight"))?;
                let (dx, dw) = (&mut dx, &mut dw);
                norm::rms_norm_backward(device, x_buf, w_buf, rstd, g_buf, (rows, cols), dx, dw)
                    .map_err(TensorError::cuda(op))?;
                None
            }
            NormStats::Layer(stats) => {
                let mut db = x_dense.zeros::<f32>(op, cols)?;
                let (dx, dw) = (&mut dx, &mut dw);
                norm::layer_norm_backward(
                    device,
                    x_buf,
                    w_buf,
                    stats,
                    g_buf,
                    (rows, cols),
                    dx,
                    dw,
                    &mut db,
                )
                .map_err(TensorError::cuda(op))?;
                Some(as_param(db)?)
            }
        };
        Ok((
            Tensor::from_gpu(x_dense.wrap(dx), x.shape()),
            Some(as_param(dw)?),
            db,
        ))
    })
}

// ----- ids: embedding and cross-entropy ---------------------------------------

/// Class or token ids as host integers (from either device).
fn host_ids(op: &'static str, ids: &Tensor) -> Result<Vec<i64>> {
    let host = download(ids)?;
    match host.dtype() {
        DType::U32 => Ok(host
            .values::<u32>(op)?
            .iter()
            .map(|&i| i64::from(i))
            .collect()),
        DType::I64 => Ok(host.to_vec::<i64>()?),
        dtype => Err(TensorError::UnsupportedDType {
            op,
            dtype,
            detail: ": ids must be u32 or i64",
        }),
    }
}

/// Rows of `table` (V, C) for `ids` (any shape; on either device) →
/// (…ids, C), and the ids as a device buffer for the backward.
pub(crate) fn embedding(
    table: &Tensor,
    ids: &Tensor,
) -> Result<Option<(Tensor, Arc<GpuBuffer<u32>>)>> {
    const OP: &str = "embedding";
    let Some(dense) = dense_beside(OP, table, &[ids])? else {
        return Ok(None);
    };
    let (vocab, width) = (table.shape()[0], table.shape()[1]);
    let values = host_ids(OP, ids)?;
    let mut index = Vec::with_capacity(values.len());
    for (position, &id) in values.iter().enumerate() {
        if id < 0 || id as u64 >= vocab as u64 {
            return Err(TensorError::IndexOutOfRange {
                op: OP,
                id,
                position,
                rows: vocab,
            });
        }
        index.push(id as u32);
    }
    let device = &dense.device;
    let ids_buffer = device.upload(&index).map_err(TensorError::cuda(OP))?;
    let mut shape = ids.shape().to_vec();
    shape.push(width);
    let storage = with_gpu_float!(OP, dense, |T| {
        let mut out = dense.zeros::<T>(OP, index.len() * width)?;
        // Every id was checked above, on the host.
        embedding::embedding(
            device,
            &ids_buffer,
            dense.buffer::<T>(OP)?,
            (vocab, width),
            &mut out,
            embedding::IdCheck::DoneByCaller,
        )
        .map_err(TensorError::cuda(OP))?;
        Ok(dense.wrap(out))
    })?;
    Ok(Some((
        Tensor::from_gpu(storage, &shape),
        Arc::new(ids_buffer),
    )))
}

/// The gradient of [`embedding`]: `g` (…, C) added into the table's rows.
pub(crate) fn embedding_backward(
    table: &Tensor,
    ids: &GpuBuffer<u32>,
    g: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "embedding backward";
    let dense = g
        .gpu_dense(OP)?
        .ok_or_else(|| TensorError::invalid(OP, "CPU gradient (a bug)"))?;
    let (vocab, width) = (table.shape()[0], table.shape()[1]);
    let storage = with_gpu_float!(OP, dense, |T| {
        let mut out = dense.zeros::<f32>(OP, vocab * width)?;
        embedding::embedding_backward(
            &dense.device,
            ids,
            dense.buffer::<T>(OP)?,
            (vocab, width),
            &mut out,
        )
        .map_err(TensorError::cuda(OP))?;
        Ok(dense.wrap(out))
    })?;
    Tensor::from_gpu(storage, table.shape()).cast(table.dtype())
}

/// What the cross-entropy forward keeps for its backward.
pub(crate) struct CrossEntropySaved {
    /// The logits the forward read, dense (a copy when they were a view,
    /// made once for both passes).
    logits: Tensor,
    targets: GpuBuffer<i32>,
    forward: loss::CrossEntropy,
}

/// Mean cross-entropy of logits (N, V) against targets (N) → a scalar on
/// the device.
pub(crate) fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
) -> Result<Option<(Tensor, Arc<CrossEntropySaved>)>> {
    const OP: &str = "cross_entropy";
    let Some(dense) = dense_beside(OP, logits, &[targets])? else {
        return Ok(None);
    };
    let (n, v) = (logits.shape()[0], logits.shape()[1]);
    // Checked here, as on the CPU (−100 is ignored), so the kernel's own
    // report need not be read back.
    const IGNORE: i64 = -100;
    let ids: Vec<i32> = host_ids(OP, targets)?
        .into_iter()
        .enumerate()
        .map(|(position, id)| match i32::try_from(id) {
            Ok(kept) if id == IGNORE || (0..v as i64).contains(&id) => Ok(kept),
            _ => Err(TensorError::IndexOutOfRange {
                op: OP,
                id,
                position,
                rows: v,
            }),
        })
        .collect::<Result<_>>()?;
    let device = &dense.device;
    let targets = device.upload(&ids).map_err(TensorError::cuda(OP))?;
    let forward = with_gpu_float!(OP, dense, |T| {
        loss::cross_entropy(
            device,
            dense.buffer::<T>(OP)?,
            &targets,
            (n, v),
            embedding::IdCheck::DoneByCaller,
        )
        .map_err(TensorError::cuda(OP))
    })?;
    // The mean is element 0 of the forward's two-element result.
    let mut mean = dense.zeros::<f32>(OP, 1)?;
    elementwise::copy_strided(
        device,
        &forward.mean,
        View {
            shape: &[],
            strides: &[],
            offset: 0,
        },
        &mut mean,
        View {
            shape: &[],
            strides: &[],
            offset: 0,
        },
    )
    .map_err(TensorError::cuda(OP))?;
    let scalar = Tensor::from_gpu(dense.wrap(mean), &[]).cast(logits.dtype())?;
    let logits = match dense {
        Dense::Shared(_) => logits.detach(),
        Dense::Copied(storage) => Tensor::from_gpu(storage, logits.shape()),
    };
    Ok(Some((
        scalar,
        Arc::new(CrossEntropySaved {
            logits,
            targets,
            forward,
        }),
    )))
}

/// The gradient of [`cross_entropy`] for the upstream gradient `g` (a scalar).
pub(crate) fn cross_entropy_backward(saved: &CrossEntropySaved, g: &Tensor) -> Result<Tensor> {
    const OP: &str = "cross_entropy backward";
    let logits = &saved.logits;
    let dense = logits
        .gpu_dense(OP)?
        .ok_or_else(|| TensorError::invalid(OP, "CPU logits (a bug)"))?;
    // The upstream gradient stays on the device: the kernel reads it there.
    let upstream = g.cast(DType::F32)?;
    let upstream = upstream.gpu_dense(OP)?.ok_or(TensorError::DeviceMismatch {
        op: OP,
        lhs: logits.device(),
        rhs: g.device(),
    })?;
    let (n, v) = (logits.shape()[0], logits.shape()[1]);
    let storage = with_gpu_float!(OP, dense, |T| {
        let mut out = dense.zeros::<T>(OP, n * v)?;
        loss::cross_entropy_backward(
            &dense.device,
            dense.buffer::<T>(OP)?,
            &saved.targets,
            &saved.forward,
            (n, v),
            upstream.buffer::<f32>(OP)?,
            &mut out,
        )
        .map_err(TensorError::cuda(OP))?;
        Ok(dense.wrap(out))
    })?;
    Ok(Tensor::from_gpu(storage, logits.shape()))
}

// ----- rotary and attention ---------------------------------------------------

/// Rotates `x` (…, T, D) by the angles of `positions` (backwards when
/// `inverse`).
pub(crate) fn rotary(
    x: &Tensor,
    inv_freq: &[f64],
    positions: &[usize],
    rotary_dim: usize,
    interleaved: bool,
    inverse: bool,
) -> Result<Option<Tensor>> {
    const OP: &str = "rotary";
    let Some(storage) = x.cuda_storage() else {
        return Ok(None);
    };
    let rank = x.rank();
    let (t, d) = (x.shape()[rank - 2], x.shape()[rank - 1]);
    let outer = x.elem_count() / (t * d).max(1);
    let (cos, sin) = rope::angle_tables(inv_freq, positions);
    let upload = |v: &[f32]| storage.device.upload(v).map_err(TensorError::cuda(OP));
    let (cos, sin) = (upload(&cos)?, upload(&sin)?);
    map_dense!(OP, x, |T, device, xb, y| {
        let geometry = (outer, t, d);
        rope::rope(
            device,
            xb,
            geometry,
            rotary_dim,
            interleaved,
            (&cos, &sin),
            inverse,
            &mut y,
        )
    })
}

/// What the attention forward keeps for its backward.
pub(crate) struct AttentionSaved {
    spec: attention::Attention,
    out: Tensor,
    lse: GpuBuffer<f32>,
}

/// Fused attention of q (B, Hq, Tq, D), k, v (B, Hkv, Tk, D): causal or
/// not, with a scale; no additive mask or sliding window (refused).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    scale: f64,
) -> Result<Option<(Tensor, Arc<AttentionSaved>)>> {
    const OP: &str = "attention";
    let Some([qd, kd, vd]) = dense_all(OP, [q, k, v])? else {
        return Ok(None);
    };
    let (b, hq, tq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, tk) = (k.shape()[1], k.shape()[2]);
    if v.shape()[3] != d || !attention::HEAD_DIMS.contains(&d) {
        return Err(TensorError::on_device(
            OP,
            q.device(),
            format!(
                "head dims D = {d}, Dv = {} (the kernels take D = Dv in {:?})",
                v.shape()[3],
                attention::HEAD_DIMS
            ),
        ));
    }
    let spec = attention::Attention::new(b, hq, hkv, tq, tk, d)
        .with_causal(causal)
        .with_scale(scale as f32);
    let device = &qd.device;
    let (o, lse) = with_gpu_float!(OP, qd, |T| {
        let out = attention::attention_forward(
            device,
            &spec,
            qd.buffer::<T>(OP)?,
            kd.buffer::<T>(OP)?,
            vd.buffer::<T>(OP)?,
        )
        .map_err(TensorError::cuda(OP))?;
        Ok((qd.wrap(out.o), out.lse))
    })?;
    let out = Tensor::from_gpu(o, &[b, hq, tq, d]);
    let saved = AttentionSaved {
        spec,
        out: out.clone(),
        lse,
    };
    Ok(Some((out, Arc::new(saved))))
}

/// The gradients of [`attention`]: dq, dk, dv.
pub(crate) fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    saved: &AttentionSaved,
    g: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "attention backward";
    let [qd, kd, vd, od, gd] = dense_all(OP, [q, k, v, &saved.out, g])?
        .ok_or_else(|| TensorError::invalid(OP, "CPU operands (a bug)"))?;
    let device = &qd.device;
    let spec = &saved.spec;
    with_gpu_float!(OP, qd, |T| {
        let grads = attention::attention_backward(
            device,
            spec,
            qd.buffer::<T>(OP)?,
            kd.buffer::<T>(OP)?,
            vd.buffer::<T>(OP)?,
            od.buffer::<T>(OP)?,
            &saved.lse,
            gd.buffer::<T>(OP)?,
        )
        .map_err(TensorError::cuda(OP))?;
        Ok((
            Tensor::from_gpu(qd.wrap(grads.dq), q.shape()),
            Tensor::from_gpu(qd.wrap(grads.dk), k.shape()),
            Tensor::from_gpu(qd.wrap(grads.dv), v.shape()),
        ))
    })
}

// ----- optimiser --------------------------------------------------------------

/// One fused AdamW update on a CUDA device of f32 `param` and moments `m`,
/// `v` with a gradient `grad` (f32, bf16 or f16), all of one element count
/// and on one device. Each of the three is updated in its own buffer when
/// nothing else shares it (one launch); one that is shared with another
/// tensor (a view, a clone) is replaced by an updated copy instead, so no
/// other tensor changes.
///
/// # Errors
/// Operands on the CPU or on different devices, other dtypes, or unequal
/// element counts.
pub fn adamw_step(
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    step: AdamWStep,
) -> Result<()> {
    const OP: &str = "adamw";
    let [g] = dense_all(OP, [grad])?.ok_or_else(|| {
        TensorError::on_device(OP, Device::Cpu, "the fused AdamW runs on CUDA devices")
    })?;
    let n = param.elem_count();
    for (name, t) in [("param", &*param), ("m", &*m), ("v", &*v)] {
        if t.device() != grad.device() {
            return Err(TensorError::DeviceMismatch {
                op: OP,
                lhs: grad.device(),
                rhs: t.device(),
            });
        }
        if t.dtype() != DType::F32 {
            return Err(TensorError::UnsupportedDType {
                op: OP,
                dtype: t.dtype(),
                detail: match name {
                    "param" => ": the master weights are f32",
                    _ => ": the moments are f32",
                },
            });
        }
        if t.elem_count() != n || grad.elem_count() != n {
            return Err(TensorError::shapes(
                OP,
                param.shape(),
                t.shape(),
                format!("{name} differs in size"),
            ));
        }
    }
    for t in [&mut *param, &mut *m, &mut *v] {
        make_owned_dense(OP, t)?;
    }
    let device = Arc::clone(&g.device);
    let (p_buf, m_buf, v_buf) = (owned_f32(OP, param)?, owned_f32(OP, m)?, owned_f32(OP, v)?);
    with_gpu_float!(OP, g, |T| {
        kaiyuan_cuda::ops::adamw::adamw::<T>(
            &device,
            p_buf,
            g.buffer::<T>(OP)?,
            (m_buf, v_buf),
            step,
            None,
        )
        .map_err(TensorError::cuda(OP))
    })
}

/// Makes `t` a dense device tensor that alone owns its buffer: unchanged
/// when it already is one, else replaced by a dense copy of its values
/// (without a gradient node).
fn make_owned_dense(op: &'static str, t: &mut Tensor) -> Result<()> {
    let dense = t.layout().is_contiguous()
        && t.layout().offset() == 0
        && t.cuda_storage().is_some_and(|s| s.len() == t.elem_count());
    if dense && t.node.is_none() && t.storage_mut().is_some() {
        return Ok(());
    }
    let storage = t
        .cuda_storage()
        .ok_or_else(|| TensorError::invalid(op, "a CUDA tensor without device storage (a bug)"))?;
    let copy = copy_view(op, storage, t.layout())?;
    *t = Tensor::from_gpu(copy, t.shape());
    Ok(())
}

/// The f32 buffer of a tensor that [`make_owned_dense`] made sole owner of.
fn owned_f32<'t>(op: &'static str, t: &'t mut Tensor) -> Result<&'t mut GpuBuffer<f32>> {
    match t.storage_mut() {
        Some(Storage::Cuda(CudaStorage {
            values: GpuValues::F32(buffer),
            ..
        })) => Ok(buffer),
        _ => Err(TensorError::invalid(
            op,
            "a shared or non-f32 buffer (a bug)",
        )),
    }
}
