//! Quantized weights: ggml's block formats ([`BlockType`]) and their
//! decoders.

mod blocks;

pub use blocks::{BlockType, dequantize_blocks};
