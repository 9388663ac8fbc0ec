//! Matrix products: (…, M, K) · (…, K, N) → (…, M, N) with broadcast batch axes.

use std::borrow::Cow;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::cpu::gemv::{GEMV_MAX_ROWS, WeightElem, gemv_many};
use crate::cpu::{
    self,
    gemm::{BElems, sgemm_mixed},
};
use crate::layout::{Layout, RowOffsets, broadcast_shapes};
use crate::tensor::FloatVec;
use crate::{DType, Result, Tensor, TensorError};

/// Below this many multiply-adds per batch entry, batch entries run in parallel
/// instead of splitting one product across threads.
const SMALL_GEMM: usize = 64 * 64 * 64;

/// Operand prepared for GEMM: a buffer and the layout (broadcast to the full
/// batch) that addresses it.
struct Operand<'a, T: Clone> {
    buffer: Cow<'a, [T]>,
    layout: Layout,
}

/// The right operand of an f32 GEMM: f32 values, or the stored f16/bf16
/// values that the GEMM widens as it packs them.
struct BOperand<'a> {
    buffer: BBuffer<'a>,
    layout: Layout,
}

enum BBuffer<'a> {
    F32(Cow<'a, [f32]>),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl BBuffer<'_> {
    fn elems(&self) -> BElems<'_> {
        match self {
            BBuffer::F32(b) => BElems::F32(b),
            BBuffer::F16(b) => BElems::F16(b),
            BBuffer::BF16(b) => BElems::BF16(b),
        }
    }
}

