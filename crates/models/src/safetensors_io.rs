//! safetensors files: memory-mapped, zero-copy where the dtype and alignment
//! allow; sharded checkpoints through `model.safetensors.index.json`; atomic
//! writes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kaiyuan_tensor::{DType, Tensor};
use memmap2::Mmap;
use safetensors::Dtype as StDtype;

use crate::{ModelError, Result, Weights};

/// One tensor of a safetensors file as stored, offered to the `take`
/// callback of [`read_file_with`] / [`read_dir_with`] before the default
/// conversion (used for layouts `Tensor` has no dtype for, e.g. GPTQ's
/// int32 words).
#[derive(Clone, Copy, Debug)]
pub struct RawTensor<'a> {
    /// The tensor's name.
    pub name: &'a str,
    /// Its stored dtype.
    pub dtype: StDtype,
    /// Its shape.
    pub shape: &'a [usize],
    /// Its little-endian bytes (bounds-checked).
    pub bytes: &'a [u8],
}

/// What a `take` callback of [`read_file_with`] / [`read_dir_with`] is:
/// given the file and a tensor, `Ok(true)` when it kept the tensor itself
/// (the default conversion is skipped), `Ok(false)` to leave it.
pub type TakeRaw<'a> = dyn FnMut(&Path, RawTensor<'_>) -> Result<bool> + 'a;

/// Reads every tensor of one `.safetensors` file into `weights`.
pub fn read_file(path: &Path, weights: &mut Weights) -> Result<()> {
    read_file_with(path, weights, &mut |_, _| Ok(false))
}

/// [`read_file`], offering each tensor to `take` first.
pub fn read_file_with(path: &Path, weights: &mut Weights, take: &mut TakeRaw<'_>) -> Result<()> {
    read_file_placed(path, weights, take, false)
}

/// [`read_file_with`]; with `resident`, tensors that would be read in
/// place are copied into huge-page memory instead (see [`read_dir_resident`]).
fn read_file_placed(
    path: &Path,
    weights: &mut Weights,
    take: &mut TakeRaw<'_>,
    resident: bool,
) -> Result<()> {
    let origin = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the file is opened read-only and mapped privately; the loader
    // assumes, as every mmap-based loader does, that it is not truncated or
    // rewritten while mapped. All offsets are bounds-checked below.
    let mmap = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?);
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mmap[..])
        .map_err(|e| ModelError::format(&origin, format!("invalid safetensors header: {e}")))?;
    let data_start = 8 + header_len;
    // Resident: the whole data section, copied once into one huge-page map
    // (huge pages cover whole aligned 2 MiB pieces of one map, so one map
    // beats one per tensor), and the file's pages dropped.
    let resident_data = if resident {
        let data = mmap.get(data_start..).ok_or_else(|| {
            ModelError::format(&origin, "the header runs past the end of the file")
        })?;
        let copy = kaiyuan_tensor::huge_page_copy(data).map_err(|e| ModelError::io(path, e))?;
        crate::weights::release_file_pages(&mmap, data_start..mmap.len());
        Some(Arc::new(copy))
    } else {
        None
    };
    for (name, info) in metadata.tensors() {
        let (start, end) = info.data_offsets;
        let range = data_start
            .checked_add(start)
            .zip(data_start.checked_add(end));
        let Some((start, end)) = range.filter(|&(s, e)| s <= e && e <= mmap.len()) else {
            return Err(ModelError::format(
                &origin,
                format!("tensor `{name}`: data offsets {start}..{end} lie outside the file"),
            ));
        };
        let raw = RawTensor {
            name: &name,
            dtype: info.dtype,
            shape: &info.shape,
            bytes: &mmap[start..end],
        };
        if take(path, raw)? {
            // `take` kept what it needed (the bytes are only lent for the
            // call), so the file's pages of this tensor are not needed: a
            // GPTQ checkpoint's packed words no longer stay resident beside
            // their unpacked copy for the rest of the load.
            crate::weights::release_file_pages(&mmap, start..end);
            continue;
        }
        let dtype = match info.dtype {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            StDtype::F64 => DType::F64,
            StDtype::U32 => DType::U32,
            StDtype::I64 => DType::I64,
            other => {
                return Err(ModelError::Unsupported {
                    origin,
                    what: format!("dtype {other:?} of tensor `{name}`"),
                });
            }
        };
        let (map, range) = match &resident_data {
            Some(data) => (Arc::clone(data), start - data_start..end - data_start),
            None => (Arc::clone(&mmap), start..end),
        };
        let tensor = match Tensor::from_mmap(map, range, dtype, &info.shape) {
            Ok(t) => t,
            // Misaligned in the file: copy the bytes instead.
            Err(_) => copy_tensor(&mmap[start..end], dtype, &info.shape)
                .map_err(|m| ModelError::format(&origin, format!("tensor `{name}`: {m}")))?,
        };
        weights.insert(name, tensor);
    }
    Ok(())
}

