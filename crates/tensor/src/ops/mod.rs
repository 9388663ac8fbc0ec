//! Tensor ops, grouped by family. Each op checks its operands' shapes and
//! dtypes first and returns a [`crate::TensorError`] naming itself.

pub(crate) mod attention;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod kv;
pub(crate) mod matmul;
pub(crate) mod nn;
pub(crate) mod reduce;
pub(crate) mod rope;
