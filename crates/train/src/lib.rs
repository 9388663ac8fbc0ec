//! # kaiyuan-train
//!
//! Training for Kaiyuan's models: optimisers, the loop, supervised
//! fine-tuning, LoRA, DP-SGD, distillation, pruning and checkpoints, and the
//! embedded bilingual corpus the default run trains on.
//!
//! ## Crate features
//! None.

pub mod checkpoint;
pub mod config;
pub mod corpus;
pub mod data;
pub mod distill;
pub mod dp;
mod error;
pub mod init;
pub mod lora;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod privacy;
pub mod prune;
pub mod sft;
pub mod trainer;

pub use error::{Result, TrainError};
