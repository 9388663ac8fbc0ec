//! # kaiyuan-quant
//!
//! Post-training quantization of the models `kaiyuan-models` loads:
//! round-to-nearest and GPTQ to 4 or 8 bits ([`gptq`]), with groups,
//! symmetric or asymmetric zero points, act-order and static groups.
//!
//! ```
//! use kaiyuan_quant::gptq::{gptq, rtn, GptqSettings};
//! // A 2 × 4 layer whose inputs are correlated: GPTQ moves rounding error
//! // onto later columns where the inputs can absorb it.
//! let w = [0.11, -0.52, 0.33, 0.94, -0.27, 0.05, 0.61, -0.73];
//! let h = [2.0, 1.0, 0.5, 0.0, 1.0, 2.0, 1.0, 0.5, 0.5, 1.0, 2.0, 1.0, 0.0, 0.5, 1.0, 2.0];
//! let s = GptqSettings { bits: 4, group_size: None, ..GptqSettings::default() };
//! let (q, stats) = gptq("demo", &w, 2, 4, &h, &s).unwrap();
//! assert_eq!(q.codes.len(), 8);
//! assert!(stats.loss.is_finite());
//! let r = rtn("demo", &w, 2, 4, &s).unwrap();
//! assert_eq!(r.scales, q.scales); // same per-channel range
//! ```

mod error;
pub mod gptq;
pub mod hf_gptq;
pub mod linalg;
pub mod model_quant;

pub use error::{QuantError, Result};