fn copy_tensor(bytes: &[u8], dtype: DType, shape: &[usize]) -> std::result::Result<Tensor, String> {
    fn cast<T: kaiyuan_tensor::Element + bytemuck_like::Pod>(
        bytes: &[u8],
        shape: &[usize],
    ) -> std::result::Result<Tensor, String> {
        let values = bytemuck_like::read_vec::<T>(bytes)?;
        Tensor::from_vec(values, shape).map_err(|e| e.to_string())
    }
    match dtype {
        DType::F32 => cast::<f32>(bytes, shape),
        DType::F16 => cast::<half::f16>(bytes, shape),
        DType::BF16 => cast::<half::bf16>(bytes, shape),
        DType::F64 => cast::<f64>(bytes, shape),
        DType::U32 => cast::<u32>(bytes, shape),
        DType::I64 => cast::<i64>(bytes, shape),
    }
}

/// Little-endian decoding of plain numbers without alignment requirements.
mod bytemuck_like {
    /// Numbers read from little-endian bytes.
    pub trait Pod: Sized {
        const SIZE: usize;
        fn from_le(bytes: &[u8]) -> Self;
    }
    macro_rules! pod {
        ($($t:ty => $n:expr, $f:expr;)*) => {$(
            impl Pod for $t {
                const SIZE: usize = $n;
                fn from_le(b: &[u8]) -> Self {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(&b[..$n]);
                    $f(a)
                }
            }
        )*};
    }
    pod! {
        f32 => 4, f32::from_le_bytes;
        f64 => 8, f64::from_le_bytes;
        u32 => 4, u32::from_le_bytes;
        i64 => 8, i64::from_le_bytes;
        half::f16 => 2, half::f16::from_le_bytes;
        half::bf16 => 2, half::bf16::from_le_bytes;
    }
    pub fn read_vec<T: Pod>(bytes: &[u8]) -> Result<Vec<T>, String> {
        if !bytes.len().is_multiple_of(T::SIZE) {
            return Err(format!(
                "{} bytes is not a whole number of elements",
                bytes.len()
            ));
        }
        Ok(bytes.chunks_exact(T::SIZE).map(T::from_le).collect())
    }
}

/// Reads a model directory's weights: `model.safetensors`, or the shards
/// listed in `model.safetensors.index.json`, or every `*.safetensors` file.
pub fn read_dir(dir: &Path) -> Result<Weights> {
    read_dir_with(dir, &mut |_, _| Ok(false))
}

/// [`read_dir`], but each file's data section is copied once into a map
/// of its own backed by huge pages ([`kaiyuan_tensor::huge_page_copy`]),
/// which the tensors then read in place, and this process's pages of the
/// file are dropped after the copy: decoding, which streams every weight
/// for each token, runs faster from huge pages than from the file's 4 KiB
/// pages, for one copy at load.
pub fn read_dir_resident(dir: &Path) -> Result<Weights> {
    read_dir_placed(dir, &mut |_, _| Ok(false), true)
}

/// [`read_dir`], offering each tensor to `take` first (see
/// [`read_file_with`]).
pub fn read_dir_with(dir: &Path, take: &mut TakeRaw<'_>) -> Result<Weights> {
    read_dir_placed(dir, take, false)
}

