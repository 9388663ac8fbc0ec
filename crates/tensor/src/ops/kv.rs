//! [`KvBuffer`]: the keys or the values of one attention layer's cache,
//! appended in place with spare capacity, so that decoding a token copies
//! only that token's rows (concatenating tensors copies the whole cache at
//! every step).

use std::borrow::Cow;

use crate::tensor::{FloatValues, FloatVec};
use crate::{DType, Result, Tensor, TensorError};

/// Keys or values (B, H, T, D) of a KV cache. The first tensor is kept as
/// it is, so a forward pass that never appends (a training step, say)
/// copies nothing; the first append moves the values into the compute type
/// of their dtype (f32 for f16, bf16 and f32; f64 for f64) with room for
/// more positions: position `t` of head `(b, h)` is row
/// `(b·H + h)·capacity + t`.
/// [`crate::scaled_dot_product_attention_cached`] reads it in place.
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
    /// `values` is empty).
    first: Option<Tensor>,
    /// B·H·capacity·D values.
    values: FloatVec,
    /// (B, H, T, D), T the positions held.
    shape: [usize; 4],
    capacity: usize,
}

const OP: &str = "KvBuffer";

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
    /// A buffer holding `first` (B, H, T, D) of a float dtype.
    pub fn new(first: &Tensor) -> Result<Self> {
        let [b, h, t, d] = dims4(first, OP)?;
        if !first.dtype().is_float() {
            return Err(TensorError::UnsupportedDType {
                op: OP,
                dtype: first.dtype(),
                detail: ": keys and values are floats",
            });
        }
        Ok(Self {
            dtype: first.dtype(),
            first: Some(first.contiguous()?),
            values: FloatVec::F32(Vec::new()),
            shape: [b, h, t, d],
            capacity: t,
        })
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
        let mut buffer = Self::new(first)?;
        if positions > buffer.capacity && !first.device().is_cuda() {
            buffer.materialize()?;
            buffer.grow(positions);
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
        match (&mut self.values, x.float_values(OP)?) {
            (FloatVec::F32(dst), FloatValues::F32(src)) => {
                write_rows(dst, &src, b * h, cap, len, t, d)
            }
            (FloatVec::F64(dst), FloatValues::F64(src)) => {
                write_rows(dst, &src, b * h, cap, len, t, d)
            }
            // The dtype matched, so the compute types do.
            _ => return Err(TensorError::invalid(OP, "mixed compute types")),
        }
        self.shape[2] = needed;
        Ok(())
    }

    /// Moves the first tensor into `values` (capacity: its positions).
    fn materialize(&mut self) -> Result<()> {
        if let Some(first) = &self.first {
            self.values = match first.float_values(OP)? {
                FloatValues::F32(v) => FloatVec::F32(v.into_owned()),
                FloatValues::F64(v) => FloatVec::F64(v.into_owned()),
            };
            self.first = None;
        }
        Ok(())
    }

    /// Re-lays the values out with room for `capacity` positions.
    fn grow(&mut self, capacity: usize) {
        let [b, h, len, d] = self.shape;
        let old = self.capacity;
        fn regrow<T: Copy + Default>(
            v: &[T],
            heads: usize,
            old: usize,
            new: usize,
            len: usize,
            d: usize,
        ) -> Vec<T> {
            let mut out = vec![T::default(); heads * new * d];
            for head in 0..heads {
                out[head * new * d..][..len * d].copy_from_slice(&v[head * old * d..][..len * d]);
            }
            out
        }
        self.values = match &self.values {
            FloatVec::F32(v) => FloatVec::F32(regrow(v, b * h, old, capacity, len, d)),
            FloatVec::F64(v) => FloatVec::F64(regrow(v, b * h, old, capacity, len, d)),
        };
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

    /// Positions there is room for before the next growth.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of memory held: the first tensor in its dtype, or after an
    /// append the capacity in the compute type.
    pub fn byte_size(&self) -> usize {
        if let Some(first) = &self.first {
            return first.elem_count() * first.dtype().size_in_bytes();
        }
        match &self.values {
            FloatVec::F32(v) => 4 * v.len(),
            FloatVec::F64(v) => 8 * v.len(),
        }
    }

    /// The positions held as a contiguous (B, H, T, D) tensor of the
    /// buffer's dtype.
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
        let values = match &self.values {
            FloatVec::F32(v) => FloatVec::F32(gather(v, b * h, cap, len, d)),
            FloatVec::F64(v) => FloatVec::F64(gather(v, b * h, cap, len, d)),
        };
        Tensor::from_float_vec(values, &self.shape, self.dtype)
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
        self.values = match &self.values {
            FloatVec::F32(v) => FloatVec::F32(pick(v, rows, row)),
            FloatVec::F64(v) => FloatVec::F64(pick(v, rows, row)),
        };
        self.shape[0] = rows.len();
        Ok(())
    }

    /// The values in their compute type and their head stride (capacity ·
    /// D), for attention: borrowed, except a first tensor of f16/bf16.
    pub(crate) fn raw(&self) -> Result<(FloatValues<'_>, usize)> {
        let stride = self.capacity * self.shape[3];
        Ok(match (&self.first, &self.values) {
            (Some(first), _) => (first.float_values(OP)?, stride),
            (None, FloatVec::F32(v)) => (FloatValues::F32(Cow::Borrowed(&v[..])), stride),
            (None, FloatVec::F64(v)) => (FloatValues::F64(Cow::Borrowed(&v[..])), stride),
        })
    }
}

/// Copies `t` positions of each of `heads` heads from `src` (contiguous
/// (heads, t, d)) to positions `len..len + t` of `dst` (heads × cap × d).
fn write_rows<T: Copy>(
    dst: &mut [T],
    src: &[T],
    heads: usize,
    cap: usize,
    len: usize,
    t: usize,
    d: usize,
) {
    for head in 0..heads {
        dst[(head * cap + len) * d..][..t * d].copy_from_slice(&src[head * t * d..][..t * d]);
    }
}
