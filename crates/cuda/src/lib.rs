//! Kaiyuan's CUDA backend: hand-written kernels in `kernels/*.cu` (one file
//! per op family), embedded in the binary, compiled on first use by NVRTC for
//! the device's architecture and cached in memory and on disk; launched
//! through [cudarc](https://docs.rs/cudarc).
//!
//! The crate builds, and its tests pass, on machines without CUDA: the
//! driver and NVRTC are loaded dynamically and checked before use, so a
//! missing library or device is an error value ([`CudaError::NoDevice`]),
//! never a panic.
//!
//! ```
//! match kaiyuan_cuda::GpuDevice::new(0) {
//!     Ok(device) => println!("running on {}", device.info().name),
//!     Err(error) => println!("{error}"), // "no CUDA device: …"
//! }
//! ```
//!
//! # Crate features
//! - `cuda` (off by default): link to cudarc. Without it (and without
//!   `emulator`) [`GpuDevice`] and [`GpuBuffer`] are uninhabited types with
//!   the same methods, and [`GpuDevice::new`] reports "no CUDA device".
//! - `emulator` (off by default, exclusive with `cuda`): a CPU emulator is
//!   the device: kernel files are compiled as host C++ by the system's `c++`
//!   and run one fiber per CUDA thread, buffers in guarded host memory, so
//!   the GPU parity tests execute the kernels without a GPU (CI does; see
//!   `docs/cuda.md`, "The emulator (CI)").
//!
//! # Layout
//! - [`kernels`]: the embedded sources.
//! - [`compile`]: NVRTC to cubin, caches, the ptxas register/spill report.
//! - [`device`]: probing, buffers, launches.
//! - [`ops`]: one launcher per kernel, checking shapes before launching.

pub mod compile;
pub mod device;
mod error;
pub mod kernels;
pub mod ops;

pub use device::{
    DeviceInfo, DeviceValue, GpuBuffer, GpuDevice, GpuFloat, Launch, device_count, probe,
};
pub use error::{CudaError, Result};
