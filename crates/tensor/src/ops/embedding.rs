//! Embedding lookup: rows of a table gathered by integer ids.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::cpu::PARALLEL_MIN_ELEMS;
use crate::cpu::float::Float;
use crate::tensor::with_float;
use crate::{DType, Element, Result, Tensor, TensorError};

impl Tensor {
    /// Gathers rows of `self`, a table of shape (V, C), by `ids` (U32 or I64,
    /// any shape S): the result has shape (S…, C). An id outside `0..V` is an
    /// error naming it and its position.
    ///
    /// ```
    /// use kaiyuan_tensor::Tensor;
    /// let table = Tensor::from_vec(vec![0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5], &[3, 2]).unwrap();
    /// let ids = Tensor::from_vec(vec![2u32, 0], &[2]).unwrap();
    /// let rows = table.embedding(&ids).unwrap();
    /// assert_eq!(rows.to_vec::<f32>().unwrap(), vec![2.0, 2.5, 0.0, 0.5]);
    /// ```
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        const OP: &str = "embedding";
        if self.rank() != 2 {
            return Err(TensorError::Rank {
                op: OP,
                expected: "rank 2 table (V, C)",
                shape: self.shape().to_vec(),
            });
        }
        if let Some((out, device_ids)) = crate::gpu::embedding(self, ids)? {
            if !crate::autograd::tracking(&[self]) {
                return Ok(out);
            }
            return Ok(out.record(OP, &[self, ids], move || {
                move |g: &Tensor, inputs: &[Tensor]| {
                    Ok(vec![
                        Some(crate::gpu::embedding_backward(&inputs[0], &device_ids, g)?),
                        None,
                    ])
                }
            }));
        }
        let (rows, width) = (self.shape()[0], self.shape()[1]);
        let index: Vec<usize> = match ids.dtype() {
            DType::U32 => checked_ids(ids.values::<u32>(OP)?.iter().map(|&i| i as i64), rows)?,
            DType::I64 => checked_ids(ids.values::<i64>(OP)?.iter().copied(), rows)?,
            dtype => {
                return Err(TensorError::UnsupportedDType {
                    op: OP,
                    dtype,
                    detail: ": ids must be u32 or i64",
                });
            }
        };
        let mut shape = ids.shape().to_vec();
        shape.push(width);
        fn gather<T: Element>(
            table: &Tensor,
            index: &[usize],
            width: usize,
            shape: &[usize],
        ) -> Result<Tensor> {
            let values = table.values::<T>(OP)?;
            let mut out = vec![T::from_f64(0.0); index.len() * width];
            let copy = |(dst, &row): (&mut [T], &usize)| {
                dst.copy_from_slice(&values[row * width..(row + 1) * width])
            };
            if out.len() >= PARALLEL_MIN_ELEMS {
                out.par_chunks_mut(width.max(1)).zip(index).for_each(copy);
            } else {
                out.chunks_mut(width.max(1)).zip(index).for_each(copy);
            }
            Ok(Tensor::from_vec_unchecked(out, shape))
        }
        let out = match self.dtype() {
            DType::F32 => gather::<f32>(self, &index, width, &shape),
            DType::F16 => gather::<f16>(self, &index, width, &shape),
            DType::BF16 => gather::<bf16>(self, &index, width, &shape),
            DType::F64 => gather::<f64>(self, &index, width, &shape),
            DType::U32 => gather::<u32>(self, &index, width, &shape),
            DType::I64 => gather::<i64>(self, &index, width, &shape),
        }?;
        if !crate::autograd::tracking(&[self]) {
            return Ok(out);
        }
        let index = std::sync::Arc::new(index);
        Ok(out.record(OP, &[self, ids], move || {
            move |g: &Tensor, inputs: &[Tensor]| {
                // Rows of g added into the rows of the table they came from,
                // in position order.
                let table = &inputs[0];
                let out = with_float!(g.float_values(OP)?, |g: R| {
                    let mut d = vec![R::of(0.0); rows * width];
                    for (row, &id) in g.chunks(width.max(1)).zip(index.iter()) {
                        for (dst, &v) in d[id * width..(id + 1) * width].iter_mut().zip(row) {
                            *dst += v;
                        }
                    }
                    d
                });
                Ok(vec![
                    Some(Tensor::from_float_vec(out, table.shape(), table.dtype())),
                    None,
                ])
            }
        }))
    }
}

fn checked_ids(ids: impl Iterator<Item = i64>, rows: usize) -> Result<Vec<usize>> {
    ids.enumerate()
        .map(|(position, id)| {
            if id < 0 || id as u64 >= rows as u64 {
                Err(TensorError::IndexOutOfRange {
                    op: "embedding",
                    id,
                    position,
                    rows,
                })
            } else {
                Ok(id as usize)
            }
        })
        .collect()
}
