//! Shared helpers of the tensor tests: seeded data, views, and the
//! `|x − ref| ≤ atol + rtol·|ref|` comparison.
#![allow(dead_code)]

use half::{bf16, f16};
use kaiyuan_tensor::naive::NaiveTensor;
use kaiyuan_tensor::{DType, Tensor};

/// Deterministic values in [-2, 2) from a seed (xorshift; independent of the crate's generator).
pub fn values(count: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect()
}

/// Rounds values to what `dtype` can hold.
pub fn rounded(values: &[f64], dtype: DType) -> Vec<f64> {
    values
        .iter()
        .map(|&v| match dtype {
            DType::F32 => v as f32 as f64,
            DType::F16 => f16::from_f64(v).to_f64(),
            DType::BF16 => bf16::from_f64(v).to_f64(),
            _ => v,
        })
        .collect()
}

/// A tensor of `dtype` holding `values` (already representable) in `shape`.
pub fn tensor(values: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    let t = Tensor::from_vec(values.to_vec(), shape).expect("shape fits");
    t.cast(dtype).expect("float cast")
}

/// How an input is laid out in memory.
#[derive(Clone, Copy, Debug)]
pub enum View {
    /// Dense row-major.
    Contiguous,
    /// The transpose of a dense tensor with the last two axes swapped.
    Transposed,
    /// A slice along axis 0 of a larger dense tensor (non-zero offset).
    Narrowed,
}

/// Any of the [`View`]s.
pub fn view_strategy() -> impl proptest::strategy::Strategy<Value = View> {
    use proptest::prelude::*;
    prop_oneof![
        Just(View::Contiguous),
        Just(View::Transposed),
        Just(View::Narrowed)
    ]
}

/// An input of logical `shape` laid out as `view`, and the naive tensor with
/// the same logical values.
pub fn input(shape: &[usize], view: View, seed: u64, dtype: DType) -> (Tensor, NaiveTensor) {
    let rank = shape.len();
    match view {
        View::Transposed if rank >= 2 => {
            let mut base_shape = shape.to_vec();
            base_shape.swap(rank - 2, rank - 1);
            let data = rounded(&values(base_shape.iter().product(), seed), dtype);
            let base = tensor(&data, &base_shape, dtype);
            let naive = NaiveTensor::new(base_shape, data).transpose(rank - 2, rank - 1);
            (base.transpose(-2, -1).expect("rank ≥ 2"), naive)
        }
        View::Narrowed if rank >= 1 => {
            let mut base_shape = shape.to_vec();
            base_shape[0] += 3;
            let data = rounded(&values(base_shape.iter().product(), seed), dtype);
            let base = tensor(&data, &base_shape, dtype);
            let naive = NaiveTensor::new(base_shape, data).narrow(0, 2, shape[0]);
            (base.narrow(0, 2, shape[0]).expect("in range"), naive)
        }
        _ => {
            let data = rounded(&values(shape.iter().product(), seed), dtype);
            (
                tensor(&data, shape, dtype),
                NaiveTensor::new(shape.to_vec(), data),
            )
        }
    }
}

/// The tensor's values as f64.
pub fn as_f64(t: &Tensor) -> Vec<f64> {
    t.cast(DType::F64)
        .expect("cast")
        .to_vec::<f64>()
        .expect("f64")
}

/// Checks `|x − ref| ≤ atol + rtol·|ref|` element-wise (NaN matches NaN,
/// infinities must be equal) and the shapes; reports the first mismatches.
pub fn check_close(
    what: &str,
    got: &Tensor,
    want: &NaiveTensor,
    atol: f64,
    rtol: f64,
) -> Result<(), String> {
    if got.shape() != want.shape.as_slice() {
        return Err(format!(
            "{what}: shape {:?}, reference {:?}",
            got.shape(),
            want.shape
        ));
    }
    let got = as_f64(got);
    let mut bad = Vec::new();
    let mut count = 0usize;
    for (i, (&x, &r)) in got.iter().zip(&want.data).enumerate() {
        let ok = if r.is_nan() || x.is_nan() {
            r.is_nan() && x.is_nan()
        } else if r.is_infinite() || x.is_infinite() {
            x == r
        } else {
            (x - r).abs() <= atol + rtol * r.abs()
        };
        if !ok {
            count += 1;
            if bad.len() < 5 {
                bad.push(format!(
                    "[{i}] got {x:e}, ref {r:e}, |diff| {:e}",
                    (x - r).abs()
                ));
            }
        }
    }
    if count == 0 {
        Ok(())
    } else {
        Err(format!(
            "{what}: {count}/{} elements outside atol {atol:e} + rtol {rtol:e}: {}",
            got.len(),
            bad.join("; ")
        ))
    }
}

/// Tolerances for results computed in f32 from f32 inputs (atol, rtol).
pub const F32_TOL: (f64, f64) = (1e-6, 1e-5);

/// Tolerances for an output rounded to `dtype` from f32 arithmetic.
pub fn tol_for(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (1e-3, 2e-3),  // half an f16 ulp is 2^-11 ≈ 4.9e-4 relative
        DType::BF16 => (8e-3, 1e-2), // half a bf16 ulp is 2^-8 ≈ 3.9e-3 relative
        DType::F64 => (1e-12, 1e-12),
        _ => F32_TOL,
    }
}
