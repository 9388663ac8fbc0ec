//! [`KvBuffer`]: the keys or the values of one attention layer's cache,
//! appended in place with spare capacity, so that decoding a token copies
//! only that token's rows (concatenating tensors copies the whole cache at
//! every step).

use std::borrow::Cow;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::tensor::{FloatValues, FloatVec};
use crate::{DType, Result, Tensor, TensorError};

/// Keys or values (B, H, T, D) of a KV cache. The first tensor is kept as
/// it is, so a forward pass that never appends (a training step, say)
/// copies nothing; the first append moves the values into the buffer's
/// storage type with room for more positions: position `t` of head
/// `(b, h)` is row `(b·H + h)·capacity + t`.
/// [`crate::scaled_dot_product_attention_cached`] reads it in place,
/// widening f16 and bf16 storage to f32 a head at a time.
///
/// The storage type is the compute type of the tensors' dtype (f32 for
/// f32, f16 and bf16; f64 for f64) unless [`KvBuffer::with_storage`] picks
/// f16 or bf16, as llama.cpp's `--cache-type-k f16` does: half the bytes,
/// each value rounded once when it is appended (exact for f16 tensors).
/// Narrow storage costs widening on every read: on the machine of
/// `docs/performance.md` decoding after a 1,024-token prompt was 12–17%
/// slower with an f16 cache than with an f32 one.
///
/// On a CUDA device the buffer stays one device tensor, and an append
/// concatenates on the device (a copy of the cache per step, at the
/// device's bandwidth).
///
/// ```
/// use kaiyuan_tensor::{KvBuffer, Tensor};
/// let first = Tensor::from_vec((0..8).map(|i| i as f32).collect(), &[1, 2, 2, 2]).unwrap();
/// let mut keys = KvBuffer::new(&first).unwrap();
/// keys.append(&Tensor::from_vec(vec![9.0f32; 4], &[1, 2, 1, 2]).unwrap()).unwrap();
/// assert_eq!(keys.shape(), [1, 2, 3, 2]);
/// let all = keys.to_tensor();
/// assert_eq!(all.to_vec::<f32>().unwrap(), [0., 1., 2., 3., 9., 9., 4., 5., 6., 7., 9., 9.]);
/// assert!(keys.append(&Tensor::zeros(&[1, 2, 1, 3], kaiyuan_tensor::DType::F32).unwrap()).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct KvBuffer {
    /// The dtype of the tensors appended (and of [`KvBuffer::to_tensor`]).
    dtype: DType,
    /// The tensor the buffer was made from, until the first append (then
    /// `values` holds it).
    first: Option<Tensor>,
    /// B·H·capacity·D values in the storage type.
    values: Store,
    /// (B, H, T, D), T the positions held.
    shape: [usize; 4],
    capacity: usize,
}

/// A [`KvBuffer`]'s values in its storage type.
#[derive(Clone, Debug)]
enum Store {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

/// Runs `$body` on the vector of any [`Store`] variant and wraps the vector
/// it returns back into the same variant.
macro_rules! map_store {
    ($store:expr, |$v:ident| $body:expr) => {
        match $store {
            Store::F32($v) => Store::F32($body),
            Store::F64($v) => Store::F64($body),
            Store::F16($v) => Store::F16($body),
            Store::Bf16($v) => Store::Bf16($body),
        }
    };
}

impl Store {
    /// No values, in `storage`'s type.
    fn empty(storage: DType) -> Self {
        match storage {
            DType::F64 => Store::F64(Vec::new()),
            DType::F16 => Store::F16(Vec::new()),
            DType::BF16 => Store::Bf16(Vec::new()),
            _ => Store::F32(Vec::new()),
        }
    }

    fn dtype(&self) -> DType {
        match self {
            Store::F32(_) => DType::F32,
            Store::F64(_) => DType::F64,
            Store::F16(_) => DType::F16,
            Store::Bf16(_) => DType::BF16,
        }
    }

    fn byte_size(&self) -> usize {
        match self {
            Store::F32(v) => 4 * v.len(),
            Store::F64(v) => 8 * v.len(),
            Store::F16(v) => 2 * v.len(),
            Store::Bf16(v) => 2 * v.len(),
        }
    }

    /// `src` (compute values) in this store's type.
    fn of_values(storage: DType, src: FloatValues<'_>) -> Result<Self> {
        let mut store = Store::empty(storage);
        let len = match &src {
            FloatValues::F32(v) => v.len(),
            FloatValues::F64(v) => v.len(),
        };
        store.resize(len);
        store.write(0, &src)?;
        Ok(store)
    }

