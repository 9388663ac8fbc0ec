//! Parsing a GGUF file: header, metadata and tensor infos, every count and
//! offset checked against the bytes the file holds.
//!
//! Layout (little-endian, versions 2 and 3):
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count × (key string | value type u32 | value)
//! tensor_count × (name string | n_dims u32 | n_dims × u64 | ggml type u32 | offset u64)
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor at data start + its offset (a multiple of the alignment)
//! ```
//!
//! A string is a `u64` byte length and UTF-8 bytes; an array is an element
//! type `u32`, a `u64` count and the elements (arrays may nest).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::types::{GgmlType, GgufValueType};
use crate::{ModelError, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of tensor data when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor has (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays accepted (real files nest at most once).
const MAX_ARRAY_DEPTH: usize = 8;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array (of one element type; may nest).
    Array(MetadataArray),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

/// A metadata array: all elements of one type.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataArray {
    /// `u8` elements.
    U8(Vec<u8>),
    /// `i8` elements.
    I8(Vec<i8>),
    /// `u16` elements.
    U16(Vec<u16>),
    /// `i16` elements.
    I16(Vec<i16>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `f32` elements.
    F32(Vec<f32>),
    /// `bool` elements.
    Bool(Vec<bool>),
    /// String elements.
    String(Vec<String>),
    /// Nested arrays (each with its own element type).
    Array(Vec<MetadataArray>),
    /// `u64` elements.
    U64(Vec<u64>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `f64` elements.
    F64(Vec<f64>),
}

impl MetadataValue {
    /// The value's type.
    pub fn value_type(&self) -> GgufValueType {
        match self {
            Self::U8(_) => GgufValueType::U8,
            Self::I8(_) => GgufValueType::I8,
            Self::U16(_) => GgufValueType::U16,
            Self::I16(_) => GgufValueType::I16,
            Self::U32(_) => GgufValueType::U32,
            Self::I32(_) => GgufValueType::I32,
            Self::F32(_) => GgufValueType::F32,
            Self::Bool(_) => GgufValueType::Bool,
            Self::String(_) => GgufValueType::String,
            Self::Array(_) => GgufValueType::Array,
            Self::U64(_) => GgufValueType::U64,
            Self::I64(_) => GgufValueType::I64,
            Self::F64(_) => GgufValueType::F64,
        }
    }

    /// The value as a non-negative integer, from any integer type; `None`
    /// for other types and negative values.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, from `f32` or `f64`; `None` for other types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The string, for a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, for a bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The array, for an array value.
    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short description for messages: the type, and the value when short.
    fn describe(&self) -> String {
        match self {
            Self::String(s) if s.len() <= 40 => format!("string {s:?}"),
            Self::String(s) => format!("string of {} bytes", s.len()),
            Self::Array(a) => format!("array of {} {}", a.len(), a.element_type()),
            Self::U8(v) => format!("u8 {v}"),
            Self::I8(v) => format!("i8 {v}"),
            Self::U16(v) => format!("u16 {v}"),
            Self::I16(v) => format!("i16 {v}"),
            Self::U32(v) => format!("u32 {v}"),
            Self::I32(v) => format!("i32 {v}"),
            Self::U64(v) => format!("u64 {v}"),
            Self::I64(v) => format!("i64 {v}"),
            Self::F32(v) => format!("f32 {v}"),
            Self::F64(v) => format!("f64 {v}"),
            Self::Bool(v) => format!("bool {v}"),
        }
    }
}

impl MetadataArray {
    /// The type of the elements.
    pub fn element_type(&self) -> GgufValueType {
        match self {
            Self::U8(_) => GgufValueType::U8,
            Self::I8(_) => GgufValueType::I8,
            Self::U16(_) => GgufValueType::U16,
            Self::I16(_) => GgufValueType::I16,
            Self::U32(_) => GgufValueType::U32,
            Self::I32(_) => GgufValueType::I32,
            Self::F32(_) => GgufValueType::F32,
            Self::Bool(_) => GgufValueType::Bool,
            Self::String(_) => GgufValueType::String,
            Self::Array(_) => GgufValueType::Array,
            Self::U64(_) => GgufValueType::U64,
            Self::I64(_) => GgufValueType::I64,
            Self::F64(_) => GgufValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Array(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements of a string array.
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Self::String(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an `i32` array.
    pub fn as_i32s(&self) -> Option<&[i32]> {
        match self {
            Self::I32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an `f32` array.
    pub fn as_f32s(&self) -> Option<&[f32]> {
        match self {
            Self::F32(v) => Some(v),
            _ => None,
        }
    }
}

/// Where and how one tensor is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    offset: u64,
    elem_count: u64,
    byte_size: u64,
}

impl GgufTensorInfo {
    /// The tensor's name in the file, e.g. `blk.0.attn_q.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions in GGUF (ggml) order: the first is the contiguous one, so
    /// a PyTorch `(out, in)` weight is stored as `[in, out]`.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// The shape in PyTorch order (the dims reversed).
    pub fn shape(&self) -> Vec<usize> {
        // Every dim was checked to fit in usize when the file was opened.
        self.dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect()
    }

    /// The element type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Byte offset of the data from the start of the file's data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of elements.
    pub fn elem_count(&self) -> u64 {
        self.elem_count
    }

    /// Bytes of data.
    pub fn byte_size(&self) -> u64 {
        self.byte_size
    }
}

/// A memory-mapped GGUF file (version 2 or 3) with its parsed header.
///
/// Opening checks the whole header: every string, array and tensor info
/// lies inside the file, counts cannot force allocations larger than the
/// file, tensor types are known, and tensor data is aligned, inside the data
/// section and not overlapping. Tensor data is read in place.
#[derive(Debug)]
pub struct GgufFile {
    origin: String,
    mmap: Arc<Mmap>,
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    /// Whether `mmap` maps a file (its pages can be dropped and re-read).
    file_backed: bool,
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    ///
    /// Errors: [`ModelError::Io`] when the file cannot be read,
    /// [`ModelError::Unsupported`] for GGUF version 1, big-endian files and
    /// versions after 3, [`ModelError::Format`] for anything malformed
    /// (naming the file and the metadata key, tensor or offset).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
        if len < 24 {
            return Err(ModelError::format(
                origin,
                format!("{len} bytes is too short for a GGUF header (24 bytes)"),
            ));
        }
        // SAFETY: the map is read-only and private to this process. Like every
        // file-backed map, its contents are undefined if another process
        // truncates or rewrites the file while it is mapped; GGUF files are
        // written once (our writer renames a finished temporary file into
        // place), and this is the same contract every mmap-based loader has.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let mut gguf = Self::parse(origin, Arc::new(mmap))?;
        gguf.file_backed = true;
        // The header is parsed into owned values: its pages (the vocabulary
        // arrays, about 2 MB for a 49k vocabulary) need not stay resident
        // through the weights' load.
        gguf.release_pages(0..usize::try_from(gguf.data_offset).unwrap_or(0));
        Ok(gguf)
    }

    /// Drops the resident pages of `range` of a file-backed map after its
    /// bytes were copied out (dequantized, re-ordered), so the file's pages
    /// and the copy are not both held; they are read again from the file if
    /// touched later. Does nothing for in-memory images or on failure.
    pub(crate) fn release_pages(&self, range: std::ops::Range<usize>) {
        if self.file_backed {
            crate::weights::release_file_pages(&self.mmap, range);
        }
    }

    /// Parses a GGUF image held in memory (copied into an anonymous map);
    /// `origin` names it in errors. Same checks as [`GgufFile::open`].
    pub fn from_bytes(origin: impl Into<String>, bytes: &[u8]) -> Result<Self> {
        let origin = origin.into();
        if bytes.len() < 24 {
            return Err(ModelError::format(
                origin,
                format!(
                    "{} bytes is too short for a GGUF header (24 bytes)",
                    bytes.len()
                ),
            ));
        }
        let mut map = memmap2::MmapMut::map_anon(bytes.len())
            .map_err(|e| ModelError::io(PathBuf::from(&origin), e))?;
        map.copy_from_slice(bytes);
        let mmap = map
            .make_read_only()
            .map_err(|e| ModelError::io(PathBuf::from(&origin), e))?;
        Self::parse(origin, Arc::new(mmap))
    }

    fn parse(origin: String, mmap: Arc<Mmap>) -> Result<Self> {
        let bytes: &[u8] = &mmap;
        let fail = |message: String| ModelError::format(origin.clone(), message);
        let mut cur = Cursor { bytes, pos: 0 };
        let magic = cur.take(4).map_err(&fail)?;
        if magic != GGUF_MAGIC {
            return Err(fail(format!(
                "not a GGUF file: starts with {magic:02x?}, expected \"GGUF\""
            )));
        }
        let version = cur.u32().map_err(&fail)?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(ModelError::Unsupported {
                    origin,
                    what: "GGUF version 1 (32-bit counts, from before September 2023; \
                           convert it again with a current llama.cpp)"
                        .into(),
                });
            }
            v if v.swap_bytes() <= 3 => {
                return Err(ModelError::Unsupported {
                    origin,
                    what: format!("big-endian GGUF (version {})", v.swap_bytes()),
                });
            }
            v => {
                return Err(ModelError::Unsupported {
                    origin,
                    what: format!("GGUF version {v} (this reader knows versions 2 and 3)"),
                });
            }
        }
        let tensor_count = cur.u64().map_err(&fail)?;
        let kv_count = cur.u64().map_err(&fail)?;
        // Each entry takes at least 13 bytes (empty key, type, one-byte value);
        // each tensor info at least 24 (empty name, n_dims, type, offset).
        if kv_count > (cur.remaining() / 13) as u64 {
            return Err(fail(format!(
                "header claims {kv_count} metadata entries, more than the {} bytes after it can hold",
                cur.remaining()
            )));
        }
        if tensor_count > (cur.remaining() / 24) as u64 {
            return Err(fail(format!(
                "header claims {tensor_count} tensors, more than the {} bytes after it can hold",
                cur.remaining()
            )));
        }

        let mut metadata = Vec::with_capacity(kv_count as usize);
        let mut metadata_index = HashMap::with_capacity(kv_count as usize);
        for i in 0..kv_count {
            let at = cur.pos;
            let key = cur
                .string()
                .map_err(|e| fail(format!("metadata entry {i} (offset {at}): key: {e}")))?;
            let value = read_value(&mut cur)
                .map_err(|e| fail(format!("metadata key `{key}` (offset {at}): {e}")))?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(fail(format!(
                    "metadata key `{key}` (offset {at}) appears twice"
                )));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata_index.get("general.alignment") {
            None => GGUF_DEFAULT_ALIGNMENT,
            Some(&i) => match metadata.get(i).map(|kv| &kv.1) {
                Some(&MetadataValue::U32(a)) if a.is_power_of_two() => u64::from(a),
                Some(other) => {
                    return Err(fail(format!(
                        "metadata key `general.alignment`: {}, expected a u32 power of two",
                        other.describe()
                    )));
                }
                None => GGUF_DEFAULT_ALIGNMENT,
            },
        };

        let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(tensor_count as usize);
        let mut tensor_index = HashMap::with_capacity(tensor_count as usize);
        for i in 0..tensor_count {
            let at = cur.pos;
            let info = read_tensor_info(&mut cur, alignment)
                .map_err(|e| fail(format!("tensor info {i} (offset {at}): {e}")))?;
            if tensor_index
                .insert(info.name.clone(), tensors.len())
                .is_some()
            {
                return Err(fail(format!(
                    "tensor `{}` (info at offset {at}) appears twice",
                    info.name
                )));
            }
            tensors.push(info);
        }

        let header_end = cur.pos as u64;
        let data_offset = header_end.div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        if !tensors.is_empty() && data_offset > file_len {
            return Err(fail(format!(
                "the data section would start at offset {data_offset}, past the end of the file ({file_len} bytes)"
            )));
        }
        let data_len = file_len.saturating_sub(data_offset);
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors.get(i).map_or(0, |t| t.offset));
        let mut previous: Option<(&str, u64)> = None;
        for &i in &order {
            let Some(t) = tensors.get(i) else { continue };
            let end = t.offset.checked_add(t.byte_size).filter(|&e| e <= data_len);
            let Some(end) = end else {
                return Err(fail(format!(
                    "tensor `{}`: data at offset {} + {} bytes lies outside the data section \
                     ({data_len} bytes from file offset {data_offset})",
                    t.name, t.offset, t.byte_size
                )));
            };
            if let Some((prev, prev_end)) = previous
                && t.offset < prev_end
            {
                return Err(fail(format!(
                    "tensor `{}` (data offset {}) overlaps tensor `{prev}` (which ends at {prev_end})",
                    t.name, t.offset
                )));
            }
            previous = Some((&t.name, end));
        }

        Ok(Self {
            origin,
            mmap,
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
            file_backed: false,
        })
    }

    /// The file's path (or the origin given to [`GgufFile::from_bytes`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The memory map of the whole file.
    pub fn mmap(&self) -> &Arc<Mmap> {
        &self.mmap
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// Drops the metadata entries named in `keys` (absent ones are
    /// ignored), so their memory can be returned: the loader does this for
    /// the vocabulary arrays once the tokenizer is built (about 10 MB of
    /// strings for a 49k vocabulary), before placing the weights. Later
    /// reads of those keys find nothing.
    pub fn forget_metadata(&mut self, keys: &[&str]) {
        if !keys
            .iter()
            .any(|key| self.metadata_index.contains_key(*key))
        {
            return;
        }
        self.metadata
            .retain(|(key, _)| !keys.contains(&key.as_str()));
        self.metadata.shrink_to_fit();
        self.metadata_index = self
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (key, _))| (key.clone(), i))
            .collect();
    }

    /// The value of metadata key `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .map(|kv| &kv.1)
    }

    fn require(&self, key: &str) -> Result<&MetadataValue> {
        self.get(key).ok_or_else(|| {
            ModelError::format(self.origin.clone(), format!("missing metadata key `{key}`"))
        })
    }

    fn wrong_type(&self, key: &str, value: &MetadataValue, expected: &str) -> ModelError {
        ModelError::format(
            self.origin.clone(),
            format!(
                "metadata key `{key}`: {}, expected {expected}",
                value.describe()
            ),
        )
    }

    /// `key` as a non-negative integer (any integer type); errors name the
    /// key when it is missing, negative or not an integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong_type(key, v, "a non-negative integer"))
    }

    /// Like [`GgufFile::get_u64`], with `None` when the key is absent.
    pub fn get_u64_opt(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.get_u64(key).map(Some),
        }
    }

    /// `key` as a `usize` (any integer type that fits).
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.get_u64(key)?;
        usize::try_from(v).map_err(|_| {
            ModelError::format(
                self.origin.clone(),
                format!("metadata key `{key}`: {v} does not fit in usize"),
            )
        })
    }

    /// Like [`GgufFile::get_usize`], with `None` when the key is absent.
    pub fn get_usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.get_usize(key).map(Some),
        }
    }

    /// `key` as a float (`f32` or `f64`).
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong_type(key, v, "a float"))
    }

    /// Like [`GgufFile::get_f64`], with `None` when the key is absent.
    pub fn get_f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.get_f64(key).map(Some),
        }
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, v, "a string"))
    }

    /// Like [`GgufFile::get_str`], with `None` when the key is absent.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.get_str(key).map(Some),
        }
    }

    /// `key` as a bool, `None` when absent.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "a bool")),
        }
    }

    /// `key` as an array.
    pub fn get_array(&self, key: &str) -> Result<&MetadataArray> {
        let v = self.require(key)?;
        v.as_array()
            .ok_or_else(|| self.wrong_type(key, v, "an array"))
    }

    /// Like [`GgufFile::get_array`], with `None` when the key is absent.
    pub fn get_array_opt(&self, key: &str) -> Result<Option<&MetadataArray>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.get_array(key).map(Some),
        }
    }

    /// `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        let a = self.get_array(key)?;
        a.as_strings().ok_or_else(|| {
            ModelError::format(
                self.origin.clone(),
                format!(
                    "metadata key `{key}`: array of {}, expected strings",
                    a.element_type()
                ),
            )
        })
    }

    /// `general.architecture` (e.g. `llama`, `qwen2`).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name` (GGUF name, e.g. `token_embd.weight`).
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
    }

    /// File byte range of a tensor's data.
    pub fn tensor_range(&self, info: &GgufTensorInfo) -> Result<std::ops::Range<usize>> {
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.byte_size));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.mmap.len() as u64 => Ok(s as usize..e as usize),
            _ => Err(ModelError::format(
                self.origin.clone(),
                format!(
                    "tensor `{}`: data lies outside the file (not a tensor of this file?)",
                    info.name
                ),
            )),
        }
    }

    /// The raw bytes of a tensor's data, read in place.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let range = self.tensor_range(info)?;
        self.mmap.get(range).ok_or_else(|| {
            ModelError::format(
                self.origin.clone(),
                format!("tensor `{}`: data lies outside the file", info.name),
            )
        })
    }
}

