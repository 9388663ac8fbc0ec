//! A CUDA device: context, stream, loaded kernel modules, device buffers and
//! kernel launches.
//!
//! Without the `cuda` feature [`GpuDevice`] and [`GpuBuffer`] still exist, as
//! uninhabited types: [`GpuDevice::new`] returns [`CudaError::NoDevice`], so
//! code above never writes `cfg`, and every op launcher in [`crate::ops`] is
//! written once for both builds.

use crate::{CudaError, Result};

/// Element types the kernels take: `f32`, `bf16`, `f16` (arithmetic in f32).
pub trait GpuFloat: imp::DeviceValue + Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The suffix of this dtype's kernel names (`softmax_bf16`).
    const SUFFIX: &'static str;
    /// Widens to f32.
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this type (nearest, ties to even).
    fn from_f32(value: f32) -> Self;
}

impl GpuFloat for f32 {
    const SUFFIX: &'static str = "f32";
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl GpuFloat for half::bf16 {
    const SUFFIX: &'static str = "bf16";
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        half::bf16::from_f32(value)
    }
}

impl GpuFloat for half::f16 {
    const SUFFIX: &'static str = "f16";
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        half::f16::from_f32(value)
    }
}

/// What [`probe`] found about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device ordinal.
    pub ordinal: usize,
    /// The marketing name (`NVIDIA H200`).
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Total device memory in bytes.
    pub total_memory: usize,
}

impl DeviceInfo {
    /// The NVRTC architecture for this device (`sm_90`).
    pub fn arch(&self) -> String {
        format!(
            "sm_{}{}",
            self.compute_capability.0, self.compute_capability.1
        )
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

impl Launch {
    /// A one-dimensional launch of `threads` threads per block covering `n`
    /// items, one per thread (grid capped at 2^31 − 1 blocks; kernels use a
    /// grid-stride loop).
    pub fn linear(n: usize, threads: u32) -> Self {
        let blocks = n.div_ceil(threads as usize).clamp(1, i32::MAX as usize) as u32;
        Self {
            grid: (blocks, 1, 1),
            block: (threads, 1, 1),
            shared_bytes: 0,
        }
    }

    /// One block of `threads` threads per row, `rows` rows along grid x
    /// (rows beyond 2^31 − 1 are not supported by one launch).
    pub fn rows(rows: usize, threads: u32) -> Self {
        Self {
            grid: (rows.clamp(1, i32::MAX as usize) as u32, 1, 1),
            block: (threads, 1, 1),
            shared_bytes: 0,
        }
    }
}

/// One kernel argument: a device buffer (read or written) or a scalar.
#[derive(Debug)]
pub enum Arg<'a> {
    /// A buffer the kernel reads.
    In(imp::BufferRef<'a>),
    /// A buffer the kernel writes (and may read).
    Out(imp::BufferMut<'a>),
    /// An element count or other 64-bit unsigned value.
    U64(u64),
    /// A dimension, index or flag.
    I32(i32),
    /// A scalar such as a scale or an epsilon.
    F32(f32),
}

/// Checks that a buffer holds `expected` elements.
pub(crate) fn check_len<T: imp::DeviceValue>(
    op: &'static str,
    what: &str,
    buffer: &GpuBuffer<T>,
    expected: usize,
) -> Result<()> {
    if buffer.len() != expected {
        return Err(CudaError::shape(
            op,
            format!(
                "{what} holds {} elements, the shapes given need {expected}",
                buffer.len()
            ),
        ));
    }
    Ok(())
}

/// Probes `ordinal` without panicking: a missing driver library, a driver
/// with no device, or a missing ordinal all give [`CudaError::NoDevice`].
///
/// ```
/// // On a machine without CUDA (or a build without the `cuda` feature):
/// match kaiyuan_cuda::probe(0) {
///     Ok(info) => println!("{} ({})", info.name, info.arch()),
///     Err(error) => assert!(error.to_string().starts_with("no CUDA device")),
/// }
/// ```
pub fn probe(ordinal: usize) -> Result<DeviceInfo> {
    imp::probe(ordinal)
}

/// The number of CUDA devices, or why there are none.
pub fn device_count() -> Result<usize> {
    imp::device_count()
}

pub use imp::{DeviceValue, GpuBuffer, GpuDevice};

#[cfg(all(feature = "cuda", feature = "emulator"))]
compile_error!("the `cuda` and `emulator` features of kaiyuan-cuda exclude each other: enable one");

#[cfg(feature = "cuda")]
#[path = "device_cuda.rs"]
mod imp;

#[cfg(all(feature = "emulator", not(feature = "cuda")))]
#[path = "device_emu.rs"]
mod imp;

#[cfg(not(any(feature = "cuda", feature = "emulator")))]
#[path = "device_none.rs"]
mod imp;

impl<T: imp::DeviceValue> GpuBuffer<T> {
    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
