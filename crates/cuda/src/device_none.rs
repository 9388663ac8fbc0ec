//! The build without the `cuda` feature: the same names as the CUDA build,
//! as uninhabited types, so callers never write `cfg`.

use std::convert::Infallible;
use std::marker::PhantomData;

use super::{Arg, DeviceInfo, Launch};
use crate::compile::Compiler;
use crate::kernels::KernelFile;
use crate::{CudaError, Result};

/// Types that can live in a device buffer (every `Copy` type here).
pub trait DeviceValue: Copy + Send + Sync + std::fmt::Debug + 'static {}
impl<T: Copy + Send + Sync + std::fmt::Debug + 'static> DeviceValue for T {}

/// A read-only kernel argument (never constructed in this build).
#[derive(Debug)]
pub struct BufferRef<'a>(Infallible, PhantomData<&'a ()>);

/// A writable kernel argument (never constructed in this build).
#[derive(Debug)]
pub struct BufferMut<'a>(Infallible, PhantomData<&'a mut ()>);

/// A device buffer; uninhabited without the `cuda` feature.
#[derive(Debug)]
pub enum GpuBuffer<T: DeviceValue> {
    #[doc(hidden)]
    Unavailable(Infallible, PhantomData<T>),
}

impl<T: DeviceValue> GpuBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match *self {
            GpuBuffer::Unavailable(never, _) => match never {},
        }
    }

    /// This buffer as an input argument of a launch.
    pub fn arg(&self) -> Arg<'_> {
        match *self {
            GpuBuffer::Unavailable(never, _) => match never {},
        }
    }

    /// This buffer as an output argument of a launch.
    pub fn arg_mut(&mut self) -> Arg<'_> {
        match *self {
            GpuBuffer::Unavailable(never, _) => match never {},
        }
    }
}

/// A CUDA device; uninhabited without the `cuda` feature.
#[derive(Debug)]
pub enum GpuDevice {}

fn unavailable() -> CudaError {
    CudaError::no_device("kaiyuan was built without the `cuda` feature")
}

pub(super) fn device_count() -> Result<usize> {
    Err(unavailable())
}

pub(super) fn probe(_ordinal: usize) -> Result<DeviceInfo> {
    Err(unavailable())
}

impl GpuDevice {
    /// Always [`CudaError::NoDevice`] in this build.
    pub fn new(_ordinal: usize) -> Result<Self> {
        Err(unavailable())
    }

    /// What the device is.
    pub fn info(&self) -> &DeviceInfo {
        match *self {}
    }

    /// The compiler this device compiles its kernels with.
    pub fn compiler(&self) -> &Compiler {
        match *self {}
    }

    /// Compiles and loads `file` now instead of at its first launch.
    pub fn load(&self, _file: &'static KernelFile) -> Result<()> {
        match *self {}
    }

    /// Copies `host` into a new device buffer.
    pub fn upload<T: DeviceValue>(&self, _host: &[T]) -> Result<GpuBuffer<T>> {
        match *self {}
    }

    /// Copies a device buffer back to the host.
    pub fn download<T: DeviceValue>(&self, _buffer: &GpuBuffer<T>) -> Result<Vec<T>> {
        match *self {}
    }

    /// A new buffer of `len` zeros.
    pub fn zeros<T: DeviceValue>(&self, _len: usize) -> Result<GpuBuffer<T>> {
        match *self {}
    }

    /// Sets every element of `buffer` to zero.
    pub fn fill_zeros<T: DeviceValue>(&self, _buffer: &mut GpuBuffer<T>) -> Result<()> {
        match *self {}
    }

    /// Milliseconds of device time per call of `work`.
    pub fn time_ms(
        &self,
        _repeats: usize,
        _calls: usize,
        _work: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        match *self {}
    }

    /// Copies `source` into `target` on the device.
    pub fn copy<T: DeviceValue>(
        &self,
        _source: &GpuBuffer<T>,
        _target: &mut GpuBuffer<T>,
    ) -> Result<()> {
        match *self {}
    }

    /// Waits for queued work.
    pub fn synchronize(&self) -> Result<()> {
        match *self {}
    }

    /// Launches a kernel.
    pub fn launch(
        &self,
        _file: &'static KernelFile,
        _function: &str,
        _launch: Launch,
        _args: &mut [Arg<'_>],
    ) -> Result<()> {
        match *self {}
    }
}