    fn resize(&mut self, len: usize) {
        match self {
            Store::F32(v) => v.resize(len, 0.0),
            Store::F64(v) => v.resize(len, 0.0),
            Store::F16(v) => v.resize(len, f16::ZERO),
            Store::Bf16(v) => v.resize(len, bf16::ZERO),
        }
    }

    /// Writes `src` (compute values) at element `at`, rounding to f16 or
    /// bf16 storage.
    fn write(&mut self, at: usize, src: &FloatValues<'_>) -> Result<()> {
        match (self, src) {
            (Store::F32(dst), FloatValues::F32(src)) => dst[at..][..src.len()].copy_from_slice(src),
            (Store::F64(dst), FloatValues::F64(src)) => dst[at..][..src.len()].copy_from_slice(src),
            (Store::F16(dst), FloatValues::F32(src)) => {
                dst[at..][..src.len()].convert_from_f32_slice(src)
            }
            (Store::Bf16(dst), FloatValues::F32(src)) => {
                dst[at..][..src.len()].convert_from_f32_slice(src)
            }
            // The buffer checked the dtype; f64 is only stored as f64.
            _ => return Err(TensorError::invalid(OP, "mixed compute types")),
        }
        Ok(())
    }

    /// All values in the compute type of `dtype`.
    fn to_compute(&self) -> FloatVec {
        match self {
            Store::F32(v) => FloatVec::F32(v.clone()),
            Store::F64(v) => FloatVec::F64(v.clone()),
            Store::F16(v) => FloatVec::F32(crate::cpu::f16_to_f32(v)),
            Store::Bf16(v) => {
                let mut out = vec![0.0f32; v.len()];
                v.convert_to_f32_slice(&mut out);
                FloatVec::F32(out)
            }
        }
    }
}

/// Keys or values as attention reads them in place: borrowed in the
/// compute type (f32, f64), or narrower storage that attention widens.
pub(crate) enum KvView<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl<'a> From<FloatValues<'a>> for KvView<'a> {
    fn from(values: FloatValues<'a>) -> Self {
        match values {
            FloatValues::F32(v) => KvView::F32(v),
            FloatValues::F64(v) => KvView::F64(v),
        }
    }
}

const OP: &str = "KvBuffer";

