//! Quantized weights: ggml's block formats ([`BlockType`]) and their
//! decoders and encoders.

mod blocks;
mod kernels;
mod matrix;
mod order;

pub use blocks::{BlockType, dequantize_blocks, quantize_blocks};
pub use matrix::{KernelIsa, QBytes, QMatrix, QuantFormat};
pub use order::{BlockOrder, reorder_blocks};
