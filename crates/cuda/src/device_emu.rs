//! The `emulator` build of [`GpuDevice`] and [`GpuBuffer`]: the kernels run
//! on the CPU, so the GPU parity tests execute the real kernel sources on a
//! machine without a GPU (CI).
//!
//! - Every kernel file is compiled on first use as host C++ by the system's
//!   compiler (`$CXX`, else `c++`) into a shared library, with the CUDA
//!   emulation of `emu/include/` force-included (`kaiyuan_emu.h`: keywords,
//!   indices, shared memory, barriers, warp shuffles, atomics, half types,
//!   device math) and bounds, alignment and null checks that trap. A file's
//!   block of inline-PTX helpers (between `// ---- PTX helpers` and
//!   `// ---- end of PTX helpers`) is replaced by the emulator's versions
//!   (`kaiyuan_emu_ptx.h`: cp.async, ldmatrix, mma.sync m16n8k16); any
//!   other inline PTX fails to compile, and the file is reported (at
//!   [`GpuDevice::load`] or launch) as [`CudaError::Emulator`].
//! - The libraries are cached under `target/cuda-emu/` (or
//!   `$KAIYUAN_CUDA_EMU_CACHE`), named by a hash of the source, the headers,
//!   the flags and the compiler's version, and written atomically.
//! - A launch runs in the emulator's runtime (`emu/runtime.cpp`, one library
//!   per process): blocks one after the other, the threads of a block as
//!   fibers, exited threads dropping out of barriers and warp calls.
//!   Deadlocks, faults and broken CUDA rules end the launch with an error
//!   naming the block, the thread and (for faults) the source line.
//! - Buffers are host memory with a guard page before and after, the data
//!   ending at the back guard (16-byte aligned) and canary bytes in the gaps:
//!   an access past a buffer faults (or, for a write into the few bytes of
//!   padding, is found after the launch), and inputs ([`Arg::In`]) are
//!   read-only while the kernel runs.
//!
//! Environment: `KAIYUAN_CUDA_EMU_LOG=1` prints every launch (file, kernel,
//! configuration, time) to stderr; `KAIYUAN_CUDA_EMU_ORDER=forward|reverse`
//! fixes the order the threads of a block start in (default: forward in even
//! blocks, reverse in odd ones, to expose a missing `__syncthreads`);
//! `KAIYUAN_CUDA_EMU_CXXFLAGS` adds compiler flags;
//! `KAIYUAN_CUDA_EMU_KERNEL_DIR=dir` builds `dir/<name>.cu` instead of the
//! embedded kernel file where it exists (mutation testing).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};
use sha2::{Digest, Sha256};

use super::{Arg, DeviceInfo, Launch};
use crate::compile::Compiler;
use crate::kernels::{COMMON_HEADER, KernelFile, TENSOR_CORE_HEADER};
use crate::{CudaError, Result};

mod sealed {
    /// Implemented only for the types listed in `device_values!`.
    pub trait Sealed {}
}

/// Types that can live in a device buffer: the integer and floating-point
/// primitives and the half types, for which every bit pattern a kernel may
/// leave behind is a valid value.
pub trait DeviceValue: sealed::Sealed + Copy + Send + Sync + std::fmt::Debug + 'static {}

macro_rules! device_values {
    ($($t:ty),* $(,)?) => {
        $(
            impl sealed::Sealed for $t {}
            impl DeviceValue for $t {}
        )*
    };
}

device_values!(
    u8,
    i8,
    u16,
    i16,
    u32,
    i32,
    u64,
    i64,
    usize,
    isize,
    f32,
    f64,
    half::bf16,
    half::f16
);

/// The name [`GpuDevice::info`] reports.
pub const EMULATOR_NAME: &str = "kaiyuan CUDA emulator (CPU)";

/// Dynamic shared memory one launch may ask for: 163 KiB, the most an sm_80
/// block may opt in to (the smallest architecture the kernels target; the
/// `cuda` build opts in above 48 KiB).
pub const MAX_DYNAMIC_SHARED_BYTES: u32 = 163 * 1024;

// ---- guarded host memory ---------------------------------------------------------

/// Alignment of a buffer's first element (cudaMalloc gives 256; the kernels
/// need 16 at most, and ending the data at the guard page matters more).
const DATA_ALIGN: usize = 16;
/// What the padding between the data and the guard pages holds.
const CANARY: u8 = 0xa5;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

fn emulator_error(what: impl Into<String>, detail: impl Into<String>) -> CudaError {
    CudaError::Emulator {
        what: what.into(),
        detail: detail.into(),
    }
}

/// One buffer's memory: `[guard page][padding, data][guard page]`, the data
/// ending (rounded up to 16 bytes) at the back guard.
#[derive(Debug)]
struct HostMemory {
    /// The mapping, front guard page first.
    map: *mut u8,
    map_len: usize,
    /// The readable and writable pages between the guards.
    area: *mut u8,
    area_len: usize,
    /// The first element.
    data: *mut u8,
    /// Bytes of data.
    bytes: usize,
}

// SAFETY: HostMemory owns its mapping exclusively (nothing else holds its
// pointers); reads and writes go through `&self`/`&mut self` (and through a
// launch, which borrows every buffer it passes), so the usual borrow rules
// order every access.
unsafe impl Send for HostMemory {}
// SAFETY: as for Send: shared references only read (or pass the buffer to a
// launch as read-only input, protected read-only meanwhile).
unsafe impl Sync for HostMemory {}

/// Where an address lies relative to a buffer.
#[derive(Debug)]
enum Place {
    /// `n` bytes before the first element.
    Before(usize),
    /// Inside the data, at this byte offset.
    Inside(usize),
    /// Past the data, at this byte offset from its start.
    After(usize),
}

