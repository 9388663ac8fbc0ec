//! Compiling kernel files with NVRTC, for one architecture, to machine code
//! (cubin), with an in-memory and an on-disk cache keyed by the source's and
//! options' hash and the architecture.
//!
//! The ptxas report NVRTC writes with `--ptxas-options=-v` is parsed into
//! [`KernelResources`] (registers, spills, stack, shared memory) so the CI
//! compile check can refuse local-memory spills.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::kernels::KernelFile;
use crate::{CudaError, Result};

/// What ptxas reported for one entry function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// The entry function's name.
    pub function: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of local memory written by register spills, per thread.
    pub spill_stores: u32,
    /// Bytes of local memory read back by register spills, per thread.
    pub spill_loads: u32,
    /// Bytes of stack frame (local arrays and spills), per thread.
    pub stack_frame: u32,
    /// Bytes of static shared memory per block.
    pub shared: u32,
}

impl KernelResources {
    /// Whether the kernel touches local memory for spills.
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0
    }
}

/// Parses the `ptxas info` lines of an NVRTC log into one record per entry
/// function, in the order ptxas compiled them.
///
/// ```
/// let log = "ptxas info    : Compiling entry function 'scale_f32' for 'sm_90'\n\
///            ptxas info    : Function properties for scale_f32\n\
///            \x20   8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
///            ptxas info    : Used 12 registers, used 0 barriers, 1024 bytes smem, 380 bytes cmem[0]\n";
/// let report = kaiyuan_cuda::compile::parse_ptxas_log(log);
/// assert_eq!(report.len(), 1);
/// assert_eq!(report[0].function, "scale_f32");
/// assert_eq!((report[0].registers, report[0].spill_stores, report[0].shared), (12, 4, 1024));
/// ```
pub fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(name) = quoted_after(line, "Compiling entry function '") {
            out.push(KernelResources {
                function: name.to_string(),
                ..KernelResources::default()
            });
            continue;
        }
        let Some(current) = out.last_mut() else {
            continue;
        };
        if line.contains("stack frame") || line.contains("spill stores") {
            current.stack_frame = number_before(line, "bytes stack frame").unwrap_or(0);
            current.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            current.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if line.contains("Used ") && line.contains("registers") {
            current.registers = number_before(line, "registers").unwrap_or(0);
            current.shared = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}

fn quoted_after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let start = line.find(prefix)? + prefix.len();
    let rest = &line[start..];
    Some(&rest[..rest.find('\'')?])
}

/// The unsigned integer just before `unit` (`"12 registers"` → 12).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let end = line.find(unit)?;
    line[..end].split_whitespace().last()?.parse().ok()
}

/// One kernel file compiled for one architecture.
#[derive(Debug)]
pub struct Compiled {
    /// The kernel file's name.
    pub file: &'static str,
    /// The target, such as `sm_90`.
    pub arch: String,
    /// Machine code for `arch`, ready for `cuModuleLoadData`.
    pub cubin: Vec<u8>,
    /// The NVRTC log (ptxas report included); empty when read from the disk cache.
    pub log: String,
    /// Per-function resources parsed from the log; empty when read from the disk cache.
    pub resources: Vec<KernelResources>,
    /// Whether the cubin came from the on-disk cache.
    pub from_disk_cache: bool,
}

/// NVRTC options shared by every kernel file (the architecture is added per call).
pub const BASE_OPTIONS: &[&str] = &["--std=c++17", "--fmad=true", "--ptxas-options=-v"];

