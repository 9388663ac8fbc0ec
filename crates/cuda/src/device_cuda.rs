//! The `cuda` build of [`GpuDevice`] and [`GpuBuffer`], over cudarc.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    DeviceRepr, DriverError, LaunchConfig, PushKernelArg, SyncOnDrop, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use super::{Arg, DeviceInfo, Launch};
use crate::compile::Compiler;
use crate::kernels::KernelFile;
use crate::{CudaError, Result};

/// Types that can live in a device buffer.
pub trait DeviceValue:
    DeviceRepr + ValidAsZeroBits + Unpin + Send + Sync + std::fmt::Debug + 'static
{
}
impl<T: DeviceRepr + ValidAsZeroBits + Unpin + Send + Sync + std::fmt::Debug + 'static> DeviceValue
    for T
{
}

/// A read-only view of a device buffer, as a kernel argument.
#[derive(Debug)]
pub struct BufferRef<'a>(&'a dyn ErasedSlice);

/// A writable view of a device buffer, as a kernel argument.
#[derive(Debug)]
pub struct BufferMut<'a>(&'a mut dyn ErasedSlice);

trait ErasedSlice: std::fmt::Debug {
    fn ptr<'a>(&'a self, stream: &'a CudaStream) -> (u64, SyncOnDrop<'a>);
    fn ptr_mut<'a>(&'a mut self, stream: &'a CudaStream) -> (u64, SyncOnDrop<'a>);
}

impl<T: DeviceValue> ErasedSlice for CudaSlice<T> {
    fn ptr<'a>(&'a self, stream: &'a CudaStream) -> (u64, SyncOnDrop<'a>) {
        self.device_ptr(stream)
    }
    fn ptr_mut<'a>(&'a mut self, stream: &'a CudaStream) -> (u64, SyncOnDrop<'a>) {
        self.device_ptr_mut(stream)
    }
}

/// A one-dimensional buffer of `T` in device memory. The driver refuses
/// allocations of 0 bytes, so an empty buffer holds one unused element
/// (`len` is 0).
#[derive(Debug)]
pub struct GpuBuffer<T: DeviceValue> {
    slice: CudaSlice<T>,
    len: usize,
}

impl<T: DeviceValue> GpuBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// This buffer as an input argument of a launch.
    pub fn arg(&self) -> Arg<'_> {
        Arg::In(BufferRef(&self.slice))
    }

    /// This buffer as an output argument of a launch.
    pub fn arg_mut(&mut self) -> Arg<'_> {
        Arg::Out(BufferMut(&mut self.slice))
    }

    /// The cudarc slice, for libraries such as cuBLAS.
    pub(crate) fn slice(&self) -> &CudaSlice<T> {
        &self.slice
    }

    /// The cudarc slice, mutable.
    pub(crate) fn slice_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }
}

/// One CUDA device with its own context, stream and loaded modules.
#[derive(Debug)]
pub struct GpuDevice {
    info: DeviceInfo,
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    compiler: Compiler,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, String), CudaFunction>>,
    /// The default pool, set to keep freed memory (`None`: left as is).
    pool: Option<MemPool>,
}

/// A driver error as `CUDA_ERROR_NAME (the driver's sentence)`.
fn describe(error: DriverError) -> String {
    match error.error_string() {
        Ok(text) => format!("{:?} ({})", error.0, text.to_string_lossy()),
        Err(_) => format!("{:?}", error.0),
    }
}

fn driver_present() -> Result<()> {
    // SAFETY: `is_culib_present` only tries to dlopen libcuda and reports
    // whether it could; it has no preconditions and does not panic.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::no_device(
            "the CUDA driver library (libcuda.so) is not installed",
        ))
    }
}

/// Runs a driver call that should return an error, not panic; a panic inside
/// cudarc becomes an error too.
fn guarded<T>(what: &str, call: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
        Err(CudaError::no_device(format!(
            "{what} panicked inside cudarc"
        )))
    })
}

pub(super) fn device_count() -> Result<usize> {
    driver_present()?;
    guarded("cuDeviceGetCount", || {
        CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .map_err(|e| CudaError::no_device(format!("the driver reports {}", describe(e))))
    })
}

