//! Where a tensor's elements live.
//!
//! [`Storage`] is an enum over devices: the CPU, or a CUDA device
//! ([`CudaStorage`], an uninhabited type in builds without kaiyuan-cuda's
//! `cuda` or `emulator` feature, so callers never write `cfg`). [`CpuStorage`] is an enum over
//! kinds of buffer: owned ([`ndarray`] arrays, shared by reference count) or a
//! byte range of a shared memory map, so weights read from a file are never
//! copied. Quantized block storage joins it as a third variant.

use std::ops::Range;
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use ndarray::ArcArray1;

use crate::gpu::CudaStorage;
use crate::{DType, Element, Result, TensorError};

/// The device a tensor lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory; ops run on rayon's thread pool.
    #[default]
    Cpu,
    /// CUDA device `n`: ops launch kaiyuan-cuda's kernels.
    Cuda(usize),
}

impl Device {
    /// Whether this is a CUDA device.
    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    ///
    /// ```
    /// use kaiyuan_tensor::Device;
    /// assert_eq!("cuda:1".parse::<Device>(), Ok(Device::Cuda(1)));
    /// assert!("gpu".parse::<Device>().is_err());
    /// ```
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("`{text}` is not a device: use cpu, cuda or cuda:N")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A tensor's buffer, on some device.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// Memory of a CUDA device.
    Cuda(CudaStorage),
}

/// A host buffer: owned, or borrowed from a memory-mapped file.
#[derive(Debug)]
pub enum CpuStorage {
    /// Elements owned by this process.
    Owned(OwnedBuffer),
    /// Elements read in place from a memory-mapped file.
    Mapped(MappedBuffer),
}

/// An owned, reference-counted, one-dimensional buffer per dtype.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum OwnedBuffer {
    F32(ArcArray1<f32>),
    F16(ArcArray1<f16>),
    BF16(ArcArray1<bf16>),
    F64(ArcArray1<f64>),
    U32(ArcArray1<u32>),
    I64(ArcArray1<i64>),
}

/// A private copy of `bytes` in fresh anonymous memory, read-only, for
/// weights that are read over and over (every decoded token streams them
/// all). On Linux the kernel is asked to back it with transparent huge
/// pages: one TLB entry then covers 2 MiB instead of 4 KiB, and decoding
/// from such a copy streams weights up to a third faster than from the 4 KiB
/// pages of a file's page cache (`docs/performance.md`). Where huge pages
/// are unavailable the copy is still made, in ordinary pages.
///
/// Errors when the OS refuses the allocation.
///
/// ```
/// let copy = kaiyuan_tensor::huge_page_copy(&[1u8, 2, 3]).unwrap();
/// assert_eq!(&copy[..3], &[1, 2, 3]);
/// ```
pub fn huge_page_copy(bytes: &[u8]) -> std::io::Result<Mmap> {
    let mut map = huge_page_map(bytes.len())?;
    map[..bytes.len()].copy_from_slice(bytes);
    map.make_read_only()
}

