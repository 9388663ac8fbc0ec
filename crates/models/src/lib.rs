//! Kaiyuan's models: LLaMA, Qwen2, Falcon and GLM architectures loaded from
//! HF `config.json` + safetensors or from GGUF, with KV-cached generation,
//! sampling, chat templates and constrained decoding.
//!
//! Shapes are written (B, T, C) for activations — batch, time (tokens),
//! channels — and (B, H, T, D) for attention heads.

mod arch;
pub mod chat;
pub mod config;
pub mod constrain;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod gptq_format;
pub mod loader;
pub mod model;
pub mod safetensors_io;
pub mod sampling;
pub mod weights;

pub use config::{Architecture, ModelConfig};
pub use error::{ModelError, Result};
pub use loader::ModelFiles;
pub use model::{KvCache, LinearHook, Logits, LoraSettings, Model, PREFILL_CHUNK};
pub use weights::Weights;