/// A read position in the file's bytes; every read is bounds-checked and
/// fails with a message giving the offset.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or_else(|| {
                format!(
                    "needs {n} bytes at offset {}, but the file ends at {} (truncated?)",
                    self.pos,
                    self.bytes.len()
                )
            })?;
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let s = self.take(N)?;
        s.try_into().map_err(|_| "short read".to_string())
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let at = self.pos;
        let len = self.u64()?;
        let remaining = self.remaining();
        if len > remaining as u64 {
            return Err(format!(
                "string at offset {at} claims {len} bytes, but only {remaining} remain in the file"
            ));
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| format!("string at offset {at} is not UTF-8: {e}"))
    }
}

fn read_value_type(cur: &mut Cursor<'_>) -> std::result::Result<GgufValueType, String> {
    let at = cur.pos;
    let id = cur.u32()?;
    GgufValueType::from_id(id)
        .ok_or_else(|| format!("unknown value type {id} at offset {at} (known: 0 to 12)"))
}

fn read_value(cur: &mut Cursor<'_>) -> std::result::Result<MetadataValue, String> {
    let ty = read_value_type(cur)?;
    Ok(match ty {
        GgufValueType::U8 => MetadataValue::U8(cur.u8()?),
        GgufValueType::I8 => MetadataValue::I8(i8::from_le_bytes(cur.array()?)),
        GgufValueType::U16 => MetadataValue::U16(u16::from_le_bytes(cur.array()?)),
        GgufValueType::I16 => MetadataValue::I16(i16::from_le_bytes(cur.array()?)),
        GgufValueType::U32 => MetadataValue::U32(cur.u32()?),
        GgufValueType::I32 => MetadataValue::I32(i32::from_le_bytes(cur.array()?)),
        GgufValueType::F32 => MetadataValue::F32(f32::from_le_bytes(cur.array()?)),
        GgufValueType::Bool => MetadataValue::Bool(read_bool(cur)?),
        GgufValueType::String => MetadataValue::String(cur.string()?),
        GgufValueType::Array => MetadataValue::Array(read_array(cur, 1)?),
        GgufValueType::U64 => MetadataValue::U64(cur.u64()?),
        GgufValueType::I64 => MetadataValue::I64(i64::from_le_bytes(cur.array()?)),
        GgufValueType::F64 => MetadataValue::F64(f64::from_le_bytes(cur.array()?)),
    })
}