fn read_dir_placed(dir: &Path, take: &mut TakeRaw<'_>, resident: bool) -> Result<Weights> {
    let mut weights = Weights::new(dir.display().to_string());
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            ModelError::format(index.display().to_string(), format!("invalid JSON: {e}"))
        })?;
        let map = json
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| {
                ModelError::config(
                    index.display().to_string(),
                    "weight_map",
                    "missing or not an object",
                )
            })?;
        let mut shards: Vec<String> = Vec::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                ModelError::config(
                    index.display().to_string(),
                    format!("weight_map.{tensor}"),
                    "not a file name",
                )
            })?;
            if file.contains('/') || file.contains('\\') || file.starts_with("..") {
                return Err(ModelError::config(
                    index.display().to_string(),
                    format!("weight_map.{tensor}"),
                    format!("`{file}` must be a file name inside the model directory"),
                ));
            }
            if !shards.iter().any(|s| s == file) {
                shards.push(file.to_string());
            }
        }
        shards.sort();
        let files: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
        // Names `take` kept count as present.
        let mut taken = std::collections::HashSet::new();
        for f in &files {
            let mut note_taken = |file: &Path, raw: RawTensor<'_>| {
                let kept = take(file, raw)?;
                if kept {
                    taken.insert(raw.name.to_string());
                }
                Ok(kept)
            };
            read_file_placed(f, &mut weights, &mut note_taken, resident)?;
        }
        for tensor in map.keys() {
            if !weights.contains(tensor) && !taken.contains(tensor) {
                return Err(ModelError::MissingTensor {
                    origin: index.display().to_string(),
                    name: tensor.clone(),
                });
            }
        }
        return Ok(weights);
    } else if dir.join("model.safetensors").is_file() {
        vec![dir.join("model.safetensors")]
    } else {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        found.sort();
        found
    };
    if files.is_empty() {
        return Err(ModelError::format(
            dir.display().to_string(),
            "no model.safetensors, model.safetensors.index.json or *.safetensors file",
        ));
    }
    for f in &files {
        read_file_placed(f, &mut weights, take, resident)?;
    }
    Ok(weights)
}

/// Writes `weights` to one `.safetensors` file atomically (a temporary file
/// in the same directory, then a rename), with `metadata` in the header.
pub fn write_file(
    path: &Path,
    weights: &Weights,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata)
                .map_err(|e| ModelError::format(path.display().to_string(), e.to_string()))?,
        );
    }
    let mut offset = 0usize;
    let mut payloads = Vec::with_capacity(weights.len());
    for (name, tensor) in weights.iter() {
        let (dtype, bytes) = tensor_bytes(tensor)?;
        header.insert(
            name.to_string(),
            serde_json::json!({
                "dtype": dtype,
                "shape": tensor.shape(),
                "data_offsets": [offset, offset + bytes.len()],
            }),
        );
        offset += bytes.len();
        payloads.push(bytes);
    }
    let mut header_bytes = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| ModelError::format(path.display().to_string(), e.to_string()))?;
    // Pad the header with spaces so the data starts 8-byte aligned.
    while (8 + header_bytes.len()) % 8 != 0 {
        header_bytes.push(b' ');
    }
    write_atomic(path, |out| {
        out.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
        out.write_all(&header_bytes)?;
        for p in &payloads {
            out.write_all(p)?;
        }
        Ok(())
    })
}

fn tensor_bytes(tensor: &Tensor) -> Result<(&'static str, Vec<u8>)> {
    Ok(match tensor.dtype() {
        DType::F32 => (
            "F32",
            tensor
                .to_vec::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            "F16",
            tensor
                .to_vec::<half::f16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::BF16 => (
            "BF16",
            tensor
                .to_vec::<half::bf16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            "F64",
            tensor
                .to_vec::<f64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::U32 => (
            "U32",
            tensor
                .to_vec::<u32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::I64 => (
            "I64",
            tensor
                .to_vec::<i64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    })
}

/// Writes a file through `body` into a temporary sibling, syncs it, then
/// renames it over `path`, so readers never see a partial file.
pub fn write_atomic(
    path: &Path,
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        ModelError::invalid("output", format!("{} is not a file path", path.display()))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut out = std::io::BufWriter::new(file);
        body(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::io(path, e));
    }
    Ok(())
}
