//! Normalisations: softmax, log-softmax, RMSNorm, LayerNorm.

use rayon::prelude::*;

use crate::cpu::float::Float;
use crate::cpu::rows::{layer_norm_rows, rms_norm_rows, softmax_rows};
use crate::cpu::rows_per_task;
use crate::layout::resolve_axis;
use crate::tensor::{FloatValues, FloatVec, with_float};
use crate::{DType, Result, Tensor, TensorError, gpu};

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
                .and_then(|t| t.contiguous());
        }
        if let Some(out) = gpu::softmax(op, self, log)? {
            let y = out.detach();
            return Ok(out.record(op, &[self], move || {
                move |g: &Tensor, _: &[Tensor]| match gpu::softmax_backward(op, &y, g, log)? {
                    Some(dx) => Ok(vec![Some(dx)]),
                    None => Err(TensorError::DeviceMismatch {
                        op,
                        lhs: y.device(),
                        rhs: g.device(),
                    }),
                }
            }));
        }
        let n = self.shape()[last];
        let out = with_float!(self.float_values(op)?, |v: R| softmax_rows(&v, n, log));
        let out = Tensor::from_float_vec(out, self.shape(), self.dtype());
        let y = out.detach();
        Ok(out.record(op, &[self], move || {
            move |g: &Tensor, _: &[Tensor]| {
                let dx = if log {
                    // g − softmax(x)·Σg
                    g.sub(&y.exp()?.mul(&g.sum(-1, true)?)?)?
                } else {
                    // y ⊙ (g − Σ g⊙y)
                    y.mul(&g.sub(&g.mul(&y)?.sum(-1, true)?)?)?
                };
                Ok(vec![Some(dx)])
            }
        }))
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
        if weight.dtype() != self.dtype() {
            return Err(TensorError::DTypeMismatch {
                op: OP,
                lhs: self.dtype(),
                rhs: weight.dtype(),
            });
        }
        // On a device the forward keeps its row statistics for the backward.
        let (out, stats) = match gpu::norm_forward(OP, self, Some(weight), None, eps, false)? {
            Some((out, stats)) => (out, Some(stats)),
            None => {
                let (x, w) = Tensor::float_values_pair(OP, self, weight)?;
                let out = match (x, w) {
                    (FloatValues::F32(x), FloatValues::F32(w)) => {
                        FloatVec::F32(rms_norm_rows(&x, &w, eps as f32))
                    }
                    (FloatValues::F64(x), FloatValues::F64(w)) => {
                        FloatVec::F64(rms_norm_rows(&x, &w, eps))
                    }
                    _ => return Err(TensorError::invalid(OP, "mixed compute types")),
                };
                (
                    Tensor::from_float_vec(out, self.shape(), self.dtype()),
                    None,
                )
            }
        };
        Ok(out.record(OP, &[self, weight], move || {
            move |g: &Tensor, inputs: &[Tensor]| {
                let (x, w) = (&inputs[0], Some(&inputs[1]));
                let (dx, dw, _) = match &stats {
                    Some(stats) => gpu::norm_backward(OP, x, w, g, stats)?,
                    None => norm_backward(OP, x, g, w, eps, false)?,
                };
                Ok(vec![Some(dx), dw])
            }
        }))
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
        let has_weight = weight.is_some();
        let has_bias = bias.is_some();
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (out, stats) = match gpu::norm_forward(OP, self, weight, bias, eps, true)? {
            Some((out, stats)) => (out, Some(stats)),
            None => {
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
                (
                    Tensor::from_float_vec(out, self.shape(), self.dtype()),
                    None,
                )
            }
        };
        Ok(out.record(OP, &inputs, move || {
            move |g: &Tensor, inputs: &[Tensor]| {
                let w = if has_weight { inputs.get(1) } else { None };
                let (dx, dw, db) = match &stats {
                    Some(stats) => gpu::norm_backward(OP, &inputs[0], w, g, stats)?,
                    None => norm_backward(OP, &inputs[0], g, w, eps, true)?,
                };
                let mut grads = vec![Some(dx)];
                if has_weight {
                    grads.push(dw);
                }
                if has_bias {
                    grads.push(db);
                }
                Ok(grads)
            }
        }))
    }

    /// Mean cross-entropy of `self`, logits (N, V), against `targets` (N)
    /// of class ids (U32, or I64 where −100 marks a position to ignore, as
    /// PyTorch's `ignore_index`): `−mean over kept rows of log_softmax(x)[t]`,
    /// a scalar of shape (). With every row ignored the result is NaN (0/0),
    /// as in PyTorch.
    ///
    /// ```
    /// use kaiyuan_tensor::Tensor;
    /// let logits = Tensor::from_vec(vec![0.0f32, 0.0, 5.0, 0.0], &[2, 2]).unwrap();
    /// let targets = Tensor::from_vec(vec![1i64, -100], &[2]).unwrap();
    /// let loss = logits.cross_entropy(&targets).unwrap();
    /// assert!((loss.to_scalar::<f32>().unwrap() - std::f32::consts::LN_2).abs() < 1e-6);
    /// ```
    pub fn cross_entropy(&self, targets: &Tensor) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        const IGNORE: i64 = -100;
        if self.rank() != 2 {
            return Err(TensorError::Rank {
                op: OP,
                expected: "rank 2 logits (N, V)",
                shape: self.shape().to_vec(),
            });
        }
        let (n, v) = (self.shape()[0], self.shape()[1]);
        if targets.shape() != [n] {
            return Err(TensorError::shapes(
                OP,
                self.shape(),
                targets.shape(),
                "targets must have shape (N)",
            ));
        }
        if let Some((out, saved)) = gpu::cross_entropy(self, targets)? {
            return Ok(out.record(OP, &[self, targets], move || {
                move |g: &Tensor, _: &[Tensor]| {
                    Ok(vec![Some(gpu::cross_entropy_backward(&saved, g)?), None])
                }
            }));
        }
        let ids: Vec<i64> = match targets.dtype() {
            DType::U32 => targets
                .to_vec::<u32>()?
                .into_iter()
                .map(i64::from)
                .collect(),
            DType::I64 => targets.to_vec::<i64>()?,
            dtype => {
                return Err(TensorError::UnsupportedDType {
                    op: OP,
                    dtype,
                    detail: ": targets must be u32 or i64 class ids",
                });
            }
        };
        let mut rows: Vec<Option<usize>> = Vec::with_capacity(n);
        for (position, &id) in ids.iter().enumerate() {
            rows.push(match id {
                IGNORE => None,
                id if id >= 0 && (id as u64) < v as u64 => Some(id as usize),
                id => {
                    return Err(TensorError::IndexOutOfRange {
                        op: OP,
                        id,
                        position,
                        rows: v,
                    });
                }
            });
        }
        let kept = rows.iter().flatten().count();
        let logp = self.detach().log_softmax(-1)?;
        let loss = with_float!(logp.float_values(OP)?, |lp: R| {
            let mut total = R::of(0.0);
            for (i, t) in rows.iter().enumerate() {
                if let Some(t) = t {
                    total -= lp[i * v + t];
                }
            }
            vec![total / R::of(kept as f64)]
        });
        let out = Tensor::from_float_vec(loss, &[], self.dtype());
        Ok(out.record(OP, &[self, targets], move || {
            move |g: &Tensor, _: &[Tensor]| {
                // (softmax − onehot(t))·g/kept on kept rows, 0 on ignored ones.
                let scale = g.cast(DType::F64)?.to_scalar::<f64>()? / kept as f64;
                let dx = with_float!(logp.float_values(OP)?, |lp: R| {
                    let mut d = vec![R::of(0.0); n * v];
                    for (i, t) in rows.iter().enumerate() {
                        if let Some(t) = *t {
                            let row = &mut d[i * v..(i + 1) * v];
                            for (dst, &l) in row.iter_mut().zip(&lp[i * v..(i + 1) * v]) {
                                *dst = l.exp() * R::of(scale);
                            }
                            row[t] -= R::of(scale);
                        }
                    }
                    d
                });
                Ok(vec![
                    Some(Tensor::from_float_vec(dx, &[n, v], logp.dtype())),
                    None,
                ])
            }
        }))
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

