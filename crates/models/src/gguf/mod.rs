//! GGUF files: reading, dequantizing and writing.
//!
//! - [`GgufFile::open`] memory-maps a GGUF v2/v3 file and checks its whole
//!   header (metadata, tensor infos, data layout) against the bytes it holds.
//!   Metadata is read with typed getters ([`GgufFile::get_usize`],
//!   [`GgufFile::get_str`], …) whose errors name the key.
//! - [`dequantize`] turns F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K data into
//!   `f32`, bit for bit as the `gguf` Python package does.
//! - [`GgufFile::to_weights`], [`GgufFile::to_hf_config`] and
//!   [`GgufFile::tokenizer_json`] give the model in HF transformers form:
//!   tensor names and shapes of a `LlamaForCausalLM`/`Qwen2ForCausalLM`
//!   checkpoint (LLaMA's Q/K rows put back in HF order), a `config.json`
//!   and a `tokenizer.json`.
//! - [`write_gguf`] writes F32/F16/BF16 tensors and metadata as GGUF v3;
//!   [`write_model_gguf`] writes a whole LLaMA/Qwen2 model (llama.cpp tensor
//!   names and Q/K row order, hyperparameters, tokenizer, chat template).
//!
//! ```no_run
//! use kaiyuan_models::gguf::GgufFile;
//! let gguf = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let config = gguf.to_hf_config()?;
//! let weights = gguf.to_weights()?;
//! let tokenizer = kaiyuan_tokenizer::Tokenizer::from_json_str(
//!     gguf.origin(),
//!     &gguf.tokenizer_json()?,
//! )?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dequant;
mod from_hf;
mod hf;
mod reader;
mod tokenizer;
mod types;
mod writer;

pub use dequant::{block_type, can_dequantize, dequantize, dequantize_into};
pub use from_hf::{write_model_gguf, write_model_gguf_as};
pub use reader::{
    GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufFile, GgufTensorInfo, MetadataArray, MetadataValue,
};
pub use types::{GgmlType, GgufValueType};
pub use writer::{GGUF_WRITE_VERSION, GgufTensorData, write_gguf, write_gguf_data};