/// The compute type of `dtype`: what a cache holds unless told otherwise.
fn compute_storage(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// The four dims of a rank-4 tensor.
fn dims4(x: &Tensor, op: &'static str) -> Result<[usize; 4]> {
    match *x.shape() {
        [b, h, t, d] => Ok([b, h, t, d]),
        _ => Err(TensorError::Rank {
            op,
            expected: "rank 4 (B, H, T, D)",
            shape: x.shape().to_vec(),
        }),
    }
}

impl KvBuffer {
    /// A buffer holding `first` (B, H, T, D) of a float dtype, stored in
    /// its compute type.
    pub fn new(first: &Tensor) -> Result<Self> {
        Self::with_storage(first, 0, compute_storage(first.dtype()))
    }

    /// A buffer holding `first` (B, H, T, D) with room for `positions`
    /// positions before it grows (no room is added when `positions` ≤ T or
    /// on a CUDA device). Generation knows its prompt and its
    /// `max_new_tokens`: reserving both at prefill sizes the cache once,
    /// where growing by doubling at the first decode step would hold up to
    /// twice the positions it needs.
    ///
    /// ```
    /// use kaiyuan_tensor::{KvBuffer, Tensor};
    /// let first = Tensor::from_vec(vec![1.0f32; 6], &[1, 1, 3, 2]).unwrap();
    /// let mut keys = KvBuffer::with_capacity(&first, 10).unwrap();
    /// assert_eq!((keys.len(), keys.capacity()), (3, 10));
    /// keys.append(&Tensor::from_vec(vec![2.0f32; 14], &[1, 1, 7, 2]).unwrap()).unwrap();
    /// assert_eq!((keys.len(), keys.capacity()), (10, 10));
    /// ```
    pub fn with_capacity(first: &Tensor, positions: usize) -> Result<Self> {
        Self::with_storage(first, positions, compute_storage(first.dtype()))
    }

    /// [`KvBuffer::with_capacity`], holding the values as `storage`: f32,
    /// f16 or bf16 for tensors of any of those three (f64 tensors are
    /// stored as f64). A storage narrower than the tensors' dtype rounds
    /// `first` now and each appended value once (nearest, ties to even);
    /// attention and [`KvBuffer::to_tensor`] read the rounded values. On a
    /// CUDA device the buffer holds the tensors' dtype whatever `storage`
    /// says.
    ///
    /// ```
    /// use kaiyuan_tensor::{DType, KvBuffer, Tensor};
    /// let first = Tensor::from_vec(vec![0.1f32; 8], &[1, 1, 4, 2]).unwrap();
    /// let keys = KvBuffer::with_storage(&first, 16, DType::F16).unwrap();
    /// assert_eq!(keys.byte_size(), 16 * 2 * 2); // 16 positions of 2 f16 values
    /// assert_eq!(keys.to_tensor().to_vec::<f32>().unwrap()[0], half::f16::from_f32(0.1).to_f32());
    /// assert!(KvBuffer::with_storage(&first, 16, DType::U32).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`TensorError::UnsupportedDType`] when `first` is not a float
    /// tensor or `storage` cannot hold its values.
    pub fn with_storage(first: &Tensor, positions: usize, storage: DType) -> Result<Self> {
        let [b, h, t, d] = dims4(first, OP)?;
        let dtype = first.dtype();
        if !dtype.is_float() {
            return Err(TensorError::UnsupportedDType {
                op: OP,
                dtype,
                detail: ": keys and values are floats",
            });
        }
        let allowed = match dtype {
            DType::F64 => storage == DType::F64,
            _ => matches!(storage, DType::F32 | DType::F16 | DType::BF16),
        };
        if !allowed {
            return Err(TensorError::UnsupportedDType {
                op: OP,
                dtype: storage,
                detail: ": a cache of f32, f16 or bf16 values is stored as f32, f16 or bf16; of f64, as f64",
            });
        }
        let on_device = first.device().is_cuda();
        let storage = if on_device {
            compute_storage(dtype)
        } else {
            storage
        };
        let mut buffer = Self {
            dtype,
            first: Some(first.contiguous()?),
            values: Store::empty(storage),
            shape: [b, h, t, d],
            capacity: t,
        };
        if !on_device && (positions > t || storage != compute_storage(dtype)) {
            buffer.materialize()?;
            if positions > t {
                buffer.grow(positions);
            }
        }
        Ok(buffer)
    }

    /// Appends `x` (B, H, T′, D), of this buffer's dtype and B, H, D, after
    /// the positions held. When the capacity is short it at least doubles,
    /// so appending one position at a time copies each position a constant
    /// number of times on average.
    pub fn append(&mut self, x: &Tensor) -> Result<()> {
        let [b, h, t, d] = dims4(x, OP)?;
        let [sb, sh, len, sd] = self.shape;
        if [b, h, d] != [sb, sh, sd] {
            return Err(TensorError::shapes(
                OP,
                &self.shape,
                x.shape(),
                "appended rows must agree on B, H and D",
            ));
        }
        if x.dtype() != self.dtype {
            return Err(TensorError::DTypeMismatch {
                op: OP,
                lhs: self.dtype,
                rhs: x.dtype(),
            });
        }
        if let Some(first) = self.first.as_ref().filter(|f| f.device().is_cuda()) {
            let all = Tensor::concat(&[first, x], 2)?;
            self.first = Some(all);
            self.shape[2] = len + t;
            self.capacity = len + t;
            return Ok(());
        }
        self.materialize()?;
        let needed = len + t;
        if needed > self.capacity {
            self.grow(needed.max(2 * self.capacity));
        }
        let cap = self.capacity;
        let src = x.float_values(OP)?;
        for head in 0..b * h {
            let rows = match &src {
                FloatValues::F32(v) => FloatValues::F32(Cow::Borrowed(&v[head * t * d..][..t * d])),
                FloatValues::F64(v) => FloatValues::F64(Cow::Borrowed(&v[head * t * d..][..t * d])),
            };
            self.values.write((head * cap + len) * d, &rows)?;
        }
        self.shape[2] = needed;
        Ok(())
    }

    /// Moves the first tensor into `values` (capacity: its positions).
    fn materialize(&mut self) -> Result<()> {
        if let Some(first) = &self.first {
            self.values = Store::of_values(self.values.dtype(), first.float_values(OP)?)?;
            self.first = None;
        }
        Ok(())
    }

    /// Re-lays the values out with room for `capacity` positions.
    fn grow(&mut self, capacity: usize) {
        let [b, h, len, d] = self.shape;
        let old = self.capacity;
        fn regrow<T: Copy + bytemuck::Zeroable>(
            v: &[T],
            heads: usize,
            old: usize,
            new: usize,
            len: usize,
            d: usize,
        ) -> Vec<T> {
            // Zeroed by the allocator (alloc_zeroed), not written element
            // by element: fresh memory is zero already, so the positions
            // not yet appended need not become resident.
            let mut out: Vec<T> = bytemuck::zeroed_vec(heads * new * d);
            for head in 0..heads {
                out[head * new * d..][..len * d].copy_from_slice(&v[head * old * d..][..len * d]);
            }
            out
        }
        self.values = map_store!(&self.values, |v| regrow(v, b * h, old, capacity, len, d));
        self.capacity = capacity;
    }

    /// (B, H, T, D).
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Positions held (T).
    pub fn len(&self) -> usize {
        self.shape[2]
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.shape[2] == 0
    }

    /// The dtype of the tensors appended.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The type the values are held in (see [`KvBuffer::with_storage`]).
    pub fn storage_dtype(&self) -> DType {
        match &self.first {
            Some(first) => first.dtype(),
            None => self.values.dtype(),
        }
    }

    /// Positions there is room for before the next growth.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of memory held: the first tensor in its dtype, or after an
    /// append the capacity in the storage type.
    pub fn byte_size(&self) -> usize {
        if let Some(first) = &self.first {
            return first.elem_count() * first.dtype().size_in_bytes();
        }
        self.values.byte_size()
    }

    /// The positions held as a contiguous (B, H, T, D) tensor of the
    /// buffer's dtype (the stored values, rounded if the storage is
    /// narrower).
    pub fn to_tensor(&self) -> Tensor {
        if let Some(first) = &self.first {
            return first.clone();
        }
        let [b, h, len, d] = self.shape;
        let cap = self.capacity;
        fn gather<T: Copy>(v: &[T], heads: usize, cap: usize, len: usize, d: usize) -> Vec<T> {
            (0..heads)
                .flat_map(|head| v[head * cap * d..][..len * d].iter().copied())
                .collect()
        }
        let held = map_store!(&self.values, |v| gather(v, b * h, cap, len, d));
        Tensor::from_float_vec(held.to_compute(), &self.shape, self.dtype)
    }

    /// Keeps only batch rows `rows` (each < B), in that order.
    pub fn retain_rows(&mut self, rows: &[usize]) -> Result<()> {
        let [b, h, _, d] = self.shape;
        if let Some(&bad) = rows.iter().find(|&&r| r >= b) {
            return Err(TensorError::invalid(
                OP,
                format!("row {bad} of a batch of {b}"),
            ));
        }
        if let Some(first) = self.first.as_ref().filter(|f| f.device().is_cuda()) {
            let picked: Vec<Tensor> = rows
                .iter()
                .map(|&r| first.narrow(0, r, 1))
                .collect::<Result<_>>()?;
            let refs: Vec<&Tensor> = picked.iter().collect();
            self.first = Some(match refs.as_slice() {
                [] => first.narrow(0, 0, 0)?.contiguous()?,
                _ => Tensor::concat(&refs, 0)?,
            });
            self.shape[0] = rows.len();
            return Ok(());
        }
        self.materialize()?;
        let row = h * self.capacity * d;
        fn pick<T: Copy>(v: &[T], rows: &[usize], row: usize) -> Vec<T> {
            rows.iter()
                .flat_map(|&r| v[r * row..(r + 1) * row].iter().copied())
                .collect()
        }
        self.values = map_store!(&self.values, |v| pick(v, rows, row));
        self.shape[0] = rows.len();
        Ok(())
    }

    /// The values as attention reads them and their head stride
    /// (capacity · D): borrowed, except a first tensor of f16/bf16.
    pub(crate) fn raw(&self) -> Result<(KvView<'_>, usize)> {
        let stride = self.capacity * self.shape[3];
        Ok(match (&self.first, &self.values) {
            (Some(first), _) => (first.float_values(OP)?.into(), stride),
            (None, Store::F32(v)) => (KvView::F32(Cow::Borrowed(&v[..])), stride),
            (None, Store::F64(v)) => (KvView::F64(Cow::Borrowed(&v[..])), stride),
            (None, Store::F16(v)) => (KvView::F16(&v[..]), stride),
            (None, Store::Bf16(v)) => (KvView::Bf16(&v[..]), stride),
        })
    }
}
