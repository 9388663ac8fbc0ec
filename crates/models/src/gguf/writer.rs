//! Writing GGUF version 3 files with F32, F16 and BF16 tensors.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use half::{bf16, f16};
use kaiyuan_tensor::{DType, Tensor};

use super::reader::{GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, MetadataArray, MetadataValue};
use super::types::GgmlType;
use crate::{ModelError, Result};

/// The version [`write_gguf`] writes.
pub const GGUF_WRITE_VERSION: u32 = 3;

/// Writes a GGUF v3 file at `path`: `metadata` in the order given, then the
/// tensors with their dims reversed to GGUF order, data aligned to
/// `general.alignment` (a `u32` power of two in `metadata`, default 32).
///
/// F32, F16 and BF16 tensors are written in their dtype; other dtypes give
/// [`ModelError::Unsupported`]. Repeated keys or tensor names give
/// [`ModelError::InvalidArgument`]. The file is written to a temporary file
/// in the same directory and renamed into place, so `path` never holds a
/// partial file.
pub fn write_gguf(
    path: impl AsRef<Path>,
    metadata: &[(String, MetadataValue)],
    tensors: &[(String, Tensor)],
) -> Result<()> {
    let data: Vec<(String, GgufTensorData)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), GgufTensorData::Dense(t.clone())))
        .collect();
    write_gguf_data(path, metadata, &data)
}

/// A tensor to write: dense, or already encoded as ggml blocks.
#[derive(Clone, Debug)]
pub enum GgufTensorData {
    /// F32, F16 or BF16 elements.
    Dense(Tensor),
    /// Encoded blocks of a quantized type, row-major in PyTorch order
    /// (`shape` rows first; written with GGUF's reversed dims).
    Blocks {
        /// The block type.
        ty: GgmlType,
        /// PyTorch shape; the last dim is a multiple of the block size.
        shape: Vec<usize>,
        /// `elements / block_size · type_size` bytes.
        bytes: Vec<u8>,
    },
}

impl GgufTensorData {
    fn shape(&self) -> &[usize] {
        match self {
            GgufTensorData::Dense(t) => t.shape(),
            GgufTensorData::Blocks { shape, .. } => shape,
        }
    }

    fn ggml_type(&self) -> Option<GgmlType> {
        match self {
            GgufTensorData::Dense(t) => ggml_type(t.dtype()),
            GgufTensorData::Blocks { ty, .. } => Some(*ty),
        }
    }

    /// Bytes on disk: `elements · type_size / block_size`.
    fn byte_len(&self) -> u64 {
        let elements: usize = self.shape().iter().product();
        match self.ggml_type() {
            Some(ty) => (elements / ty.block_size() * ty.type_size()) as u64,
            None => 0,
        }
    }
}

