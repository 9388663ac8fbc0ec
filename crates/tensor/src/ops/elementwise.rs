//! Element-wise ops: broadcasting arithmetic, scalar affine and activations.

use rayon::prelude::*;

use kaiyuan_cuda::ops::elementwise::{Binary, Unary};

use crate::cpu::float::Float;
use crate::cpu::{self, PARALLEL_MIN_ELEMS, rows_per_task};
use crate::layout::{Layout, RowOffsets, broadcast_shapes};
use crate::tensor::{FloatValues, FloatVec, with_float};
use crate::{Result, Tensor, gpu};

/// `f(lhs, rhs)` over the broadcast of two row-major operands.
fn broadcast_zip<F: Float>(
    lhs: &[F],
    lhs_shape: &[usize],
    rhs: &[F],
    rhs_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(F, F) -> F + Sync + Send + Copy,
) -> Vec<F> {
    if lhs_shape == rhs_shape {
        let mut out = vec![F::zero(); lhs.len()];
        let run = |out: &mut [F], l: &[F], r: &[F]| {
            crate::cpu::simd::with_simd(|| {
                for ((o, &a), &b) in out.iter_mut().zip(l).zip(r) {
                    *o = f(a, b);
                }
            })
        };
        if lhs.len() >= PARALLEL_MIN_ELEMS {
            out.par_chunks_mut(crate::cpu::TASK_ELEMS)
                .zip(
                    lhs.par_chunks(crate::cpu::TASK_ELEMS)
                        .zip(rhs.par_chunks(crate::cpu::TASK_ELEMS)),
                )
                .for_each(|(o, (l, r))| run(o, l, r));
        } else {
            run(&mut out, lhs, rhs);
        }
        return out;
    }
    let count: usize = out_shape.iter().product();
    let mut out = vec![F::zero(); count];
    if count == 0 {
        return out;
    }
    let rank = out_shape.len().max(1);
    let (out_shape, lhs_l, rhs_l) = if out_shape.is_empty() {
        (vec![1], Layout::contiguous(&[1]), Layout::contiguous(&[1]))
    } else {
        (
            out_shape.to_vec(),
            Layout::contiguous(lhs_shape).broadcast_to(out_shape),
            Layout::contiguous(rhs_shape).broadcast_to(out_shape),
        )
    };
    let row = out_shape[rank - 1];
    let (ls, rs) = (lhs_l.strides()[rank - 1], rhs_l.strides()[rank - 1]);
    let outer = &out_shape[..rank - 1];
    let fill = |chunk: &mut [F], first_row: usize| {
        let mut l_rows = RowOffsets::starting_at(outer, &lhs_l.strides()[..rank - 1], 0, first_row);
        let mut r_rows = RowOffsets::starting_at(outer, &rhs_l.strides()[..rank - 1], 0, first_row);
        for dst in chunk.chunks_mut(row) {
            let (lo, ro) = (l_rows.next_offset(), r_rows.next_offset());
            match (ls, rs) {
                (1, 1) => {
                    for ((d, &a), &b) in dst
                        .iter_mut()
                        .zip(&lhs[lo..lo + row])
                        .zip(&rhs[ro..ro + row])
                    {
                        *d = f(a, b);
                    }
                }
                (1, 0) => {
                    let b = rhs[ro];
                    for (d, &a) in dst.iter_mut().zip(&lhs[lo..lo + row]) {
                        *d = f(a, b);
                    }
                }
                (0, 1) => {
                    let a = lhs[lo];
                    for (d, &b) in dst.iter_mut().zip(&rhs[ro..ro + row]) {
                        *d = f(a, b);
                    }
                }
                _ => {
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = f(lhs[lo + j * ls], rhs[ro + j * rs]);
                    }
                }
            }
        }
    };
    let task_rows = rows_per_task(row);
    if count >= PARALLEL_MIN_ELEMS {
        out.par_chunks_mut(task_rows * row)
            .enumerate()
            .for_each(|(t, chunk)| crate::cpu::simd::with_simd(|| fill(chunk, t * task_rows)));
    } else {
        crate::cpu::simd::with_simd(|| fill(&mut out, 0));
    }
    out
}

