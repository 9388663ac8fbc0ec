//! The [`Tensor`] type: a shared buffer seen through a [`Layout`].

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;

use crate::cpu;
use crate::layout::{Layout, broadcast_shapes, checked_elem_count, resolve_axis};
use crate::storage::{CpuStorage, MappedBuffer, Storage};
use crate::{DType, Device, Element, Result, TensorError};

/// An n-dimensional array of one [`DType`] on one [`Device`].
///
/// Cloning is cheap (the buffer is shared); view ops (`transpose`, `permute`,
/// `narrow`, `split`, `broadcast_as`, and `reshape` of a contiguous tensor)
/// share the buffer too. Every other op returns a new contiguous tensor.
///
/// ```
/// use kaiyuan_tensor::Tensor;
/// # fn main() -> kaiyuan_tensor::Result<()> {
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// let xt = x.t()?; // (3, 2), a view
/// assert_eq!(xt.shape(), &[3, 2]);
/// assert_eq!(xt.to_vec::<f32>()?, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Tensor {
    storage: Arc<Storage>,
    layout: Layout,
    /// The gradient-graph node, when this tensor is a leaf made by
    /// [`Tensor::with_grad`] or was computed from one (see `autograd`).
    pub(crate) node: Option<Arc<crate::autograd::Node>>,
}

/// Float values of a tensor in row-major order, in the type ops compute in:
/// `f64` for F64 tensors and `f32` for every other float dtype.
pub(crate) enum FloatValues<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
}

/// The result of a float op, before it becomes a tensor of the output dtype.
#[derive(Clone, Debug)]
pub(crate) enum FloatVec {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Runs `$body` with `$x` bound to the float values and `$t` to their
/// element type, once per compute type,
/// and wraps the resulting vector back into [`FloatVec`].
macro_rules! with_float {
    ($values:expr, |$x:ident: $t:ident| $body:expr) => {
        match $values {
            $crate::tensor::FloatValues::F32($x) => {
                #[allow(dead_code)]
                type $t = f32;
                $crate::tensor::FloatVec::F32($body)
            }
            $crate::tensor::FloatValues::F64($x) => {
                #[allow(dead_code)]
                type $t = f64;
                $crate::tensor::FloatVec::F64($body)
            }
        }
    };
}
pub(crate) use with_float;

impl Tensor {
    // ----- construction -------------------------------------------------

    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Self {
        Self {
            storage: Arc::new(storage),
            layout: Layout::contiguous(shape),
            node: None,
        }
    }

    /// A contiguous tensor holding `values` in row-major order.
    ///
    /// Fails when `values.len()` is not the product of `shape`.
    pub fn from_vec<T: Element>(values: Vec<T>, shape: &[usize]) -> Result<Self> {
        if checked_elem_count(shape) != Some(values.len()) {
            return Err(TensorError::ElementCount {
                op: "from_vec",
                elements: values.len(),
                shape: shape.to_vec(),
            });
        }
        Ok(Self::from_storage(
            Storage::Cpu(CpuStorage::Owned(T::wrap(values))),
            shape,
        ))
    }

    /// Like [`Tensor::from_vec`], copying from a slice.
    pub fn from_slice<T: Element>(values: &[T], shape: &[usize]) -> Result<Self> {
        Self::from_vec(values.to_vec(), shape)
    }

    /// A tensor with the shape and elements of an [`ndarray`] array.
    ///
    /// ```
    /// let a = ndarray::ArrayD::from_shape_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    /// let t = kaiyuan_tensor::Tensor::from_ndarray(a.clone());
    /// assert_eq!(t.to_ndarray::<f32>().unwrap(), a);
    /// ```
    pub fn from_ndarray<T: Element>(array: ndarray::ArrayD<T>) -> Self {
        let shape = array.shape().to_vec();
        let values: Vec<T> = array.iter().copied().collect();
        Self::from_storage(Storage::Cpu(CpuStorage::Owned(T::wrap(values))), &shape)
    }