/// Directories holding `cuda_bf16.h`, which NVRTC needs but does not ship.
///
/// Searched in order: `KAIYUAN_CUDA_INCLUDE` (a `:`-separated list),
/// `$CUDA_HOME/include`, `$CUDA_PATH/include`, `/usr/local/cuda/include`, and
/// `../include` beside every `LD_LIBRARY_PATH` entry (the layout of the
/// `nvidia-cuda-runtime` wheel: `nvidia/cu13/{lib,include}`).
pub fn include_dirs() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(list) = std::env::var_os("KAIYUAN_CUDA_INCLUDE") {
        candidates.extend(std::env::split_paths(&list));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = std::env::var_os(var) {
            candidates.push(PathBuf::from(root).join("include"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    if let Some(list) = std::env::var_os("LD_LIBRARY_PATH") {
        for lib in std::env::split_paths(&list) {
            candidates.push(lib.join("..").join("include"));
        }
    }
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in candidates {
        if dir.join("cuda_bf16.h").is_file() && !found.contains(&dir) {
            found.push(dir);
        }
    }
    found
}

/// The on-disk cache directory: `KAIYUAN_CUDA_CACHE`, else
/// `$XDG_CACHE_HOME/kaiyuan/cuda`, else `$HOME/.cache/kaiyuan/cuda`; `None`
/// (memory only) when none is set or `KAIYUAN_CUDA_CACHE` is empty.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KAIYUAN_CUDA_CACHE") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("kaiyuan").join("cuda"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| {
            PathBuf::from(home)
                .join(".cache")
                .join("kaiyuan")
                .join("cuda")
        })
}

/// The cache key of a program: SHA-256 over the compiler version, the
/// options and the program text, as 16 hex digits.
pub fn cache_key(compiler_version: (i32, i32), options: &[String], program: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "nvrtc {}.{}\n",
        compiler_version.0, compiler_version.1
    ));
    for option in options {
        hasher.update(option.as_bytes());
        hasher.update(b"\n");
    }
    hasher.update(program.as_bytes());
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles kernel files, remembering every result in memory and on disk.
#[derive(Debug)]
pub struct Compiler {
    include_dirs: Vec<PathBuf>,
    cache_dir: Option<PathBuf>,
    memory: Mutex<HashMap<(&'static str, String), Arc<Compiled>>>,
}

impl Compiler {
    /// A compiler with the default include directories and cache directory.
    ///
    /// Fails when NVRTC cannot be loaded or `cuda_bf16.h` is nowhere to be
    /// found; never panics.
    pub fn new() -> Result<Self> {
        Self::with_cache_dir(default_cache_dir())
    }

    /// As [`Compiler::new`], with an explicit cache directory (`None`: memory only).
    pub fn with_cache_dir(cache_dir: Option<PathBuf>) -> Result<Self> {
        nvrtc::check_available()?;
        let include_dirs = include_dirs();
        if include_dirs.is_empty() {
            return Err(CudaError::NoCompiler {
                reason: "cuda_bf16.h was found in no include directory (set KAIYUAN_CUDA_INCLUDE to the CUDA include directory)".into(),
            });
        }
        Ok(Self {
            include_dirs,
            cache_dir,
            memory: Mutex::new(HashMap::new()),
        })
    }

