//! The one error type of this crate.

use crate::DType;

/// Everything a tensor operation can refuse. Every variant names the op, so a
/// message read in a log says where it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// Two operands whose shapes cannot be combined by this op.
    #[error("{op}: incompatible shapes {lhs:?} and {rhs:?}{detail}")]
    ShapeMismatch {
        /// The op that refused.
        op: &'static str,
        /// Shape of the first operand.
        lhs: Vec<usize>,
        /// Shape of the second operand.
        rhs: Vec<usize>,
        /// Extra words, starting with ": " when present.
        detail: String,
    },
    /// An operand with the wrong number of dimensions.
    #[error("{op}: expected {expected}, got shape {shape:?}")]
    Rank {
        /// The op that refused.
        op: &'static str,
        /// What was expected, e.g. "rank 4 (B, H, T, D)".
        expected: &'static str,
        /// The shape received.
        shape: Vec<usize>,
    },
    /// An axis index that the tensor does not have.
    #[error("{op}: axis {axis} out of range for shape {shape:?}")]
    AxisOutOfRange {
        /// The op that refused.
        op: &'static str,
        /// The axis asked for (negative counts from the end).
        axis: isize,
        /// The shape of the tensor.
        shape: Vec<usize>,
    },
    /// A range along an axis that runs past its end.
    #[error(
        "{op}: range {start}..{end} out of bounds for axis {axis} of length {len} (shape {shape:?})"
    )]
    RangeOutOfBounds {
        /// The op that refused.
        op: &'static str,
        /// The axis.
        axis: usize,
        /// First index of the range.
        start: usize,
        /// One past the last index of the range.
        end: usize,
        /// Length of the axis.
        len: usize,
        /// The shape of the tensor.
        shape: Vec<usize>,
    },
    /// An element count that does not fit the shape asked for.
    #[error("{op}: {elements} elements cannot have shape {shape:?}")]
    ElementCount {
        /// The op that refused.
        op: &'static str,
        /// How many elements there are.
        elements: usize,
        /// The shape asked for.
        shape: Vec<usize>,
    },
    /// A dtype this op does not compute in.
    #[error("{op}: dtype {dtype} is not supported here{detail}")]
    UnsupportedDType {
        /// The op that refused.
        op: &'static str,
        /// The dtype received.
        dtype: DType,
        /// Extra words, starting with ": " when present.
        detail: &'static str,
    },
    /// Two operands whose dtypes differ where they must agree.
    #[error("{op}: dtypes differ: {lhs} and {rhs}")]
    DTypeMismatch {
        /// The op that refused.
        op: &'static str,
        /// Dtype of the first operand.
        lhs: DType,
        /// Dtype of the second operand.
        rhs: DType,
    },
    /// A token id outside the embedding table.
    #[error("{op}: id {id} at flat position {position} is outside the table of {rows} rows")]
    IndexOutOfRange {
        /// The op that refused.
        op: &'static str,
        /// The offending id.
        id: i64,
        /// Its position in the flattened id tensor.
        position: usize,
        /// Number of rows of the table.
        rows: usize,
    },
    /// Operands on different devices (move one with [`Tensor::to_device`](crate::Tensor::to_device)).
    #[error("{op}: operands on different devices ({lhs} and {rhs}); move one with to_device")]
    DeviceMismatch {
        /// The op that refused.
        op: &'static str,
        /// Device of the first operand.
        lhs: crate::Device,
        /// Device of the other operand.
        rhs: crate::Device,
    },
    /// An op, or a form of it, that does not run on this device yet.
    #[error("{op}: not available on {device}{detail}")]
    UnsupportedOnDevice {
        /// The op that refused.
        op: &'static str,
        /// The device of its operands.
        device: crate::Device,
        /// Extra words, starting with ": ".
        detail: String,
    },
    /// The CUDA backend refused or failed (no device, a launch, a copy).
    #[error("{op}: {source}")]
    Cuda {
        /// The op that was running.
        op: &'static str,
        /// What the CUDA backend reported.
        source: kaiyuan_cuda::CudaError,
    },
    /// Any other invalid argument, described in words.
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The op that refused.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// `Result` with [`TensorError`].
pub type Result<T, E = TensorError> = std::result::Result<T, E>;

impl TensorError {
    pub(crate) fn cuda(op: &'static str) -> impl FnOnce(kaiyuan_cuda::CudaError) -> Self {
        move |source| Self::Cuda { op, source }
    }

    pub(crate) fn on_device(
        op: &'static str,
        device: crate::Device,
        detail: impl Into<String>,
    ) -> Self {
        let detail = detail.into();
        Self::UnsupportedOnDevice {
            op,
            device,
            detail: if detail.is_empty() {
                detail
            } else {
                format!(": {detail}")
            },
        }
    }

    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }

    pub(crate) fn shapes(
        op: &'static str,
        lhs: &[usize],
        rhs: &[usize],
        detail: impl Into<String>,
    ) -> Self {
        let detail = detail.into();
        Self::ShapeMismatch {
            op,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            detail: if detail.is_empty() {
                detail
            } else {
                format!(": {detail}")
            },
        }
    }
}
