//! The one error type of the CUDA backend.

/// Everything that can go wrong between a kernel's source and its result.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No usable device: the crate was built without the `cuda` feature, the
    /// driver library is missing, the driver reports no device, or the
    /// requested ordinal does not exist. `reason` says which.
    #[error("no CUDA device: {reason}")]
    NoDevice {
        /// Why no device could be used.
        reason: String,
    },
    /// The NVRTC library could not be loaded, so nothing can be compiled.
    #[error(
        "NVRTC is not available: {reason} (install CUDA or the nvidia-cuda-nvrtc wheel and put its lib/ on LD_LIBRARY_PATH)"
    )]
    NoCompiler {
        /// Why NVRTC could not be used.
        reason: String,
    },
    /// NVRTC rejected a kernel file; `log` is the compiler's own output.
    #[error("NVRTC failed to compile kernels/{file}.cu for {arch}: {log}")]
    Compile {
        /// The kernel file (without `.cu`).
        file: &'static str,
        /// The target architecture, such as `sm_90`.
        arch: String,
        /// The compiler log.
        log: String,
    },
    /// A driver call failed.
    #[error("CUDA driver error in {what}: {message}")]
    Driver {
        /// The operation that failed.
        what: String,
        /// The driver's message.
        message: String,
    },
    /// Operands of the wrong size for the shapes given to an op.
    #[error("{op}: {detail}")]
    Shape {
        /// The op that checked its operands.
        op: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// A kernel reported bad input (an id out of range, say).
    #[error("{op}: {detail}")]
    BadInput {
        /// The op whose kernel found the input.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The CPU emulator (feature `emulator`) could not build or run a
    /// kernel: the C++ compiler rejected a kernel file (inline PTX, say), or
    /// a launch broke a rule the emulator checks (an access outside a
    /// buffer, a deadlock at a barrier, an invalid configuration). Never
    /// produced by the other builds.
    #[error("CUDA emulator: {what}: {detail}")]
    Emulator {
        /// The kernel file or launch concerned.
        what: String,
        /// What went wrong, with the compiler's or the emulator's report.
        detail: String,
    },
    /// Reading or writing the on-disk kernel cache failed.
    #[error("kernel cache {path}: {source}")]
    Cache {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = CudaError> = std::result::Result<T, E>;

impl CudaError {
    pub(crate) fn no_device(reason: impl Into<String>) -> Self {
        CudaError::NoDevice {
            reason: reason.into(),
        }
    }

    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        CudaError::Shape {
            op,
            detail: detail.into(),
        }
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn driver(what: impl Into<String>, error: impl std::fmt::Display) -> Self {
        CudaError::Driver {
            what: what.into(),
            message: error.to_string(),
        }
    }
}