pub(super) fn probe(ordinal: usize) -> Result<DeviceInfo> {
    let count = device_count()?;
    if count == 0 {
        return Err(CudaError::no_device("the driver sees no device"));
    }
    if ordinal >= count {
        return Err(CudaError::no_device(format!(
            "device {ordinal} was asked for, the driver sees {count}"
        )));
    }
    let context = open(ordinal)?;
    info_of(&context, ordinal)
}

fn open(ordinal: usize) -> Result<Arc<CudaContext>> {
    guarded("cuCtxCreate", || {
        CudaContext::new(ordinal)
            .map_err(|e| CudaError::no_device(format!("device {ordinal}: {}", describe(e))))
    })
}

/// The device's default memory pool (where stream-ordered allocations
/// come from).
#[derive(Debug)]
struct MemPool(cudarc::driver::sys::CUmemoryPool);

// SAFETY: a pool handle is an opaque driver object; the driver API may be
// called with it from any thread.
unsafe impl Send for MemPool {}
// SAFETY: as above; the handle itself is never written after creation.
unsafe impl Sync for MemPool {}

/// Keeps memory freed into the device's default pool there instead of
/// handing it back to the driver at every synchronisation (the pool's
/// default release threshold is 0), so that the buffers one training step
/// frees serve the next step's allocations; an allocation that fails trims
/// the pool and tries again ([`GpuDevice::zeros`]). Best effort: `None`
/// when the driver refuses, leaving the default.
fn keep_freed_memory(context: &Arc<CudaContext>) -> Option<MemPool> {
    use cudarc::driver::sys;
    context.bind_to_thread().ok()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: the driver is loaded (the context exists) and bound to this
    // thread; `pool` is a valid place for the handle it writes.
    let found = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, context.cu_device()) };
    if found != sys::CUresult::CUDA_SUCCESS || pool.is_null() {
        return None;
    }
    let mut threshold: u64 = u64::MAX;
    // SAFETY: `pool` is the device's live default pool, and the release
    // threshold attribute reads one `cuuint64_t` through the pointer, which
    // points at `threshold` for the duration of the call.
    let set = unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    };
    (set == sys::CUresult::CUDA_SUCCESS).then_some(MemPool(pool))
}

fn info_of(context: &Arc<CudaContext>, ordinal: usize) -> Result<DeviceInfo> {
    let driver = |what: &str| {
        let what = what.to_string();
        move |e| CudaError::driver(what, describe(e))
    };
    Ok(DeviceInfo {
        ordinal,
        name: context.name().map_err(driver("cuDeviceGetName"))?,
        compute_capability: context
            .compute_capability()
            .map_err(driver("compute capability"))?,
        total_memory: context.total_mem().map_err(driver("cuDeviceTotalMem"))?,
    })
}