/// `f(a, b)` over the broadcast of tensors `lhs` and `rhs` (equal dtypes),
/// with `R` bound to the compute type in `body`.
macro_rules! zip_floats {
    ($op:expr, $lhs:expr, $rhs:expr, |$a:ident, $b:ident| $body:expr) => {{
        let (lhs, rhs): (&Tensor, &Tensor) = ($lhs, $rhs);
        let shape = broadcast_shapes($op, lhs.shape(), rhs.shape())?;
        let out = match Tensor::float_values_pair($op, lhs, rhs)? {
            (FloatValues::F32(l), FloatValues::F32(r)) => {
                #[allow(dead_code)]
                type R = f32;
                FloatVec::F32(broadcast_zip(
                    &l,
                    lhs.shape(),
                    &r,
                    rhs.shape(),
                    &shape,
                    |$a: R, $b: R| $body,
                ))
            }
            (FloatValues::F64(l), FloatValues::F64(r)) => {
                #[allow(dead_code)]
                type R = f64;
                FloatVec::F64(broadcast_zip(
                    &l,
                    lhs.shape(),
                    &r,
                    rhs.shape(),
                    &shape,
                    |$a: R, $b: R| $body,
                ))
            }
            // Equal dtypes always give equal compute types.
            _ => return Err(crate::TensorError::invalid($op, "mixed compute types")),
        };
        Tensor::from_float_vec(out, &shape, lhs.dtype())
    }};
}

/// Gradient of the `i`-th input, computed only when that input is tracked.
fn grad_if(
    inputs: &[Tensor],
    i: usize,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    match inputs.get(i) {
        Some(t) if t.requires_grad() => Ok(Some(f(t)?.sum_to_shape(t.shape())?)),
        _ => Ok(None),
    }
}

/// The elements of `t` for writing in place: `Some` when `t` is a dense
/// f32 tensor in host memory, covering the whole of a buffer that it alone
/// owns (no clone or view shares it), and recording no gradient.
fn f32_in_place(t: &mut Tensor) -> Option<&mut [f32]> {
    use crate::storage::{CpuStorage, OwnedBuffer, Storage};
    let whole = t.layout().is_contiguous() && t.layout().offset() == 0;
    let count = t.elem_count();
    if !whole || t.requires_grad() {
        return None;
    }
    match t.storage_mut()? {
        Storage::Cpu(CpuStorage::Owned(OwnedBuffer::F32(values)))
            if values.is_unique() && values.len() == count =>
        {
            values.as_slice_mut()
        }
        _ => None,
    }
}

/// `f(a, b)` into `a`, element by element (in parallel for long slices).
fn zip_in_place(lhs: &mut [f32], rhs: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send + Copy) {
    let run = |l: &mut [f32], r: &[f32]| {
        crate::cpu::simd::with_simd(|| {
            for (a, &b) in l.iter_mut().zip(r) {
                *a = f(*a, b);
            }
        })
    };
    if lhs.len() >= PARALLEL_MIN_ELEMS {
        lhs.par_chunks_mut(crate::cpu::TASK_ELEMS)
            .zip(rhs.par_chunks(crate::cpu::TASK_ELEMS))
            .for_each(|(l, r)| run(l, r));
    } else {
        run(lhs, rhs);
    }
}

/// `f(a)` into `a`, element by element (in parallel for long slices).
fn map_in_place(values: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send + Copy) {
    let run = |v: &mut [f32]| {
        crate::cpu::simd::with_simd(|| {
            for a in v.iter_mut() {
                *a = f(*a);
            }
        })
    };
    if values.len() >= PARALLEL_MIN_ELEMS {
        values.par_chunks_mut(crate::cpu::TASK_ELEMS).for_each(run);
    } else {
        run(values);
    }
}