    /// A compiler that compiles nothing, for the CPU emulator (which builds
    /// kernel files with the host's C++ compiler instead): every compile
    /// reports [`CudaError::NoCompiler`].
    #[cfg(feature = "emulator")]
    pub(crate) fn unavailable() -> Self {
        Self {
            include_dirs: Vec::new(),
            cache_dir: None,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// The NVRTC version, as (major, minor).
    pub fn version(&self) -> Result<(i32, i32)> {
        nvrtc::version()
    }

    /// The include directories passed to NVRTC.
    pub fn include_dirs(&self) -> &[PathBuf] {
        &self.include_dirs
    }

    /// The full option list for `arch` (such as `sm_90`).
    pub fn options(&self, arch: &str) -> Vec<String> {
        let mut options: Vec<String> = BASE_OPTIONS.iter().map(|s| s.to_string()).collect();
        options.push(format!("--gpu-architecture={arch}"));
        for dir in &self.include_dirs {
            options.push(format!("--include-path={}", dir.display()));
        }
        options
    }

    /// Compiles `file` for `arch`, or returns the cached result.
    pub fn compile(&self, file: &'static KernelFile, arch: &str) -> Result<Arc<Compiled>> {
        let memory_key = (file.name, arch.to_string());
        if let Some(hit) = self.memory_cache().get(&memory_key) {
            return Ok(Arc::clone(hit));
        }
        let options = self.options(arch);
        let program = file.program();
        let key = cache_key(self.version()?, &options, &program);
        let disk_path = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{arch}-{key}.cubin", file.name)));
        let compiled = match disk_path.as_deref().and_then(read_cached) {
            Some(cubin) => Compiled {
                file: file.name,
                arch: arch.to_string(),
                cubin,
                log: String::new(),
                resources: Vec::new(),
                from_disk_cache: true,
            },
            None => {
                let (cubin, log) = nvrtc::compile_cubin(file.name, arch, &program, &options)?;
                if let Some(path) = &disk_path {
                    write_cached(path, &cubin)?;
                }
                Compiled {
                    file: file.name,
                    arch: arch.to_string(),
                    resources: parse_ptxas_log(&log),
                    cubin,
                    log,
                    from_disk_cache: false,
                }
            }
        };
        let compiled = Arc::new(compiled);
        self.memory_cache()
            .insert(memory_key, Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Compiles `file` for `arch` bypassing both caches, so the ptxas report
    /// is always there (the CI compile check uses this).
    pub fn compile_fresh(&self, file: &'static KernelFile, arch: &str) -> Result<Compiled> {
        let options = self.options(arch);
        let (cubin, log) = nvrtc::compile_cubin(file.name, arch, &file.program(), &options)?;
        Ok(Compiled {
            file: file.name,
            arch: arch.to_string(),
            resources: parse_ptxas_log(&log),
            cubin,
            log,
            from_disk_cache: false,
        })
    }

    fn memory_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(&'static str, String), Arc<Compiled>>> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map itself is still a valid cache.
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn read_cached(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok().filter(|bytes| !bytes.is_empty())
}

/// Writes a cubin atomically (temporary file, then rename) so a concurrent
/// reader never sees half a file.
fn write_cached(path: &Path, cubin: &[u8]) -> Result<()> {
    let io = |source| CudaError::Cache {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, cubin).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(feature = "cuda")]
mod nvrtc {
    use std::ffi::{CString, c_char, c_int};

    use cudarc::nvrtc::{result, sys};

    use crate::{CudaError, Result};

    pub(super) fn check_available() -> Result<()> {
        // SAFETY: `is_culib_present` only tries to dlopen the library and
        // returns whether it succeeded; it has no preconditions.
        if unsafe { sys::is_culib_present() } {
            Ok(())
        } else {
            Err(CudaError::NoCompiler {
                reason: "libnvrtc could not be loaded".into(),
            })
        }
    }

    pub(super) fn version() -> Result<(i32, i32)> {
        check_available()?;
        let (mut major, mut minor): (c_int, c_int) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints through valid pointers; the
        // library is loaded (checked above).
        let status = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
        status.result().map_err(|e| CudaError::NoCompiler {
            reason: format!("nvrtcVersion failed: {e:?}"),
        })?;
        Ok((major, minor))
    }

    fn log_of(program: sys::nvrtcProgram) -> String {
        // SAFETY: `program` is a live program handle created below.
        match unsafe { result::get_program_log(program) } {
            Ok(raw) => {
                let bytes: Vec<u8> = raw
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Err(e) => format!("(no log: {e:?})"),
        }
    }

    /// Returns the cubin and the full compiler log.
    pub(super) fn compile_cubin(
        file: &'static str,
        arch: &str,
        program_text: &str,
        options: &[String],
    ) -> Result<(Vec<u8>, String)> {
        check_available()?;
        let fail = |log: String| CudaError::Compile {
            file,
            arch: arch.to_string(),
            log,
        };
        let source =
            CString::new(program_text).map_err(|_| fail("the source holds a NUL byte".into()))?;
        let name = CString::new(format!("{file}.cu"))
            .map_err(|_| fail("the file name holds a NUL byte".into()))?;
        let program = result::create_program(&source, Some(name.as_c_str()))
            .map_err(|e| fail(format!("nvrtcCreateProgram: {e:?}")))?;
        // SAFETY: `program` was just created and is destroyed exactly once,
        // at the end of this function; `options` are plain strings.
        let compiled = unsafe { result::compile_program(program, options) };
        let log = log_of(program);
        let outcome = compiled
            .map_err(|e| fail(format!("{e:?}\n{log}")))
            .and_then(|()| {
                let mut size: usize = 0;
                // SAFETY: the program compiled; nvrtcGetCUBINSize writes one usize.
                unsafe { sys::nvrtcGetCUBINSize(program, &mut size) }
                    .result()
                    .map_err(|e| fail(format!("nvrtcGetCUBINSize: {e:?}")))?;
                let mut cubin = vec![0u8; size];
                // SAFETY: `cubin` has exactly the size NVRTC reported.
                unsafe { sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr() as *mut c_char) }
                    .result()
                    .map_err(|e| fail(format!("nvrtcGetCUBIN: {e:?}")))?;
                Ok(cubin)
            });
        // SAFETY: `program` is live and not used after this call.
        let _ = unsafe { result::destroy_program(program) };
        Ok((outcome?, log))
    }
}

#[cfg(not(feature = "cuda"))]
mod nvrtc {
    use crate::{CudaError, Result};

    fn missing() -> CudaError {
        CudaError::NoCompiler {
            reason: "kaiyuan-cuda was built without the `cuda` feature".into(),
        }
    }

    pub(super) fn check_available() -> Result<()> {
        Err(missing())
    }

    pub(super) fn version() -> Result<(i32, i32)> {
        Err(missing())
    }

    pub(super) fn compile_cubin(
        _file: &'static str,
        _arch: &str,
        _program_text: &str,
        _options: &[String],
    ) -> Result<(Vec<u8>, String)> {
        Err(missing())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_style_log_with_two_functions() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'a_f32' for 'sm_80'\n\
ptxas info    : Function properties for a_f32\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 10 registers, used 1 barriers, 128 bytes smem, 372 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'b_bf16' for 'sm_80'\n\
ptxas info    : Function properties for b_bf16\n\
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 255 registers, 400 bytes cmem[0]\n";
        let report = parse_ptxas_log(log);
        assert_eq!(report.len(), 2);
        assert_eq!(report[0].function, "a_f32");
        assert_eq!(report[0].registers, 10);
        assert_eq!(report[0].shared, 128);
        assert!(!report[0].spills());
        assert_eq!(report[1].registers, 255);
        assert_eq!((report[1].spill_stores, report[1].spill_loads), (8, 12));
        assert_eq!(report[1].stack_frame, 16);
        assert!(report[1].spills());
    }

    #[test]
    fn cache_key_changes_with_source_options_and_version() {
        let options = vec!["--gpu-architecture=sm_90".to_string()];
        let a = cache_key((13, 0), &options, "x");
        assert_eq!(a.len(), 16);
        assert_ne!(a, cache_key((13, 0), &options, "y"));
        assert_ne!(a, cache_key((13, 1), &options, "x"));
        assert_ne!(
            a,
            cache_key((13, 0), &["--gpu-architecture=sm_80".into()], "x")
        );
        assert_eq!(a, cache_key((13, 0), &options, "x"));
    }

    #[test]
    fn every_kernel_file_is_embedded_with_the_common_header() {
        for file in crate::kernels::ALL {
            let program = file.program();
            assert!(program.starts_with(crate::kernels::COMMON_HEADER));
            assert!(program.contains(&format!("#line 1 \"{}.cu\"", file.name)));
        }
    }
}