/// [`write_gguf`] with tensors that may already be ggml blocks
/// ([`GgufTensorData::Blocks`]); their byte length must match the type and
/// shape.
pub fn write_gguf_data(
    path: impl AsRef<Path>,
    metadata: &[(String, MetadataValue)],
    tensors: &[(String, GgufTensorData)],
) -> Result<()> {
    let path = path.as_ref();
    let alignment = check_inputs(path, metadata, tensors)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ModelError::invalid("path", format!("{} names no file", path.display())))?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}-{unique}.tmp", std::process::id()));
    let written = write_file(&tmp, metadata, tensors, alignment)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e)));
    if written.is_err() {
        // Best effort: the temporary file is ours and useless now.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn check_inputs(
    path: &Path,
    metadata: &[(String, MetadataValue)],
    tensors: &[(String, GgufTensorData)],
) -> Result<u64> {
    let origin = path.display().to_string();
    let mut keys = HashSet::new();
    let mut alignment = GGUF_DEFAULT_ALIGNMENT;
    for (key, value) in metadata {
        if !keys.insert(key.as_str()) {
            return Err(ModelError::invalid(
                "metadata",
                format!("key `{key}` given twice"),
            ));
        }
        if key == "general.alignment" {
            match value {
                MetadataValue::U32(a) if a.is_power_of_two() => alignment = u64::from(*a),
                _ => {
                    return Err(ModelError::invalid(
                        "metadata",
                        "`general.alignment` must be a u32 power of two",
                    ));
                }
            }
        }
    }
    let mut names = HashSet::new();
    for (name, tensor) in tensors {
        if !names.insert(name.as_str()) {
            return Err(ModelError::invalid(
                "tensors",
                format!("tensor `{name}` given twice"),
            ));
        }
        match tensor {
            GgufTensorData::Dense(t) if ggml_type(t.dtype()).is_none() => {
                return Err(ModelError::Unsupported {
                    origin,
                    what: format!(
                        "writing tensor `{name}` of dtype {} to GGUF (F32, F16 and BF16 are written)",
                        t.dtype()
                    ),
                });
            }
            GgufTensorData::Blocks { ty, shape, bytes } => {
                let cols = shape.last().copied().unwrap_or(0);
                let elements: usize = shape.iter().product();
                if cols % ty.block_size() != 0
                    || bytes.len() != elements / ty.block_size() * ty.type_size()
                {
                    return Err(ModelError::invalid(
                        "tensors",
                        format!(
                            "tensor `{name}`: {} bytes of {ty} cannot hold shape {shape:?}",
                            bytes.len()
                        ),
                    ));
                }
            }
            GgufTensorData::Dense(_) => {}
        }
        if tensor.shape().len() > 4 {
            return Err(ModelError::invalid(
                "tensors",
                format!(
                    "tensor `{name}` has {} dimensions, GGUF allows at most 4",
                    tensor.shape().len()
                ),
            ));
        }
    }
    Ok(alignment)
}

fn ggml_type(dtype: DType) -> Option<GgmlType> {
    match dtype {
        DType::F32 => Some(GgmlType::F32),
        DType::F16 => Some(GgmlType::F16),
        DType::BF16 => Some(GgmlType::BF16),
        _ => None,
    }
}

fn tensor_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    Ok(match tensor.dtype() {
        DType::F16 => tensor
            .to_vec::<f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => tensor
            .to_vec::<bf16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => tensor
            .to_vec::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    })
}

fn write_file(
    tmp: &Path,
    metadata: &[(String, MetadataValue)],
    tensors: &[(String, GgufTensorData)],
    alignment: u64,
) -> Result<()> {
    let io = |e: std::io::Error| ModelError::io(tmp, e);
    let file = File::create(tmp).map_err(io)?;
    let mut w = Counting {
        inner: BufWriter::new(file),
        written: 0,
    };
    w.put(&GGUF_MAGIC).map_err(io)?;
    w.put(&GGUF_WRITE_VERSION.to_le_bytes()).map_err(io)?;
    w.put(&(tensors.len() as u64).to_le_bytes()).map_err(io)?;
    w.put(&(metadata.len() as u64).to_le_bytes()).map_err(io)?;
    for (key, value) in metadata {
        write_string(&mut w, key).map_err(io)?;
        w.put(&value.value_type().id().to_le_bytes()).map_err(io)?;
        write_value(&mut w, value).map_err(io)?;
    }
    let mut offset = 0u64;
    let mut sizes = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let ty = tensor.ggml_type().unwrap_or(GgmlType::F32);
        write_string(&mut w, name).map_err(io)?;
        w.put(&(tensor.shape().len() as u32).to_le_bytes())
            .map_err(io)?;
        for &d in tensor.shape().iter().rev() {
            w.put(&(d as u64).to_le_bytes()).map_err(io)?;
        }
        w.put(&ty.id().to_le_bytes()).map_err(io)?;
        w.put(&offset.to_le_bytes()).map_err(io)?;
        let size = tensor.byte_len();
        sizes.push(size);
        offset += size.div_ceil(alignment) * alignment;
    }
    w.pad(alignment).map_err(io)?;
    for ((_, tensor), size) in tensors.iter().zip(sizes) {
        match tensor {
            GgufTensorData::Dense(t) => {
                let bytes = tensor_bytes(t)?;
                debug_assert_eq!(bytes.len() as u64, size);
                w.put(&bytes).map_err(io)?;
            }
            GgufTensorData::Blocks { bytes, .. } => w.put(bytes).map_err(io)?,
        }
        w.pad(alignment).map_err(io)?;
    }
    let file = w
        .inner
        .into_inner()
        .map_err(|e| ModelError::io(tmp, e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// A writer that counts bytes, for padding.
struct Counting<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, alignment: u64) -> std::io::Result<()> {
        let target = self.written.div_ceil(alignment) * alignment;
        let zeros = vec![0u8; (target - self.written) as usize];
        self.put(&zeros)
    }
}