/// Gradients of RMSNorm (`centered` false) or LayerNorm (`centered` true)
/// over the last axis: (dx, dweight, dbias), the last two summed over rows
/// (dweight only with a weight; dbias only for LayerNorm).
///
/// With r = 1/√(var + eps), x̂ = (x − μ)·r (μ = 0 and var = mean(x²) for
/// RMSNorm) and ĝ = g ⊙ weight:
/// dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)) (no mean(ĝ) term for RMSNorm),
/// dweight = Σ g ⊙ x̂, dbias = Σ g.
fn norm_backward(
    op: &'static str,
    x: &Tensor,
    g: &Tensor,
    weight: Option<&Tensor>,
    eps: f64,
    centered: bool,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    let c = x.norm_width(op)?;
    let w = weight.map(|w| w.float_values(op)).transpose()?;
    let (dx, dw, db) = match (Tensor::float_values_pair(op, x, g)?, w) {
        ((FloatValues::F32(x), FloatValues::F32(g)), None) => {
            let (dx, dw, db) = norm_backward_rows::<f32>(&x, &g, None, c, eps, centered);
            (FloatVec::F32(dx), FloatVec::F32(dw), FloatVec::F32(db))
        }
        ((FloatValues::F32(x), FloatValues::F32(g)), Some(FloatValues::F32(w))) => {
            let (dx, dw, db) = norm_backward_rows::<f32>(&x, &g, Some(&w), c, eps, centered);
            (FloatVec::F32(dx), FloatVec::F32(dw), FloatVec::F32(db))
        }
        ((FloatValues::F64(x), FloatValues::F64(g)), None) => {
            let (dx, dw, db) = norm_backward_rows::<f64>(&x, &g, None, c, eps, centered);
            (FloatVec::F64(dx), FloatVec::F64(dw), FloatVec::F64(db))
        }
        ((FloatValues::F64(x), FloatValues::F64(g)), Some(FloatValues::F64(w))) => {
            let (dx, dw, db) = norm_backward_rows::<f64>(&x, &g, Some(&w), c, eps, centered);
            (FloatVec::F64(dx), FloatVec::F64(dw), FloatVec::F64(db))
        }
        _ => return Err(TensorError::invalid(op, "mixed compute types")),
    };
    let dtype = x.dtype();
    Ok((
        Tensor::from_float_vec(dx, x.shape(), dtype),
        weight.map(|_| Tensor::from_float_vec(dw, &[c], dtype)),
        centered.then(|| Tensor::from_float_vec(db, &[c], dtype)),
    ))
}

