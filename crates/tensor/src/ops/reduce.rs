//! Reductions over one axis: sum, mean, max, argmax.
//!
//! Long rows are summed in fixed chunks of [`REDUCE_CHUNK`] elements whose
//! partial sums are then added in order, so a sum is bit-identical whatever
//! the number of threads.

use rayon::prelude::*;

use kaiyuan_cuda::ops::reduce::Reduction as CudaReduction;

use crate::cpu::float::Float;
use crate::cpu::rows::lane_sum;
use crate::cpu::{PARALLEL_MIN_ELEMS, TASK_ELEMS};
use crate::layout::resolve_axis;
use crate::tensor::{FloatValues, with_float};
use crate::{DType, Result, Tensor};

/// Elements per partial sum of a long row.
pub(crate) const REDUCE_CHUNK: usize = 1 << 14;

#[derive(Clone, Copy)]
enum Reduction {
    Sum,
    Max,
}

/// Sum of one row: fixed chunks, each summed with lane accumulators, then the
/// partial sums added left to right.
fn row_sum<F: Float>(row: &[F]) -> F {
    if row.len() <= REDUCE_CHUNK {
        return lane_sum(row);
    }
    let partials: Vec<F> = if row.len() >= PARALLEL_MIN_ELEMS {
        row.par_chunks(REDUCE_CHUNK).map(lane_sum).collect()
    } else {
        row.chunks(REDUCE_CHUNK).map(lane_sum).collect()
    };
    partials.into_iter().fold(F::zero(), |a, b| a + b)
}

fn row_max<F: Float>(row: &[F]) -> F {
    let mut max = F::neg_infinity();
    for &v in row {
        if v.is_nan() {
            return v;
        }
        if v > max {
            max = v;
        }
    }
    max
}

/// Reduces `values` viewed as (outer, len, inner) over the middle axis.
fn reduce<F: Float>(
    values: &[F],
    outer: usize,
    len: usize,
    inner: usize,
    how: Reduction,
) -> Vec<F> {
    if inner == 1 {
        let rows = values.chunks(len.max(1)).take(outer);
        let f = |row: &[F]| match how {
            Reduction::Sum => row_sum(row),
            Reduction::Max => row_max(row),
        };
        if len == 0 {
            let empty = match how {
                Reduction::Sum => F::zero(),
                Reduction::Max => F::neg_infinity(),
            };
            return vec![empty; outer];
        }
        return if values.len() >= PARALLEL_MIN_ELEMS && outer > 1 {
            values.par_chunks(len).map(f).collect()
        } else {
            rows.map(f).collect()
        };
    }
    // Strided: accumulate whole inner rows in order over the reduced axis.
    let block = |o: usize, out: &mut [F]| {
        let init = match how {
            Reduction::Sum => F::zero(),
            Reduction::Max => F::neg_infinity(),
        };
        out.fill(init);
        for p in 0..len {
            let src = &values[(o * len + p) * inner..(o * len + p + 1) * inner];
            match how {
                Reduction::Sum => {
                    for (acc, &v) in out.iter_mut().zip(src) {
                        *acc = *acc + v;
                    }
                }
                Reduction::Max => {
                    for (acc, &v) in out.iter_mut().zip(src) {
                        if !acc.is_nan() && (v.is_nan() || v > *acc) {
                            *acc = v;
                        }
                    }
                }
            }
        }
    };
    let mut out = vec![F::zero(); outer * inner];
    if values.len() >= PARALLEL_MIN_ELEMS {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(o, chunk)| block(o, chunk));
    } else {
        out.chunks_mut(inner)
            .enumerate()
            .for_each(|(o, chunk)| block(o, chunk));
    }
    out
}

/// (outer, len, inner) sizes of `shape` around `axis`, and the output shape.
fn split_axis(shape: &[usize], axis: usize, keep_dim: bool) -> (usize, usize, usize, Vec<usize>) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    let mut out_shape = shape.to_vec();
    if keep_dim {
        out_shape[axis] = 1;
    } else {
        out_shape.remove(axis);
    }
    (outer, shape[axis], inner, out_shape)
}

