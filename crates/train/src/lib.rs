//! # kaiyuan-train
//!
//! Training for Kaiyuan's models: optimisers, the loop, supervised
//! fine-tuning, LoRA, DP-SGD, distillation, pruning and checkpoints, and the
//! embedded bilingual corpus the default run trains on.
//!
//! ## Crate features
//! None.

pub mod corpus;
mod error;
pub mod loss;
pub mod optim;
pub mod privacy;

pub use error::{Result, TrainError};
