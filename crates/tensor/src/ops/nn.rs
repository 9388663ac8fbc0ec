//! Normalisations: softmax, log-softmax, RMSNorm, LayerNorm.

use crate::cpu::rows::{layer_norm_rows, rms_norm_rows, softmax_rows};
use crate::layout::resolve_axis;
use crate::tensor::{FloatValues, FloatVec, with_float};
use crate::{Result, Tensor, TensorError};

impl Tensor {
    fn softmax_impl(&self, op: &'static str, axis: isize, log: bool) -> Result<Tensor> {
        let a = resolve_axis(op, axis, self.shape())?;
        let last = self.rank() - 1;
        if a != last {
            // Move the axis last, normalise rows, move it back.
            return self
                .transpose(a as isize, last as isize)?
                .softmax_impl(op, -1, log)?
                .transpose(a as isize, last as isize)
                .map(|t| t.contiguous());
        }
        let n = self.shape()[last];
        let out = with_float!(self.float_values(op)?, |v: R| softmax_rows(&v, n, log));
        Ok(Tensor::from_float_vec(out, self.shape(), self.dtype()))
    }

    /// Softmax along `axis`: `exp(x − max) / Σ exp(x − max)`, numerically
    /// stable; a row of −∞ gives NaN, as in PyTorch.
    ///
    /// ```
    /// use kaiyuan_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![0.0f32, 0.0], &[1, 2]).unwrap();
    /// assert_eq!(x.softmax(-1).unwrap().to_vec::<f32>().unwrap(), vec![0.5, 0.5]);
    /// ```
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl("softmax", axis, false)
    }

    /// Log-softmax along `axis`: `x − max − ln Σ exp(x − max)`.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl("log_softmax", axis, true)
    }

    /// RMSNorm over the last axis: `x / √(mean(x²) + eps) · weight`, with
    /// `weight` of shape (C) for `self` of shape (…, C).
    pub fn rms_norm(&self, weight: &Tensor, eps: f64) -> Result<Tensor> {
        const OP: &str = "rms_norm";
        let c = self.norm_width(OP)?;
        check_vector(OP, "weight", self, weight, c)?;
        let (x, w) = Tensor::float_values_pair(OP, self, weight)?;
        let out = match (x, w) {
            (FloatValues::F32(x), FloatValues::F32(w)) => {
                FloatVec::F32(rms_norm_rows(&x, &w, eps as f32))
            }
            (FloatValues::F64(x), FloatValues::F64(w)) => FloatVec::F64(rms_norm_rows(&x, &w, eps)),
            _ => return Err(TensorError::invalid(OP, "mixed compute types")),
        };
        Ok(Tensor::from_float_vec(out, self.shape(), self.dtype()))
    }

    /// LayerNorm over the last axis: `(x − mean) / √(var + eps) · weight + bias`
    /// with the biased variance; `weight` and `bias` of shape (C), each optional.
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        const OP: &str = "layer_norm";
        let c = self.norm_width(OP)?;
        for (name, t) in [("weight", weight), ("bias", bias)] {
            if let Some(t) = t {
                check_vector(OP, name, self, t, c)?;
                if t.dtype() != self.dtype() {
                    return Err(TensorError::DTypeMismatch {
                        op: OP,
                        lhs: self.dtype(),
                        rhs: t.dtype(),
                    });
                }
            }
        }
        let w = weight.map(|t| t.float_values(OP)).transpose()?;
        let b = bias.map(|t| t.float_values(OP)).transpose()?;
        let out = match self.float_values(OP)? {
            FloatValues::F32(x) => {
                let w = w.as_ref().and_then(|w| match w {
                    FloatValues::F32(w) => Some(&w[..]),
                    FloatValues::F64(_) => None,
                });
                let b = b.as_ref().and_then(|b| match b {
                    FloatValues::F32(b) => Some(&b[..]),
                    FloatValues::F64(_) => None,
                });
                FloatVec::F32(layer_norm_rows(&x, c, w, b, eps as f32))
            }
            FloatValues::F64(x) => {
                let w = w.as_ref().and_then(|w| match w {
                    FloatValues::F64(w) => Some(&w[..]),
                    FloatValues::F32(_) => None,
                });
                let b = b.as_ref().and_then(|b| match b {
                    FloatValues::F64(b) => Some(&b[..]),
                    FloatValues::F32(_) => None,
                });
                FloatVec::F64(layer_norm_rows(&x, c, w, b, eps))
            }
        };
        Ok(Tensor::from_float_vec(out, self.shape(), self.dtype()))
    }

    fn norm_width(&self, op: &'static str) -> Result<usize> {
        match self.shape().last() {
            Some(&c) => Ok(c),
            None => Err(TensorError::Rank {
                op,
                expected: "rank ≥ 1 (…, C)",
                shape: self.shape().to_vec(),
            }),
        }
    }
}

fn check_vector(op: &'static str, name: &str, x: &Tensor, v: &Tensor, c: usize) -> Result<()> {
    if v.shape() != [c] {
        return Err(TensorError::shapes(
            op,
            x.shape(),
            v.shape(),
            format!("{name} must have shape ({c})"),
        ));
    }
    Ok(())
}