fn write_string<W: Write>(w: &mut Counting<W>, s: &str) -> std::io::Result<()> {
    w.put(&(s.len() as u64).to_le_bytes())?;
    w.put(s.as_bytes())
}

fn write_value<W: Write>(w: &mut Counting<W>, value: &MetadataValue) -> std::io::Result<()> {
    match value {
        MetadataValue::U8(v) => w.put(&v.to_le_bytes()),
        MetadataValue::I8(v) => w.put(&v.to_le_bytes()),
        MetadataValue::U16(v) => w.put(&v.to_le_bytes()),
        MetadataValue::I16(v) => w.put(&v.to_le_bytes()),
        MetadataValue::U32(v) => w.put(&v.to_le_bytes()),
        MetadataValue::I32(v) => w.put(&v.to_le_bytes()),
        MetadataValue::F32(v) => w.put(&v.to_le_bytes()),
        MetadataValue::Bool(v) => w.put(&[u8::from(*v)]),
        MetadataValue::String(s) => write_string(w, s),
        MetadataValue::Array(a) => write_array(w, a),
        MetadataValue::U64(v) => w.put(&v.to_le_bytes()),
        MetadataValue::I64(v) => w.put(&v.to_le_bytes()),
        MetadataValue::F64(v) => w.put(&v.to_le_bytes()),
    }
}

fn write_array<W: Write>(w: &mut Counting<W>, a: &MetadataArray) -> std::io::Result<()> {
    w.put(&a.element_type().id().to_le_bytes())?;
    w.put(&(a.len() as u64).to_le_bytes())?;
    fn each<W: Write, T>(
        w: &mut Counting<W>,
        values: &[T],
        mut f: impl FnMut(&mut Counting<W>, &T) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        values.iter().try_for_each(|v| f(w, v))
    }
    match a {
        MetadataArray::U8(v) => w.put(v),
        MetadataArray::I8(v) => each(w, v, |w, x| w.put(&x.to_le_bytes())),
        MetadataArray::U16(v) => each(w, v, |w, x| w.put(&x.to_le_bytes())),
        MetadataArray::I16(v) => each(w, v, |w, x| w.put(&x.to_le_bytes())),
        MetadataArray::U32(v) => each(w, v, |w, x| w.put(&x.to_le_bytes())),
        MetadataArray::I32(v) => each(w, v, |w, x| w.put(&x.to_le_bytes())),
        MetadataArray::F32(v) => each(w, v, |w, x| w.put(&x.to_le_bytes())),
        MetadataArray::Bool(v) => each(w, v, |w, x| w.put(&[u8::from(*x)])),
        MetadataArray::String(v) => each(w, v, |w, s| write_string(w, s)),
        MetadataArray::Array(v) => each(w, v, write_array),
        MetadataArray::U64(v) => each(w, v, |w, x| w.put(&x.to_le_bytes())),
        MetadataArray::I64(v) => each(w, v, |w, x| w.put(&x.to_le_bytes())),
        MetadataArray::F64(v) => each(w, v, |w, x| w.put(&x.to_le_bytes())),
    }
}