impl Tensor {
    fn reduce_float(
        &self,
        op: &'static str,
        axis: isize,
        keep_dim: bool,
        how: Reduction,
        mean: bool,
    ) -> Result<Tensor> {
        let a = resolve_axis(op, axis, self.shape())?;
        let (outer, len, inner, out_shape) = split_axis(self.shape(), a, keep_dim);
        let on_device = match (how, mean) {
            (Reduction::Sum, true) => CudaReduction::Mean,
            (Reduction::Sum, false) => CudaReduction::Sum,
            (Reduction::Max, _) => CudaReduction::Max,
        };
        let out = match crate::gpu::reduce(op, self, a, on_device, &out_shape)? {
            Some(out) => out,
            None => {
                let out = with_float!(self.float_values(op)?, |v: R| {
                    let mut r = reduce(&v, outer, len, inner, how);
                    if mean {
                        let n = R::of(len as f64);
                        r.iter_mut().for_each(|x| *x /= n);
                    }
                    r
                });
                Tensor::from_float_vec(out, &out_shape, self.dtype())
            }
        };
        Ok(out.record(op, &[self], move || {
            move |g: &Tensor, inputs: &[Tensor]| {
                let x = &inputs[0];
                let g = if keep_dim { g.clone() } else { g.unsqueeze(a)? };
                let spread = match how {
                    Reduction::Sum if mean => {
                        let len = x.shape()[a].max(1);
                        g.broadcast_as(x.shape())?.affine(1.0 / len as f64, 0.0)?
                    }
                    Reduction::Sum => g.broadcast_as(x.shape())?.contiguous()?,
                    Reduction::Max => {
                        // The whole gradient goes to the first maximum.
                        let first = x
                            .argmax(a as isize, true)?
                            .to_device(crate::Device::Cpu)?
                            .cast(DType::F64)?
                            .to_vec::<f64>()?;
                        let (outer, len, inner, _) = split_axis(x.shape(), a, true);
                        let mut onehot = vec![0.0f64; outer * len * inner];
                        for o in 0..outer {
                            for i in 0..inner {
                                let p = first[o * inner + i] as usize;
                                onehot[(o * len + p) * inner + i] = 1.0;
                            }
                        }
                        Tensor::from_vec(onehot, x.shape())?
                            .cast(x.dtype())?
                            .to_device(x.device())?
                            .mul(&g)?
                    }
                };
                Ok(vec![Some(spread)])
            }
        }))
    }

    /// Sum over `axis` (negative counts from the end); `keep_dim` keeps it with length 1.
    ///
    /// ```
    /// use kaiyuan_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    /// assert_eq!(x.sum(-1, false).unwrap().to_vec::<f32>().unwrap(), vec![6.0, 15.0]);
    /// assert_eq!(x.sum(0, true).unwrap().shape(), &[1, 3]);
    /// ```
    pub fn sum(&self, axis: isize, keep_dim: bool) -> Result<Tensor> {
        self.reduce_float("sum", axis, keep_dim, Reduction::Sum, false)
    }

    /// Mean over `axis` (NaN for an empty axis).
    pub fn mean(&self, axis: isize, keep_dim: bool) -> Result<Tensor> {
        self.reduce_float("mean", axis, keep_dim, Reduction::Sum, true)
    }

    /// Maximum over `axis` (NaN if any element is NaN; −∞ for an empty axis).
    pub fn max(&self, axis: isize, keep_dim: bool) -> Result<Tensor> {
        self.reduce_float("max", axis, keep_dim, Reduction::Max, false)
    }

    /// Index of the first maximum over `axis`, as U32 (the first NaN, if any,
    /// counts as the maximum). An empty axis is an error.
    pub fn argmax(&self, axis: isize, keep_dim: bool) -> Result<Tensor> {
        const OP: &str = "argmax";
        let a = resolve_axis(OP, axis, self.shape())?;
        let (outer, len, inner, out_shape) = split_axis(self.shape(), a, keep_dim);
        if len == 0 {
            return Err(crate::TensorError::invalid(
                OP,
                format!("axis {a} of shape {:?} is empty", self.shape()),
            ));
        }
        if let Some(out) = crate::gpu::argmax(self, a, &out_shape)? {
            return Ok(out);
        }
        fn arg<F: Float>(v: &[F], outer: usize, len: usize, inner: usize) -> Vec<u32> {
            let one = |o: usize, i: usize| {
                let mut best = 0usize;
                let mut best_v = v[o * len * inner + i];
                for p in 1..len {
                    let x = v[(o * len + p) * inner + i];
                    if !best_v.is_nan() && (x > best_v || x.is_nan()) {
                        best = p;
                        best_v = x;
                    }
                }
                best as u32
            };
            let total = outer * inner;
            if v.len() >= PARALLEL_MIN_ELEMS {
                (0..total)
                    .into_par_iter()
                    .with_min_len((TASK_ELEMS / len).max(1))
                    .map(|k| one(k / inner, k % inner))
                    .collect()
            } else {
                (0..total).map(|k| one(k / inner, k % inner)).collect()
            }
        }
        let ids = match self.float_values(OP)? {
            FloatValues::F32(v) => arg(&v, outer, len, inner),
            FloatValues::F64(v) => arg(&v, outer, len, inner),
        };
        Ok(Tensor::from_vec_unchecked(ids, &out_shape))
    }
}