macro_rules! binary {
    ($(#[$doc:meta])* $name:ident, $assign:ident, $op:literal, $cuda:ident, |$a:ident, $b:ident| $body:expr,
     grad |$g:ident, $x:ident, $y:ident| ($dl:expr, $dr:expr)) => {
        #[doc = concat!("`self = self.", stringify!($name), "(rhs)`, written over `self`'s own buffer when")]
        /// `self` is a dense f32 host tensor that alone owns its buffer,
        /// `rhs` has its shape and no gradient is recorded; otherwise
        /// computed out of place (broadcasting, gradients and devices as
        /// the out-of-place op) and assigned. Either way the values are
        /// identical to the out-of-place op's.
        ///
        /// Long-lived activations (a residual stream, a gated product)
        /// then need no second buffer.
        pub fn $assign(&mut self, rhs: &Tensor) -> Result<()> {
            if self.shape() == rhs.shape() && !rhs.requires_grad() && rhs.dtype() == crate::DType::F32 && !rhs.device().is_cuda() {
                // `self` is checked first, so that rhs's values (a copy for
                // a strided view) are read only when they will be used;
                // `self` owning its buffer alone means `rhs` cannot share it.
                if let Some(l) = f32_in_place(self) {
                    let r = rhs.values::<f32>($op)?;
                    zip_in_place(l, &r, |$a: f32, $b: f32| {
                        #[allow(dead_code)]
                        type R = f32;
                        $body
                    });
                    return Ok(());
                }
            }
            *self = self.$name(rhs)?;
            Ok(())
        }

        $(#[$doc])*
        pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
            let out = match gpu::binary($op, Binary::$cuda, self, rhs)? {
                Some(out) => out,
                None => zip_floats!($op, self, rhs, |$a, $b| $body),
            };
            Ok(out.record($op, &[self, rhs], || {
                |$g: &Tensor, inputs: &[Tensor]| {
                    let ($x, $y) = (&inputs[0], &inputs[1]);
                    Ok(vec![
                        grad_if(inputs, 0, |_| $dl)?,
                        grad_if(inputs, 1, |_| $dr)?,
                    ])
                }
            }))
        }
    };
}

macro_rules! unary {
    ($(#[$doc:meta])* $name:ident, $assign:ident, $op:literal, $cuda:ident, |$x:ident| $body:expr, grad |$dx:ident| $deriv:expr) => {
        #[doc = concat!("`self = self.", stringify!($name), "()`, written over `self`'s own buffer when `self`")]
        /// is a dense f32 host tensor that alone owns its buffer and records
        /// no gradient; otherwise computed out of place and assigned. The
        /// values are identical to the out-of-place op's.
        pub fn $assign(&mut self) -> Result<()> {
            if let Some(values) = f32_in_place(self) {
                map_in_place(values, |$x: f32| {
                    #[allow(dead_code)]
                    type R = f32;
                    $body
                });
                return Ok(());
            }
            *self = self.$name()?;
            Ok(())
        }

        $(#[$doc])*
        pub fn $name(&self) -> Result<Tensor> {
            let out = match gpu::unary($op, Unary::$cuda, self)? {
                Some(out) => out,
                None => {
                    let out = with_float!(self.float_values($op)?, |v: R| cpu::map(&v, |$x: R| $body));
                    Tensor::from_float_vec(out, self.shape(), self.dtype())
                }
            };
            Ok(out.record($op, &[self], || {
                |g: &Tensor, inputs: &[Tensor]| {
                    const BACKWARD: &str = concat!($op, " backward");
                    // d/dx at x, times the incoming gradient.
                    let dx = match gpu::unary_backward(BACKWARD, Unary::$cuda, &inputs[0], g)? {
                        Some(dx) => dx,
                        None => zip_floats!(BACKWARD, &inputs[0], g, |$dx, up| {
                            let d: R = $deriv;
                            d * up
                        }),
                    };
                    Ok(vec![Some(dx)])
                }
            }))
        }
    };
}

impl Tensor {
    binary!(
        /// `self + rhs` with NumPy broadcasting; dtypes must agree.
        ///
        /// ```
        /// use kaiyuan_tensor::Tensor;
        /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        /// let b = Tensor::from_vec(vec![10.0f32, 20.0], &[2]).unwrap();
        /// assert_eq!(x.add(&b).unwrap().to_vec::<f32>().unwrap(), vec![11.0, 22.0, 13.0, 24.0]);
        /// ```
        add, add_assign, "add", Add, |a, b| a + b,
        grad |g, _x, _y| (Ok(g.clone()), Ok(g.clone()))
    );
    binary!(
        /// `self − rhs` with NumPy broadcasting; dtypes must agree.
        sub, sub_assign, "sub", Sub, |a, b| a - b,
        grad |g, _x, _y| (Ok(g.clone()), g.affine(-1.0, 0.0))
    );
    binary!(
        /// `self · rhs` element-wise with NumPy broadcasting; dtypes must agree.
        mul, mul_assign, "mul", Mul, |a, b| a * b,
        grad |g, x, y| (g.mul(y), g.mul(x))
    );
    binary!(
        /// `self / rhs` element-wise with NumPy broadcasting; dtypes must agree.
        div, div_assign, "div", Div, |a, b| a / b,
        // d(x/y)/dy = −x/y²
        grad |g, x, y| (g.div(y), g.mul(x)?.div(y)?.div(y)?.affine(-1.0, 0.0))
    );

    /// `self · mul + add` for scalars `mul` and `add` (computed in the op's compute type).
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        let out = match gpu::affine(self, mul, add)? {
            Some(out) => out,
            None => {
                let out = with_float!(self.float_values("affine")?, |v: R| {
                    let (m, a) = (R::of(mul), R::of(add));
                    cpu::map(&v, move |x| x * m + a)
                });
                Tensor::from_float_vec(out, self.shape(), self.dtype())
            }
        };
        Ok(out.record("affine", &[self], move || {
            move |g, _| Ok(vec![Some(g.affine(mul, 0.0)?)])
        }))
    }

    unary!(
        /// SiLU (swish): `x · sigmoid(x)`.
        silu, silu_assign, "silu", Silu, |x| x / (R::of(1.0) + (-x).exp_fast()),
        // s·(1 + x·(1 − s)) with s = sigmoid(x)
        grad |x| {
            let s = R::of(1.0) / (R::of(1.0) + (-x).exp_fast());
            s * (R::of(1.0) + x * (R::of(1.0) - s))
        }
    );
    unary!(
        /// GELU with the tanh approximation:
        /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
        gelu_tanh, gelu_tanh_assign, "gelu_tanh", GeluTanh, |x| {
            let u = R::of(0.797_884_560_802_865_4) * (x + R::of(0.044_715) * x * x * x);
            // tanh(u) = 1 − 2/(e^{2u} + 1), finite for every u.
            let tanh = R::of(1.0) - R::of(2.0) / ((u + u).exp_fast() + R::of(1.0));
            R::of(0.5) * x * (R::of(1.0) + tanh)
        },
        // ½(1 + t) + ½·x·(1 − t²)·u′ with t = tanh(u), u′ = k·(1 + 3·0.044715·x²)
        grad |x| {
            let k = R::of(0.797_884_560_802_865_4);
            let u = k * (x + R::of(0.044_715) * x * x * x);
            let t = R::of(1.0) - R::of(2.0) / ((u + u).exp_fast() + R::of(1.0));
            let du = k * (R::of(1.0) + R::of(3.0 * 0.044_715) * x * x);
            R::of(0.5) * (R::of(1.0) + t) + R::of(0.5) * x * (R::of(1.0) - t * t) * du
        }
    );
    unary!(
        /// Exact GELU: `0.5·x·(1 + erf(x/√2))`.
        gelu_erf, gelu_erf_assign, "gelu_erf", GeluErf, |x| R::of(0.5) * x * (R::of(1.0) + (x * R::of(std::f64::consts::FRAC_1_SQRT_2)).gauss_erf()),
        // Φ(x) + x·φ(x)
        grad |x| {
            let cdf = R::of(0.5) * (R::of(1.0) + (x * R::of(std::f64::consts::FRAC_1_SQRT_2)).gauss_erf());
            let pdf = (R::of(-0.5) * x * x).exp_fast() * R::of(0.398_942_280_401_432_7);
            cdf + x * pdf
        }
    );
    unary!(
        /// `e^x` element-wise.
        exp, exp_assign, "exp", Exp, |x| x.exp_fast(),
        grad |x| x.exp_fast()
    );
}