impl Tensor {
    /// Matrix product of the last two axes, broadcasting the leading (batch)
    /// axes: (…, M, K) · (…, K, N) → (…, M, N). Transposed operands (views from
    /// [`Tensor::t`]) are read in place, not copied. f16/bf16 compute in f32.
    ///
    /// ```
    /// use kaiyuan_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    /// let at_a = a.t().unwrap().matmul(&a).unwrap();
    /// assert_eq!(at_a.to_vec::<f32>().unwrap(), vec![10.0, 14.0, 14.0, 20.0]);
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.matmul_values(rhs)?;
        Ok(out.record("matmul", &[self, rhs], || {
            |g: &Tensor, inputs: &[Tensor]| {
                let (a, b) = (&inputs[0], &inputs[1]);
                // dA = g·Bᵀ, dB = Aᵀ·g, each summed over broadcast batch axes.
                let da = if a.requires_grad() {
                    Some(g.matmul(&b.t()?)?.sum_to_shape(a.shape())?)
                } else {
                    None
                };
                let db = if !b.requires_grad() {
                    None
                } else if b.device().is_cuda() && b.rank() == 2 && !b.is_contiguous() {
                    // b = wᵀ, a view of a weight w (x·wᵀ): (gᵀ·a)ᵀ reaches w
                    // as the dense gᵀ·a, where Aᵀ·g would reach it as a
                    // transposed view that the device would copy.
                    Some(g.t()?.matmul(a)?.t()?.sum_to_shape(b.shape())?)
                } else {
                    Some(a.t()?.matmul(g)?.sum_to_shape(b.shape())?)
                };
                Ok(vec![da, db])
            }
        }))
    }

    /// `self · wᵢᵀ` for each weight `wᵢ` (Nᵢ, K) — the products a layer's
    /// query, key and value (or gate and up) projections make of one input
    /// — equal bit for bit to `self.matmul(&wᵢ.t()?)` one by one (and the
    /// same errors). When none records gradients, `self` has at most four
    /// rows and the weights are row-major matrices of `self`'s float dtype,
    /// they stream as one parallel job (decoding); otherwise they run one
    /// by one.
    ///
    /// ```
    /// use kaiyuan_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2]).unwrap();
    /// let q = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    /// let k = Tensor::from_vec(vec![3.0f32, 4.0], &[1, 2]).unwrap();
    /// let [qx, kx]: [Tensor; 2] = x.matmul_t_many(&[&q, &k]).unwrap().try_into().unwrap();
    /// assert_eq!(qx.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
    /// assert_eq!(kx.to_vec::<f32>().unwrap(), vec![11.0]);
    /// ```
    pub fn matmul_t_many(&self, weights: &[&Tensor]) -> Result<Vec<Tensor>> {
        if let Some(products) = self.try_gemv_many(weights)? {
            return Ok(products);
        }
        weights.iter().map(|w| self.matmul(&w.t()?)).collect()
    }

    /// [`Tensor::matmul_t_many`]'s single job, or `None` when its
    /// conditions do not hold.
    fn try_gemv_many(&self, weights: &[&Tensor]) -> Result<Option<Vec<Tensor>>> {
        let Some(&k) = self.shape().last() else {
            return Ok(None);
        };
        let rows: usize = self.shape()[..self.rank() - 1].iter().product();
        let weight_dtype = weights.first().map(|w| w.dtype());
        let applies = weights.len() > 1
            && !self.device().is_cuda()
            && self.rank() >= 2
            && (1..=GEMV_MAX_ROWS).contains(&rows)
            && k > 0
            && self.is_contiguous()
            && !self.requires_grad()
            && matches!(self.dtype(), DType::F32 | DType::F16 | DType::BF16)
            && weight_dtype == Some(self.dtype())
            && weights.iter().all(|w| {
                w.rank() == 2
                    && w.shape()[1] == k
                    && w.shape()[0] > 0
                    && w.is_contiguous()
                    && Some(w.dtype()) == weight_dtype
                    && !w.requires_grad()
            });
        if !applies {
            return Ok(None);
        }
        let parts: Vec<(&Tensor, usize)> = weights.iter().map(|w| (*w, w.shape()[0])).collect();
        let outs = gemv_products(&self.gemv_input()?, rows, k, &parts)?;
        Ok(Some(
            outs.into_iter()
                .zip(weights)
                .map(|(out, w)| self.gemv_output(out, w.shape()[0]))
                .collect(),
        ))
    }

    fn matmul_values(&self, rhs: &Tensor) -> Result<Tensor> {
        const OP: &str = "matmul";
        for t in [self, rhs] {
            if t.rank() < 2 {
                return Err(TensorError::Rank {
                    op: OP,
                    expected: "rank ≥ 2 (…, M, K) and (…, K, N)",
                    shape: t.shape().to_vec(),
                });
            }
        }
        if let Some(out) = crate::gpu::matmul(self, rhs)? {
            return Ok(out);
        }
        if self.dtype() != rhs.dtype() {
            return Err(TensorError::DTypeMismatch {
                op: OP,
                lhs: self.dtype(),
                rhs: rhs.dtype(),
            });
        }
        let (lr, rr) = (self.rank(), rhs.rank());
        let (m, k) = (self.shape()[lr - 2], self.shape()[lr - 1]);
        let (k2, n) = (rhs.shape()[rr - 2], rhs.shape()[rr - 1]);
        if k != k2 {
            return Err(TensorError::shapes(
                OP,
                self.shape(),
                rhs.shape(),
                format!("inner dimensions differ ({k} vs {k2})"),
            ));
        }
        if let Some(out) = self.try_gemv(rhs, k, n)? {
            return Ok(out);
        }
        let batch = broadcast_shapes(OP, &self.shape()[..lr - 2], &rhs.shape()[..rr - 2]).map_err(
            |_| TensorError::shapes(OP, self.shape(), rhs.shape(), "batch axes do not broadcast"),
        )?;
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        let lhs_full: Vec<usize> = batch.iter().copied().chain([m, k]).collect();
        let rhs_full: Vec<usize> = batch.iter().copied().chain([k, n]).collect();
        let dims = Dims {
            batch: &batch,
            m,
            n,
            k,
        };
        let out = match self.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => FloatVec::F32(gemm_f32(
                self.f32_operand(OP, &lhs_full)?,
                rhs.gemm_b_operand(OP, &rhs_full)?,
                &dims,
            )),
            DType::F64 => {
                let a = self.values::<f64>(OP)?;
                let b = rhs.values::<f64>(OP)?;
                FloatVec::F64(gemm_f64(
                    Operand {
                        buffer: a,
                        layout: Layout::contiguous(self.shape()).broadcast_to(&lhs_full),
                    },
                    Operand {
                        buffer: b,
                        layout: Layout::contiguous(rhs.shape()).broadcast_to(&rhs_full),
                    },
                    &dims,
                ))
            }
            dtype @ (DType::U32 | DType::I64) => {
                return Err(TensorError::UnsupportedDType {
                    op: OP,
                    dtype,
                    detail: ": floating-point op",
                });
            }
        };
        Ok(Tensor::from_float_vec(out, &out_shape, self.dtype()))
    }

    /// Decoding's shape: a few rows of `self` (…, K) times `rhs` (K, N) that
    /// is the transpose of a row-major (N, K) weight (`w.t()`); streams the
    /// weight once without packing or widening it to a copy. `None` when the
    /// operands do not have that form.
    fn try_gemv(&self, rhs: &Tensor, k: usize, n: usize) -> Result<Option<Tensor>> {
        let rows: usize = self.shape()[..self.rank() - 1].iter().product();
        let transposed_weight = rhs.rank() == 2 && rhs.layout().strides() == [1, k];
        if rows == 0
            || rows > GEMV_MAX_ROWS
            || k == 0
            || n == 0
            || !transposed_weight
            || !self.is_contiguous()
            || !matches!(self.dtype(), DType::F32 | DType::F16 | DType::BF16)
        {
            return Ok(None);
        }
        let out = gemv_products(&self.gemv_input()?, rows, k, &[(rhs, n)])?;
        Ok(out.into_iter().next().map(|out| self.gemv_output(out, n)))
    }

    /// `self`'s values as f32 for the GEMV kernels (f16 widened in bulk).
    fn gemv_input(&self) -> Result<Cow<'_, [f32]>> {
        const OP: &str = "matmul";
        Ok(match self.dtype() {
            DType::F32 => self.values::<f32>(OP)?,
            DType::F16 => Cow::Owned(cpu::f16_to_f32(&self.values::<f16>(OP)?)),
            _ => Cow::Owned(
                self.values::<bf16>(OP)?
                    .iter()
                    .map(|v| v.to_f32())
                    .collect(),
            ),
        })
    }

    /// A GEMV's (rows × n) f32 outputs as a tensor of `self`'s shape with
    /// the last axis n, in `self`'s dtype.
    fn gemv_output(&self, out: Vec<f32>, n: usize) -> Tensor {
        let mut shape = self.shape().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        Tensor::from_float_vec(FloatVec::F32(out), &shape, self.dtype())
    }

    /// The right operand of an f32 GEMM as stored, with its broadcast
    /// layout: half-precision values (a model's weights, usually) are
    /// widened as the GEMM packs them, never into a whole copy.
    fn gemm_b_operand(&self, op: &'static str, full_shape: &[usize]) -> Result<BOperand<'_>> {
        let layout = self.layout().broadcast_to(full_shape);
        Ok(match self.dtype() {
            DType::F16 => BOperand {
                buffer: BBuffer::F16(self.typed_buffer::<f16>(op)?),
                layout,
            },
            DType::BF16 => BOperand {
                buffer: BBuffer::BF16(self.typed_buffer::<bf16>(op)?),
                layout,
            },
            _ => {
                let operand = self.f32_operand(op, full_shape)?;
                BOperand {
                    buffer: BBuffer::F32(operand.buffer),
                    layout: operand.layout,
                }
            }
        })
    }

    /// The f32 buffer and broadcast layout of a matmul operand: f32 tensors
    /// are read in place; f16/bf16 are widened to a contiguous copy.
    fn f32_operand(&self, op: &'static str, full_shape: &[usize]) -> Result<Operand<'_, f32>> {
        let layout = self.layout();
        // A transposed half-precision weight (`w.t()`, as linear layers
        // pass it) is widened in memory order, streaming, and read back
        // with its own strides; gathering it in logical order would walk
        // its columns, a cache miss per element.
        if layout.is_dense() && !layout.is_contiguous() {
            let span = layout.offset()..layout.offset() + layout.elem_count();
            let dense = Layout::new(layout.shape().to_vec(), layout.strides().to_vec(), 0);
            let widened = match self.dtype() {
                DType::F16 => Some(cpu::map(
                    &self.typed_buffer::<f16>(op)?[span],
                    WeightElem::widen,
                )),
                DType::BF16 => Some(cpu::map(
                    &self.typed_buffer::<bf16>(op)?[span],
                    WeightElem::widen,
                )),
                _ => None,
            };
            if let Some(buffer) = widened {
                return Ok(Operand {
                    buffer: Cow::Owned(buffer),
                    layout: dense.broadcast_to(full_shape),
                });
            }
        }
        Ok(match self.dtype() {
            DType::F32 => Operand {
                buffer: Cow::Borrowed(self.typed_buffer::<f32>(op)?),
                layout: self.layout().broadcast_to(full_shape),
            },
            DType::F16 => Operand {
                // The branch-free widening vectorises; `f16::to_f32` is a
                // call per element, which for a prefill's weights cost as
                // much as half the product.
                buffer: Cow::Owned(cpu::gather_map(
                    self.typed_buffer::<f16>(op)?,
                    self.layout(),
                    WeightElem::widen,
                )),
                layout: Layout::contiguous(self.shape()).broadcast_to(full_shape),
            },
            _ => Operand {
                buffer: Cow::Owned(cpu::gather_map(
                    self.typed_buffer::<bf16>(op)?,
                    self.layout(),
                    bf16::to_f32,
                )),
                layout: Layout::contiguous(self.shape()).broadcast_to(full_shape),
            },
        })
    }
}

/// [`gemv_many`] of `a` (rows, k) against weights `(w, n)`, each holding n
/// rows of k elements from its layout's offset (a row-major (n, k) matrix,
/// or the buffer behind its transpose), all of `w`'s float dtype.
fn gemv_products(
    a: &[f32],
    rows: usize,
    k: usize,
    weights: &[(&Tensor, usize)],
) -> Result<Vec<Vec<f32>>> {
    fn rows_of<'t, W: crate::Element>(
        weights: &[(&'t Tensor, usize)],
        k: usize,
    ) -> Result<Vec<(&'t [W], usize)>> {
        weights
            .iter()
            .map(|&(w, n)| {
                let start = w.layout().offset();
                Ok((&w.typed_buffer::<W>("matmul")?[start..start + n * k], n))
            })
            .collect()
    }
    Ok(match weights.first().map(|(w, _)| w.dtype()) {
        Some(DType::F32) => gemv_many(a, rows, k, &rows_of::<f32>(weights, k)?),
        Some(DType::F16) => gemv_many(a, rows, k, &rows_of::<f16>(weights, k)?),
        Some(_) => gemv_many(a, rows, k, &rows_of::<bf16>(weights, k)?),
        None => Vec::new(),
    })
}

struct Dims<'a> {
    batch: &'a [usize],
    m: usize,
    n: usize,
    k: usize,
}

/// (offset, row stride, column stride) of every batch entry of an operand.
fn batch_views(layout: &Layout, batch: &[usize]) -> Vec<(usize, usize, usize)> {
    let r = layout.rank();
    let (rs, cs) = (layout.strides()[r - 2], layout.strides()[r - 1]);
    let count: usize = batch.iter().product();
    let mut rows = RowOffsets::starting_at(batch, &layout.strides()[..r - 2], layout.offset(), 0);
    (0..count).map(|_| (rows.next_offset(), rs, cs)).collect()
}

fn gemm_f32(a: Operand<'_, f32>, b: BOperand<'_>, d: &Dims<'_>) -> Vec<f32> {
    let (m, n, k) = (d.m, d.n, d.k);
    let a_views = batch_views(&a.layout, d.batch);
    let b_views = batch_views(&b.layout, d.batch);
    let b_elems = b.buffer.elems();
    let mut out = vec![0.0f32; a_views.len() * m * n];
    if m * n == 0 {
        return out;
    }
    let one = |i: usize, c: &mut [f32]| {
        let (ao, ars, acs) = a_views[i];
        let (bo, brs, bcs) = b_views[i];
        sgemm_mixed(
            m,
            n,
            k,
            &a.buffer[ao..],
            ars,
            acs,
            b_elems.skip(bo),
            brs,
            bcs,
            c,
            n,
            false,
        );
    };
    if a_views.len() > 1 && m * n * k < SMALL_GEMM {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, c)| one(i, c));
    } else {
        out.chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, c)| one(i, c));
    }
    out
}

fn gemm_f64(a: Operand<'_, f64>, b: Operand<'_, f64>, d: &Dims<'_>) -> Vec<f64> {
    let (m, n, k) = (d.m, d.n, d.k);
    let a_views = batch_views(&a.layout, d.batch);
    let b_views = batch_views(&b.layout, d.batch);
    let mut out = vec![0.0f64; a_views.len() * m * n];
    if m * n == 0 {
        return out;
    }
    let row = |batch: usize, i: usize, c: &mut [f64]| {
        let (ao, ars, acs) = a_views[batch];
        let (bo, brs, bcs) = b_views[batch];
        for p in 0..k {
            let x = a.buffer[ao + i * ars + p * acs];
            let b_row = bo + p * brs;
            for (j, dst) in c.iter_mut().enumerate() {
                *dst += x * b.buffer[b_row + j * bcs];
            }
        }
    };
    out.par_chunks_mut(n)
        .with_min_len((cpu::TASK_ELEMS / (n * k).max(1)).max(1))
        .enumerate()
        .for_each(|(r, c)| row(r / m, r % m, c));
    out
}