fn read_bool(cur: &mut Cursor<'_>) -> std::result::Result<bool, String> {
    let at = cur.pos;
    match cur.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(format!("bool at offset {at} is {b}, expected 0 or 1")),
    }
}

/// Reads `count` elements with `read`, after checking that the bytes left
/// can hold them (so a huge count cannot force a huge allocation).
fn read_n<T>(
    cur: &mut Cursor<'_>,
    count: u64,
    min_size: usize,
    mut read: impl FnMut(&mut Cursor<'_>) -> std::result::Result<T, String>,
) -> std::result::Result<Vec<T>, String> {
    let remaining = cur.remaining();
    if count > (remaining / min_size.max(1)) as u64 {
        return Err(format!(
            "array at offset {} claims {count} elements of at least {min_size} bytes, \
             but only {remaining} bytes remain in the file",
            cur.pos
        ));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        out.push(read(cur)?);
    }
    Ok(out)
}

fn read_array(cur: &mut Cursor<'_>, depth: usize) -> std::result::Result<MetadataArray, String> {
    let at = cur.pos;
    if depth > MAX_ARRAY_DEPTH {
        return Err(format!(
            "arrays nested more than {MAX_ARRAY_DEPTH} deep at offset {at}"
        ));
    }
    let ty = read_value_type(cur)?;
    let count = cur.u64()?;
    let m = ty.min_size();
    Ok(match ty {
        GgufValueType::U8 => MetadataArray::U8(read_n(cur, count, m, |c| c.u8())?),
        GgufValueType::I8 => MetadataArray::I8(read_n(cur, count, m, |c| {
            Ok(i8::from_le_bytes(c.array()?))
        })?),
        GgufValueType::U16 => MetadataArray::U16(read_n(cur, count, m, |c| {
            Ok(u16::from_le_bytes(c.array()?))
        })?),
        GgufValueType::I16 => MetadataArray::I16(read_n(cur, count, m, |c| {
            Ok(i16::from_le_bytes(c.array()?))
        })?),
        GgufValueType::U32 => MetadataArray::U32(read_n(cur, count, m, |c| c.u32())?),
        GgufValueType::I32 => MetadataArray::I32(read_n(cur, count, m, |c| {
            Ok(i32::from_le_bytes(c.array()?))
        })?),
        GgufValueType::F32 => MetadataArray::F32(read_n(cur, count, m, |c| {
            Ok(f32::from_le_bytes(c.array()?))
        })?),
        GgufValueType::Bool => MetadataArray::Bool(read_n(cur, count, m, read_bool)?),
        GgufValueType::String => MetadataArray::String(read_n(cur, count, m, |c| c.string())?),
        GgufValueType::Array => {
            MetadataArray::Array(read_n(cur, count, m, |c| read_array(c, depth + 1))?)
        }
        GgufValueType::U64 => MetadataArray::U64(read_n(cur, count, m, |c| c.u64())?),
        GgufValueType::I64 => MetadataArray::I64(read_n(cur, count, m, |c| {
            Ok(i64::from_le_bytes(c.array()?))
        })?),
        GgufValueType::F64 => MetadataArray::F64(read_n(cur, count, m, |c| {
            Ok(f64::from_le_bytes(c.array()?))
        })?),
    })
}

fn read_tensor_info(
    cur: &mut Cursor<'_>,
    alignment: u64,
) -> std::result::Result<GgufTensorInfo, String> {
    let name = cur.string().map_err(|e| format!("name: {e}"))?;
    let named = |e: String| format!("tensor `{name}`: {e}");
    let n_dims = cur.u32().map_err(named)?;
    if n_dims > MAX_DIMS {
        return Err(named(format!(
            "{n_dims} dimensions, ggml allows at most {MAX_DIMS}"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64().map_err(named)?);
    }
    let type_at = cur.pos;
    let type_id = cur.u32().map_err(named)?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
        named(format!(
            "unknown ggml type id {type_id} (at offset {type_at})"
        ))
    })?;
    let offset = cur.u64().map_err(named)?;
    let elem_count = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| named(format!("dims {dims:?} overflow the element count")))?;
    if dims
        .first()
        .is_some_and(|&d0| d0 % ggml_type.block_size() as u64 != 0)
    {
        return Err(named(format!(
            "{ggml_type} needs rows of whole {}-element blocks, but dims are {dims:?}",
            ggml_type.block_size()
        )));
    }
    let byte_size = ggml_type
        .bytes_for(elem_count)
        .ok_or_else(|| named(format!("{ggml_type} size of dims {dims:?} overflows")))?;
    if offset % alignment != 0 {
        return Err(named(format!(
            "data offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    Ok(GgufTensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        elem_count,
        byte_size,
    })
}
