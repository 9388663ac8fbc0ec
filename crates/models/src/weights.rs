//! Named weight tensors, whatever file they came from.

use std::collections::BTreeMap;

use kaiyuan_tensor::quant::QMatrix;
use kaiyuan_tensor::{DType, Tensor};

use crate::{ModelError, Result};

/// A set of named tensors (HF transformers names, e.g.
/// `model.layers.0.self_attn.q_proj.weight`) read from safetensors or GGUF.
///
/// Architectures fetch tensors with [`Weights::get`], which checks the shape
/// the config implies and names the tensor when it is missing or wrong.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    origin: String,
    tensors: BTreeMap<String, Tensor>,
    /// Quantized matrices (linear weights, embeddings), by name.
    quantized: BTreeMap<String, QMatrix>,
    /// When set, [`Weights::get`] answers a missing name with zeros of the
    /// requested shape (a broadcast view, no memory), so building a model
    /// reveals which tensors a config needs (`Model::parameter_shapes`).
    probe: bool,
}

impl Weights {
    /// An empty set whose errors will name `origin` (a file or directory).
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            tensors: BTreeMap::new(),
            quantized: BTreeMap::new(),
            probe: false,
        }
    }

    /// An empty set in probe mode (see the `probe` field).
    pub(crate) fn probe() -> Self {
        Self {
            probe: true,
            ..Self::new("shape probe")
        }
    }

    /// The file or directory the tensors came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// Adds (or replaces) a quantized matrix, dropping a dense tensor of the
    /// same name.
    pub fn insert_quantized(&mut self, name: impl Into<String>, matrix: QMatrix) {
        let name = name.into();
        self.tensors.remove(&name);
        self.quantized.insert(name, matrix);
    }

    /// Whether `name` is held quantized.
    pub fn has_quantized(&self, name: &str) -> bool {
        self.quantized.contains_key(name)
    }

    /// The quantized matrix `name`, which must be (rows, cols) = `shape`;
    /// `None` when it is not held quantized.
    pub fn quantized(&self, name: &str, shape: &[usize]) -> Result<Option<QMatrix>> {
        let Some(matrix) = self.quantized.get(name) else {
            return Ok(None);
        };
        let actual = [matrix.rows(), matrix.cols()];
        if shape != actual {
            return Err(ModelError::TensorShape {
                origin: self.origin.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: actual.to_vec(),
            });
        }
        Ok(Some(matrix.clone()))
    }

    /// `(name, matrix)` pairs of the quantized matrices in name order.
    pub fn quantized_iter(&self) -> impl Iterator<Item = (&str, &QMatrix)> {
        self.quantized.iter().map(|(n, q)| (n.as_str(), q))
    }

    /// Removes and returns a tensor.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// Whether a tensor (dense or quantized) of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.quantized.contains_key(name)
    }

    /// The tensor `name`, without a shape check.
    pub fn raw(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The tensor `name`, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if self.probe && !self.tensors.contains_key(name) {
            return Ok(Tensor::zeros(&[1], DType::F32)?.broadcast_as(shape)?);
        }
        let tensor = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                origin: self.origin.clone(),
                name: name.to_string(),
            })?;
        if tensor.shape() != shape {
            return Err(ModelError::TensorShape {
                origin: self.origin.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: tensor.shape().to_vec(),
            });
        }
        Ok(tensor.clone())
    }

    /// The tensor `name` with `shape` when present; `None` when absent.
    pub fn get_optional(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// `(name, tensor)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of tensors (dense and quantized).
    pub fn len(&self) -> usize {
        self.tensors.len() + self.quantized.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty() && self.quantized.is_empty()
    }

    /// Total number of elements (parameters), quantized ones included.
    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(Tensor::elem_count).sum::<usize>()
            + self
                .quantized
                .values()
                .map(|q| q.rows() * q.cols())
                .sum::<usize>()
    }

    /// Total bytes of the tensors as stored (quantized ones at their
    /// quantized size).
    pub fn byte_size(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum::<usize>()
            + self.quantized_bytes()
    }

    fn quantized_bytes(&self) -> usize {
        self.quantized.values().map(QMatrix::byte_size).sum()
    }

    /// Bytes of the weights when dense tensors are held in `dtype` and
    /// quantized ones as they are.
    pub fn byte_size_in(&self, dtype: DType) -> usize {
        self.tensors.values().map(Tensor::elem_count).sum::<usize>() * dtype.size_in_bytes()
            + self.quantized_bytes()
    }

    /// Every floating-point tensor cast to `dtype` (ids stay as they are).
    pub fn cast(&self, dtype: DType) -> Result<Self> {
        let mut out = Self::new(self.origin.clone());
        out.probe = self.probe;
        out.quantized = self.quantized.clone();
        for (name, tensor) in &self.tensors {
            let cast = if tensor.dtype().is_float() && tensor.dtype() != dtype {
                tensor.cast(dtype)?
            } else {
                tensor.clone()
            };
            out.insert(name.clone(), cast);
        }
        Ok(out)
    }
}

/// Drops this process's resident pages of `range` of `map`, a private
/// read-only map of a file, after the bytes were copied out (dequantized,
/// re-ordered, or copied into huge-page memory), so the file's pages and
/// the copy are not both held. Does nothing on failure or off Unix.
///
/// `map` must map a file (not anonymous memory): its dropped pages are read
/// again from the file if touched later, so every reader still sees the
/// same bytes.
pub(crate) fn release_file_pages(map: &memmap2::Mmap, range: std::ops::Range<usize>) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let start = range.start.div_ceil(PAGE) * PAGE;
        let end = range.end / PAGE * PAGE;
        if end <= start || end > map.len() {
            return;
        }
        // SAFETY: `map` is a private read-only mapping of an unmodified
        // file (this function's contract); MADV_DONTNEED only drops clean
        // pages, which the kernel reads back from the file on the next
        // access, so every later read sees the same bytes. No reference into
        // these pages is invalidated (the memory stays mapped).
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
    }
    #[cfg(not(unix))]
    let _ = (map, range);
}
