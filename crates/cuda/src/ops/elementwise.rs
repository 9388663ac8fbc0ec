//! Elementwise maps: `kernels/elementwise.cu`.
//!
//! Every launcher writes into an output buffer the caller allocated, so
//! callers (and the parity tests, which poison it first) control memory.

use super::{THREADS, dim};
use crate::device::{Arg, Launch, check_len};
use crate::kernels::ELEMENTWISE;
use crate::{CudaError, GpuBuffer, GpuDevice, GpuFloat, Result};

/// The unary maps of the kernel file (codes as in `elementwise.cu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// `eˣ`.
    Exp,
    /// `x · sigmoid(x)`.
    Silu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// GELU, exact (erf).
    GeluErf,
}

impl Unary {
    fn code(self) -> i32 {
        match self {
            Unary::Exp => 0,
            Unary::Silu => 1,
            Unary::GeluTanh => 2,
            Unary::GeluErf => 3,
        }
    }
}

/// The binary maps of the kernel file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
}

impl Binary {
    fn code(self) -> i32 {
        match self {
            Binary::Add => 0,
            Binary::Sub => 1,
            Binary::Mul => 2,
            Binary::Div => 3,
        }
    }
}

/// `y = x · mul + add`. `x`, `y`: (n).
pub fn affine<T: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    mul: f32,
    add: f32,
    y: &mut GpuBuffer<T>,
) -> Result<()> {
    let n = x.len();
    check_len("affine", "y", y, n)?;
    device.launch(
        &ELEMENTWISE,
        &format!("affine_{}", T::SUFFIX),
        Launch::linear(n, THREADS),
        &mut [
            Arg::U64(n as u64),
            x.arg(),
            y.arg_mut(),
            Arg::F32(mul),
            Arg::F32(add),
        ],
    )
}

/// `y = op(x)`. `x`, `y`: (n).
pub fn unary<T: GpuFloat>(
    device: &GpuDevice,
    op: Unary,
    x: &GpuBuffer<T>,
    y: &mut GpuBuffer<T>,
) -> Result<()> {
    let n = x.len();
    check_len("unary", "y", y, n)?;
    device.launch(
        &ELEMENTWISE,
        &format!("unary_{}", T::SUFFIX),
        Launch::linear(n, THREADS),
        &mut [
            Arg::U64(n as u64),
            Arg::I32(op.code()),
            x.arg(),
            y.arg_mut(),
        ],
    )
}

/// The gradient of [`unary`]: `dx = op′(x) · dy`. `x`, `dy`, `dx`: (n).
pub fn unary_backward<T: GpuFloat>(
    device: &GpuDevice,
    op: Unary,
    x: &GpuBuffer<T>,
    dy: &GpuBuffer<T>,
    dx: &mut GpuBuffer<T>,
) -> Result<()> {
    let n = x.len();
    check_len("unary backward", "dy", dy, n)?;
    check_len("unary backward", "dx", dx, n)?;
    device.launch(
        &ELEMENTWISE,
        &format!("unary_backward_{}", T::SUFFIX),
        Launch::linear(n, THREADS),
        &mut [
            Arg::U64(n as u64),
            Arg::I32(op.code()),
            x.arg(),
            dy.arg(),
            dx.arg_mut(),
        ],
    )
}

/// The shape of `a op b` under NumPy broadcasting, and the strides (in
/// elements, 0 along broadcast axes) to read `a` and `b` at, both padded to
/// the output's rank.
///
/// ```
/// let (shape, a, b) = kaiyuan_cuda::ops::elementwise::broadcast(&[2, 1, 3], &[4, 1]).unwrap();
/// assert_eq!(shape, vec![2, 4, 3]);
/// assert_eq!(a, vec![3, 0, 1]);
/// assert_eq!(b, vec![0, 1, 0]);
/// ```
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<(Vec<usize>, Vec<u64>, Vec<u64>)> {
    let rank = a.len().max(b.len());
    let padded = |shape: &[usize]| -> Vec<usize> {
        let mut out = vec![1; rank - shape.len()];
        out.extend_from_slice(shape);
        out
    };
    let (a, b) = (padded(a), padded(b));
    let strides = |shape: &[usize]| -> Vec<u64> {
        let mut out = vec![0u64; rank];
        let mut stride = 1u64;
        for axis in (0..rank).rev() {
            out[axis] = if shape[axis] == 1 { 0 } else { stride };
            stride *= shape[axis] as u64;
        }
        out
    };
    let mut shape = Vec::with_capacity(rank);
    for axis in 0..rank {
        let (x, y) = (a[axis], b[axis]);
        shape.push(match (x, y) {
            _ if x == y => x,
            (1, _) => y,
            (_, 1) => x,
            _ => {
                return Err(CudaError::shape(
                    "broadcast",
                    format!("shapes {a:?} and {b:?} differ at axis {axis} ({x} vs {y})"),
                ));
            }
        });
    }
    Ok((shape, strides(&a), strides(&b)))
}

/// `y = a op b` with NumPy broadcasting. `a`: `a_shape`, `b`: `b_shape`,
/// `y`: the broadcast shape (returned).
pub fn binary<T: GpuFloat>(
    device: &GpuDevice,
    op: Binary,
    a: &GpuBuffer<T>,
    a_shape: &[usize],
    b: &GpuBuffer<T>,
    b_shape: &[usize],
    y: &mut GpuBuffer<T>,
) -> Result<Vec<usize>> {
    const OP: &str = "binary";
    let (shape, a_strides, b_strides) = broadcast(a_shape, b_shape)?;
    check_len(OP, "a", a, a_shape.iter().product())?;
    check_len(OP, "b", b, b_shape.iter().product())?;
    let n: usize = shape.iter().product();
    check_len(OP, "y", y, n)?;
    if a_shape == b_shape {
        device.launch(
            &ELEMENTWISE,
            &format!("binary_contiguous_{}", T::SUFFIX),
            Launch::linear(n, THREADS),
            &mut [
                Arg::U64(n as u64),
                Arg::I32(op.code()),
                a.arg(),
                b.arg(),
                y.arg_mut(),
            ],
        )?;
        return Ok(shape);
    }
    let rank = dim(OP, "rank", shape.len())?;
    let mut info: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    info.extend(&a_strides);
    info.extend(&b_strides);
    let info = device.upload(&info)?;
    device.launch(
        &ELEMENTWISE,
        &format!("binary_strided_{}", T::SUFFIX),
        Launch::linear(n, THREADS),
        &mut [
            Arg::U64(n as u64),
            Arg::I32(op.code()),
            Arg::I32(rank),
            info.arg(),
            a.arg(),
            b.arg(),
            y.arg_mut(),
        ],
    )?;
    Ok(shape)
}

/// Converts `x` to another float dtype (round to nearest even). `x`, `y`: (n).
pub fn cast<Src: GpuFloat, Dst: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<Src>,
    y: &mut GpuBuffer<Dst>,
) -> Result<()> {
    if Src::SUFFIX == Dst::SUFFIX {
        return Err(CudaError::shape(
            "cast",
            format!("source and target are both {}", Src::SUFFIX),
        ));
    }
    let n = x.len();
    check_len("cast", "y", y, n)?;
    device.launch(
        &ELEMENTWISE,
        &format!("cast_{}_{}", Src::SUFFIX, Dst::SUFFIX),
        Launch::linear(n, THREADS),
        &mut [Arg::U64(n as u64), x.arg(), y.arg_mut()],
    )
}