/// Row loops of [`norm_backward`]: rows in fixed-size tasks, per-task
/// partial sums of dweight/dbias added in task order (bit-identical for any
/// thread count).
fn norm_backward_rows<F: Float>(
    x: &[F],
    g: &[F],
    w: Option<&[F]>,
    c: usize,
    eps: f64,
    centered: bool,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let mut dx = vec![F::zero(); x.len()];
    if c == 0 || x.is_empty() {
        return (dx, vec![F::zero(); c], vec![F::zero(); c]);
    }
    let task_rows = rows_per_task(c);
    let n = F::of(c as f64);
    let eps = F::of(eps);
    let partials: Vec<(Vec<F>, Vec<F>)> = dx
        .par_chunks_mut(task_rows * c)
        .zip(x.par_chunks(task_rows * c).zip(g.par_chunks(task_rows * c)))
        .map(|(dx, (x, g))| {
            let mut dw = vec![F::zero(); c];
            let mut db = vec![F::zero(); c];
            let mut xhat = vec![F::zero(); c];
            let mut ghat = vec![F::zero(); c];
            for ((dx, x), g) in dx.chunks_mut(c).zip(x.chunks(c)).zip(g.chunks(c)) {
                let mean = if centered {
                    x.iter().copied().sum::<F>() / n
                } else {
                    F::zero()
                };
                let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<F>() / n;
                let r = F::one() / (var + eps).sqrt();
                for j in 0..c {
                    xhat[j] = (x[j] - mean) * r;
                    ghat[j] = match w {
                        Some(w) => g[j] * w[j],
                        None => g[j],
                    };
                    dw[j] = dw[j] + g[j] * xhat[j];
                    db[j] = db[j] + g[j];
                }
                let mean_g = if centered {
                    ghat.iter().copied().sum::<F>() / n
                } else {
                    F::zero()
                };
                let mean_gx = ghat.iter().zip(&xhat).map(|(&a, &b)| a * b).sum::<F>() / n;
                for j in 0..c {
                    dx[j] = r * (ghat[j] - mean_g - xhat[j] * mean_gx);
                }
            }
            (dw, db)
        })
        .collect();
    let mut dw = vec![F::zero(); c];
    let mut db = vec![F::zero(); c];
    for (pw, pb) in partials {
        for j in 0..c {
            dw[j] = dw[j] + pw[j];
            db[j] = db[j] + pb[j];
        }
    }
    (dx, dw, db)
}