    /// Copies the tensor into an [`ndarray`] array of its element type.
    pub fn to_ndarray<T: Element>(&self) -> Result<ndarray::ArrayD<T>> {
        let values = self.to_vec::<T>()?;
        ndarray::ArrayD::from_shape_vec(self.shape().to_vec(), values)
            .map_err(|e| TensorError::invalid("to_ndarray", e.to_string()))
    }

    /// A tensor of `shape` filled with `value` (rounded to `dtype`).
    pub fn full(value: f64, shape: &[usize], dtype: DType) -> Result<Self> {
        let count = checked_elem_count(shape).ok_or_else(|| TensorError::ElementCount {
            op: "full",
            elements: usize::MAX,
            shape: shape.to_vec(),
        })?;
        fn filled<T: Element>(value: f64, count: usize, shape: &[usize]) -> Result<Tensor> {
            Tensor::from_vec(vec![T::from_f64(value); count], shape)
        }
        match dtype {
            DType::F32 => filled::<f32>(value, count, shape),
            DType::F16 => filled::<f16>(value, count, shape),
            DType::BF16 => filled::<bf16>(value, count, shape),
            DType::F64 => filled::<f64>(value, count, shape),
            DType::U32 => filled::<u32>(value, count, shape),
            DType::I64 => filled::<i64>(value, count, shape),
        }
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Self> {
        Self::full(0.0, shape, dtype)
    }

    /// `[0, 1, …, n-1]` as a 1-d tensor of `dtype`.
    pub fn arange(n: usize, dtype: DType) -> Result<Self> {
        let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
        Self::from_vec(values, &[n])?.cast(dtype)
    }

    /// An f32 tensor of values drawn uniformly from `[low, high)` by a
    /// seeded generator (SplitMix64): the same seed gives the same tensor on
    /// every machine.
    pub fn rand_uniform(shape: &[usize], low: f32, high: f32, seed: u64) -> Result<Self> {
        let count = checked_elem_count(shape).ok_or_else(|| TensorError::ElementCount {
            op: "rand_uniform",
            elements: usize::MAX,
            shape: shape.to_vec(),
        })?;
        let mut state = seed;
        let values = (0..count)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
                low + (high - low) * unit
            })
            .collect();
        Self::from_vec(values, shape)
    }

    /// A tensor that reads its elements in place from `bytes` of a shared
    /// memory map (zero-copy), with a contiguous `shape`.
    ///
    /// Fails when the byte range is outside the map, holds a different number
    /// of elements than `shape`, or is misaligned for `dtype` (callers such as
    /// file loaders copy the bytes into an owned tensor in that case).
    pub fn from_mmap(
        mmap: Arc<Mmap>,
        bytes: Range<usize>,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Self> {
        let mapped = MappedBuffer::new(mmap, bytes, dtype)?;
        if checked_elem_count(shape) != Some(mapped.len()) {
            return Err(TensorError::ElementCount {
                op: "from_mmap",
                elements: mapped.len(),
                shape: shape.to_vec(),
            });
        }
        Ok(Self::from_storage(
            Storage::Cpu(CpuStorage::Mapped(mapped)),
            shape,
        ))
    }

    pub(crate) fn from_float_vec(values: FloatVec, shape: &[usize], dtype: DType) -> Self {
        let storage = match (values, dtype) {
            (FloatVec::F64(v), _) => Storage::from_vec(v),
            (FloatVec::F32(v), DType::F16) => Storage::from_vec(cpu::f32_to_f16(&v)),
            (FloatVec::F32(v), DType::BF16) => Storage::from_vec(cpu::map(&v, bf16::from_f32)),
            (FloatVec::F32(v), _) => Storage::from_vec(v),
        };
        Self::from_storage(storage, shape)
    }

    pub(crate) fn from_vec_unchecked<T: Element>(values: Vec<T>, shape: &[usize]) -> Self {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        Self::from_storage(Storage::Cpu(CpuStorage::Owned(T::wrap(values))), shape)
    }

    // ----- properties ---------------------------------------------------

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.layout.elem_count()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// The device holding the elements.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// The buffer behind this view.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The buffer, mutable, when this tensor is its only owner (no view or
    /// clone shares it).
    pub(crate) fn storage_mut(&mut self) -> Option<&mut Storage> {
        Arc::get_mut(&mut self.storage)
    }

    /// The same values on `device`: `self` (shared) when already there, a
    /// copy otherwise. The copy records no gradient (move parameters first,
    /// then make them leaves with [`Tensor::with_grad`]). f64 and i64 have
    /// no CUDA storage.
    ///
    /// ```
    /// use kaiyuan_tensor::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    /// match x.to_device(Device::Cuda(0)) {
    ///     Ok(on_gpu) => {
    ///         let back = on_gpu.silu().unwrap().to_device(Device::Cpu).unwrap();
    ///         assert_eq!(back.shape(), &[2]);
    ///     }
    ///     Err(error) => assert!(error.to_string().contains("no CUDA device")),
    /// }
    /// ```
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        crate::gpu::to_device(self, device)
    }