/// `len` zeroed bytes of fresh private anonymous memory, writable, which on
/// Linux the kernel is asked to back with transparent huge pages (see
/// [`huge_page_copy`]). Loaders fill one such map with all the weights they
/// keep as stored, then make it read-only and share it among the tensors
/// ([`Tensor::from_mmap`](crate::Tensor::from_mmap)); one map is better than
/// one per tensor, because huge pages cover only whole, aligned 2 MiB
/// pieces of a map.
///
/// Errors when the OS refuses the allocation.
pub fn huge_page_map(len: usize) -> std::io::Result<memmap2::MmapMut> {
    // A zero-length map is an error; an empty one gets a spare byte.
    let map = memmap2::MmapMut::map_anon(len.max(1))?;
    #[cfg(target_os = "linux")]
    {
        // Advice only: refused (no THP in this kernel), the map stays valid.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    Ok(map)
}

/// A little-endian, suitably aligned range of a shared memory map, read as
/// elements of `dtype`.
#[derive(Debug, Clone)]
pub struct MappedBuffer {
    mmap: Arc<Mmap>,
    bytes: Range<usize>,
    dtype: DType,
}

impl MappedBuffer {
    /// Wraps `bytes` of `mmap` as elements of `dtype`.
    ///
    /// Fails when the range is outside the map, its length is not a multiple
    /// of the element size, its start is not aligned for the dtype, or the
    /// target is big-endian (file formats here are little-endian).
    pub fn new(mmap: Arc<Mmap>, bytes: Range<usize>, dtype: DType) -> Result<Self> {
        const OP: &str = "mapped buffer";
        if cfg!(target_endian = "big") {
            return Err(TensorError::invalid(
                OP,
                "memory-mapped tensors need a little-endian target",
            ));
        }
        if bytes.start > bytes.end || bytes.end > mmap.len() {
            return Err(TensorError::invalid(
                OP,
                format!(
                    "byte range {bytes:?} lies outside a map of {} bytes",
                    mmap.len()
                ),
            ));
        }
        let size = dtype.size_in_bytes();
        if !(bytes.end - bytes.start).is_multiple_of(size) {
            return Err(TensorError::invalid(
                OP,
                format!(
                    "{} bytes is not a whole number of {dtype} elements",
                    bytes.end - bytes.start
                ),
            ));
        }
        let address = mmap.as_ptr() as usize + bytes.start;
        if !address.is_multiple_of(size) {
            return Err(TensorError::invalid(
                OP,
                format!("byte offset {} is not aligned for {dtype}", bytes.start),
            ));
        }
        Ok(Self { mmap, bytes, dtype })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        (self.bytes.end - self.bytes.start) / self.dtype.size_in_bytes()
    }

    /// Whether the range holds no element.
    pub fn is_empty(&self) -> bool {
        self.bytes.start == self.bytes.end
    }

    /// The address of the first mapped byte (to check zero-copy).
    pub fn as_ptr(&self) -> *const u8 {
        self.mmap[self.bytes.clone()].as_ptr()
    }

    fn typed<T: Element>(&self) -> Option<&[T]> {
        if T::DTYPE != self.dtype {
            return None;
        }
        bytemuck::try_cast_slice(&self.mmap[self.bytes.clone()]).ok()
    }
}

impl OwnedBuffer {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            OwnedBuffer::F32(_) => DType::F32,
            OwnedBuffer::F16(_) => DType::F16,
            OwnedBuffer::BF16(_) => DType::BF16,
            OwnedBuffer::F64(_) => DType::F64,
            OwnedBuffer::U32(_) => DType::U32,
            OwnedBuffer::I64(_) => DType::I64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            OwnedBuffer::F32(a) => a.len(),
            OwnedBuffer::F16(a) => a.len(),
            OwnedBuffer::BF16(a) => a.len(),
            OwnedBuffer::F64(a) => a.len(),
            OwnedBuffer::U32(a) => a.len(),
            OwnedBuffer::I64(a) => a.len(),
        }
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Storage {
    /// The device holding the buffer.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(c) => c.device(),
        }
    }

    /// The element type of the buffer.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(CpuStorage::Owned(b)) => b.dtype(),
            Storage::Cpu(CpuStorage::Mapped(m)) => m.dtype(),
            Storage::Cuda(c) => c.dtype(),
        }
    }

    /// Number of elements in the buffer (not in a view of it).
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(CpuStorage::Owned(b)) => b.len(),
            Storage::Cpu(CpuStorage::Mapped(m)) => m.len(),
            Storage::Cuda(c) => c.len(),
        }
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole buffer as a slice of `T`, when `T` is its dtype.
    pub(crate) fn cpu_slice<T: Element>(&self) -> Option<&[T]> {
        match self {
            Storage::Cpu(CpuStorage::Owned(b)) => T::slice(b),
            Storage::Cpu(CpuStorage::Mapped(m)) => m.typed::<T>(),
            Storage::Cuda(_) => None,
        }
    }

    pub(crate) fn from_vec<T: Element>(values: Vec<T>) -> Self {
        Storage::Cpu(CpuStorage::Owned(T::wrap(values)))
    }
}
