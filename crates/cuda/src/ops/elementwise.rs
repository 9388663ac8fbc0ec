//! Elementwise maps: `kernels/elementwise.cu`.
//!
//! Every launcher writes into an output buffer the caller allocated, so
//! callers (and the parity tests, which poison it first) control memory.

use super::{THREADS, dim};
use crate::device::{Arg, DeviceValue, Launch, check_len};
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

/// Element types [`copy_strided`] moves: the three float dtypes and u32
/// token ids.
pub trait CopyValue: DeviceValue {
    /// The suffix of the kernel's name (`copy_strided_bf16`).
    const COPY_SUFFIX: &'static str;
}

impl CopyValue for f32 {
    const COPY_SUFFIX: &'static str = "f32";
}
impl CopyValue for half::bf16 {
    const COPY_SUFFIX: &'static str = "bf16";
}
impl CopyValue for half::f16 {
    const COPY_SUFFIX: &'static str = "f16";
}
impl CopyValue for u32 {
    const COPY_SUFFIX: &'static str = "u32";
}

/// A strided view of a buffer: element `(c₀, c₁, …)` of `shape` sits at
/// `offset + Σ cᵢ·strides[i]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The view's shape.
    pub shape: &'a [usize],
    /// Elements between neighbours along each axis (0 repeats an element).
    pub strides: &'a [usize],
    /// Where element (0, 0, …) sits.
    pub offset: usize,
}

impl View<'_> {
    /// One past the last element the view reaches (0 for an empty view), or
    /// `None` on overflow.
    fn end(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return Some(0);
        }
        self.shape
            .iter()
            .zip(self.strides)
            .try_fold(self.offset, |end, (&len, &stride)| {
                end.checked_add((len - 1).checked_mul(stride)?)
            })?
            .checked_add(1)
    }
}

/// Copies view `from` of `x` into view `to` of `y` (both of the same shape):
/// makes a transposed or narrowed view contiguous, or writes a piece into a
/// larger tensor (concatenation, padding). Every element either view reaches
/// must lie inside its buffer; overlapping writes (a zero stride in `to`)
/// are refused.
pub fn copy_strided<T: CopyValue>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    from: View<'_>,
    y: &mut GpuBuffer<T>,
    to: View<'_>,
) -> Result<()> {
    const OP: &str = "copy_strided";
    let rank = from.shape.len();
    if to.shape != from.shape || from.strides.len() != rank || to.strides.len() != rank {
        return Err(CudaError::shape(
            OP,
            format!(
                "views differ: {:?} (strides {:?}) and {:?} (strides {:?})",
                from.shape, from.strides, to.shape, to.strides
            ),
        ));
    }
    for (what, view, len) in [("x", &from, x.len()), ("y", &to, y.len())] {
        match view.end() {
            Some(end) if end <= len => {}
            _ => {
                return Err(CudaError::shape(
                    OP,
                    format!(
                        "view {:?} (strides {:?}, offset {}) reaches past the {len} elements of {what}",
                        view.shape, view.strides, view.offset
                    ),
                ));
            }
        }
    }
    // Nothing to copy (an empty view may have zero strides).
    let n: usize = from.shape.iter().product();
    if n == 0 {
        return Ok(());
    }
    if to
        .shape
        .iter()
        .zip(to.strides)
        .any(|(&len, &stride)| len > 1 && stride == 0)
    {
        return Err(CudaError::shape(
            OP,
            "the target view repeats elements (a zero stride)",
        ));
    }
    // Rank 0 is one element at the offsets.
    let (shape, x_strides, y_strides) = if rank == 0 {
        (&[1usize][..], &[0usize][..], &[0usize][..])
    } else {
        (from.shape, from.strides, to.strides)
    };
    let info: Vec<u64> = shape
        .iter()
        .chain(x_strides)
        .chain(y_strides)
        .map(|&v| v as u64)
        .collect();
    let info = device.upload(&info)?;
    device.launch(
        &ELEMENTWISE,
        &format!("copy_strided_{}", T::COPY_SUFFIX),
        Launch::linear(n, THREADS),
        &mut [
            Arg::U64(n as u64),
            Arg::I32(dim(OP, "rank", shape.len())?),
            info.arg(),
            x.arg(),
            Arg::U64(from.offset as u64),
            y.arg_mut(),
            Arg::U64(to.offset as u64),
        ],
    )
}