    /// Shape, strides and offset of this view.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether the elements are dense and in row-major order.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// Whether the elements are read in place from a memory-mapped file.
    pub fn is_memory_mapped(&self) -> bool {
        matches!(&*self.storage, Storage::Cpu(CpuStorage::Mapped(_)))
    }

    /// Whether two tensors share one buffer (one is a view of the other).
    pub fn shares_storage_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// Size of `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let a = resolve_axis("dim", axis, self.shape())?;
        Ok(self.shape()[a])
    }

    // ----- reading elements ---------------------------------------------

    /// The whole buffer (not just this view) as `T`, which must be the dtype.
    pub(crate) fn typed_buffer<T: Element>(&self, op: &'static str) -> Result<&[T]> {
        if let Storage::Cuda(storage) = &*self.storage {
            return Err(TensorError::on_device(
                op,
                storage.device(),
                "this op has no CUDA kernel; move its operands with to_device(Device::Cpu)",
            ));
        }
        self.storage
            .cpu_slice::<T>()
            .ok_or(TensorError::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: T::DTYPE,
            })
    }

    /// The elements in row-major order, borrowed when the view is contiguous.
    pub(crate) fn values<T: Element>(&self, op: &'static str) -> Result<Cow<'_, [T]>> {
        let buffer = self.typed_buffer::<T>(op)?;
        if self.layout.is_contiguous() {
            let start = self.layout.offset();
            Ok(Cow::Borrowed(&buffer[start..start + self.elem_count()]))
        } else {
            Ok(Cow::Owned(cpu::gather_map(buffer, &self.layout, |v| v)))
        }
    }

    /// The elements in row-major order as a vector of `T`, which must be the
    /// tensor's dtype (use [`Tensor::cast`] first otherwise).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if self.device().is_cuda() {
            return crate::gpu::download(self)?.to_vec();
        }
        Ok(self.values::<T>("to_vec")?.into_owned())
    }

    /// The single element of a tensor with one element.
    pub fn to_scalar<T: Element>(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(TensorError::ElementCount {
                op: "to_scalar",
                elements: self.elem_count(),
                shape: vec![1],
            });
        }
        if self.device().is_cuda() {
            return crate::gpu::download(self)?.to_scalar();
        }
        Ok(self.values::<T>("to_scalar")?[0])
    }

    /// Float values in the compute type of their dtype (see [`FloatValues`]).
    pub(crate) fn float_values(&self, op: &'static str) -> Result<FloatValues<'_>> {
        Ok(match self.dtype() {
            DType::F32 => FloatValues::F32(self.values::<f32>(op)?),
            DType::F64 => FloatValues::F64(self.values::<f64>(op)?),
            DType::F16 => FloatValues::F32(Cow::Owned(cpu::f16_to_f32(&self.values::<f16>(op)?))),
            DType::BF16 => FloatValues::F32(Cow::Owned(cpu::gather_map(
                self.typed_buffer::<bf16>(op)?,
                &self.layout,
                bf16::to_f32,
            ))),
            dtype @ (DType::U32 | DType::I64) => {
                return Err(TensorError::UnsupportedDType {
                    op,
                    dtype,
                    detail: ": floating-point op",
                });
            }
        })
    }

    /// Float values of `self` in the compute type of `like`'s dtype, after
    /// checking that both dtypes agree.
    pub(crate) fn float_values_pair<'a>(
        op: &'static str,
        lhs: &'a Tensor,
        rhs: &'a Tensor,
    ) -> Result<(FloatValues<'a>, FloatValues<'a>)> {
        if lhs.dtype() != rhs.dtype() {
            return Err(TensorError::DTypeMismatch {
                op,
                lhs: lhs.dtype(),
                rhs: rhs.dtype(),
            });
        }
        Ok((lhs.float_values(op)?, rhs.float_values(op)?))
    }

    // ----- views --------------------------------------------------------

    fn with_layout(&self, layout: Layout) -> Self {
        Self {
            storage: Arc::clone(&self.storage),
            layout,
            node: None,
        }
    }

    /// The same elements with a new shape of the same element count: a view
    /// when the tensor is contiguous, a copy otherwise.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if checked_elem_count(shape) != Some(self.elem_count()) {
            return Err(TensorError::shapes(
                "reshape",
                self.shape(),
                shape,
                "element counts differ",
            ));
        }
        let source = self.contiguous()?;
        let mut layout = Layout::contiguous(shape);
        layout = Layout::new(
            layout.shape().to_vec(),
            layout.strides().to_vec(),
            source.layout.offset(),
        );
        let input_shape = self.shape().to_vec();
        Ok(source
            .with_layout(layout)
            .record("reshape", &[self], move || {
                move |g, _| Ok(vec![Some(g.reshape(&input_shape)?)])
            }))
    }

    /// Swaps axes `a` and `b` (a view).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Self> {
        let a = resolve_axis("transpose", a, self.shape())?;
        let b = resolve_axis("transpose", b, self.shape())?;
        Ok(self
            .with_layout(self.layout.transposed(a, b))
            .record("transpose", &[self], move || {
                move |g, _| Ok(vec![Some(g.transpose(a as isize, b as isize)?)])
            }))
    }

    /// Swaps the last two axes (a view): the matrix transpose of every batch entry.
    pub fn t(&self) -> Result<Self> {
        if self.rank() < 2 {
            return Err(TensorError::Rank {
                op: "t",
                expected: "rank ≥ 2",
                shape: self.shape().to_vec(),
            });
        }
        self.transpose(-2, -1)
    }

    /// Reorders axes: axis `k` of the result is axis `order[k]` of `self` (a view).
    pub fn permute(&self, order: &[usize]) -> Result<Self> {
        let mut seen = vec![false; self.rank()];
        let valid = order.len() == self.rank()
            && order
                .iter()
                .all(|&i| i < self.rank() && !std::mem::replace(&mut seen[i], true));
        if !valid {
            return Err(TensorError::invalid(
                "permute",
                format!(
                    "{order:?} is not a permutation of the axes of shape {:?}",
                    self.shape()
                ),
            ));
        }
        let mut inverse = vec![0; order.len()];
        for (k, &axis) in order.iter().enumerate() {
            inverse[axis] = k;
        }
        Ok(self
            .with_layout(self.layout.permuted(order))
            .record("permute", &[self], move || {
                move |g, _| Ok(vec![Some(g.permute(&inverse)?)])
            }))
    }

    /// Elements `start..start + len` along `axis` (a view).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Self> {
        let a = resolve_axis("narrow", axis, self.shape())?;
        let size = self.shape()[a];
        match start.checked_add(len) {
            Some(end) if end <= size => Ok(self
                .with_layout(self.layout.narrowed(a, start, len))
                .record("narrow", &[self], move || {
                    move |g, _| Ok(vec![Some(g.pad_axis(a, start, size - end)?)])
                })),
            _ => Err(TensorError::RangeOutOfBounds {
                op: "narrow",
                axis: a,
                start,
                end: start.saturating_add(len),
                len: size,
                shape: self.shape().to_vec(),
            }),
        }
    }

    /// Splits `axis` into consecutive pieces of the given sizes, which must
    /// add up to its length (views).
    pub fn split(&self, axis: isize, sizes: &[usize]) -> Result<Vec<Self>> {
        let a = resolve_axis("split", axis, self.shape())?;
        let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
        if total != Some(self.shape()[a]) {
            return Err(TensorError::invalid(
                "split",
                format!(
                    "sizes {sizes:?} do not add up to axis {a} of length {} (shape {:?})",
                    self.shape()[a],
                    self.shape()
                ),
            ));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&len| {
                let piece = self.narrow(a as isize, start, len);
                start += len;
                piece
            })
            .collect()
    }

    /// Inserts an axis of length 1 before `axis` (`axis == rank` appends).
    pub fn unsqueeze(&self, axis: usize) -> Result<Self> {
        if axis > self.rank() {
            return Err(TensorError::AxisOutOfRange {
                op: "unsqueeze",
                axis: axis as isize,
                shape: self.shape().to_vec(),
            });
        }
        let mut shape = self.shape().to_vec();
        let mut strides = self.layout.strides().to_vec();
        let stride = strides.get(axis).map_or(1, |&s| s * shape[axis]);
        shape.insert(axis, 1);
        strides.insert(axis, stride);
        Ok(self
            .with_layout(Layout::new(shape, strides, self.layout.offset()))
            .record("unsqueeze", &[self], move || {
                move |g, _| Ok(vec![Some(g.squeeze(axis as isize)?)])
            }))
    }

    /// Removes an axis of length 1.
    pub fn squeeze(&self, axis: isize) -> Result<Self> {
        let a = resolve_axis("squeeze", axis, self.shape())?;
        if self.shape()[a] != 1 {
            return Err(TensorError::invalid(
                "squeeze",
                format!(
                    "axis {a} has length {} (shape {:?}), not 1",
                    self.shape()[a],
                    self.shape()
                ),
            ));
        }
        let mut shape = self.shape().to_vec();
        let mut strides = self.layout.strides().to_vec();
        shape.remove(a);
        strides.remove(a);
        Ok(self
            .with_layout(Layout::new(shape, strides, self.layout.offset()))
            .record("squeeze", &[self], move || {
                move |g, _| Ok(vec![Some(g.unsqueeze(a)?)])
            }))
    }

    /// A view repeating this tensor to `shape` by NumPy broadcasting rules.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Self> {
        let target = broadcast_shapes("broadcast_as", self.shape(), shape)?;
        if target != shape {
            return Err(TensorError::shapes(
                "broadcast_as",
                self.shape(),
                shape,
                "cannot broadcast to the target",
            ));
        }
        let input_shape = self.shape().to_vec();
        Ok(self.with_layout(self.layout.broadcast_to(shape)).record(
            "broadcast_as",
            &[self],
            move || move |g, _| Ok(vec![Some(g.sum_to_shape(&input_shape)?)]),
        ))
    }

    // ----- copies -------------------------------------------------------

    /// The same tensor with dense row-major elements: `self` (shared) when
    /// already contiguous, a copy otherwise (on the tensor's device; only a
    /// device copy can fail).
    pub fn contiguous(&self) -> Result<Self> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        if let Some(out) = crate::gpu::contiguous(self)? {
            return Ok(out.record("contiguous", &[self], || |g, _| Ok(vec![Some(g.clone())])));
        }
        fn copy<T: Element>(t: &Tensor) -> Tensor {
            match t.storage.cpu_slice::<T>() {
                Some(buffer) => {
                    Tensor::from_vec_unchecked(cpu::gather_map(buffer, &t.layout, |v| v), t.shape())
                }
                None => unreachable_dtype(),
            }
        }
        let out = match self.dtype() {
            DType::F32 => copy::<f32>(self),
            DType::F16 => copy::<f16>(self),
            DType::BF16 => copy::<bf16>(self),
            DType::F64 => copy::<f64>(self),
            DType::U32 => copy::<u32>(self),
            DType::I64 => copy::<i64>(self),
        };
        Ok(out.record("contiguous", &[self], || |g, _| Ok(vec![Some(g.clone())])))
    }

    /// Converts to `dtype`: floats round to nearest, floats to integers
    /// truncate toward zero and saturate (NaN becomes 0), integers to
    /// floats round to nearest.
    pub fn cast(&self, dtype: DType) -> Result<Self> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let from = self.dtype();
        Ok(self.cast_values(dtype)?.record("cast", &[self], move || {
            move |g, _| Ok(vec![Some(g.cast(from)?)])
        }))
    }

    fn cast_values(&self, dtype: DType) -> Result<Self> {
        if let Some(out) = crate::gpu::cast(self, dtype)? {
            return Ok(out);
        }
        // Half ↔ single in bulk (F16C where the CPU has it), not one
        // conversion call per element.
        match (self.dtype(), dtype) {
            (DType::F16, DType::F32) => {
                let values = cpu::f16_to_f32(&self.values::<f16>("cast")?);
                return Ok(Tensor::from_vec_unchecked(values, self.shape()));
            }
            (DType::F32, DType::F16) => {
                let values = cpu::f32_to_f16(&self.values::<f32>("cast")?);
                return Ok(Tensor::from_vec_unchecked(values, self.shape()));
            }
            // `bf16::from_f64` drops the low 32 bits of the f64 before
            // rounding, so an f32 with a tie in its top 16 mantissa bits
            // and a nonzero bit in its last 3 would round down;
            // `from_f32` rounds to nearest, ties to even, as PyTorch does.
            (DType::F32, DType::BF16) => {
                let values = cpu::map(&self.values::<f32>("cast")?, bf16::from_f32);
                return Ok(Tensor::from_vec_unchecked(values, self.shape()));
            }
            _ => {}
        }
        fn convert<S: Element, D: Element>(
            t: &Tensor,
            f: impl Fn(S) -> D + Sync,
        ) -> Result<Tensor> {
            let buffer = t.typed_buffer::<S>("cast")?;
            Ok(Tensor::from_vec_unchecked(
                cpu::gather_map(buffer, &t.layout, f),
                t.shape(),
            ))
        }
        macro_rules! from {
            ($s:ty, |$v:ident| $as_f64:expr, |$w:ident| $as_f32:expr) => {
                match dtype {
                    DType::F32 => convert::<$s, f32>(self, |$w| $as_f32),
                    DType::F64 => convert::<$s, f64>(self, |$v| $as_f64),
                    DType::F16 => convert::<$s, f16>(self, |$v| f16::from_f64($as_f64)),
                    DType::BF16 => convert::<$s, bf16>(self, |$v| bf16::from_f64($as_f64)),
                    DType::U32 => convert::<$s, u32>(self, |$v| $as_f64 as u32),
                    DType::I64 => convert::<$s, i64>(self, |$v| $as_f64 as i64),
                }
            };
        }
        match self.dtype() {
            DType::F32 => from!(f32, |v| v as f64, |w| w),
            DType::F64 => from!(f64, |v| v, |w| w as f32),
            DType::F16 => from!(f16, |v| v.to_f64(), |w| w.to_f32()),
            DType::BF16 => from!(bf16, |v| v.to_f64(), |w| w.to_f32()),
            DType::U32 => from!(u32, |v| v as f64, |w| w as f32),
            DType::I64 => match dtype {
                DType::U32 => convert::<i64, u32>(self, |v| v.clamp(0, u32::MAX as i64) as u32),
                _ => from!(i64, |v| v as f64, |w| w as f32),
            },
        }
    }

    /// Concatenates tensors of equal rank along `axis`; every other axis must
    /// agree, and so must the dtypes.
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Result<Self> {
        const OP: &str = "concat";
        let first = tensors
            .first()
            .ok_or_else(|| TensorError::invalid(OP, "no tensors to concatenate"))?;
        let a = resolve_axis(OP, axis, first.shape())?;
        let mut total = 0usize;
        for t in tensors {
            if t.dtype() != first.dtype() {
                return Err(TensorError::DTypeMismatch {
                    op: OP,
                    lhs: first.dtype(),
                    rhs: t.dtype(),
                });
            }
            let same_other_axes = t.rank() == first.rank()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(k, (x, y))| k == a || x == y);
            if !same_other_axes {
                return Err(TensorError::shapes(
                    OP,
                    first.shape(),
                    t.shape(),
                    format!("all axes but {a} must agree"),
                ));
            }
            total += t.shape()[a];
        }
        let mut shape = first.shape().to_vec();
        shape[a] = total;
        fn join<T: Element>(tensors: &[&Tensor], a: usize, shape: &[usize]) -> Result<Tensor> {
            let outer: usize = shape[..a].iter().product();
            let mut out = Vec::with_capacity(shape.iter().product());
            let pieces = tensors
                .iter()
                .map(|t| {
                    Ok((
                        t.values::<T>("concat")?,
                        t.shape()[a..].iter().product::<usize>(),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            for o in 0..outer {
                for (values, block) in &pieces {
                    out.extend_from_slice(&values[o * block..(o + 1) * block]);
                }
            }
            Ok(Tensor::from_vec_unchecked(out, shape))
        }
        let out = match crate::gpu::concat(tensors, a, &shape)? {
            Some(out) => Ok(out),
            None => match first.dtype() {
                DType::F32 => join::<f32>(tensors, a, &shape),
                DType::F16 => join::<f16>(tensors, a, &shape),
                DType::BF16 => join::<bf16>(tensors, a, &shape),
                DType::F64 => join::<f64>(tensors, a, &shape),
                DType::U32 => join::<u32>(tensors, a, &shape),
                DType::I64 => join::<i64>(tensors, a, &shape),
            },
        }?;
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[a]).collect();
        Ok(out.record("concat", tensors, move || {
            move |g, _| Ok(g.split(a as isize, &sizes)?.into_iter().map(Some).collect())
        }))
    }

    /// `self` with `before` zeros in front of and `after` zeros behind `axis`
    /// (the gradient of a narrow).
    pub(crate) fn pad_axis(&self, axis: usize, before: usize, after: usize) -> Result<Tensor> {
        if before == 0 && after == 0 {
            return Ok(self.clone());
        }
        let zeros = |len: usize| {
            let mut shape = self.shape().to_vec();
            shape[axis] = len;
            crate::gpu::zeros("pad", &shape, self.dtype(), self.device())
        };
        let (head, tail) = (zeros(before)?, zeros(after)?);
        Tensor::concat(&[&head, self, &tail], axis as isize)
    }
}

/// The storage's dtype always matches the element type chosen by a `match`
/// on that same dtype; reaching here is a bug in this crate.
#[cold]
fn unreachable_dtype() -> ! {
    unreachable!("storage dtype disagrees with its own DType tag")
}