impl HostMemory {
    fn new(bytes: usize) -> Result<Self> {
        let page = page_size();
        let too_big = || emulator_error("allocation", format!("{bytes} bytes is too large"));
        let padded = bytes
            .checked_next_multiple_of(DATA_ALIGN)
            .ok_or_else(too_big)?;
        let area_len = padded.checked_next_multiple_of(page).ok_or_else(too_big)?;
        let map_len = area_len.checked_add(2 * page).ok_or_else(too_big)?;
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing touches no existing memory.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(emulator_error(
                "allocation",
                format!(
                    "mmap of {map_len} bytes failed: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        let map = map.cast::<u8>();
        // SAFETY: `page + area_len <= map_len`, inside the mapping.
        let area = unsafe { map.add(page) };
        // SAFETY: `area_len - padded` is within the area.
        let data = unsafe { area.add(area_len - padded) };
        let memory = HostMemory {
            map,
            map_len,
            area,
            area_len,
            data,
            bytes,
        };
        // The guards stay PROT_NONE; the area between them becomes usable
        // (dropping `memory` unmaps everything on failure).
        memory.protect(false)?;
        memory.fill_canaries();
        Ok(memory)
    }

    /// The padding before and after the data: (start, length) pairs.
    fn padding(&self) -> [(*mut u8, usize); 2] {
        let front = self.data as usize - self.area as usize;
        let back = self.area_len - front - self.bytes;
        // SAFETY: `bytes` past `data` is the end of the data, inside the area.
        let end = unsafe { self.data.add(self.bytes) };
        [(self.area, front), (end, back)]
    }

    fn fill_canaries(&self) {
        for (start, len) in self.padding() {
            // SAFETY: the padding lies inside the readable and writable area,
            // outside the data (so no reference to the data overlaps it).
            unsafe { std::ptr::write_bytes(start, CANARY, len) };
        }
    }

    /// The first padding byte a kernel overwrote, if any.
    fn damaged_canary(&self) -> Option<Place> {
        let [(front, front_len), (back, back_len)] = self.padding();
        // SAFETY: both ranges are padding inside the readable area.
        let (front, back) = unsafe {
            (
                std::slice::from_raw_parts(front, front_len),
                std::slice::from_raw_parts(back, back_len),
            )
        };
        if let Some(i) = front.iter().position(|&b| b != CANARY) {
            return Some(Place::Before(front_len - i));
        }
        back.iter()
            .position(|&b| b != CANARY)
            .map(|i| Place::After(self.bytes + i))
    }

    /// Makes the area read-only (for an input during a launch) or readable
    /// and writable again.
    fn protect(&self, read_only: bool) -> Result<()> {
        if self.area_len == 0 {
            return Ok(());
        }
        let protection = if read_only {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        // SAFETY: the area is a page-aligned, page-multiple part of this
        // buffer's own mapping.
        let status = unsafe { libc::mprotect(self.area.cast(), self.area_len, protection) };
        if status != 0 {
            return Err(emulator_error(
                "mprotect",
                std::io::Error::last_os_error().to_string(),
            ));
        }
        Ok(())
    }

    /// Where `address` lies, if within this buffer's mapping.
    fn locate(&self, address: usize) -> Option<Place> {
        let (start, end) = (self.map as usize, self.map as usize + self.map_len);
        if address < start || address >= end {
            return None;
        }
        let data = self.data as usize;
        Some(if address < data {
            Place::Before(data - address)
        } else if address < data + self.bytes {
            Place::Inside(address - data)
        } else {
            Place::After(address - data)
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `data` is valid for `bytes` bytes, readable, and only
        // written through `&mut self` (or by a launch, which borrows `self`).
        unsafe { std::slice::from_raw_parts(self.data, self.bytes) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.bytes) }
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this length and is
        // unmapped once; no reference to it outlives `self`.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// A read-only view of a device buffer, as a kernel argument.
#[derive(Debug)]
pub struct BufferRef<'a>(&'a HostMemory);

/// A writable view of a device buffer, as a kernel argument.
#[derive(Debug)]
pub struct BufferMut<'a>(&'a mut HostMemory);

/// A one-dimensional buffer of `T` in (guarded) host memory.
#[derive(Debug)]
pub struct GpuBuffer<T: DeviceValue> {
    memory: HostMemory,
    len: usize,
    values: PhantomData<T>,
}

impl<T: DeviceValue> GpuBuffer<T> {
    fn with_len(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| emulator_error("allocation", format!("{len} elements is too large")))?;
        Ok(Self {
            memory: HostMemory::new(bytes)?,
            len,
            values: PhantomData,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// This buffer as an input argument of a launch (read-only while the
    /// kernel runs: a write faults).
    pub fn arg(&self) -> Arg<'_> {
        Arg::In(BufferRef(&self.memory))
    }

    /// This buffer as an output argument of a launch.
    pub fn arg_mut(&mut self) -> Arg<'_> {
        Arg::Out(BufferMut(&mut self.memory))
    }

    fn values(&self) -> Vec<T> {
        // SAFETY: the data is `len` values of `T`, 16-byte aligned, and every
        // bit pattern is a valid `T` (DeviceValue is sealed to such types).
        unsafe { std::slice::from_raw_parts(self.memory.data.cast::<T>(), self.len) }.to_vec()
    }
}

// ---- the C++ toolchain and the on-disk cache -----------------------------------------

/// The emulation headers, written to `include-<hash>/` in the cache.
const HEADERS: &[(&str, &str)] = &[
    (
        "kaiyuan_emu.h",
        include_str!("../emu/include/kaiyuan_emu.h"),
    ),
    (
        "kaiyuan_emu_runtime.h",
        include_str!("../emu/include/kaiyuan_emu_runtime.h"),
    ),
    (
        "kaiyuan_emu_ptx.h",
        include_str!("../emu/include/kaiyuan_emu_ptx.h"),
    ),
    ("cuda_fp16.h", include_str!("../emu/include/cuda_fp16.h")),
    ("cuda_bf16.h", include_str!("../emu/include/cuda_bf16.h")),
    (
        "math_constants.h",
        include_str!("../emu/include/math_constants.h"),
    ),
];

/// The runtime: scheduler, barriers, warp calls, fault handling.
const RUNTIME_SOURCE: &str = include_str!("../emu/runtime.cpp");

/// Flags of every compile (the runtime and the kernel files).
const BASE_FLAGS: &[&str] = &[
    "-std=c++20",
    "-O1",
    "-g",
    // binutils 2.40's addr2line names the wrong file for GCC's DWARF 5
    // line tables with `#line` markers.
    "-gdwarf-4",
    "-shared",
    "-fPIC",
    "-pthread",
    "-fno-strict-aliasing",
    "-ffp-contract=off",
    "-fno-math-errno",
];

/// Flags of the kernel files: an array index out of bounds, a misaligned
/// access (which faults on a GPU) or a null pointer traps (SIGILL), and the
/// launch reports the source line.
const KERNEL_FLAGS: &[&str] = &[
    "-fno-exceptions",
    "-Wno-unknown-pragmas",
    "-fsanitize=bounds,alignment,null,vla-bound,integer-divide-by-zero",
    "-fsanitize-undefined-trap-on-error",
    // Large stack frames probe every page, so an overflow hits the guard.
    "-fstack-clash-protection",
];

/// Lines that open and close a file's block of inline-PTX helpers.
const PTX_BLOCK_START: &str = "// ---- PTX helpers";
const PTX_BLOCK_END: &str = "// ---- end of PTX helpers";

/// The C++ compiler: the command and what `--version` says.
#[derive(Debug)]
struct Toolchain {
    command: Vec<String>,
    identity: String,
    extra_flags: Vec<String>,
}

impl Toolchain {
    fn find() -> std::result::Result<Self, String> {
        let spec = std::env::var("CXX")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "c++".to_string());
        let command: Vec<String> = spec.split_whitespace().map(str::to_string).collect();
        let (program, leading) = command
            .split_first()
            .ok_or_else(|| "CXX is empty".to_string())?;
        let output = Command::new(program)
            .args(leading)
            .arg("--version")
            .output()
            .map_err(|e| {
                format!("the C++ compiler `{spec}` could not be run ({e}); install g++ or set CXX")
            })?;
        if !output.status.success() {
            return Err(format!("`{spec} --version` failed ({})", output.status));
        }
        let extra_flags = std::env::var("KAIYUAN_CUDA_EMU_CXXFLAGS")
            .map(|flags| flags.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Self {
            identity: String::from_utf8_lossy(&output.stdout).into_owned(),
            command,
            extra_flags,
        })
    }

    /// 16 hex digits of SHA-256 over the compiler, the flags, the headers
    /// and `source`.
    fn key(&self, flags: &[&str], source: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.identity.as_bytes());
        for flag in flags
            .iter()
            .copied()
            .chain(self.extra_flags.iter().map(String::as_str))
        {
            hasher.update(flag.as_bytes());
            hasher.update(b"\n");
        }
        for (name, text) in HEADERS {
            hasher.update(name.as_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.update(source.as_bytes());
        hex16(&hasher.finalize())
    }
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `KAIYUAN_CUDA_EMU_CACHE`, else the workspace's `target/cuda-emu`, else a
/// directory under the system's temporary directory.
fn cache_dir() -> std::result::Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("KAIYUAN_CUDA_EMU_CACHE").filter(|d| !d.is_empty()) {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cuda-emu"));
    candidates.push(std::env::temp_dir().join("kaiyuan-cuda-emu"));
    let mut reasons = Vec::new();
    for dir in candidates {
        match std::fs::create_dir_all(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => reasons.push(format!("{}: {e}", dir.display())),
        }
    }
    Err(format!(
        "no cache directory could be created ({})",
        reasons.join("; ")
    ))
}

static TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// A fresh name beside `path` for writing it atomically.
fn temporary_beside(path: &Path) -> PathBuf {
    let n = TEMPORARY.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `text` to `path` atomically (a temporary file, then a rename).
fn write_atomically(path: &Path, text: &str) -> std::result::Result<(), String> {
    let temporary = temporary_beside(path);
    std::fs::write(&temporary, text).map_err(|e| format!("{}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("{}: {e}", path.display())
    })
}

/// The headers in `include-<hash>/` of the cache (written once, atomically).
fn include_dir(cache: &Path) -> std::result::Result<PathBuf, String> {
    let mut hasher = Sha256::new();
    for (name, text) in HEADERS {
        hasher.update(name.as_bytes());
        hasher.update(text.as_bytes());
    }
    let dir = cache.join(format!("include-{}", hex16(&hasher.finalize())));
    if HEADERS.iter().all(|(name, _)| dir.join(name).is_file()) {
        return Ok(dir);
    }
    let temporary = temporary_beside(&dir);
    std::fs::create_dir_all(&temporary).map_err(|e| format!("{}: {e}", temporary.display()))?;
    for (name, text) in HEADERS {
        std::fs::write(temporary.join(name), text)
            .map_err(|e| format!("{}: {e}", temporary.display()))?;
    }
    if std::fs::rename(&temporary, &dir).is_err() {
        // Another process got there first; its copy is identical.
        let _ = std::fs::remove_dir_all(&temporary);
    }
    if HEADERS.iter().all(|(name, _)| dir.join(name).is_file()) {
        Ok(dir)
    } else {
        Err(format!(
            "{}: the headers could not be written",
            dir.display()
        ))
    }
}

/// Builds `source` into `<stem>-<key>.so` in the cache, or finds it there.
/// A compile error (cached as `<stem>-<key>.err`) is `Err` with the
/// compiler's first errors.
fn build(
    toolchain: &Toolchain,
    cache: &Path,
    include: &Path,
    stem: &str,
    source: &str,
    kernel: bool,
) -> std::result::Result<PathBuf, String> {
    let flags: Vec<&str> = if kernel {
        BASE_FLAGS.iter().chain(KERNEL_FLAGS).copied().collect()
    } else {
        BASE_FLAGS.to_vec()
    };
    let key = toolchain.key(&flags, source);
    let library = cache.join(format!("{stem}-{key}.so"));
    if library.is_file() {
        return Ok(library);
    }
    let failure = cache.join(format!("{stem}-{key}.err"));
    if let Ok(text) = std::fs::read_to_string(&failure) {
        return Err(text);
    }
    let cpp = cache.join(format!("{stem}-{key}.cpp"));
    write_atomically(&cpp, source)?;
    let temporary = temporary_beside(&library);
    let (program, leading) = toolchain
        .command
        .split_first()
        .ok_or_else(|| "CXX is empty".to_string())?;
    let mut command = Command::new(program);
    command
        .args(leading)
        .args(&flags)
        .args(&toolchain.extra_flags)
        .arg("-I")
        .arg(include);
    if kernel {
        command.arg("-include").arg(include.join("kaiyuan_emu.h"));
    }
    command.arg("-o").arg(&temporary).arg(&cpp).arg("-ldl");
    let output = command
        .output()
        .map_err(|e| format!("the C++ compiler could not be run: {e}"))?;
    if output.status.success() {
        std::fs::rename(&temporary, &library).map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            format!("{}: {e}", library.display())
        })?;
        return Ok(library);
    }
    let _ = std::fs::remove_file(&temporary);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let log_path = cache.join(format!("{stem}-{key}.log"));
    let _ = write_atomically(&log_path, &log);
    let mut errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("error"))
        .take(8)
        .collect();
    if errors.is_empty() {
        errors = log.lines().take(8).collect();
    }
    let summary = format!(
        "the C++ compiler failed ({}): {} (full log: {})",
        output.status,
        errors.join(" | "),
        log_path.display()
    );
    // Only a compile error in the source is remembered (not a crash, a
    // signal or a full disk), so a later run does not try again in vain.
    if output.status.code() == Some(1) && log.contains(": error:") {
        let _ = write_atomically(&failure, &summary);
    }
    Err(summary)
}

/// The program the C++ compiler sees for a kernel file: the common header
/// and the file, with `#line` markers, the inline-PTX helper block replaced
/// by `kaiyuan_emu_ptx.h`, and `extern __shared__` declarations naming the
/// runtime's per-thread dynamic shared memory.
fn emulator_program(file: &KernelFile) -> std::result::Result<String, String> {
    let source = kernel_source(file)?;
    let body = replace_ptx_block(file.name, &source)?;
    let tensor_cores = if file.tensor_cores {
        format!(
            "#line 1 \"tensor_core.cuh\"\n{}\n",
            replace_ptx_block("tensor_core", TENSOR_CORE_HEADER)?
        )
    } else {
        String::new()
    };
    Ok(format!(
        "#line 1 \"common.cuh\"\n{}\n{tensor_cores}#line 1 \"{}.cu\"\n{}\n",
        rewrite_extern_shared(COMMON_HEADER),
        file.name,
        rewrite_extern_shared(&body)
    ))
}

/// The file's embedded text, or `$KAIYUAN_CUDA_EMU_KERNEL_DIR/<name>.cu`
/// when that exists (to run the tests against modified copies of the
/// kernel files, as mutation testing does, without rebuilding).
fn kernel_source(file: &KernelFile) -> std::result::Result<String, String> {
    if let Some(dir) = std::env::var_os("KAIYUAN_CUDA_EMU_KERNEL_DIR").filter(|d| !d.is_empty()) {
        let path = Path::new(&dir).join(format!("{}.cu", file.name));
        if path.is_file() {
            return std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()));
        }
    }
    Ok(file.source.to_string())
}

fn replace_ptx_block(name: &str, source: &str) -> std::result::Result<String, String> {
    let lines: Vec<&str> = source.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with(PTX_BLOCK_START));
    let Some(start) = start else {
        return Ok(source.to_string());
    };
    let end = lines[start..]
        .iter()
        .position(|l| l.trim_start().starts_with(PTX_BLOCK_END))
        .map(|i| start + i)
        .ok_or_else(|| {
            format!(
                "kernels/{name}.cu opens a PTX helper block (line {}) that no `{PTX_BLOCK_END}` line closes",
                start + 1
            )
        })?;
    let mut out = String::with_capacity(source.len());
    for line in &lines[..start] {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("#include <kaiyuan_emu_ptx.h>\n");
    out.push_str(&format!("#line {} \"{name}.cu\"\n", end + 2));
    for line in &lines[end + 1..] {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// `extern __shared__ T name[];` → `extern __thread T name[]
/// __asm__("kaiyuan_emu_dynamic_shared");` (one declaration per line; text
/// after `//` is left alone).
fn rewrite_extern_shared(text: &str) -> String {
    const DECLARATION: &str = "extern __shared__";
    if !text.contains(DECLARATION) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let code_end = line.find("//").unwrap_or(line.len());
        let (code, comment) = line.split_at(code_end);
        match (code.find(DECLARATION), code.rfind(';')) {
            (Some(at), Some(semicolon)) if semicolon > at => {
                out.push_str(&code[..at]);
                out.push_str("extern __thread");
                out.push_str(&code[at + DECLARATION.len()..semicolon]);
                out.push_str(" __asm__(\"kaiyuan_emu_dynamic_shared\")");
                out.push_str(&code[semicolon..]);
                out.push_str(comment);
            }
            _ => out.push_str(line),
        }
    }
    out
}

// ---- the runtime and the kernel libraries ---------------------------------------------------

/// `EmuReport` of `kaiyuan_emu_runtime.h`.
#[repr(C)]
struct EmuReport {
    kind: c_int,
    signal: c_int,
    fault_address: u64,
    pc_offset: u64,
    block: [u32; 3],
    thread: [u32; 3],
    in_thread: c_int,
    object: [c_char; 512],
    message: [c_char; 1024],
}

impl EmuReport {
    fn new() -> Self {
        Self {
            kind: 0,
            signal: 0,
            fault_address: 0,
            pc_offset: 0,
            block: [0; 3],
            thread: [0; 3],
            in_thread: 0,
            object: [0; 512],
            message: [0; 1024],
        }
    }

    fn text(field: &[c_char]) -> String {
        let bytes: Vec<u8> = field
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

const EMU_OK: c_int = 0;
const EMU_BAD_LAUNCH: c_int = 1;
const EMU_KERNEL_ERROR: c_int = 2;
const EMU_FAULT: c_int = 3;
const EMU_DEADLOCK: c_int = 4;
/// The runtime's limits on kernel parameters (its trampoline's arity).
const MAX_INT_ARGS: usize = 24;
const MAX_FLOAT_ARGS: usize = 8;

type LaunchFn = unsafe extern "C" fn(
    kernel: *const c_void,
    grid: *const u32,
    block: *const u32,
    shared_bytes: u32,
    ints: *const u64,
    n_ints: c_int,
    floats: *const f32,
    n_floats: c_int,
    flags: u32,
    report: *mut EmuReport,
) -> c_int;

type ReportSizeFn = unsafe extern "C" fn() -> u32;

/// The emulator's runtime, loaded once per process (RTLD_GLOBAL, so the
/// kernel libraries find it) and never unloaded.
#[derive(Debug)]
struct Runtime {
    toolchain: Toolchain,
    cache: PathBuf,
    include: PathBuf,
    launch: LaunchFn,
    _library: Library,
}

fn runtime() -> std::result::Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(load_runtime)
        .as_ref()
        .map_err(String::clone)
}

fn load_runtime() -> std::result::Result<Runtime, String> {
    let toolchain = Toolchain::find()?;
    let cache = cache_dir()?;
    let include = include_dir(&cache)?;
    let path = build(
        &toolchain,
        &cache,
        &include,
        "runtime",
        RUNTIME_SOURCE,
        false,
    )
    .map_err(|e| format!("the emulator's runtime does not build: {e}"))?;
    // SAFETY: the library is the runtime built above from emu/runtime.cpp;
    // its initialisers only set up thread-local storage.
    let library = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: the symbols are functions of these exact signatures
    // (kaiyuan_emu_runtime.h); the library stays loaded as long as the
    // pointers are used (for ever: `Runtime` lives in a static).
    let (launch, report_size) = unsafe {
        let launch = *library
            .get::<LaunchFn>(b"kaiyuan_emu_launch\0")
            .map_err(|e| e.to_string())?;
        let report_size = *library
            .get::<ReportSizeFn>(b"kaiyuan_emu_report_size\0")
            .map_err(|e| e.to_string())?;
        (launch, report_size)
    };
    // SAFETY: a function without arguments returning sizeof(EmuReport).
    let size = unsafe { report_size() };
    if size as usize != size_of::<EmuReport>() {
        return Err(format!(
            "the runtime's EmuReport has {size} bytes, the Rust side {}",
            size_of::<EmuReport>()
        ));
    }
    Ok(Runtime {
        toolchain,
        cache,
        include,
        launch,
        _library: library,
    })
}

/// One kernel file built as a shared library, loaded for ever.
#[derive(Debug)]
struct Module {
    library: Library,
    path: PathBuf,
    functions: Mutex<HashMap<String, usize>>,
}

impl Module {
    /// The address of kernel `function`.
    fn function(&self, function: &str) -> Option<usize> {
        if let Some(&address) = lock(&self.functions).get(function) {
            return Some(address);
        }
        let mut name = function.as_bytes().to_vec();
        name.push(0);
        // SAFETY: the symbol is only used as an address (a kernel's entry
        // point, called through the runtime's trampoline); the library is
        // never unloaded.
        let address = unsafe { self.library.get::<*const c_void>(&*name) }
            .ok()
            .map(|symbol| *symbol as usize)
            .filter(|&a| a != 0)?;
        lock(&self.functions).insert(function.to_string(), address);
        Some(address)
    }
}

type ModuleSlot = Arc<OnceLock<std::result::Result<Arc<Module>, String>>>;

/// Builds (or finds) and loads `file`'s library: once per process, whatever
/// the number of devices and threads asking.
fn module(runtime: &Runtime, file: &'static KernelFile) -> Result<Arc<Module>> {
    if file.sm90a {
        return Err(CudaError::Compile {
            file: file.name,
            arch: "sm_90a".to_string(),
            log: "the emulator does not run sm_90a-only kernel files (Hopper's wgmma)".to_string(),
        });
    }
    static MODULES: OnceLock<Mutex<HashMap<&'static str, ModuleSlot>>> = OnceLock::new();
    let slot = {
        let mut modules = lock(MODULES.get_or_init(|| Mutex::new(HashMap::new())));
        Arc::clone(modules.entry(file.name).or_default())
    };
    slot.get_or_init(|| {
        let program = emulator_program(file)?;
        let path = build(
            &runtime.toolchain,
            &runtime.cache,
            &runtime.include,
            file.name,
            &program,
            true,
        )?;
        // SAFETY: the library was built from this kernel file; its
        // initialisers only set up thread-local storage, and its undefined
        // symbols are the runtime's (loaded RTLD_GLOBAL before).
        let library = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Arc::new(Module {
            library,
            path,
            functions: Mutex::new(HashMap::new()),
        }))
    })
    .clone()
    .map_err(|detail| {
        emulator_error(
            format!("kernels/{}.cu", file.name),
            format!("cannot be built for the emulator: {detail}"),
        )
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned cache is still a valid cache.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Launches so far in this process (for the log).
static LAUNCHES: AtomicU64 = AtomicU64::new(0);

fn order_flags() -> u32 {
    match std::env::var("KAIYUAN_CUDA_EMU_ORDER").as_deref() {
        Ok("reverse") => 1,
        Ok("forward") => 2,
        _ => 0,
    }
}

fn logging() -> bool {
    static LOG: OnceLock<bool> = OnceLock::new();
    *LOG.get_or_init(|| {
        std::env::var("KAIYUAN_CUDA_EMU_LOG").is_ok_and(|v| !v.is_empty() && v != "0")
    })
}

/// Checks a launch configuration against CUDA's limits.
fn check_config(launch: &Launch) -> std::result::Result<(), String> {
    let (gx, gy, gz) = launch.grid;
    let (bx, by, bz) = launch.block;
    if gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 {
        return Err(format!(
            "an empty grid {:?} or block {:?}",
            launch.grid, launch.block
        ));
    }
    if gx > i32::MAX as u32 || gy > 65_535 || gz > 65_535 {
        return Err(format!(
            "grid {:?} exceeds CUDA's (2^31 − 1, 65535, 65535)",
            launch.grid
        ));
    }
    if bx > 1024 || by > 1024 || bz > 64 || u64::from(bx) * u64::from(by) * u64::from(bz) > 1024 {
        return Err(format!(
            "block {:?} exceeds CUDA's 1024 threads (x, y ≤ 1024, z ≤ 64)",
            launch.block
        ));
    }
    if launch.shared_bytes > MAX_DYNAMIC_SHARED_BYTES {
        return Err(format!(
            "{} bytes of dynamic shared memory (at most {MAX_DYNAMIC_SHARED_BYTES}, sm_80's opt-in limit)",
            launch.shared_bytes
        ));
    }
    Ok(())
}

/// `file:line (function)` frames of a code address, innermost first, by
/// `addr2line` (binutils); `None` when it is not there.
fn source_location(object: &str, offset: u64) -> Option<String> {
    let output = Command::new("addr2line")
        .args(["-C", "-f", "-i", "-e", object])
        .arg(format!("{offset:#x}"))
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let frames: Vec<String> = lines
        .chunks(2)
        .filter_map(|pair| {
            let function = pair.first()?.split('(').next().unwrap_or_default().trim();
            let place = pair.get(1)?.split(" (").next().unwrap_or_default();
            let place = Path::new(place)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            (!place.starts_with("??")).then(|| format!("{place} ({function})"))
        })
        .take(3)
        .collect();
    (!frames.is_empty()).then(|| frames.join(", inlined into "))
}

/// One buffer a launch passes: its position in the argument list, its
/// memory, and whether it is an input.
struct Passed<'a> {
    index: usize,
    memory: &'a HostMemory,
    input: bool,
}

fn describe_buffer(passed: &Passed<'_>) -> String {
    format!(
        "argument #{} ({}, {} bytes)",
        passed.index,
        if passed.input { "input" } else { "output" },
        passed.memory.bytes
    )
}

/// What the report of a failed launch says, with the fault's address
/// placed against the launch's buffers.
fn failure_detail(report: &EmuReport, buffers: &[Passed<'_>]) -> String {
    let message = EmuReport::text(&report.message);
    let mut detail = message.clone();
    if report.kind == EMU_FAULT && (report.signal == libc::SIGSEGV || report.signal == libc::SIGBUS)
    {
        let address = report.fault_address as usize;
        let placed = buffers.iter().find_map(|passed| {
            passed.memory.locate(address).map(|place| match place {
                Place::Before(n) => format!("{n} bytes before the start of {}", describe_buffer(passed)),
                Place::After(offset) => format!("byte {offset} of {}, past its end", describe_buffer(passed)),
                Place::Inside(offset) if passed.input => format!(
                    "a write at byte {offset} of {}, which is read-only during the launch (Arg::In)",
                    describe_buffer(passed)
                ),
                Place::Inside(offset) => format!("byte {offset} of {}", describe_buffer(passed)),
            })
        });
        let placed = placed.unwrap_or_else(|| {
            if address < 65_536 {
                format!("address {address:#x} (a null or tiny pointer)")
            } else if message.contains("stack overflow") {
                format!("address {address:#x}")
            } else {
                format!("address {address:#x}, in no argument buffer")
            }
        });
        detail = format!("{message}: {placed}");
    }
    if report.in_thread != 0 {
        detail.push_str(&format!(
            " in block ({}, {}, {}) thread ({}, {}, {})",
            report.block[0],
            report.block[1],
            report.block[2],
            report.thread[0],
            report.thread[1],
            report.thread[2]
        ));
    }
    let object = EmuReport::text(&report.object);
    if report.kind == EMU_FAULT && !object.is_empty() {
        match source_location(&object, report.pc_offset) {
            Some(location) => detail.push_str(&format!(", at {location}")),
            None => detail.push_str(&format!(", at {object}+{:#x}", report.pc_offset)),
        }
    }
    detail
}

// ---- the device ------------------------------------------------------------------------------------

/// The CPU emulator as a CUDA device (one, ordinal 0).
#[derive(Debug)]
pub struct GpuDevice {
    info: DeviceInfo,
    compiler: Compiler,
    runtime: &'static Runtime,
}

fn info() -> DeviceInfo {
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    DeviceInfo {
        ordinal: 0,
        name: EMULATOR_NAME.to_string(),
        compute_capability: (9, 0),
        total_memory: usize::try_from(pages)
            .unwrap_or(0)
            .saturating_mul(page_size()),
    }
}

fn unavailable(reason: String) -> CudaError {
    CudaError::no_device(format!("the CUDA emulator cannot run: {reason}"))
}

pub(super) fn device_count() -> Result<usize> {
    runtime().map(|_| 1).map_err(unavailable)
}

pub(super) fn probe(ordinal: usize) -> Result<DeviceInfo> {
    check_ordinal(ordinal)?;
    runtime().map_err(unavailable)?;
    Ok(info())
}

fn check_ordinal(ordinal: usize) -> Result<()> {
    if ordinal == 0 {
        Ok(())
    } else {
        Err(CudaError::no_device(format!(
            "device {ordinal} was asked for, the CUDA emulator has one (0)"
        )))
    }
}

impl GpuDevice {
    /// Opens the emulator (ordinal 0): finds the C++ compiler and builds (or
    /// finds in the cache) and loads the emulator's runtime. Kernel files
    /// build on first use.
    ///
    /// # Errors
    /// [`CudaError::NoDevice`] for another ordinal, or when no C++ compiler
    /// works.
    pub fn new(ordinal: usize) -> Result<Self> {
        check_ordinal(ordinal)?;
        let runtime = runtime().map_err(unavailable)?;
        Ok(Self {
            info: info(),
            compiler: Compiler::unavailable(),
            runtime,
        })
    }

    /// What the device is: [`EMULATOR_NAME`], compute capability 9.0, the
    /// host's memory.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The NVRTC compiler, which this build does not have: its compiles
    /// report [`CudaError::NoCompiler`] (the emulator compiles kernel files
    /// with the host's C++ compiler).
    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// Builds and loads `file` now instead of at its first launch.
    ///
    /// # Errors
    /// [`CudaError::Emulator`] when the file cannot be built for the
    /// emulator (inline PTX outside its helper block, say).
    pub fn load(&self, file: &'static KernelFile) -> Result<()> {
        module(self.runtime, file).map(|_| ())
    }

    /// Copies `host` into a new device buffer.
    pub fn upload<T: DeviceValue>(&self, host: &[T]) -> Result<GpuBuffer<T>> {
        let mut buffer = GpuBuffer::<T>::with_len(host.len())?;
        let target = buffer.memory.bytes_mut();
        // SAFETY: `host` is `target.len()` bytes of initialised values
        // (DeviceValue types have no padding).
        let source =
            unsafe { std::slice::from_raw_parts(host.as_ptr().cast::<u8>(), target.len()) };
        target.copy_from_slice(source);
        Ok(buffer)
    }

    /// Copies a device buffer back to the host.
    pub fn download<T: DeviceValue>(&self, buffer: &GpuBuffer<T>) -> Result<Vec<T>> {
        Ok(buffer.values())
    }

    /// A new buffer of `len` zeros.
    pub fn zeros<T: DeviceValue>(&self, len: usize) -> Result<GpuBuffer<T>> {
        // Fresh anonymous pages are zero.
        GpuBuffer::with_len(len)
    }

    /// Sets every element of `buffer` to zero.
    pub fn fill_zeros<T: DeviceValue>(&self, buffer: &mut GpuBuffer<T>) -> Result<()> {
        buffer.memory.bytes_mut().fill(0);
        Ok(())
    }

    /// Milliseconds of wall time per call of `work`: one warm-up call, then
    /// the median of `repeats` timings of `calls` back-to-back calls. (CPU
    /// time of the emulation: nothing like a GPU's.)
    pub fn time_ms(
        &self,
        repeats: usize,
        calls: usize,
        mut work: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        work()?;
        let calls = calls.max(1);
        let mut samples = Vec::with_capacity(repeats.max(1));
        for _ in 0..repeats.max(1) {
            let start = Instant::now();
            for _ in 0..calls {
                work()?;
            }
            samples.push(start.elapsed().as_secs_f64() * 1e3 / calls as f64);
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples.get(samples.len() / 2).copied().unwrap_or(0.0))
    }

    /// Copies `source` into `target` (same length).
    pub fn copy<T: DeviceValue>(
        &self,
        source: &GpuBuffer<T>,
        target: &mut GpuBuffer<T>,
    ) -> Result<()> {
        super::check_len("copy", "target", target, source.len())?;
        target
            .memory
            .bytes_mut()
            .copy_from_slice(source.memory.bytes());
        Ok(())
    }

    /// Waits for queued work: launches run to completion when made, so
    /// there is none.
    pub fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Runs `function` of `file` (building the file on first use) with
    /// `args`, to completion.
    ///
    /// # Errors
    /// [`CudaError::Emulator`] when the file cannot be built, has no such
    /// kernel, the configuration breaks CUDA's limits, or the kernel faults
    /// (an access outside its buffers, a write into an input), deadlocks or
    /// breaks a rule of warp-synchronous calls; the message names the
    /// argument, the block and thread, and the source line.
    pub fn launch(
        &self,
        file: &'static KernelFile,
        function: &str,
        launch: Launch,
        args: &mut [Arg<'_>],
    ) -> Result<()> {
        let what = || format!("launch of {function} (kernels/{}.cu)", file.name);
        check_config(&launch).map_err(|detail| emulator_error(what(), detail))?;
        let module = module(self.runtime, file)?;
        let kernel = module.function(function).ok_or_else(|| {
            emulator_error(
                what(),
                format!("{} exports no kernel {function}", module.path.display()),
            )
        })?;
        let mut ints: Vec<u64> = Vec::with_capacity(args.len());
        let mut floats: Vec<f32> = Vec::new();
        let mut buffers: Vec<Passed<'_>> = Vec::new();
        for (index, arg) in args.iter().enumerate() {
            match arg {
                Arg::In(buffer) => {
                    ints.push(buffer.0.data as u64);
                    buffers.push(Passed {
                        index,
                        memory: buffer.0,
                        input: true,
                    });
                }
                Arg::Out(buffer) => {
                    ints.push(buffer.0.data as u64);
                    buffers.push(Passed {
                        index,
                        memory: &*buffer.0,
                        input: false,
                    });
                }
                Arg::U64(v) => ints.push(*v),
                // An int parameter reads the low half of its 8-byte slot.
                Arg::I32(v) => ints.push(u64::from(*v as u32)),
                Arg::F32(v) => floats.push(*v),
            }
        }
        if ints.len() > MAX_INT_ARGS || floats.len() > MAX_FLOAT_ARGS {
            return Err(emulator_error(
                what(),
                format!(
                    "{} integer/pointer and {} float arguments: the emulator passes at most \
                     {MAX_INT_ARGS} and {MAX_FLOAT_ARGS}",
                    ints.len(),
                    floats.len()
                ),
            ));
        }
        for passed in buffers.iter().filter(|p| p.input) {
            passed.memory.protect(true)?;
        }
        let grid = [launch.grid.0, launch.grid.1, launch.grid.2];
        let block = [launch.block.0, launch.block.1, launch.block.2];
        let mut report = EmuReport::new();
        let started = Instant::now();
        // SAFETY: `kernel` is an entry point of a library that stays loaded;
        // the runtime calls it with `ints` and `floats` through its
        // trampoline, which matches any `extern "C"` kernel whose parameters
        // are pointers, u64, int and at most 8 floats given in declaration
        // order; the op launchers pass exactly their kernel's parameters
        // (crate::ops conventions) and check every buffer's length first.
        // The pointers are those of buffers `args` borrows for the whole
        // call. A kernel can still write anywhere (a wild pointer): the
        // guard pages and canaries catch accesses near its buffers, a GPU
        // would have corrupted device memory instead.
        let status = unsafe {
            (self.runtime.launch)(
                kernel as *const c_void,
                grid.as_ptr(),
                block.as_ptr(),
                launch.shared_bytes,
                ints.as_ptr(),
                ints.len() as c_int,
                floats.as_ptr(),
                floats.len() as c_int,
                order_flags(),
                &mut report,
            )
        };
        let elapsed = started.elapsed();
        let count = LAUNCHES.fetch_add(1, Ordering::Relaxed) + 1;
        for passed in buffers.iter().filter(|p| p.input) {
            passed.memory.protect(false)?;
        }
        if logging() {
            eprintln!(
                "[kaiyuan-cuda emulator] launch #{count}: {}.cu {function} grid {:?} block {:?} shared {}: {:.2} ms{}",
                file.name,
                launch.grid,
                launch.block,
                launch.shared_bytes,
                elapsed.as_secs_f64() * 1e3,
                if status == EMU_OK { "" } else { " (failed)" }
            );
        }
        if status != EMU_OK {
            let kind = match status {
                EMU_BAD_LAUNCH => "invalid launch",
                EMU_KERNEL_ERROR => "kernel error",
                EMU_FAULT => "kernel fault",
                EMU_DEADLOCK => "deadlock",
                _ => "failure",
            };
            // Later launches must not report this one's damage again.
            for passed in &buffers {
                passed.memory.fill_canaries();
            }
            return Err(emulator_error(
                format!("{} ({kind})", what()),
                failure_detail(&report, &buffers),
            ));
        }
        for passed in &buffers {
            if let Some(place) = passed.memory.damaged_canary() {
                passed.memory.fill_canaries();
                let place = match place {
                    Place::Before(n) => {
                        format!("{n} bytes before the start of {}", describe_buffer(passed))
                    }
                    Place::After(offset) | Place::Inside(offset) => {
                        format!("byte {offset} of {}, past its end", describe_buffer(passed))
                    }
                };
                return Err(emulator_error(
                    format!("{} (kernel fault)", what()),
                    format!("the kernel wrote {place} (into the padding before the guard page)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::KernelFile;

    const SHARED: KernelFile = KernelFile {
        name: "emu_test",
        source: "// x\n// ---- PTX helpers (sm_80+)\nasm volatile(\"x\");\n// ---- end of PTX helpers ---\nint after;\n\
                 extern __shared__ __align__(16) float smem[]; // extern __shared__ in a comment\n",
        tensor_cores: false,
        sm90a: false,
    };

    #[test]
    fn the_ptx_block_is_replaced_and_line_numbers_kept() {
        let program = emulator_program(&SHARED).expect("program");
        assert!(
            program.contains("#include <kaiyuan_emu_ptx.h>\n#line 5 \"emu_test.cu\"\nint after;")
        );
        assert!(!program.contains("asm volatile"));
        assert!(program.starts_with("#line 1 \"common.cuh\"\n"));
    }

    #[test]
    fn extern_shared_names_the_runtime_buffer() {
        let text = rewrite_extern_shared(
            "  extern __shared__ __align__(16) float smem[]; // extern __shared__ x;\n",
        );
        assert_eq!(
            text,
            "  extern __thread __align__(16) float smem[] __asm__(\"kaiyuan_emu_dynamic_shared\"); // extern __shared__ x;\n"
        );
        assert_eq!(
            rewrite_extern_shared("// extern __shared__ a;\n"),
            "// extern __shared__ a;\n"
        );
    }

    #[test]
    fn an_unclosed_ptx_block_is_an_error() {
        assert!(replace_ptx_block("open", "// ---- PTX helpers\nasm(\"\");\n").is_err());
    }

    #[test]
    fn buffers_end_at_the_guard_page_and_keep_canaries() {
        for bytes in [0usize, 1, 4, 15, 16, 4095, 4096, 4097, 10_000] {
            let memory = HostMemory::new(bytes).expect("allocation");
            assert_eq!(memory.data as usize % DATA_ALIGN, 0);
            let end = memory.data as usize + bytes;
            let guard = memory.area as usize + memory.area_len;
            assert!(
                guard - end < DATA_ALIGN,
                "{bytes}: {} bytes of padding",
                guard - end
            );
            assert!(memory.damaged_canary().is_none());
            assert!(matches!(memory.locate(guard), Some(Place::After(_))));
            assert!(matches!(
                memory.locate(memory.map as usize),
                Some(Place::Before(_))
            ));
        }
        let memory = HostMemory::new(5).expect("allocation");
        // SAFETY: byte 5 of the area after the data is padding (5 → 16 bytes).
        unsafe { memory.data.add(6).write(0) };
        assert!(matches!(memory.damaged_canary(), Some(Place::After(6))));
    }
}