impl GpuDevice {
    /// Opens device `ordinal`: probes it (never panics), creates its context
    /// and stream, and readies NVRTC. Kernel files compile on first use.
    pub fn new(ordinal: usize) -> Result<Self> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(CudaError::no_device(if count == 0 {
                "the driver sees no device".to_string()
            } else {
                format!("device {ordinal} was asked for, the driver sees {count}")
            }));
        }
        let context = open(ordinal)?;
        let info = info_of(&context, ordinal)?;
        // Every buffer would otherwise get two CUDA events (created and
        // destroyed with it) to order its uses across streams.
        // SAFETY: this crate queues all work, copies and frees on the one
        // stream below (cuBLAS is bound to it too) and never makes another,
        // so stream order alone orders every use of every buffer.
        unsafe { context.disable_event_tracking() };
        let pool = keep_freed_memory(&context);
        let stream = context.default_stream();
        Ok(Self {
            info,
            context,
            stream,
            compiler: Compiler::new()?,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            pool,
        })
    }

    /// Runs an allocation; when it fails and the pool keeps freed memory,
    /// waits for the queue, hands that memory back to the driver and tries
    /// once more.
    fn allocating<T>(
        &self,
        what: &str,
        allocate: impl Fn() -> std::result::Result<T, cudarc::driver::DriverError>,
    ) -> Result<T> {
        match allocate() {
            Ok(value) => Ok(value),
            Err(first) => {
                let Some(pool) = &self.pool else {
                    return Err(CudaError::driver(what, describe(first)));
                };
                let _ = self.stream.synchronize();
                // SAFETY: `pool` is this device's default pool and every
                // queued use of its memory has finished (synchronised above);
                // trimming only returns unused memory to the driver.
                let _ = unsafe { cudarc::driver::sys::cuMemPoolTrimTo(pool.0, 0) };
                allocate().map_err(|e| CudaError::driver(what, describe(e)))
            }
        }
    }

    /// What the device is.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The compiler this device compiles its kernels with.
    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// The device's stream, for libraries such as cuBLAS.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Compiles and loads `file` now instead of at its first launch.
    ///
    /// # Errors
    /// Compilation or module loading failing.
    pub fn load(&self, file: &'static KernelFile) -> Result<()> {
        self.module(file).map(|_| ())
    }

    /// Copies `host` into a new device buffer.
    pub fn upload<T: DeviceValue>(&self, host: &[T]) -> Result<GpuBuffer<T>> {
        if host.is_empty() {
            return self.zeros(0);
        }
        let slice = self.allocating("host-to-device copy", || self.stream.clone_htod(host))?;
        Ok(GpuBuffer {
            slice,
            len: host.len(),
        })
    }

    /// Copies a device buffer back to the host (waits for the stream).
    pub fn download<T: DeviceValue>(&self, buffer: &GpuBuffer<T>) -> Result<Vec<T>> {
        let mut values = self
            .stream
            .clone_dtoh(&buffer.slice)
            .map_err(|e| CudaError::driver("device-to-host copy", describe(e)))?;
        values.truncate(buffer.len);
        Ok(values)
    }

    /// A new buffer of `len` zeros.
    pub fn zeros<T: DeviceValue>(&self, len: usize) -> Result<GpuBuffer<T>> {
        let slice = self.allocating("allocation", || self.stream.alloc_zeros(len.max(1)))?;
        Ok(GpuBuffer { slice, len })
    }

    /// Sets every element of `buffer` to zero (for accumulating outputs).
    pub fn fill_zeros<T: DeviceValue>(&self, buffer: &mut GpuBuffer<T>) -> Result<()> {
        self.stream
            .memset_zeros(&mut buffer.slice)
            .map_err(|e| CudaError::driver("memset", describe(e)))
    }

    /// Milliseconds of device time per call of `work` (which queues
    /// launches): one warm-up call, then the median of `repeats` timings,
    /// each measured with CUDA events around `calls` back-to-back calls.
    pub fn time_ms(
        &self,
        repeats: usize,
        calls: usize,
        mut work: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        let event = || {
            self.context
                .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| CudaError::driver("event", describe(e)))
        };
        work()?;
        self.synchronize()?;
        let calls = calls.max(1);
        let mut samples = Vec::with_capacity(repeats.max(1));
        for _ in 0..repeats.max(1) {
            let (start, end) = (event()?, event()?);
            start
                .record(&self.stream)
                .map_err(|e| CudaError::driver("event record", describe(e)))?;
            for _ in 0..calls {
                work()?;
            }
            end.record(&self.stream)
                .map_err(|e| CudaError::driver("event record", describe(e)))?;
            let ms = start
                .elapsed_ms(&end)
                .map_err(|e| CudaError::driver("event elapsed", describe(e)))?;
            samples.push(ms as f64 / calls as f64);
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples[samples.len() / 2])
    }

    /// Copies `source` into `target` on the device (same length).
    pub fn copy<T: DeviceValue>(
        &self,
        source: &GpuBuffer<T>,
        target: &mut GpuBuffer<T>,
    ) -> Result<()> {
        super::check_len("copy", "target", target, source.len())?;
        if source.len == 0 {
            return Ok(());
        }
        self.stream
            .memcpy_dtod(&source.slice, &mut target.slice)
            .map_err(|e| CudaError::driver("device-to-device copy", describe(e)))
    }

    /// Waits until every queued launch and copy has finished, and reports
    /// any error a kernel raised.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| CudaError::driver("stream synchronize", describe(e)))
    }

    /// Launches `function` of `file` (compiling and loading the file on
    /// first use) with `args`.
    ///
    /// # Errors
    /// Compilation, module loading or the launch itself failing. A kernel
    /// that faults reports at the next [`GpuDevice::synchronize`].
    pub fn launch(
        &self,
        file: &'static KernelFile,
        function: &str,
        launch: Launch,
        args: &mut [Arg<'_>],
    ) -> Result<()> {
        let function_handle = self.function(file, function)?;
        enum Value {
            U64(u64),
            I32(i32),
            F32(f32),
        }
        let stream: &CudaStream = &self.stream;
        let mut guards: Vec<SyncOnDrop<'_>> = Vec::with_capacity(args.len());
        let mut values: Vec<Value> = Vec::with_capacity(args.len());
        for arg in args.iter_mut() {
            match arg {
                Arg::In(buffer) => {
                    let (pointer, guard) = buffer.0.ptr(stream);
                    guards.push(guard);
                    values.push(Value::U64(pointer));
                }
                Arg::Out(buffer) => {
                    let (pointer, guard) = buffer.0.ptr_mut(stream);
                    guards.push(guard);
                    values.push(Value::U64(pointer));
                }
                Arg::U64(v) => values.push(Value::U64(*v)),
                Arg::I32(v) => values.push(Value::I32(*v)),
                Arg::F32(v) => values.push(Value::F32(*v)),
            }
        }
        if launch.shared_bytes > OPT_IN_SHARED_BYTES {
            // Above 48 KiB a kernel must opt in to its dynamic shared memory.
            let bytes = i32::try_from(launch.shared_bytes).unwrap_or(i32::MAX);
            function_handle
                .set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes,
                )
                .map_err(|e| {
                    CudaError::driver(
                        format!("{function}: opting in to {bytes} bytes of shared memory"),
                        describe(e),
                    )
                })?;
        }
        let mut builder = stream.launch_builder(&function_handle);
        for value in &values {
            match value {
                Value::U64(v) => builder.arg(v),
                Value::I32(v) => builder.arg(v),
                Value::F32(v) => builder.arg(v),
            };
        }
        let config = LaunchConfig {
            grid_dim: launch.grid,
            block_dim: launch.block,
            shared_mem_bytes: launch.shared_bytes,
        };
        // SAFETY: every op launcher in `crate::ops` passes, in order, the
        // arguments its kernel's `extern "C"` signature declares (device
        // pointers as u64 of buffers whose lengths it checked, then scalars of
        // the declared widths); the buffers outlive the launch because the
        // guards above hold their borrows until after it.
        let launched = unsafe { builder.launch(config) };
        drop(guards);
        launched
            .map(|_| ())
            .map_err(|e| CudaError::driver(format!("launch of {function}"), describe(e)))
    }

    fn function(&self, file: &'static KernelFile, function: &str) -> Result<CudaFunction> {
        let key = (file.name, function.to_string());
        if let Some(hit) = lock(&self.functions).get(&key) {
            return Ok(hit.clone());
        }
        let module = self.module(file)?;
        let handle = module.load_function(function).map_err(|e| {
            CudaError::driver(
                format!("kernels/{}.cu has no {function}", file.name),
                describe(e),
            )
        })?;
        lock(&self.functions).insert(key, handle.clone());
        Ok(handle)
    }

    fn module(&self, file: &'static KernelFile) -> Result<Arc<CudaModule>> {
        if let Some(hit) = lock(&self.modules).get(file.name) {
            return Ok(Arc::clone(hit));
        }
        let arch = file
            .arch_for(&self.info.arch())
            .map_err(|log| CudaError::Compile {
                file: file.name,
                arch: self.info.arch(),
                log,
            })?;
        let compiled = self.compiler.compile(file, &arch)?;
        let module = self
            .context
            .load_module(Ptx::from_binary(compiled.cubin.clone()))
            .map_err(|e| {
                CudaError::driver(format!("loading kernels/{}.cu", file.name), describe(e))
            })?;
        lock(&self.modules).insert(file.name, Arc::clone(&module));
        Ok(module)
    }
}

/// Dynamic shared memory a launch gets without opting in.
const OPT_IN_SHARED_BYTES: u32 = 48 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned cache is still a valid cache.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
