//! # kaiyuan-tensor
//!
//! The n-dimensional [`Tensor`] of Kaiyuan and the ops decoder-only
//! transformers need, on the CPU (the CUDA backend plugs in as a
//! [`Device`]/[`Storage`] variant).
//!
//! - **Data**: a tensor is a shared buffer ([`Storage`]: owned [`ndarray`]
//!   arrays or a zero-copy range of a memory map) seen through a [`Layout`]
//!   (shape, strides, offset). dtypes: f32, f16, bf16, f64, u32, i64
//!   ([`DType`]); f16/bf16 compute in f32 and round once.
//! - **Ops**: matmul with broadcast batches and transposed operands
//!   ([`Tensor::matmul`]); broadcasting `add`/`sub`/`mul`/`div`; `affine`;
//!   `sum`/`mean`/`max`/`argmax` over an axis; `softmax`/`log_softmax`;
//!   `rms_norm`/`layer_norm`; `silu`/`gelu_tanh`/`gelu_erf`; rotary embeddings
//!   in both layouts with partial rotary ([`RotaryEmbedding`]); `embedding`;
//!   views (`reshape`, `transpose`, `permute`, `narrow`, `split`,
//!   `broadcast_as`); `concat`, `contiguous`, `cast`; and
//!   [`scaled_dot_product_attention`] with grouped-query heads, causal and
//!   sliding-window masking and an additive mask.
//! - **Autograd**: [`Tensor::with_grad`] makes a leaf; every op above
//!   records its backward only when an input is tracked (inference pays one
//!   branch per op), and [`Tensor::backward`] returns [`Gradients`];
//!   [`Tensor::cross_entropy`] is the loss. [`no_grad`] pauses recording.
//! - **Errors, not panics**: every op checks shapes and dtypes and returns a
//!   [`TensorError`] that names the op and the shapes.
//! - **Reference**: [`naive`] holds slow, obviously-correct versions of every
//!   op in f64 that share no code with the fast paths; property tests compare
//!   the two.
//! - **Threads**: rayon, with work cut into tasks of fixed size, so results
//!   are bit-identical for any number of threads.
//!
//! ```
//! use kaiyuan_tensor::{DType, Tensor};
//! # fn main() -> kaiyuan_tensor::Result<()> {
//! let x = Tensor::rand_uniform(&[2, 8, 16], -1.0, 1.0, 7)?;      // (B, T, C)
//! let w = Tensor::rand_uniform(&[16, 32], -0.1, 0.1, 8)?;         // (C, 4C)
//! let gamma = Tensor::full(1.0, &[16], DType::F32)?;
//! let h = x.rms_norm(&gamma, 1e-6)?.matmul(&w)?.silu()?;          // (B, T, 4C)
//! assert_eq!(h.shape(), &[2, 8, 32]);
//! let bad = x.matmul(&x);                                          // (2,8,16)·(2,8,16)
//! assert!(bad.unwrap_err().to_string().contains("matmul"));
//! # Ok(()) }
//! ```
//!
//! ## Devices and crate features
//! A tensor lives on the CPU or on a CUDA device ([`Device::Cuda`]);
//! [`Tensor::to_device`] moves it, and every op runs where its operands
//! are (operands on two devices are an error). On a CUDA device the ops
//! launch the kernels of `kaiyuan-cuda` (see `gpu.rs` for what each covers).
//! - `cuda` (off by default): CUDA devices are real GPUs, found at run time
//!   (nothing CUDA is needed to build).
//! - `emulator` (off by default): kaiyuan-cuda's CPU emulator is device 0,
//!   so the CUDA arms of the ops are tested without a GPU.
//!
//! Without either, [`CudaStorage`] is never made: asking for a CUDA device
//! gives "no CUDA device", and callers need no `cfg`.

mod autograd;
mod cpu;
mod dtype;
mod error;
mod gpu;
mod layout;
pub mod naive;
mod ops;
pub mod quant;
mod storage;
mod tensor;

pub use autograd::{Gradients, no_grad};
pub use cpu::gemm;
pub use dtype::{DType, Element};
pub use error::{Result, TensorError};
pub use gpu::{AdamWStep, CudaStorage, adamw_step, check_device};
pub use layout::{Layout, broadcast_shapes};
pub use ops::attention::{
    AttentionOptions, scaled_dot_product_attention, scaled_dot_product_attention_cached,
};
pub use ops::kv::KvBuffer;
pub use ops::rope::{RotaryEmbedding, RotaryLayout};
pub use storage::{
    CpuStorage, Device, MappedBuffer, OwnedBuffer, Storage, huge_page_copy, huge_page_map,
};
pub use tensor::Tensor;
